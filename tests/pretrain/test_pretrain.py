"""Pretraining: crops, a tiny multi-size run through the CLI, resuming, image folders."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from spp_detect.backbones import build_backbone
from spp_detect.cli.main import cli
from spp_detect.core.boxes import iou_matrix
from spp_detect.datasets import open_dataset
from spp_detect.pretrain.train import (
    BACKGROUND,
    CropDataset,
    crop_source_from_detection,
    cut_crop,
    open_image_folder,
    random_background,
    with_context,
)
from tests.helpers import make_voc_tree

TINY = ["--backbone", "zf5", "--width", "0.125", "--fc-dim", "32", "--batch-size", "16"]


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny batches: on a shared CPU, thread hand-offs cost more than the arithmetic
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def voc(tmp_path):
    return make_voc_tree(
        tmp_path / "voc", n_images=10, size=(96, 128), splits={"train": list(range(7)), "val": [7, 8, 9]}
    )


# ---------------------------------------------------------------------------------------------
# crops


def test_random_background_keeps_clear_of_objects():
    rng = np.random.default_rng(0)
    avoid = np.array([[10, 10, 60, 60], [100, 20, 180, 90]], np.float32)
    for _ in range(200):
        box = random_background(rng, 120, 200, avoid, 0.3)
        assert box is not None
        assert iou_matrix(box[None], avoid).max() < 0.3
        assert 0 <= box[0] <= box[2] <= 199 and 0 <= box[1] <= box[3] <= 119
    # an object covering the whole image leaves no background: None, not an endless loop
    assert random_background(rng, 50, 50, np.array([[0, 0, 49, 49]], np.float32), 0.01) is None


def test_with_context_and_cut_crop():
    # 10x20 box grown by 10% of its size on each side, clipped at the image's left edge
    np.testing.assert_allclose(with_context(np.array([0, 10, 9, 29]), [0.1] * 4, 100, 100), [0, 8, 10, 31])
    img = np.zeros((30, 40, 3), np.uint8)
    img[:, :20] = 255  # left half white
    crop = cut_crop(img, [0, 0, 39, 29], 16)
    assert crop.shape == (16, 16, 3) and crop.dtype == np.uint8
    assert crop[0, 0, 0] == 255 and crop[0, -1, 0] == 0
    flipped = cut_crop(img, [0, 0, 39, 29], 16, flip=True)
    assert flipped[0, 0, 0] == 0 and flipped[0, -1, 0] == 255
    # a 1-pixel box still gives a full crop
    assert cut_crop(img, [5, 5, 5, 5], 8).shape == (8, 8, 3)


def test_crop_plans(voc):
    source = crop_source_from_detection(open_dataset(str(voc), "train"))
    # make_voc_tree marks object 1 of image 3 difficult: it is not cropped
    assert len(source.items[3].boxes) == 1 and len(source.items[3].avoid) == 2
    train = CropDataset(source, True, crops_per_image=3, background_crops=2, context=0.1, background_iou=0.3, seed=0)
    val = CropDataset(source, False, crops_per_image=3, background_crops=2, context=0.1, background_iou=0.3, seed=0)
    bg = len(source.classes)
    assert source.label_names()[bg] == BACKGROUND
    plan = train.plan(1, 96, 128)
    assert len(plan) == 5 and sum(lab == bg for _, lab, _ in plan) == 2
    train.epoch = 1
    assert [b.tolist() for b, _, _ in train.plan(1, 96, 128)] != [b.tolist() for b, _, _ in plan]  # new epoch, new crops
    val_plan = val.plan(1, 96, 128)
    val.epoch = 5
    assert [b.tolist() for b, _, _ in val.plan(1, 96, 128)] == [b.tolist() for b, _, _ in val_plan]  # fixed
    assert sum(lab != bg for _, lab, _ in val_plan) == len(source.items[1].boxes)  # every object once
    val.size = 40
    crops, labels = val[1]
    assert crops.shape == (len(val_plan), 40, 40, 3) and labels.tolist() == [lab for _, lab, _ in val_plan]


# ---------------------------------------------------------------------------------------------
# the command


def test_tiny_multi_size_run_through_the_cli(voc, tmp_path):
    run = tmp_path / "run"
    args = ["pretrain", "--dataset", str(voc), "--split", "train", "--val-split", "val", *TINY,
            "--sizes", "64,48", "--eval-sizes", "64,48,56", "--epochs", "3", "--run", str(run)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "val top-1" in result.output and "  56  " in result.output

    metrics = json.loads((run / "pretrain" / "metrics.json").read_text())
    assert [e["size"] for e in metrics["epochs"]] == [64, 48, 64]  # sizes take turns, epoch by epoch
    assert set(metrics["val"]) == {"64", "48", "56"}  # including a size never trained on
    assert metrics["classes"] == ["circle", "square", BACKGROUND]
    for v in metrics["val"].values():
        assert 0.0 <= v["top1"] <= 1.0 and v["n"] == sum(metrics["val_counts"]) > 0
    assert not (run / "pretrain" / "checkpoint.pt").exists()
    assert 'weights = "pretrained"' in (run / "config.toml").read_text()

    # the saved backbone loads back as --weights RUN, with its geometry and convention
    b = build_backbone("zf5", run, width=0.125)
    assert (b.out_channels, b.stride, b.offset) == (32, 16, 20.0)
    saved = torch.load(run / "pretrain" / "backbone.pt", weights_only=True)
    assert saved["sizes"] == [64, 48] and set(saved["val_top1"]) == {"64", "48", "56"}

    # the same command again: up to date, nothing retrained
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "up to date" in again.output, again.output
    # another setting without --overwrite: refused, naming what differs
    other = CliRunner().invoke(cli, [*args[:-4], "--epochs", "1", "--run", str(run)])
    assert other.exit_code == 1 and "pretrain.epochs" in other.output and "--overwrite" in other.output


def test_interrupted_run_resumes_from_its_checkpoint(voc, tmp_path, monkeypatch):
    import spp_detect.pretrain.train as pt

    run = tmp_path / "run"
    args = ["pretrain", "--dataset", str(voc), "--split", "train", "--val-split", "val", *TINY,
            "--sizes", "48", "--eval-sizes", "48", "--epochs", "2", "--run", str(run)]

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    real_evaluate = pt.evaluate_classifier
    monkeypatch.setattr(pt, "evaluate_classifier", interrupted)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    ckpt = torch.load(run / "pretrain" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and not (run / "pretrain" / "backbone.pt").exists()

    trained = []
    real_getitem = pt.CropDataset.__getitem__

    def spy(self, i):
        if self.train:
            trained.append(i)
        return real_getitem(self, i)

    monkeypatch.setattr(pt, "evaluate_classifier", real_evaluate)
    monkeypatch.setattr(pt.CropDataset, "__getitem__", spy)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert trained == []  # both epochs came from the checkpoint: only validation read images
    metrics = json.loads((run / "pretrain" / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert (run / "pretrain" / "backbone.pt").is_file() and not (run / "pretrain" / "checkpoint.pt").exists()


def test_image_folder_dataset(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    root = tmp_path / "folders"
    for name, colour in (("red", (0, 0, 255)), ("blue", (255, 0, 0))):
        (root / name).mkdir(parents=True)
        for i in range(10):
            img = rng.integers(0, 60, (40, 50, 3), dtype=np.uint8)
            img[8:32, 10:40] = colour
            cv2.imwrite(str(root / name / f"{i}.png"), img)
    train = open_image_folder(root, "train")
    val = open_image_folder(root, "val")
    assert train.classes == ("blue", "red") and not train.with_background
    assert len(train.items) == 16 and len(val.items) == 4  # every 5th image of a class is val
    assert not {it.path for it in train.items} & {it.path for it in val.items}

    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["pretrain", "--dataset", str(root), *TINY, "--sizes", "48", "--eval-sizes", "48",
                                      "--epochs", "2", "--optimizer", "adamw", "--lr", "0.001", "--run", str(run)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "pretrain" / "metrics.json").read_text())
    assert metrics["classes"] == ["blue", "red"] and metrics["val"]["48"]["n"] == 4


def test_bad_options_name_themselves(voc, tmp_path):
    base = ["pretrain", "--dataset", str(voc), "--split", "train", "--val-split", "val", "--run", str(tmp_path / "r")]
    result = CliRunner().invoke(cli, [*base, *TINY, "--sizes", "16", "--epochs", "1"])
    assert result.exit_code == 1 and "pretrain.sizes" in result.output and "16 px" in result.output
    result = CliRunner().invoke(cli, [*base, "--backbone", "zf6"])
    assert result.exit_code == 2 and "--backbone" in result.output and "squeezenet1_0" in result.output
    result = CliRunner().invoke(cli, [*base, "--sizes", "224,abc"])
    assert result.exit_code == 2 and "--sizes" in result.output
    result = CliRunner().invoke(cli, [*base, *TINY, "--sizes", "48", "--set", "pretrain.optimizer=adam"])
    assert result.exit_code == 1 and "pretrain.optimizer" in result.output and "adamw" in result.output


def test_pretrain_split_is_what_pretraining_reads(voc, tmp_path):
    # data.pretrain_split (the paper pretrains on more images than the detector trains on)
    # replaces data.train_split for this stage only; --split names it on the command line
    base = ["pretrain", "--dataset", str(voc), "--val-split", "val", *TINY, "--sizes", "48", "--eval-sizes", "48",
            "--epochs", "1"]
    for extra, want in ((["--set", "data.pretrain_split=val"], "/val/"), (["--split", "train"], "/train/")):
        run = tmp_path / want.strip("/")
        result = CliRunner().invoke(cli, [*base, *extra, "--run", str(run)])
        assert result.exit_code == 0, result.output
        assert want in json.loads((run / "pretrain" / "metrics.json").read_text())["stamp"]["train"]


def test_distractor_kinds_become_classes_of_their_own(tmp_path):
    from spp_detect.datasets.synth import generate_synth
    from spp_detect.pretrain.train import distractor_kinds_of

    generate_synth(tmp_path / "synth", train=6, val=3, test=0, seed=2, show_progress=False)
    train, val = open_dataset(str(tmp_path / "synth"), "train"), open_dataset(str(tmp_path / "synth"), "val")
    kinds = distractor_kinds_of(train)
    assert kinds == tuple(sorted(set(kinds))) and len(kinds) >= 3
    plain, named = crop_source_from_detection(train), crop_source_from_detection(train, kinds)
    assert named.classes == train.classes + kinds and plain.classes == train.classes
    assert named.label_names()[-1] == BACKGROUND and named.fingerprint != plain.fingerprint
    for rec, a, b in zip(train, plain.items, named.items, strict=True):
        n = len(a.boxes)
        np.testing.assert_array_equal(b.boxes[:n], a.boxes)  # the objects first, as without
        np.testing.assert_array_equal(b.boxes[n:], rec.distractor_boxes)
        assert [kinds[k - len(train.classes)] for k in b.labels[n:]] == list(rec.distractor_names)
        assert len(b.avoid) == len(a.avoid) + len(rec.distractor_names)  # backgrounds keep clear of them
    # a validation split names what training names: kinds only it has are left out
    only_train = crop_source_from_detection(val, kinds[:1])
    for rec, item in zip(val, only_train.items, strict=True):
        keep = [name == kinds[0] for name in rec.distractor_names]
        assert len(item.boxes) == len(rec.boxes) - int(rec.difficult.sum()) + sum(keep)


def test_distractor_classes_need_distractors(voc, tmp_path):
    result = CliRunner().invoke(cli, ["pretrain", "--dataset", str(voc), "--split", "train", "--val-split", "val",
                                      "--run", str(tmp_path / "r"), *TINY, "--sizes", "48", "--epochs", "1",
                                      "--set", "pretrain.distractor_classes=true"])
    assert result.exit_code == 1 and "pretrain.distractor_classes" in result.output and "no distractors" in result.output
    assert not (tmp_path / "r" / "pretrain" / "backbone.pt").exists()


def test_pretrain_stamp_names_explicit_channels_only_when_set():
    # backbones pretrained before backbone.channels existed keep their stamp
    from types import SimpleNamespace

    from spp_detect.config import load_config
    from spp_detect.pretrain.stage import pretrain_stamp

    src = SimpleNamespace(name="synth", split="train", fingerprint="f")
    plain = pretrain_stamp(load_config(None, ["backbone.width=0.25"]), src, src)
    wide = pretrain_stamp(load_config(None, ["backbone.channels=24,64,192,192,128"]), src, src)
    assert "channels" not in plain
    assert wide["channels"] == [24, 64, 192, 192, 128]
