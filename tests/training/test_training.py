"""Fine-tuning, SVMs, box regression and detection on a tiny cache, through the stage functions."""

import numpy as np
import pytest
import torch

from spp_detect.artifacts.layout import features_path
from spp_detect.config import load_config
from spp_detect.datasets import open_dataset
from spp_detect.detection.stage import run_detect
from spp_detect.evaluation.stage import run_eval
from spp_detect.training.bbox import decode, encode, fit_ridge
from spp_detect.training.stage import run_finetune, run_train_bbox, run_train_svm


def test_stages_end_to_end(tiny_run):
    cfg, run, root = tiny_run
    train, val, test = (open_dataset(str(root), s) for s in ("train", "val", "test"))
    ft = run_finetune(cfg, run, train, val)
    assert [h["iteration"] for h in ft["history"]] == [10, 20]
    assert all("val_loss" in h for h in ft["history"])
    assert ft["selected_iteration"] in (10, 20)
    assert run_finetune(cfg, run, train, val)["skipped"]  # current: nothing to do
    svm = run_train_svm(cfg, run, train)
    assert len(svm["final"]) == 2 and all(f["positives"] > 0 for f in svm["final"])
    bbox = run_train_bbox(cfg, run, train)
    assert sum(bbox["windows_per_class"]) > 0
    det = run_detect(cfg, run, test)
    assert det["detections"] > 0
    ev = run_eval(cfg, run, test)
    assert 0.0 <= ev["mAP"] <= 1.0 and "mAP" in ev["table"]
    from spp_detect.errors import OutputExistsError

    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_detect(cfg, run, test)


def test_bbox_encode_decode_round_trip():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 100, (50, 2))
    p = np.concatenate([p, p + rng.uniform(0, 80, (50, 2))], 1)
    g = p + rng.normal(0, 5, (50, 4))
    g[:, 2:] = np.maximum(g[:, 2:], g[:, :2])
    np.testing.assert_allclose(decode(p, encode(p, g)), g, atol=1e-9)
    np.testing.assert_allclose(decode(p, np.zeros((50, 4))), p, atol=1e-12)


def test_ridge_recovers_linear_map():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 10))
    w_true = rng.normal(size=(10, 4))
    y = x @ w_true + 0.5
    w, b = fit_ridge(x, y, 1e-6)
    np.testing.assert_allclose(w, w_true, atol=1e-4)
    np.testing.assert_allclose(b, 0.5, atol=1e-4)
    # the dual solve (N < D) gives the same answer as the primal
    xs, ys = x[:8], y[:8]
    w1, b1 = fit_ridge(xs, ys, 3.0)
    xc = xs - xs.mean(0)
    w2 = np.linalg.solve(xc.T @ xc + 3.0 * np.eye(10), xc.T @ (ys - ys.mean(0)))
    np.testing.assert_allclose(w1, w2, atol=1e-8)


@pytest.mark.parametrize("random_scale", [False, True])
def test_window_memory_draws_the_same_batches(tiny_run, random_scale):
    # pooled once and kept (float16) or pooled from the conv5 maps on every step: same numbers
    from spp_detect.features.cache import FeatureCache
    from spp_detect.training.finetune import BatchSampler, WindowMemory, build_samples

    _, run, root = tiny_run
    train = open_dataset(str(root), "train")
    cache = FeatureCache(features_path(run, "train"))
    samples = build_samples(cache, train, 0.5, 0.1)
    need = WindowMemory.bytes_needed(cache, samples, random_scale, flip=True)
    each_step = BatchSampler(cache, samples, 32, 4, 0.25, True, random_scale, 2.0, seed=3, memory_bytes=need - 1)
    kept = BatchSampler(cache, samples, 32, 4, 0.25, True, random_scale, 2.0, seed=3, memory_bytes=need)
    assert each_step.memory is None and kept.memory is not None
    for _ in range(6):
        (xa, ya), (xb, yb) = each_step.draw(), kept.draw()
        assert torch.equal(ya, yb)
        assert torch.equal(xa, xb)
    assert len(kept.memory._rows) > 0


def test_window_sample_rows_are_the_pooled_windows_and_draws_keep_the_sampler(tiny_run, tmp_path):
    # windows that do not fit in RAM: a fixed per-image sample pooled once into a float16 file;
    # every row must be its window pooled at its scale and mirror, and draws keep 25% foreground
    from spp_detect.features.cache import FeatureCache
    from spp_detect.training.finetune import BatchSampler, WindowSample, build_samples

    _, run, root = tiny_run
    train = open_dataset(str(root), "train")
    cache = FeatureCache(features_path(run, "train"))
    samples = build_samples(cache, train, 0.5, 0.1)
    path = tmp_path / "sample.npy"
    sample = WindowSample.open_or_build(path, cache, samples, 3, 5, True, True, 0, {"x": 1})
    assert {f for _, f in sample.entries} == {False, True}
    for k, f, off, n_fg, n_bg, labels, windows, scales in sample.index["entries"]:
        s = samples[k]
        assert n_fg == min(3, len(s.fg)) and n_bg == min(5, len(s.bg))
        assert set(windows[:n_fg]) <= set(s.fg.tolist()) and set(windows[n_fg:]) <= set(s.bg.tolist())
        np.testing.assert_array_equal(labels, s.fg_labels[np.searchsorted(s.fg, windows[:n_fg])])
        expect = cache.pool(s.image_id, np.array(windows), scale=np.array(scales), flip=f).half().numpy()
        np.testing.assert_array_equal(sample.rows[off : off + n_fg + n_bg], expect)
    built = path.stat().st_mtime_ns
    again = WindowSample.open_or_build(path, cache, samples, 3, 5, True, True, 0, {"x": 1})
    assert path.stat().st_mtime_ns == built and again.index == sample.index  # reused, not rebuilt
    other = WindowSample.open_or_build(path, cache, samples, 2, 5, True, True, 0, {"x": 1})
    assert other.index["settings"]["fg_per_image"] == 2  # other settings: made again
    sampler = BatchSampler(cache, samples, 32, 4, 0.25, True, True, 2.0, seed=3, memory_bytes=1, sample=other)
    assert sampler.memory is None and sampler.sample is other
    label_of = {}
    for _k, _f, off, n_fg, n_bg, labels, *_ in other.index["entries"]:
        for r in range(n_fg + n_bg):
            label_of[other.rows[off + r].tobytes()] = labels[r] if r < n_fg else 0
    fg = 0
    for _ in range(20):
        x, y = sampler.draw()
        assert x.shape == (32, cache.dim) and x.dtype == torch.float32
        # each drawn row is a row of the sample times the norm scale, with that row's label
        for row, label in zip((x / 2.0).half().numpy(), y.tolist(), strict=True):
            assert label_of[row.tobytes()] == label
        fg += int((y > 0).sum())
    assert 0.2 < fg / (20 * 32) < 0.3


def test_finetune_from_a_sample_when_windows_do_not_fit(tiny_run, tmp_path):
    import shutil
    from dataclasses import replace

    from spp_detect.config import merge

    cfg, run, root = tiny_run
    mine = tmp_path / "run"
    shutil.copytree(run / "features", mine / "features")
    cfg = merge(cfg, {"finetune": {"memory_mb": 1, "fg_per_image": 4, "bg_per_image": 8, "val_every": 20}})
    train, val = open_dataset(str(root), "train"), open_dataset(str(root), "val")
    ft = run_finetune(replace(cfg, run=str(mine)), mine, train, val)
    assert (mine / "models" / "head.pt").is_file() and ft["history"][-1]["iteration"] == 20
    # the sample was used, then removed with the head saved
    assert not list((mine / "models").glob("finetune_windows*"))


def test_batches_drawn_ahead_give_the_head_drawn_in_line(tiny_run, tmp_path, monkeypatch):
    # fine-tuning draws the next batches in a thread while a step runs: same batches, same order,
    # so the same head as drawing each batch right before its step (from the sample: VOC's path)
    import shutil
    from dataclasses import replace

    from spp_detect.config import merge
    from spp_detect.training import finetune as finetune_module
    from spp_detect.training.head import load_head

    cfg, run, root = tiny_run
    cfg = merge(cfg, {"finetune": {"memory_mb": 1, "fg_per_image": 4, "bg_per_image": 8, "iterations": 12,
                                   "val_every": 6}})
    train, val = open_dataset(str(root), "train"), open_dataset(str(root), "val")
    heads = {}
    for name in ("ahead", "in_line"):
        mine = tmp_path / name
        shutil.copytree(run / "features", mine / "features")
        if name == "in_line":
            monkeypatch.setattr(finetune_module, "prefetched", lambda items, depth=2: iter(items))
        run_finetune(replace(cfg, run=str(mine)), mine, train, val)
        heads[name] = load_head(mine / "models" / "head.pt")[0].state_dict()
    assert heads["ahead"].keys() == heads["in_line"].keys()
    for k in heads["ahead"]:
        torch.testing.assert_close(heads["ahead"][k], heads["in_line"][k], rtol=0, atol=0)


class _Payload:
    """Unpickling this calls a function: what a crafted checkpoint would do."""

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(_Payload.target),))


def test_resume_never_unpickles_code_from_a_checkpoint(tiny_run, tmp_path):
    import shutil
    from dataclasses import replace

    from spp_detect.errors import ArtifactError

    cfg, run, root = tiny_run
    mine = tmp_path / "run"
    shutil.copytree(run / "features", mine / "features")
    _Payload.target = str(tmp_path / "pwned")
    (mine / "models").mkdir()
    torch.save({"stamp": _Payload()}, mine / "models" / "finetune.ckpt")
    train = open_dataset(str(root), "train")
    with pytest.raises(ArtifactError, match="finetune.ckpt: not a fine-tuning checkpoint"):
        run_finetune(replace(cfg, run=str(mine)), mine, train, None, resume=True)
    assert not (tmp_path / "pwned").exists()


def test_resume_refuses_a_checkpoint_of_other_settings_naming_the_key(tiny_run, tmp_path):
    # as pretraining does: a checkpoint of other work is neither used nor silently thrown away
    import shutil
    from dataclasses import replace

    from spp_detect.config import merge
    from spp_detect.errors import ArtifactError

    cfg, run, root = tiny_run
    mine = tmp_path / "run"
    shutil.copytree(run / "features", mine / "features")
    (mine / "models").mkdir()
    train = open_dataset(str(root), "train")
    cfg = replace(merge(cfg, {"finetune": {"iterations": 4, "val_every": 4}}), run=str(mine))
    run_finetune(cfg, mine, train, None)
    assert (mine / "models" / "finetune.ckpt").is_file()
    (mine / "models" / "head.pt").unlink()
    other = merge(cfg, {"finetune": {"lr": 0.5}})
    with pytest.raises(ArtifactError, match=r"finetune.ckpt: checkpoint of another fine-tuning \(finetune="):
        run_finetune(other, mine, train, None, resume=True)
    resumed = run_finetune(cfg, mine, train, None, resume=True)  # its own settings: resumed
    assert resumed["history"][-1]["iteration"] == 4


def test_reservoir_keeps_everything_until_full_then_a_uniform_sample():
    from spp_detect.training.bbox import Reservoir

    rng = np.random.default_rng(0)
    small = Reservoir(50, rng)
    small.add(np.arange(30.0).reshape(10, 3), np.arange(40.0).reshape(10, 4))
    small.add(np.arange(30.0, 60.0).reshape(10, 3), np.arange(40.0, 80.0).reshape(10, 4))
    x, y = small.arrays()
    np.testing.assert_array_equal(x, np.arange(60.0).reshape(20, 3))  # under the size: all, in order
    np.testing.assert_array_equal(y, np.arange(80.0).reshape(20, 4))
    # over many streams of 1,000 rows in batches, a 100-row reservoir holds each row with p = 0.1
    hits = np.zeros(1000)
    for seed in range(300):
        r = Reservoir(100, np.random.default_rng(seed))
        for s in range(0, 1000, 37):
            ids = np.arange(s, min(s + 37, 1000), dtype=np.float64)[:, None]
            r.add(ids, np.repeat(ids, 4, 1))
        x, y = r.arrays()
        assert len(r) == 100 and len(np.unique(x[:, 0])) == 100
        np.testing.assert_array_equal(x[:, 0], y[:, 0])  # features and targets stay paired
        hits[x[:, 0].astype(int)] += 1
    p = hits / 300
    assert abs(p.mean() - 0.1) < 1e-9 and p[:100].mean() == pytest.approx(0.1, abs=0.02)
    assert p[-100:].mean() == pytest.approx(0.1, abs=0.02)


def test_detect_computes_each_conv5_window_once_with_the_same_detections(tiny_run):
    # windows with the same conv5 rectangle and scale share features: detect scores them once;
    # the detections must be those of scoring every window on its own
    from spp_detect.artifacts.layout import models_dir
    from spp_detect.detection.scoring import DetectParams, detect_image
    from spp_detect.evaluation.results_io import read_detections
    from spp_detect.features.cache import FeatureCache
    from spp_detect.training.bbox import BoxRegressors
    from spp_detect.training.stage import feature_provider, load_svms

    cfg, run, root = tiny_run
    train, val, test = (open_dataset(str(root), s) for s in ("train", "val", "test"))
    run_finetune(cfg, run, train, val)
    run_train_svm(cfg, run, train)
    run_train_bbox(cfg, run, train)
    run_detect(cfg, run, test, overwrite=True)
    got = read_detections(run / "detections" / "test.json", test)
    svms = load_svms(run)
    w, b = svms.weights, svms.bias
    cache = FeatureCache(features_path(run, "test"))
    provider, _ = feature_provider(cfg, run, cache, svms.features)
    regressors = BoxRegressors.load(models_dir(run) / "bbox.h5")
    d = cfg.detect
    params = DetectParams(d.score_floor, d.nms_iou, d.max_per_class, d.bbox_regression)
    n_windows = n_unique = 0
    for image_id in cache.image_ids:
        record, win = test.record(image_id), cache.windows(image_id)
        idx = np.arange(win.n_gt, len(win.boxes))
        n_windows += len(idx)
        n_unique += len({tuple(win.rects[i, win.best_scale[i]]) + (win.best_scale[i],) for i in idx})
        pooled = provider.pooled(image_id, idx, windows=win)
        for c, boxes, scores in detect_image(provider.from_pooled(pooled), pooled.numpy(), win.boxes[idx], w, b,
                                             regressors, record.height, record.width, params):
            mine = got[test.classes[c]]
            m = np.asarray(mine.image_ids) == image_id
            assert m.sum() == len(scores)
            order_got, order_ref = np.argsort(-np.asarray(mine.scores)[m]), np.argsort(-scores)
            np.testing.assert_allclose(np.asarray(mine.scores)[m][order_got], scores[order_ref], rtol=1e-4, atol=1e-4)
            # boxes as written (comp4/COCO round to 0.1 px): the same boxes
            np.testing.assert_allclose(np.asarray(mine.boxes)[m][order_got], boxes[order_ref], atol=0.51)
    assert n_unique < n_windows  # the data has shared windows, so the shortcut was exercised


def test_shared_rows_index_as_the_gathered_matrix():
    from spp_detect.detection.scoring import SharedRows

    rng = np.random.default_rng(0)
    rows, inverse = rng.normal(size=(5, 3)), rng.integers(0, 5, 12)
    shared, full = SharedRows(rows, inverse), rows[inverse]
    assert len(shared) == 12
    for index in (np.array([0, 11, 3, 3]), np.arange(12), np.zeros(0, np.int64)):
        np.testing.assert_array_equal(shared[index], full[index])


def test_finetune_takes_the_model_selection_split_on_the_command_line(tiny_run, tmp_path):
    import shutil

    from click.testing import CliRunner

    from spp_detect.cli.main import cli

    cfg, run, root = tiny_run
    mine = tmp_path / "run"
    shutil.copytree(run / "features", mine / "features")
    args = ["finetune", "--dataset", str(root), "--split", "train", "--run", str(mine), "--set", "data.val_split=",
            "--set", "finetune.fc_dim=16", "--set", "finetune.iterations=4", "--set", "finetune.val_every=2",
            "--set", "finetune.batch_size=16", "--set", "finetune.images_per_batch=2"]
    none = CliRunner().invoke(cli, args)
    assert none.exit_code == 0, none.output
    assert "val_loss" not in none.output  # no validation split: the last iterate
    chosen = CliRunner().invoke(cli, [*args, "--val-split", "val", "--overwrite"])
    assert chosen.exit_code == 0, chosen.output
    assert "val_loss" in chosen.output and 'val_split = "val"' in (mine / "config.toml").read_text()
    # --resume on a finished head: nothing is trained again or replaced
    head = (mine / "models" / "head.pt").read_bytes()
    resumed = CliRunner().invoke(cli, [*args, "--val-split", "val", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "nothing to do" in resumed.output and (mine / "models" / "head.pt").read_bytes() == head


def test_train_svm_names_the_classes_whose_fits_end_at_the_trivial_model(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from spp_detect.cli.main import cli
    from spp_detect.training.svm import trivial_objective
    from tests.helpers import make_voc_tree

    root = make_voc_tree(tmp_path / "voc", classes=("circle", "square", "star", "cross"), n_images=2,
                         splits={"train": [0, 1]})
    classes = open_dataset(str(root), "train").classes
    trivial = trivial_objective(0.001, 2.0, 100)  # the config's C and positive weight

    def fit(objective, collapsed=False, retrain=3):
        return {"positives": 100, "kept_negatives": 0 if collapsed else 500, "objective": objective,
                "collapsed": collapsed, "retrain": retrain}

    final = [fit(trivial, collapsed=True, retrain=6), fit(0.98 * trivial), fit(0.5 * trivial)]
    final += [{} for _ in classes[3:]]
    summary = {"path": str(tmp_path / "run" / "models" / "svm.h5"), "retrains": [6, 3, 3] + [0] * (len(classes) - 3),
               "final": final}
    monkeypatch.setattr("spp_detect.training.stage.run_train_svm", lambda *a, **k: summary)
    out = CliRunner().invoke(cli, ["train-svm", "--dataset", str(root), "--split", "train", "--run",
                                   str(tmp_path / "run"), "--set", "svm.C=0.001", "--set", "svm.positive_weight=2"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert "(100.0% of the trivial model's); retrain 6 collapsed: keeps retrain 5's model" in lines[0]
    assert "(98.0% of the trivial model's)" in lines[1] and "(50.0% of the trivial model's)" in lines[2]
    assert lines[3].endswith(f"{classes[3]}: no positives, no SVM")
    assert f"1 collapsed ({classes[0]}), 1 within 3% of the trivial model's objective ({classes[1]})" in out.output


def test_detect_writes_its_outputs_all_or_nothing(tiny_run, tmp_path, monkeypatch):
    import shutil

    import spp_detect.evaluation.results_io as results_io
    from spp_detect.config import merge
    from spp_detect.detection.stage import run_detect
    from spp_detect.errors import ArtifactError
    from spp_detect.training.stage import run_train_svm

    cfg, run, root = tiny_run
    mine = tmp_path / "run"
    shutil.copytree(run / "features", mine / "features")
    cfg = merge(cfg, {"svm": {"features": "pool"}, "detect": {"bbox_regression": False}})
    train, test = open_dataset(str(root), "train"), open_dataset(str(root), "test")
    run_train_svm(cfg, mine, train)
    run_detect(cfg, mine, test)
    det = mine / "detections"
    before = {p.relative_to(det): p.read_bytes() for p in det.rglob("*") if p.is_file()}
    assert len(before) == 2 + len(test.classes)  # test.json, its stamp, one comp4 file per class

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    # a failure after the comp4 files were written: the old outputs stay, whole and alone
    monkeypatch.setattr(results_io, "detections_to_coco_list", disk_full)
    with pytest.raises(OSError, match="No space"):
        run_detect(merge(cfg, {"detect": {"nms_iou": 0.5}}), mine, test, overwrite=True)
    after = {p.relative_to(det): p.read_bytes() for p in det.rglob("*") if p.is_file()}
    assert after == before and not list(det.glob(".staging-*"))
    # a detections folder that cannot be written: refused before any work, naming it
    shutil.rmtree(det)
    det.write_text("a file where the folder should be")
    with pytest.raises(ArtifactError, match="detections: cannot write here"):
        run_detect(cfg, mine, test)


def test_scores_through_the_device_path_equal_the_features_times_the_svms(tiny_run):
    from spp_detect.training.head import SppHead
    from spp_detect.training.svm_features import FeatureScaler

    torch.manual_seed(0)
    head = SppHead(40, 16, 3, dropout=0.0).eval()
    pooled = torch.rand(50, 40)
    w, b = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32), np.float32([-1, 0.5, 0])
    for device in ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]:
        scaler = FeatureScaler("fc7", 1.0, head, {"fc7_norm_mean": 4.0}, target=20.0, device=device)
        want = scaler.from_pooled(pooled) @ w.T + b
        np.testing.assert_allclose(scaler.scores(pooled, w, b), want, rtol=1e-5, atol=1e-5)
        # the torch path a GPU takes, run here on this device
        np.testing.assert_allclose(scaler.device_scores(pooled, w, b), want, rtol=1e-5, atol=1e-5)
    pool = FeatureScaler("pool", 2.0)
    np.testing.assert_allclose(pool.scores(pooled, np.ones((1, 40), np.float32), np.zeros(1, np.float32)),
                               pooled.sum(1, keepdim=True).numpy(), rtol=1e-5)


def test_bfloat16_fc7_stays_close_to_float32_and_leaves_the_head_alone():
    from spp_detect.training.head import SppHead
    from spp_detect.training.svm_features import FeatureScaler

    torch.manual_seed(0)
    head = SppHead(400, 64, 3, dropout=0.0).eval()
    pooled = torch.rand(80, 400)
    w, b = np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32), np.float32([-1, 0.5, 0])
    meta = {"fc7_norm_mean": 4.0}
    f32 = FeatureScaler("fc7", 1.0, head, meta, target=20.0)
    bf16 = FeatureScaler("fc7", 1.0, head, meta, target=20.0, precision="bfloat16")
    assert head.fc6.weight.dtype == torch.float32  # the caller's head is not converted
    a, c = f32.from_pooled(pooled), bf16.from_pooled(pooled)
    assert c.dtype == np.float32 and c.shape == a.shape
    rel = np.linalg.norm(a - c, axis=1) / np.linalg.norm(a, axis=1)
    assert 0 < rel.max() < 0.02  # rounded (8-bit mantissas), but summed in float32
    np.testing.assert_allclose(bf16.scores(pooled, w, b), c @ w.T + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bf16.device_scores(pooled, w, b), c @ w.T + b, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="precision"):
        FeatureScaler("fc7", 1.0, head, meta, precision="float16")


def _fine_tuned_copy(tiny_run, tmp_path):
    """A run folder of the module's features and fine-tuned head, without SVMs or regressors."""
    import shutil

    cfg, run, root = tiny_run
    train, val, test = (open_dataset(str(root), s) for s in ("train", "val", "test"))
    run_finetune(cfg, run, train, val)  # the module's head (skipped when current)
    mine = tmp_path / "run"
    shutil.copytree(run / "features", mine / "features")
    shutil.copytree(run / "models", mine / "models", ignore=shutil.ignore_patterns("svm*", "bbox*"))
    return cfg, mine, (train, test)


def test_svms_trained_on_bfloat16_fc7_are_applied_to_bfloat16_fc7(tiny_run, tmp_path, monkeypatch):
    from spp_detect.config import merge
    from spp_detect.errors import ArtifactError
    from spp_detect.evaluation.results_io import read_detections
    from spp_detect.features.cache import FeatureCache
    from spp_detect.training.stage import feature_provider, load_svms

    cfg, mine, (train, test) = _fine_tuned_copy(tiny_run, tmp_path)
    cfg = merge(cfg, {"detect": {"bbox_regression": False}})
    bf16 = merge(cfg, {"svm": {"fc7_precision": "bfloat16"}})
    run_train_svm(bf16, mine, train)
    svms = load_svms(mine)
    assert svms.features == "fc7" and svms.fc7_precision == "bfloat16"
    # SVMs of the other arithmetic are not current for float32 settings
    with pytest.raises(ArtifactError, match="--overwrite"):
        run_train_svm(cfg, mine, train)
    # auto is stamped as what it resolves to: bfloat16's SVMs are current on a device that has it, not elsewhere
    auto = merge(cfg, {"svm": {"fc7_precision": "auto"}})
    monkeypatch.setattr("spp_detect.training.svm_features.native_bfloat16", lambda device: True)
    assert run_train_svm(auto, mine, train)["skipped"]
    monkeypatch.setattr("spp_detect.training.svm_features.native_bfloat16", lambda device: False)
    with pytest.raises(ArtifactError, match="--overwrite"):
        run_train_svm(auto, mine, train)
    # detect reads the precision from svm.h5, whatever its own settings say
    run_detect(cfg, mine, test)
    got = read_detections(mine / "detections" / "test.json", test)
    cache = FeatureCache(features_path(mine, "test"))
    providers = {p: feature_provider(cfg, mine, cache, "fc7", precision=p)[0] for p in ("bfloat16", "float32")}
    gaps = {p: 0.0 for p in providers}
    for image_id in cache.image_ids:
        win = cache.windows(image_id)
        idx = np.arange(win.n_gt, len(win.boxes))
        for p, provider in providers.items():
            scores = provider.scores(provider.pooled(image_id, idx, windows=win), svms.weights, svms.bias)
            for c, name in enumerate(test.classes):
                # every detection's score is one of its class's window scores (NMS keeps some)
                kept = np.asarray(got[name].scores)[np.asarray(got[name].image_ids) == image_id]
                if len(kept):
                    gaps[p] = max(gaps[p], float(np.abs(kept[:, None] - scores[None, :, c]).min(1).max()))
    assert gaps["bfloat16"] < 1e-5 < gaps["float32"]


def test_auto_fc7_precision_is_bfloat16_only_where_the_device_multiplies_it(monkeypatch):
    from spp_detect.training import svm_features

    for native, want in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(svm_features, "native_bfloat16", lambda device, native=native: native)
        assert svm_features.resolve_fc7_precision("auto", "cpu") == want
        assert svm_features.resolve_fc7_precision("float32", "cpu") == "float32"
        assert svm_features.resolve_fc7_precision("bfloat16", "cpu") == "bfloat16"
    with pytest.raises(ValueError, match="float16"):
        svm_features.resolve_fc7_precision("float16", "cpu")


def test_head_log_odds_rank_windows_as_the_softmax_ratio():
    from spp_detect.training.head import SppHead
    from spp_detect.training.svm_features import FeatureScaler

    torch.manual_seed(0)
    head = SppHead(40, 16, 3, dropout=0.0).eval()
    torch.nn.init.normal_(head.cls.weight, std=0.5)  # a classifier that separates, not the init's near-zero one
    torch.nn.init.normal_(head.cls.bias, std=0.5)
    pooled = torch.rand(60, 40)
    scaler = FeatureScaler("fc7", 1.0, head, {"fc7_norm_mean": 4.0}, target=20.0)  # fc7 scaled by 5
    w, b = head.log_odds(scaler.fc7_scale)
    assert w.shape == (3, 16) and b.shape == (3,) and w.dtype == np.float32
    with torch.no_grad():
        log_p = torch.log_softmax(head(pooled), dim=1).numpy()
    # on the scaled fc7 the SVMs would see: log p(class) - log p(background), class by class
    np.testing.assert_allclose(scaler.scores(pooled, w, b), log_p[:, 1:] - log_p[:, :1], rtol=1e-4, atol=1e-4)


def test_softmax_classifier_writes_the_heads_log_odds_without_mining(tiny_run, tmp_path):
    from spp_detect.config import merge
    from spp_detect.errors import ArtifactError, ConfigError
    from spp_detect.training.head import load_head
    from spp_detect.training.stage import load_svms

    cfg, mine, (train, test) = _fine_tuned_copy(tiny_run, tmp_path)
    soft = merge(cfg, {"svm": {"classifier": "softmax"}, "detect": {"bbox_regression": False}})
    summary = run_train_svm(soft, mine, train)
    assert summary["classifier"] == "softmax" and not (mine / "models" / "svm.ckpt.h5").exists()
    svms = load_svms(mine)
    head, meta = load_head(mine / "models" / "head.pt")
    w, b = head.log_odds(cfg.extract.norm_target / meta["fc7_norm_mean"])
    assert svms.features == "fc7" and svms.classes == list(train.classes)
    np.testing.assert_array_equal(svms.weights, w)
    np.testing.assert_array_equal(svms.bias, b)
    assert run_train_svm(soft, mine, train)["skipped"]
    # SVM settings do not make the head's classifier stale; the paper's SVMs are another model
    assert run_train_svm(merge(soft, {"svm": {"C": 5.0}}), mine, train)["skipped"]
    with pytest.raises(ArtifactError, match="--overwrite"):
        run_train_svm(cfg, mine, train)
    assert run_detect(soft, mine, test)["detections"] > 0
    # the head's classifier scores fc7 only: refused when loaded, naming both settings
    with pytest.raises(ConfigError, match="svm.features = 'fc7', got 'pool'"):
        load_config(None, ["svm.classifier=softmax", "svm.features=pool"])
    with pytest.raises(ConfigError, match="svm.classifier"):
        run_train_svm(merge(soft, {"svm": {"features": "pool"}}), mine, train)


def test_finetune_optimizer_updates_as_plain_sgd():
    """The fine-tuning optimizer (fused where torch has it) takes the released solver's steps:
    checked against plain SGD written out by hand (biases at 2x lr, no weight decay on them)."""
    from spp_detect.training.finetune import _optimizer

    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    ref = {n: p.detach().clone() for n, p in head.named_parameters()}
    buf = {n: torch.zeros_like(p) for n, p in ref.items()}
    opt, _ = _optimizer(head, lr=0.05, lr_steps=[], momentum=0.9, weight_decay=0.01)
    x, y = torch.randn(16, 12), torch.randint(0, 3, (16,))
    for _ in range(4):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(x), y).backward()
        grads = {n: p.grad.detach().clone() for n, p in head.named_parameters()}
        opt.step()
        for n in ref:
            bias = n.endswith("bias")
            g = grads[n] + (0.0 if bias else 0.01) * ref[n]
            buf[n] = g if _ == 0 else 0.9 * buf[n] + g
            ref[n] = ref[n] - (0.1 if bias else 0.05) * buf[n]
        # the next step's gradients are taken at the reference's parameters
        with torch.no_grad():
            for n, p in head.named_parameters():
                assert torch.allclose(p, ref[n], rtol=1e-5, atol=1e-6), n
                p.copy_(ref[n])


def test_a_killed_train_svm_goes_on_from_its_checkpoint(tiny_run, tmp_path, monkeypatch):
    import shutil

    from spp_detect.artifacts.layout import svm_checkpoint_path, svm_path
    from spp_detect.config import merge
    from spp_detect.training import svm as svm_module
    from spp_detect.training.stage import load_svms

    cfg, run, root = tiny_run
    cfg = merge(cfg, {"svm": {"features": "pool", "checkpoint_minutes": 0.0}})
    train = open_dataset(str(root), "train")
    runs = {}
    for name in ("whole", "killed"):
        runs[name] = tmp_path / name
        shutil.copytree(run / "features", runs[name] / "features")
    run_train_svm(cfg, runs["whole"], train)
    assert not svm_checkpoint_path(runs["whole"]).exists()  # gone once svm.h5 is written

    add_image = svm_module.HardNegativeTrainer.add_image
    calls = []

    def killed_at_the_fourth_image(self, image):
        calls.append(image.image_id)
        if len(calls) == 4:
            raise KeyboardInterrupt
        add_image(self, image)

    # (the killed run keeps its cached rows in a file: where they live changes no model)
    on_disk = merge(cfg, {"svm": {"cache": "disk"}})
    monkeypatch.setattr(svm_module.HardNegativeTrainer, "add_image", killed_at_the_fourth_image)
    with pytest.raises(KeyboardInterrupt):
        run_train_svm(on_disk, runs["killed"], train)
    monkeypatch.setattr(svm_module.HardNegativeTrainer, "add_image", add_image)
    assert svm_checkpoint_path(runs["killed"]).is_file() and not svm_path(runs["killed"]).exists()

    mined = []
    monkeypatch.setattr(svm_module.HardNegativeTrainer, "add_image",
                        lambda self, image: (mined.append(image.image_id), add_image(self, image)))
    run_train_svm(on_disk, runs["killed"], train)
    assert mined == calls[3:] + [i for i in train.image_ids if i not in calls]  # the 4th image on, once each
    whole, resumed = load_svms(runs["whole"]), load_svms(runs["killed"])
    np.testing.assert_array_equal(resumed.weights, whole.weights)
    np.testing.assert_array_equal(resumed.bias, whole.bias)
    assert not svm_checkpoint_path(runs["killed"]).exists()
    assert [p.name for p in svm_path(runs["killed"]).parent.iterdir()] == ["svm.h5"]  # no cache file left

    # a checkpoint of other settings is refused, not mixed in; --overwrite starts over
    from spp_detect.errors import ArtifactError

    monkeypatch.setattr(svm_module.HardNegativeTrainer, "add_image", killed_at_the_fourth_image)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        run_train_svm(cfg, runs["killed"], train, overwrite=True)
    monkeypatch.setattr(svm_module.HardNegativeTrainer, "add_image", add_image)
    assert svm_path(runs["killed"]).is_file()  # the models of before stay until new ones are complete
    svm_path(runs["killed"]).unlink()
    other = merge(cfg, {"svm": {"C": 0.5}})
    with pytest.raises(ArtifactError, match=r"svm.ckpt.h5.*--overwrite"):
        run_train_svm(other, runs["killed"], train)
    run_train_svm(other, runs["killed"], train, overwrite=True)
    assert not svm_checkpoint_path(runs["killed"]).exists()
