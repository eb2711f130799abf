"""Pretraining on windows of whole images, and fine-tuning starting from the pretrained fc layers."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from spp_detect.backbones import WithinChannelLRN, build_backbone, pretrained_head, save_backbone
from spp_detect.cli.main import cli
from spp_detect.core.boxes import iou_matrix
from spp_detect.core.geometry import WindowGeometry, choose_scales
from spp_detect.core.roi_spp import RoiSppPooler
from spp_detect.datasets import open_dataset
from spp_detect.errors import ConfigError
from spp_detect.pretrain.train import BACKGROUND, build_classifier, crop_source_from_detection
from spp_detect.pretrain.windows import MIN_WINDOW_SIDE, WindowSampling, WindowTask, sample_windows
from spp_detect.training.finetune import init_from_pretrained
from spp_detect.training.head import SppHead
from tests.helpers import make_voc_tree

LEVELS = (6, 3, 2, 1)


@pytest.fixture
def voc(tmp_path):
    return make_voc_tree(tmp_path / "voc", n_images=10, splits={"train": list(range(7)), "val": [7, 8, 9]})


def test_window_labels_follow_their_overlap():
    rng = np.random.default_rng(0)
    boxes = np.array([[10, 10, 60, 70], [80, 20, 150, 90]], np.float32)
    labels = np.array([2, 0])
    avoid = np.concatenate([boxes, [[100, 100, 140, 118]]])  # a difficult object: no window near it is background
    for _ in range(20):
        win, lab = sample_windows(rng, boxes, labels, avoid, 120, 200, 40, 0.25, 0.5, background_label=3)
        assert win.shape == (40, 4) and lab.shape == (40,)
        assert np.all(win[:, 0] >= 0) and np.all(win[:, 2] <= 199) and np.all(win[:, 3] <= 119)
        assert np.all(win[:, 2] - win[:, 0] + 1 >= MIN_WINDOW_SIDE - 1e-4)
        iou = iou_matrix(win, boxes)
        fg = lab != 3
        assert fg.sum() == 10  # 25% of 40
        assert np.all(iou[fg].max(1) >= 0.5)
        assert np.array_equal(lab[fg], labels[iou[fg].argmax(1)])
        assert np.all(iou_matrix(win[~fg], avoid).max(1) < 0.5)
        # half of the background near an object, half anywhere
        assert (iou[~fg].max(1) >= 0.1).sum() >= 5


def test_an_image_without_objects_gives_background_only():
    rng = np.random.default_rng(1)
    win, lab = sample_windows(rng, np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros((0, 4)), 80, 90, 16, 0.5, 0.5, 7)
    assert len(win) == 16 and np.all(lab == 7)


def _task(scales=(64, 96), target=40, rule="paper"):
    return WindowTask(WindowSampling(WindowGeometry(scales, target, 0, rule), 16, 0.5, 0.5), LEVELS, "coarse_first")


def test_windows_come_at_the_scale_extraction_pools_them(voc):
    source = crop_source_from_detection(open_dataset(str(voc), "val"))
    _, val = _task().datasets(source, source, seed=0)
    seen = 0
    for k, scale in enumerate((64, 96)):
        val.size = scale
        for i in range(len(val)):
            image, windows, labels = val[i]
            h, w = 96, 128
            assert min(image.shape[:2]) == scale
            f = image.shape[1] / w
            original = (windows + 0.5) / f - 0.5  # back to the original frame
            assert np.all(choose_scales(original, h, w, (64, 96), 40) == k)
            seen += len(labels)
    assert seen > 0


def test_training_windows_pool_as_the_detector_does_and_train_the_trunk(voc):
    source = crop_source_from_detection(open_dataset(str(voc), "train"))
    task = _task()
    train, _ = task.datasets(source, source, seed=0)
    torch.manual_seed(0)
    backbone = build_backbone("zf5", width=0.125)
    model = build_classifier(backbone, 3, LEVELS, "coarse_first", 16, 0.0)
    batch = task.collate([train[i] for i in range(3)])
    logits, target = task.forward(model, batch, "cpu")
    assert logits.shape == (len(target), 3) and len(target) == sum(len(b[2]) for b in batch)
    torch.nn.functional.cross_entropy(logits, target).backward()
    assert backbone.trunk.conv1.weight.grad.abs().sum() > 0

    # the pooled vectors are exactly the detection pooler's for the same cells
    image, windows, _ = batch[0]
    from spp_detect.core.geometry import project_boxes

    with torch.no_grad():
        fmap = backbone(backbone.preprocess(image))
        rects = project_boxes(windows, backbone.stride, backbone.offset, "paper", fmap.shape[2], fmap.shape[3])
        captured = {}
        hook = model.head.register_forward_pre_hook(lambda module, args: captured.setdefault("x", args[0]))
        task.forward(model, [batch[0]], "cpu")
        hook.remove()
    expected = RoiSppPooler(LEVELS, "coarse_first")(fmap[0], torch.from_numpy(rects))
    torch.testing.assert_close(captured["x"], expected)


@pytest.mark.parametrize("rule", ["paper", "released"])
def test_window_pretraining_pools_the_cells_extraction_pools_under_either_rule(voc, monkeypatch, rule):
    # extract.projection selects three steps at once (scale choice, box scaling, projection);
    # window pretraining once applied it to the projection only. Same windows, same image:
    # the scale each window is trained at and the cells pooled must be the extraction's.
    import spp_detect.pretrain.windows as windows_module
    from spp_detect.datasets.base import load_image
    from spp_detect.features.extract import Extractor, ExtractSettings

    scales, target = (64, 96), 40
    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 80, (300, 2))
    side = rng.uniform(8, 60, (300, 2))
    cand = np.concatenate([xy, np.minimum(xy + side, [127, 95])], 1).astype(np.float32)  # 128 x 96 images

    def fixed_windows(rng_, boxes, labels, avoid, height, width, n, fg_fraction, fg_iou, background, accept):
        keep = accept(cand)
        return cand[keep], np.zeros(int(keep.sum()), np.int64)

    monkeypatch.setattr(windows_module, "sample_windows", fixed_windows)
    source = crop_source_from_detection(open_dataset(str(voc), "val"))
    task = _task(scales, target, rule)
    _, val = task.datasets(source, source, seed=0)
    torch.manual_seed(0)
    backbone = build_backbone("zf5", width=0.125).eval()
    model = build_classifier(backbone, 3, LEVELS, "coarse_first", 16, 0.0).eval()
    extracted = Extractor(backbone, ExtractSettings(scales=scales, target_size=target, projection=rule)).run(
        load_image(source.items[0].path), cand)
    paper = Extractor(backbone, ExtractSettings(scales=scales, target_size=target, projection="paper")).run(
        load_image(source.items[0].path), cand)
    differs = False
    for k, scale in enumerate(scales):
        val.size = scale
        item = val[0]
        at_k = extracted["best_scale"] == k
        assert len(item[2]) == int(at_k.sum()) > 0  # the windows extraction pools at this scale
        captured = []
        hook = model.head.register_forward_pre_hook(lambda module, args, seen=captured: seen.append(args[0]))
        with torch.no_grad():
            task.forward(model, [item], "cpu")
        hook.remove()
        want = RoiSppPooler(LEVELS, "coarse_first")(extracted["maps"][k], torch.from_numpy(extracted["rects"][at_k, k]))
        torch.testing.assert_close(captured[0], want)
        differs |= not np.array_equal(extracted["rects"][at_k, k], paper["rects"][paper["best_scale"] == k, k])
    assert differs == (rule == "released")  # the two rules really give other cells here


def test_windows_mode_through_the_cli(voc, tmp_path):
    run = tmp_path / "run"
    args = ["pretrain", "--dataset", str(voc), "--split", "train", "--val-split", "val", "--backbone", "zf5",
            "--width", "0.125", "--fc-dim", "16", "--batch-size", "32", "--mode", "windows", "--epochs", "2",
            "--run", str(run), "--set", "extract.scales=[64,96]", "--set", "extract.target_size=40",
            "--set", "pretrain.windows_per_image=16"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "pretrain" / "metrics.json").read_text())
    assert set(metrics["val"]) == {"64", "96"}  # validated at each extraction scale
    assert metrics["classes"] == ["circle", "square", BACKGROUND]
    assert all(e["examples"] > 0 for e in metrics["epochs"])
    head = pretrained_head(run)
    assert head["labels"] == ["circle", "square", BACKGROUND] and head["state_dict"]["fc6.weight"].shape[0] == 16
    # the extraction settings it trained for are part of its stamp: another scale set is another pretraining
    other = CliRunner().invoke(cli, [*args[:-6], "--set", "extract.scales=[64]", "--set", "extract.target_size=40",
                                     "--set", "pretrain.windows_per_image=16"])
    assert other.exit_code == 1 and "extract.scales" in other.output


def test_finetuning_starts_from_the_pretrained_fc_layers():
    torch.manual_seed(0)
    classes = ["a", "b"]
    pre = build_classifier(build_backbone("zf5", width=0.125), 3, LEVELS, "coarse_first", 8, 0.0).head.eval()
    pretrained = {"state_dict": pre.state_dict(), "labels": [*classes, BACKGROUND], "levels": list(LEVELS),
                  "concat_order": "coarse_first"}
    dim = pre.fc6.in_features
    head = SppHead(dim, 8, 2, dropout=0.0).eval()
    assert init_from_pretrained(head, pretrained, classes, LEVELS, "coarse_first", norm_scale=2.5) == "fc6, fc7, classifier"
    x = torch.rand(5, dim)
    with torch.no_grad():
        want = pre(x)
        got = head(x * 2.5)  # fine-tuning feeds norm-scaled vectors
    torch.testing.assert_close(got[:, 0], want[:, 2])  # background first in the head
    torch.testing.assert_close(got[:, 1:], want[:, :2])

    # other classes: fc6 and fc7 only; another width or pyramid: nothing, and why
    assert init_from_pretrained(SppHead(dim, 8, 2), dict(pretrained, labels=["x", "y", BACKGROUND]), classes, LEVELS,
                                "coarse_first", 1.0) == "fc6, fc7"
    assert "shape" in init_from_pretrained(SppHead(dim, 16, 2), pretrained, classes, LEVELS, "coarse_first", 1.0)
    assert "levels" in init_from_pretrained(SppHead(dim, 8, 2), pretrained, classes, (4, 2, 1), "coarse_first", 1.0)
    assert "not pretrained" in init_from_pretrained(SppHead(dim, 8, 2), None, classes, LEVELS, "coarse_first", 1.0)


def test_zf5_with_batch_norm(tmp_path):
    b = build_backbone("zf5", width=0.25, batch_norm=True)
    assert (b.stride, b.offset, b.receptive_field, b.out_channels) == (16, 20.0, 139, 64)
    assert "bn1.running_mean" in b.trunk.state_dict()
    # the LRNs are a no-op on BatchNorm's unit-scale activations, so the BN variant drops them
    assert not any(isinstance(m, WithinChannelLRN) for m in b.trunk)
    assert sum(isinstance(m, WithinChannelLRN) for m in build_backbone("zf5", width=0.25).trunk) == 2
    with torch.no_grad():
        for m in b.trunk.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
    save_backbone(b, tmp_path / "bn.pt")
    back = build_backbone("zf5", tmp_path / "bn.pt", width=0.25, batch_norm=True)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(back(x), b.eval()(x))
    with pytest.raises(ConfigError, match="batch_norm=True"):
        build_backbone("zf5", tmp_path / "bn.pt", width=0.25)
    with pytest.raises(ConfigError, match="zf5 only"):
        build_backbone("alexnet", batch_norm=True)
