"""R-CNN's warped-window features (the baseline) against slow, obvious references."""

import numpy as np
import pytest
import torch

from spp_detect.features.rcnn import rcnn_warp


def test_warp_keeps_context_pixels_of_the_warped_size():
    # a 192-px box warped to 224 with 16 px of context: the crop grows by exactly 16 px a side,
    # so the warp is the image region itself, unscaled
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (300, 320, 3), dtype=np.uint8)
    out = rcnn_warp(image, np.array([40, 50, 231, 241]), size=224, context=16)
    np.testing.assert_array_equal(out, image[34:258, 24:248])


def test_warp_clips_at_the_border_and_is_always_full_size():
    image = np.zeros((40, 30, 3), np.uint8)
    for box in ([0, 0, 29, 39], [5, 5, 5, 5], [28, 38, 29, 39]):
        assert rcnn_warp(image, np.array(box, np.float32), size=64).shape == (64, 64, 3)


def test_warped_cache_holds_each_windows_own_pooled_crop(tmp_path):
    from spp_detect.backbones import build_backbone
    from spp_detect.core.spp import spp_pool
    from spp_detect.datasets import load_image, open_dataset
    from spp_detect.features.cache import FeatureCache
    from spp_detect.features.extract import (
        ExtractSettings,
        cache_meta,
        extract_split,
        finalize_index,
    )
    from tests.helpers import jittered_proposals, make_voc_tree

    root = make_voc_tree(tmp_path / "voc", n_images=2, size=(64, 80))
    ds = open_dataset(str(root), "train")
    torch.manual_seed(0)
    backbone = build_backbone("zf5", "none", width=0.25).eval()
    settings = ExtractSettings(scales=(64,), cache="warped", warp_size=64, norm_sample_images=1)
    path = tmp_path / "features.h5"
    props = jittered_proposals(ds, n=5)
    extract_split(ds, props, backbone, settings, path, {"x": 1})
    finalize_index(path, ds.image_ids, {"x": 1}, cache_meta(backbone, settings), settings)
    cache = FeatureCache(path)
    assert cache.mode == "warped" and cache.scales == (64,)
    for record in ds.records:
        image = load_image(record.path)
        win = cache.windows(record.image_id)
        got = cache.pool(record.image_id).numpy()
        # windows share a key (are scored once) exactly when their boxes, so their crops, are equal
        _, by_box = np.unique(win.boxes, axis=0, return_inverse=True)
        keys = cache.window_keys(win)
        np.testing.assert_array_equal(keys[:, None] == keys[None, :],
                                      by_box.reshape(-1)[:, None] == by_box.reshape(-1)[None, :])
        assert len(np.unique(keys)) > 1
        for i, box in enumerate(win.boxes):  # one window at a time, by hand
            crop = rcnn_warp(image, box, size=64)
            with torch.no_grad():
                ref = spp_pool(backbone(backbone.preprocess(crop))).numpy()[0]
            np.testing.assert_allclose(got[i], ref.astype(np.float16).astype(np.float32), rtol=2e-3, atol=1e-3)
        with pytest.raises(Exception, match="best scale"):
            cache.pool(record.image_id, scale=np.ones(len(win.boxes), np.int64))
