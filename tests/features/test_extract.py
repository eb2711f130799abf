"""Feature extraction and the cache: projection consistency, resume, stamps, pooled mode."""

import numpy as np
import pytest
import torch

from spp_detect.artifacts.parts import parts_dir
from spp_detect.core.spp import spp_pool
from spp_detect.datasets import load_image, open_dataset
from spp_detect.errors import ArtifactError
from spp_detect.features.cache import FeatureCache
from spp_detect.features.extract import ExtractSettings, cache_meta, extract_split, finalize_index


@pytest.fixture(scope="module")
def backbone():
    from spp_detect.backbones import build_backbone

    torch.manual_seed(0)
    return build_backbone("zf5", "none", width=0.25)


def _proposals(ds, n=30, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for r in ds:
        xy = rng.uniform(0, [r.width - 10, r.height - 10], (n, 2))
        wh = rng.uniform(4, 60, (n, 2))
        b = np.concatenate([xy, np.minimum(xy + wh, [r.width - 1, r.height - 1])], 1)
        out[r.image_id] = b.astype(np.float32)
    return out


def _extract(ds, props, backbone, path, settings, stamp=None, **kw):
    stamp = stamp or {"split": ds.split, "scales": list(settings.scales)}
    summary = extract_split(ds, props, backbone, settings, path, stamp, **kw)
    if not summary.get("skipped"):
        finalize_index(path, ds.image_ids, stamp, cache_meta(backbone, settings), settings)
    return summary


def test_cache_pools_what_a_direct_pass_gives(tmp_path, tiny_voc, backbone):
    ds = open_dataset(str(tiny_voc), "trainval")
    props = _proposals(ds)
    settings = ExtractSettings(scales=(96, 160), norm_sample_images=4, images_per_part=3)
    path = tmp_path / "features" / "trainval.h5"
    summary = _extract(ds, props, backbone, path, settings)
    assert summary["images"] == 4 and summary["bytes_per_image"] > 0
    with FeatureCache(path) as cache:
        assert cache.image_ids == ds.image_ids
        assert cache.dim == backbone.out_channels * 50
        assert cache.pool_norm_mean > 0
        r = ds.records[1]
        win = cache.windows(r.image_id)
        assert win.n_gt == len(r.boxes)
        np.testing.assert_allclose(win.boxes[: win.n_gt], r.boxes)
        np.testing.assert_allclose(win.proposals, props[r.image_id])
        assert win.rects.shape == (len(win.boxes), 2, 4)
        # a whole-map window at scale k pools exactly like spp_pool on a direct forward pass
        from spp_detect.core.geometry import resize_image

        img = load_image(r.path)
        resized, _ = resize_image(img, 160)
        with torch.inference_mode():
            fmap = backbone(backbone.preprocess(resized))
        stored = torch.from_numpy(cache.conv5(r.image_id, 1).astype(np.float32))
        np.testing.assert_allclose(stored.numpy(), fmap[0].numpy(), rtol=2e-3, atol=2e-3)
        h, w = stored.shape[1:]
        full = torch.from_numpy(np.array([[0, 0, w - 1, h - 1]]))
        from spp_detect.core.roi_spp import roi_spp_pool

        np.testing.assert_allclose(roi_spp_pool(stored, full), spp_pool(stored[None]), rtol=0, atol=0)
        feats = cache.pool(r.image_id)
        assert feats.shape == (len(win.boxes), cache.dim)
        sub = cache.pool(r.image_id, np.array([3, 0]), scale=np.array([0, 1]))
        assert torch.equal(sub[1], roi_spp_pool(stored, win.rects[[0], 1])[0])


def test_resume_after_interruption_and_stale_refusal(tmp_path, tiny_voc, backbone):
    ds = open_dataset(str(tiny_voc), "trainval")
    props = _proposals(ds)
    settings = ExtractSettings(scales=(96,), norm_sample_images=4, images_per_part=1)
    path = tmp_path / "f" / "trainval.h5"
    # a run that dies on the third image leaves two finished parts and no index
    bad = dict(props)
    del bad[ds.image_ids[2]]
    with pytest.raises(ArtifactError, match="no proposals for image"):
        extract_split(ds, bad, backbone, settings, path, {"split": "trainval", "scales": [96]})
    assert not path.exists()
    assert len(list(parts_dir(path).glob("*.h5"))) == 2
    (parts_dir(path) / ".r0-00002.h5.tmp-1-deadbeef").write_bytes(b"half a file")  # a killed write
    summary = _extract(ds, props, backbone, path, settings, stamp={"split": "trainval", "scales": [96]})
    assert summary["images"] == 2  # only the rest was computed
    with FeatureCache(path) as cache:
        assert sorted(cache.image_ids) == sorted(ds.image_ids)
    # the same command again: nothing to do; other settings: refused, naming the key
    assert extract_split(ds, props, backbone, settings, path, {"split": "trainval", "scales": [96]})["skipped"]
    with pytest.raises(ArtifactError, match=r"made with scales=\[96\], but this run has scales=\[128\]"):
        extract_split(ds, props, backbone, settings, path, {"split": "trainval", "scales": [128]})
    with pytest.raises(ArtifactError, match="split='trainval'.*split='test'"):
        FeatureCache(path, expect={"split": "test"})


def test_pooled_cache_and_flip(tmp_path, tiny_voc, backbone):
    ds = open_dataset(str(tiny_voc), "train")
    props = _proposals(ds, n=5)
    conv = ExtractSettings(scales=(96, 128), flip=True, norm_sample_images=2)
    pooled = ExtractSettings(scales=(96, 128), flip=True, cache="pooled", norm_sample_images=2)
    _extract(ds, props, backbone, tmp_path / "a.h5", conv)
    _extract(ds, props, backbone, tmp_path / "b.h5", pooled)
    with FeatureCache(tmp_path / "a.h5") as a, FeatureCache(tmp_path / "b.h5") as b:
        i = ds.image_ids[0]
        np.testing.assert_allclose(a.pool(i).numpy(), b.pool(i).numpy(), rtol=1e-2, atol=1e-2)
        fw = a.windows(i, flip=True)
        r = ds.records[0]
        np.testing.assert_allclose(fw.boxes[:, 0], r.width - 1 - a.windows(i).boxes[:, 2])
        assert a.pool(i, flip=True).shape == a.pool(i).shape
        with pytest.raises(ArtifactError, match="only each window's best scale"):
            b.pool(i, np.array([0]), scale=np.array([1 - b.windows(i).best_scale[0]]))


def test_extract_flip_mirrors_the_training_split_only(tmp_path, caplog):
    # extract.flip is for fine-tuning's mirrored training images; the test split never needs them
    from dataclasses import replace

    from spp_detect.config import load_config
    from spp_detect.features.stage import run_extract
    from tests.helpers import make_voc_tree, write_random_proposals

    root = make_voc_tree(tmp_path / "voc", n_images=4, size=(64, 80))
    cfg = load_config(None, ['backbone.name="zf5"', "backbone.width=0.25", "extract.scales=[64]", "extract.flip=true",
                             "extract.norm_sample_images=2", 'data.train_split="train"', 'data.test_split="test"'])
    run = tmp_path / "run"
    cfg = replace(cfg, run=str(run))
    for split, mirrored in (("train", True), ("test", False)):
        ds = open_dataset(str(root), split)
        write_random_proposals(run, ds)
        run_extract(cfg, run, ds)
        cache = FeatureCache(run / "features" / f"{split}.h5")
        assert cache.has_flip is mirrored and cache.stamp["flip"] is mirrored
    # an untrained trunk is said loudly
    assert any("UNTRAINED zf5" in r.message and r.levelname == "WARNING" for r in caplog.records)


def _contents(folder):
    """Every dataset's bytes and every attribute of every HDF5 file under ``folder``, by path."""
    import h5py

    out = {}
    for path in sorted(folder.rglob("*.h5")):
        with h5py.File(path, "r") as h5:
            def visit(name, obj, path=path):
                key = f"{path.relative_to(folder)}:{name}"
                attrs = {k: (v.tobytes() if isinstance(v, np.ndarray) else v) for k, v in obj.attrs.items()}
                data = None
                if isinstance(obj, h5py.Dataset):
                    data = obj[()].tolist() if obj.dtype.kind == "O" else obj[()].tobytes()
                out[key] = (data, attrs)

            h5.visititems(visit)
            out[f"{path.relative_to(folder)}:/"] = (None, dict(h5.attrs))
    return out


@pytest.mark.parametrize("cache", ["conv5", "pooled"])
def test_the_pipelined_extraction_writes_the_same_cache_as_the_simple_loop(tmp_path, tiny_voc, backbone, cache):
    # decoding and resizing in loader processes and writing parts in a thread change nothing
    ds = open_dataset(str(tiny_voc), "trainval")
    props = _proposals(ds)
    base = dict(scales=(64, 96), flip=True, cache=cache, norm_sample_images=4, images_per_part=1)
    _extract(ds, props, backbone, tmp_path / "simple" / "f.h5", ExtractSettings(**base, workers=0))
    _extract(ds, props, backbone, tmp_path / "piped" / "f.h5", ExtractSettings(**base, workers=2))
    simple, piped = _contents(tmp_path / "simple"), _contents(tmp_path / "piped")
    assert len(simple) > 10 and simple == piped


def test_a_writer_failure_reaches_the_caller_and_earlier_parts_stay(tmp_path, tiny_voc, backbone, monkeypatch):
    import spp_detect.features.extract as extract

    ds = open_dataset(str(tiny_voc), "trainval")
    calls = []
    real = extract._write_image

    def fail_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(extract, "_write_image", fail_on_third)
    path = tmp_path / "f" / "f.h5"
    with pytest.raises(OSError, match="No space"):
        extract_split(ds, _proposals(ds), backbone, ExtractSettings(scales=(64,), images_per_part=1), path,
                      {"split": ds.split})
    assert len(list(parts_dir(path).glob("*.h5"))) == 2 and not path.exists()


def test_bfloat16_autocast_stays_close_to_float32_and_float16_needs_cuda(tiny_voc, backbone):
    from spp_detect.errors import SppError
    from spp_detect.features.extract import Extractor

    ds = open_dataset(str(tiny_voc), "trainval")
    image, boxes = load_image(ds.records[0].path), _proposals(ds)[ds.records[0].image_id]
    full = Extractor(backbone, ExtractSettings(scales=(96,))).run(image, boxes)
    low = Extractor(backbone, ExtractSettings(scales=(96,), precision="bfloat16")).run(image, boxes)
    err = float((low["maps"][0] - full["maps"][0]).norm() / full["maps"][0].norm())
    assert 0 < err < 0.05  # bfloat16 keeps 8 bits of mantissa: about 1% error, not nothing
    np.testing.assert_array_equal(low["rects"], full["rects"])
    if not torch.cuda.is_available():
        with pytest.raises(SppError, match="float16 needs a CUDA device"):
            Extractor(backbone, ExtractSettings(scales=(96,), precision="float16")).run(image, boxes)


def test_precision_is_stamped_only_when_not_float32():
    from spp_detect.config import load_config
    from spp_detect.features.stage import features_stamp

    class _Backbone:
        name = "zf5"
        input_convention = "caffe"

        class trunk:  # noqa: N801 - a stand-in with what backbone_fingerprint reads
            @staticmethod
            def state_dict():
                return {}

    class _Ds:
        name, split = "d", "train"

        def fingerprint(self):
            return "f"

        def files_fingerprint(self):
            return "g"

    plain = features_stamp(load_config(None, []), _Ds(), "p", _Backbone())
    low = features_stamp(load_config(None, ["extract.precision=bfloat16"]), _Ds(), "p", _Backbone())
    assert "precision" not in plain and low["precision"] == "bfloat16"
