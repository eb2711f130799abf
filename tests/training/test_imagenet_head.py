"""The head's fc layers from the trunk's ImageNet classifier (finetune.init = "imagenet")."""

import pytest
import torch

from spp_detect.backbones import build_backbone, save_backbone
from spp_detect.config import load_config
from spp_detect.core.pyramid import ordered_levels
from spp_detect.core.spp import spp_pool
from spp_detect.errors import ConfigError
from spp_detect.training.head import SppHead
from spp_detect.training.imagenet_head import imagenet_fc_layers, imagenet_pretrained

LEVELS = (6, 3, 2, 1)


def squeezenet_reference_fc6(conv5: torch.Tensor, w10: torch.Tensor, b10: torch.Tensor, levels) -> torch.Tensor:
    """The obvious form: conv10 on each level's mean bin, the levels averaged (loops, no layout)."""
    c = conv5.shape[1]
    per_level = []
    for n in levels:
        bins = torch.nn.functional.adaptive_max_pool2d(conv5, n)  # (1, C, n, n): the pyramid's bins
        per_level.append(bins.reshape(c, -1).mean(1))
    mean = torch.stack(per_level).mean(0)
    return w10.reshape(w10.shape[0], c) @ mean + b10


def test_squeezenet_fc6_is_conv10_on_each_levels_mean_bin_and_its_own_logits_on_a_uniform_window():
    torch.manual_seed(0)
    bb = build_backbone("squeezenet1_0", "none", keep_classifier=True)
    conv = bb.head[0][1]
    for order in ("coarse_first", "as_given"):
        fc = imagenet_fc_layers("squeezenet1_0", bb.head, 512, LEVELS, order)
        assert set(fc) == {"fc6.weight", "fc6.bias"}  # conv10 is the last layer before the outputs: no fc7
        assert fc["fc6.weight"].shape == (1000, 512 * 50)
        conv5 = torch.rand(1, 512, 9, 7)
        got = spp_pool(conv5, LEVELS, order)[0] @ fc["fc6.weight"].T + fc["fc6.bias"]
        want = squeezenet_reference_fc6(conv5, conv.weight.detach(), conv.bias.detach(), ordered_levels(LEVELS, order))
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # every cell alike: fc6 after its ReLU is the network's own classifier output for the window
    uniform = torch.rand(1, 512, 1, 1).expand(1, 512, 5, 8).contiguous()
    got = torch.relu(spp_pool(uniform, LEVELS, order) @ fc["fc6.weight"].T + fc["fc6.bias"])
    with torch.no_grad():
        torch.testing.assert_close(got, bb.head(uniform), rtol=1e-4, atol=1e-5)


def test_alexnet_fc6_and_fc7_reproduce_its_classifier_on_a_whole_224_image():
    torch.manual_seed(0)
    bb = build_backbone("alexnet", "none", keep_classifier=True)
    fc = imagenet_fc_layers("alexnet", bb.head, 256, LEVELS, "coarse_first")
    head = SppHead(256 * 50, 4096, 20, dropout=0.5).eval()
    with torch.no_grad():
        for key, value in fc.items():
            dict(head.named_parameters())[key].copy_(value)
        conv5 = bb(torch.randn(2, 3, 224, 224))
        assert conv5.shape[-2:] == (13, 13)
        got = head.fc7_features(spp_pool(conv5))
        # torchvision's pool5, avgpool, flatten, then Dropout-fc6-ReLU-Dropout-fc7-ReLU (eval mode)
        want = bb.head[3][:6](bb.head[2](bb.head[1](bb.head[0](conv5))))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_imagenet_init_is_refused_where_no_classifier_maps_onto_the_pyramid(tmp_path):
    with pytest.raises(ConfigError, match="backbone.name must be one of alexnet, squeezenet1_0, got 'zf5'"):
        load_config(None, ['finetune.init="imagenet"', 'backbone.name="zf5"'])
    with pytest.raises(ConfigError, match="finetune.fc_dim must be 1000, got 512"):
        load_config(None, ['finetune.init="imagenet"', 'backbone.name="squeezenet1_0"', "finetune.fc_dim=512"])
    load_config(None, ['finetune.init="imagenet"', 'backbone.name="squeezenet1_0"', "finetune.fc_dim=1000"])
    bb = build_backbone("alexnet", "none", keep_classifier=True)
    with pytest.raises(ConfigError, match=r"6x6 level; spp.levels is \[4, 2, 1\]"):
        imagenet_fc_layers("alexnet", bb.head, 256, (4, 2, 1), "coarse_first")
    # random weights, or a backbone pretrained here (no ImageNet classifier), are no ImageNet fc layers
    with pytest.raises(ConfigError, match="backbone.weights is none"):
        imagenet_pretrained("squeezenet1_0", "none", "auto", 512, LEVELS, "coarse_first")
    path = save_backbone(build_backbone("squeezenet1_0", "none"), tmp_path / "pretrained.pt")
    with pytest.raises(ConfigError, match="written by 'spp-detect pretrain'"):
        imagenet_pretrained("squeezenet1_0", str(path), "auto", 512, LEVELS, "coarse_first")


def test_shared_squeezenet_fc6_ranks_the_networks_own_top_classes_first(shared_weights):
    """On a real photo the initial fc6, from max-pooled bins, names the classes that the network's
    own classifier does (their sets of top-5 classes overlap)."""
    import cv2
    from skimage import data

    pre = imagenet_pretrained("squeezenet1_0", str(shared_weights), "auto", 512, LEVELS, "coarse_first")
    bb = build_backbone("squeezenet1_0", shared_weights, keep_classifier=True)
    image = cv2.resize(data.chelsea(), (227, 227), interpolation=cv2.INTER_LINEAR)
    with torch.no_grad():
        conv5 = bb(bb.preprocess([image]))
        own = bb.head(conv5)[0]
        fc6 = spp_pool(conv5)[0] @ pre["state_dict"]["fc6.weight"].T + pre["state_dict"]["fc6.bias"]
    assert own.argmax().item() == 285  # Egyptian cat
    assert 285 in fc6.topk(5).indices.tolist()


def test_finetune_starts_fc6_from_the_shared_squeezenet_classifier(tmp_path, shared_weights):
    from spp_detect.artifacts.layout import features_path, head_path
    from spp_detect.datasets import open_dataset
    from spp_detect.features.extract import (
        ExtractSettings,
        cache_meta,
        extract_split,
        finalize_index,
    )
    from spp_detect.training.head import load_head
    from spp_detect.training.stage import run_finetune
    from tests.helpers import jittered_proposals, make_voc_tree

    root = make_voc_tree(tmp_path / "voc", n_images=4, splits={"train": [0, 1, 2, 3]})
    run = tmp_path / "run"
    backbone = build_backbone("squeezenet1_0", shared_weights)
    settings = ExtractSettings(scales=(128,), flip=False, norm_sample_images=4)
    ds = open_dataset(str(root), "train")
    stamp = {"split": "train", "data_fingerprint": ds.fingerprint(), "image_files": ds.files_fingerprint()}
    extract_split(ds, jittered_proposals(ds), backbone, settings, features_path(run, "train"), stamp)
    finalize_index(features_path(run, "train"), ds.image_ids, stamp, cache_meta(backbone, settings), settings)
    # a learning rate too small to move the weights: head.pt holds the initial fc6
    cfg = load_config(None, [
        'backbone.name="squeezenet1_0"', f'backbone.weights="{shared_weights}"', 'finetune.init="imagenet"',
        "finetune.fc_dim=1000", "finetune.iterations=2", "finetune.lr=1e-20", "finetune.lr_steps=[2]",
        "finetune.val_every=2", "finetune.batch_size=16", "finetune.images_per_batch=2", "finetune.weight_decay=0",
    ])
    summary = run_finetune(cfg, run, ds, None)
    assert summary["initialised"] == "fc6"
    head, meta = load_head(head_path(run))
    want = imagenet_pretrained("squeezenet1_0", str(shared_weights), "auto", 512, LEVELS, "coarse_first")["state_dict"]
    # conv10's logits, scaled by one positive factor (it commutes with the ReLU) ...
    factor = meta["fc6_scale"]
    assert 0 < factor < 1  # logits of Caffe-range inputs are far larger than 20
    torch.testing.assert_close(head.fc6.weight * meta["pool_norm_scale"], factor * want["fc6.weight"], rtol=1e-4,
                               atol=1e-9)
    torch.testing.assert_close(head.fc6.bias, factor * want["fc6.bias"])
    # ... so that fc6's outputs on the training windows have mean norm 20, as every feature layer
    from spp_detect.features.cache import FeatureCache, mean_window_norm

    cache = FeatureCache(features_path(run, "train"))
    with torch.no_grad():
        norm = mean_window_norm(cache, 0, transform=lambda x: torch.relu(head.fc6(x * meta["pool_norm_scale"])))
    assert norm == pytest.approx(20.0, rel=1e-3)
