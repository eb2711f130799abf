import logging

import numpy as np
import pytest

from spp_detect.core.boxes import iou_matrix
from spp_detect.features.cache import feature_keys, rect_keys
from spp_detect.training import svm
from spp_detect.training.sparse_rows import CompactRows, SparseRows
from spp_detect.training.svm import (
    HardNegativeTrainer,
    SvmImage,
    _fit,
    gather_positives,
    train_svms,
)


def _image(rng, i, dim=8, n_windows=60, n_classes=2, present=None):
    """Ground truth of the ``present`` classes (default all), each a Gaussian blob in feature
    space with its class's dimension raised; proposals elsewhere. Features are float16 values
    (what the trainer stores), post-ReLU-like (a third of them zero)."""
    present = list(range(n_classes)) if present is None else list(present)
    gt_boxes = np.array([[10 + 40 * k, 10, 40 + 40 * k, 50] for k in range(len(present))], np.float32).reshape(-1, 4)
    gt_labels = np.array(present, np.int64)
    props = rng.uniform(0, 200, (n_windows, 2))
    props = np.concatenate([props, props + rng.uniform(5, 60, (n_windows, 2))], 1).astype(np.float32)
    boxes = np.concatenate([gt_boxes, props])
    feats = rng.normal(0, 1, (len(boxes), dim)).astype(np.float32)
    feats[rng.random(feats.shape) < 0.33] = 0
    for k, c in enumerate(present):
        feats[k, c % dim] += 4.0
    feats = feats.astype(np.float16).astype(np.float32)
    labels = np.array(present + [-1] * n_windows)
    keys = np.arange(len(boxes)) + 1000 * i
    return SvmImage(f"{i}", feats, boxes, keys, labels, gt_boxes, gt_labels)


def _positives(images, n_classes, dim):
    return gather_positives(((im.features[im.window_labels >= 0], im.window_labels[im.window_labels >= 0])
                             for im in images), n_classes, dim)


def test_svm_separates_and_mines():
    rng = np.random.default_rng(0)
    images = [_image(rng, i) for i in range(40)]
    w, b, logs, memory = train_svms(_positives(images, 2, 8), images, 8, C=0.1, retrain_every=50, workers=1)
    assert w.shape == (2, 8) and b.shape == (2,)
    test = _image(np.random.default_rng(99), 0)
    scores = test.features @ w.T + b
    assert scores[0, 0] > np.median(scores[2:, 0]) and scores[1, 1] > np.median(scores[2:, 1])
    # retrained after the first image, during the pass and at the end, with cache sizes logged
    assert len(logs[0]) >= 3 and all("objective" in e for e in logs[0])
    assert memory["peak_cached_negatives"] > 0


def test_first_image_all_negatives_then_only_hard():
    rng = np.random.default_rng(1)
    first = _image(rng, 0)
    t = HardNegativeTrainer(_positives([first], 2, 8)[:1], 8, retrain_every=10**9, evict_threshold=-np.inf)
    t.add_image(first)
    st = t.states[0]
    n_first = len(st.neg_ids)
    assert n_first == 60 - int((iou_matrix(first.boxes[2:], first.gt_boxes[:1]) >= 0.3).sum())
    assert st.retrains == 1  # every class is trained right after the first image
    # a model that scores everything -5 admits no new negatives
    st.w[:] = 0
    st.b = -5.0
    t.add_image(_image(rng, 1))
    assert len(st.neg_ids) == n_first
    # one that scores everything 0 (> -1.0001) takes every negative of the next image
    st.b = 0.0
    t.add_image(_image(rng, 2))
    assert len(st.neg_ids) > n_first


def test_duplicates_count_once_and_eviction():
    rng = np.random.default_rng(2)
    img = _image(rng, 0, n_classes=1)
    t = HardNegativeTrainer(_positives([img], 1, 8), 8, retrain_every=10**9, evict_threshold=-np.inf)
    t.add_image(img)
    n = len(t.states[0].neg_ids)
    t.states[0].b = 0.0  # everything is hard now
    t.add_image(img)  # the same windows (same keys) again
    assert len(t.states[0].neg_ids) == n
    t.evict_threshold = 10.0  # every negative scores below: all evicted after the retrain
    t._retrain(t.states)
    assert len(t.states[0].neg_ids) == 0 and t.store.live_rows == 0 and not t._where


def test_equal_rectangles_of_different_images_are_different_negatives():
    # window keys name a conv5 rectangle and scale within an image: a 3x3-cell window at the
    # same place in two images is two negatives, not a duplicate
    rng = np.random.default_rng(4)
    a = _image(rng, 0, n_classes=1)
    t = HardNegativeTrainer(_positives([a], 1, 8), 8, retrain_every=10**9, evict_threshold=-np.inf)
    b = SvmImage("another", a.features + 0.5, a.boxes, a.keys.copy(), a.window_labels, a.gt_boxes, a.gt_labels)
    t.add_image(a)
    n = len(t.states[0].neg_ids)
    t.states[0].b = 0.0
    t.add_image(b)
    assert len(t.states[0].neg_ids) == 2 * n


def test_fit_objective_and_bias_feature():
    rng = np.random.default_rng(3)
    pos = rng.normal(2, 1, (30, 4)).astype(np.float32)
    neg = rng.normal(-2, 1, (60, 4)).astype(np.float32)
    y = np.concatenate([np.ones(30), -np.ones(60)])
    x = np.concatenate([pos, neg])
    w, b, obj, converged, scores = _fit(x, y, 1.0, 2.0, 10.0, 0)
    acc = ((pos @ w + b) > 0).mean() * 0.5 + ((neg @ w + b) < 0).mean() * 0.5
    assert acc > 0.95 and obj > 0 and converged
    # the scores it returns are the float32 model's, as the miner computes them
    np.testing.assert_allclose(scores, x.astype(np.float64) @ w.astype(np.float64) + b, rtol=1e-12)


def test_sparse_and_dense_inputs_give_the_same_model():
    rng = np.random.default_rng(6)
    x = rng.normal(0, 1, (300, 50)).astype(np.float32)
    x[rng.random(x.shape) < 0.6] = 0
    x[:100, :5] += 1.5
    x = x.astype(np.float16).astype(np.float32)
    y = np.concatenate([np.ones(100), -np.ones(200)])
    dense = _fit(x, y, 0.01, 2.0, 10.0, 0)
    sparse = _fit(CompactRows.from_dense(x).to_csr(), y, 0.01, 2.0, 10.0, 0)
    np.testing.assert_allclose(dense[0], sparse[0], rtol=1e-6, atol=1e-7)
    assert dense[1] == pytest.approx(sparse[1], abs=1e-7) and dense[2] == pytest.approx(sparse[2])


@pytest.mark.parametrize("solver", svm.SOLVERS)
def test_a_fit_that_hits_the_iteration_cap_is_logged_and_recorded(monkeypatch, caplog, solver):
    # overlapping classes need more than two passes; with the cap at 2 the fit stops early, and
    # the retrain log and a warning naming the class must say so
    rng = np.random.default_rng(5)
    pos = CompactRows.from_dense(rng.normal(1.5, 1, (40, 8)).astype(np.float32))
    t = HardNegativeTrainer([pos], 8, C=0.1, retrain_every=10**9, solver=solver)
    t.add_image(_image(rng, 0, n_classes=1))
    assert t.states[0].log[-1]["converged"] is True
    # from zero again (a warm start from the optimum it just reached would need no second pass)
    t.states[0].alpha_pos, t.states[0].alpha_neg = np.zeros(0), np.zeros(len(t.states[0].neg_ids))
    monkeypatch.setattr(svm, "MAX_ITER", 2)
    with caplog.at_level(logging.WARNING, logger="spp_detect.training.svm"):
        t._retrain(t.states)
    assert t.states[0].log[-1]["converged"] is False
    assert any("class 0 retrain 2" in r.message and "svm.C" in r.message for r in caplog.records)


def test_window_keys_unique_per_rect_and_scale():
    rects = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 2]])
    k = rect_keys(rects, np.array([0, 1, 0]))
    assert len(set(k.tolist())) == 3
    assert rect_keys(rects[:1], np.array([0]))[0] == k[0]


def test_warped_windows_share_keys_only_when_their_boxes_are_equal():
    # R-CNN's windows have no conv5 cells (all-zero rectangles): keying them by rectangle made
    # every window of an image one window, so mining saw one negative an image and detection gave
    # every window the first one's score
    boxes = np.array([[0, 0, 9, 9], [5, 5, 20, 20], [0, 0, 9, 9], [0, 0, 9, 10]], np.float32)
    best = np.zeros(4, np.int64)
    rects = np.zeros((4, 1, 4), np.int64)
    k = feature_keys("warped", boxes, best, rects)
    assert k[0] == k[2] and len({k[0], k[1], k[3]}) == 3
    # pooled from maps, the same rectangle at the same scale is the same window whatever the box
    same = feature_keys("conv5", boxes, best, rects)
    assert len(set(same.tolist())) == 1


# ------------------------------------------------------------------------------------------
# the miner against a slow, obvious reference, on a stream where positives arrive late


def _reference_mining(positives, images, C, retrain_every, max_negatives, hard=-1.0001, evict=-1.2, neg_iou=0.3,
                      tol=0.1):
    """R-CNN's mining written plainly: dense rows, dicts, loops; every positive known up front."""
    k = len(positives)
    w = np.zeros((k, images[0].features.shape[1]), np.float32)
    b = np.full(k, -1.0)
    trained = [c for c in range(k) if len(positives[c])]
    caches = [{} for _ in range(k)]  # (image, key) -> row, in insertion order
    new = [0] * k

    def fit(c):
        neg = np.array(list(caches[c].values())).reshape(-1, w.shape[1])
        x = np.concatenate([positives[c], neg])
        y = np.concatenate([np.ones(len(positives[c])), -np.ones(len(neg))])
        w[c], b[c], *_ = _fit(x, y, C, 2.0, 10.0, 0, tol)
        scores = {key: float(row.astype(np.float64) @ w[c].astype(np.float64) + b[c]) for key, row in caches[c].items()}
        kept = [key for key in caches[c] if scores[key] >= evict]
        if len(kept) > max_negatives:
            kept = sorted(kept, key=lambda key: -scores[key])[:max_negatives]
            kept = [key for key in caches[c] if key in set(kept)]
        caches[c] = {key: caches[c][key] for key in kept}
        new[c] = 0

    for n, img in enumerate(images):
        scores = img.features @ w[trained].T + b[trained].astype(np.float32)
        for j, c in enumerate(trained):
            gt_c = img.gt_boxes[img.gt_labels == c]
            for i in range(len(img.boxes)):
                if img.window_labels[i] >= 0:
                    continue
                if len(gt_c) and iou_matrix(img.boxes[i : i + 1], gt_c).max() >= neg_iou:
                    continue
                if n > 0 and not scores[i, j] > hard:
                    continue
                key = (img.image_id, int(img.keys[i]))
                if key not in caches[c]:
                    caches[c][key] = img.features[i]
                    new[c] += 1
        for c in trained:
            if n == 0 or new[c] > retrain_every:
                fit(c)
    for c in trained:
        fit(c)
    return w, b.astype(np.float32), [len(caches[c]) for c in range(k)]


def _late_positives_stream(n_classes=6, n_images=24, dim=12):
    """Image i holds ground truth of class i // 4 only: the first images have no positive of most
    classes (the stream that made streamed-positive caches explode); duplicate windows too."""
    rng = np.random.default_rng(7)
    images = []
    for i in range(n_images):
        im = _image(rng, i, dim=dim, n_windows=50, n_classes=n_classes, present=[(i // 4) % n_classes])
        im.keys[-5:] = im.keys[-10:-5]  # five windows seen twice
        im.features[-5:] = im.features[-10:-5]
        images.append(im)
    return images


@pytest.mark.parametrize("workers,on_disk,solver", [(1, False, "liblinear"), (2, False, "liblinear"),
                                                    (1, True, "liblinear"), (1, False, "dcd"), (2, True, "dcd")])
def test_mining_matches_reference_with_positives_first_and_bounded_caches(workers, on_disk, solver, tmp_path):
    # liblinear: the very fits of the reference (same calls, same tolerance); dcd, warm-started
    # from each class's last fit: the same optimum, so both solve tightly
    images = _late_positives_stream()
    k, dim, retrain_every, cap = 6, 12, 40, 12  # the cap binds: 7-34 negatives survive -1.2 uncapped
    positives = _positives(images, k, dim)

    sizes = []

    class Watched(HardNegativeTrainer):
        def add_image(self, image):
            super().add_image(image)
            sizes.append(([len(st.neg_ids) for st in self.states], self.store.live_rows))

    # about one class's fit here: with workers=2, mostly one fit at a time
    one_fit = svm._bytes_per_nonzero(solver) * 12 * 80
    tol = 0.1 if solver == "liblinear" else 1e-7
    t = Watched(positives, dim, C=0.05, retrain_every=retrain_every, max_negatives=cap, workers=workers,
                fit_memory_bytes=one_fit, store_dir=tmp_path if on_disk else None, solver=solver, tol=tol)
    for im in images:
        t.add_image(im)
    w, b = t.finish()
    ref_w, ref_b, ref_sizes = _reference_mining([p.dense() for p in positives], images, 0.05, retrain_every, cap,
                                                tol=tol)
    close = dict(rtol=1e-5, atol=1e-6) if solver == "liblinear" else dict(rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(w, ref_w, **close)
    np.testing.assert_allclose(b, ref_b, **close)
    assert [len(st.neg_ids) for st in t.states] == ref_sizes
    # every class's cache stays under cap + retrain_every + one image's windows, and the shared
    # store holds each cached window once
    per_image = 50
    assert max(max(s) for s, _ in sizes) <= cap + retrain_every + per_image
    assert all(rows <= sum(s) for s, rows in sizes)
    assert t.store.live_rows == len(set().union(*map(set, (st.neg_ids.tolist() for st in t.states))))


def test_train_svms_gathers_every_positive_before_mining():
    images = _late_positives_stream()
    positives = _positives(images, 6, 12)
    assert [len(p) for p in positives] == [4, 4, 4, 4, 4, 4]
    w, b, logs, _ = train_svms(positives, images, 12, C=0.05, retrain_every=40, max_negatives=60, workers=1)
    # from the first retrain on, every class saw all its positives
    assert all(log[0]["positives"] == 4 for log in logs)


def test_a_class_without_positives_is_not_trained_and_caches_nothing():
    images = _late_positives_stream(n_classes=6, n_images=8)  # classes 2..5 never appear
    positives = _positives(images, 6, 12)
    t = HardNegativeTrainer(positives, 12, retrain_every=40, workers=1)
    for im in images:
        t.add_image(im)
    w, b = t.finish()
    assert [len(st.neg_ids) for st in t.states[2:]] == [0] * 4
    assert np.all(w[2:] == 0) and np.all(b[2:] == -1)


# ------------------------------------------------------------------------------------------
# the sparse store against dense arrays


def test_sparse_rows_round_trip_release_and_compaction():
    rng = np.random.default_rng(8)
    store = SparseRows(30)
    dense = {}
    for _ in range(6):
        x = rng.normal(0, 1, (50, 30)).astype(np.float16).astype(np.float32)
        x[rng.random(x.shape) < 0.5] = 0
        for i, row in zip(store.add(x).tolist(), x, strict=True):
            dense[i] = row
    ids = np.array(sorted(dense))
    np.testing.assert_array_equal(store.take(ids[::-1]).dense(), np.array([dense[i] for i in ids[::-1]]))
    w = rng.normal(0, 1, 30)
    np.testing.assert_allclose(store.scores(ids, w, 0.5), np.array([dense[i] for i in ids]) @ w + 0.5, rtol=1e-9)
    # a row held twice survives one release; dropping most rows compacts the arrays, ids stay valid
    store.retain(ids[:3])
    gone = store.release(ids[:250])
    assert set(gone.tolist()) == set(ids[3:250].tolist())
    keep = np.concatenate([ids[:3], ids[250:]])
    assert store.live_rows == len(keep)
    np.testing.assert_array_equal(store.take(keep).dense(), np.array([dense[i] for i in keep]))
    with pytest.raises(KeyError):
        store.take(ids[5:6])


@pytest.mark.parametrize("on_disk", [False, True])
def test_sparse_rows_memory_stays_near_the_live_rows_under_churn(tmp_path, on_disk):
    # the miner adds hard negatives and evicts easy ones after every retrain: the store's arrays
    # must stay near the most rows it held live (compaction at a quarter dead, freed pages given
    # back), not twice or more (doubling growth, compaction only at half dead)
    from spp_detect.training.sparse_rows import DEAD_FRACTION

    rng = np.random.default_rng(3)
    dim, per_row = 2000, 1000
    store = SparseRows(dim, tmp_path if on_disk else None)
    live = np.zeros(0, np.int64)
    worst, most = 0.0, 0  # most: the largest number of live rows so far
    kept = {}  # a few rows to read back after the compactions
    for step in range(40):
        x = np.zeros((2000, dim), np.float32)
        x[:, :per_row] = rng.uniform(0.1, 1.0, (2000, per_row))
        x[:, per_row - step - 1] = 0  # rows of different lengths
        ids = store.add(x)
        kept.update({int(ids[k]): x[k].astype(np.float16) for k in range(0, len(ids), 400)})
        live = np.concatenate([live, ids])
        most = max(most, len(live))
        worst = max(worst, store.nbytes / (4 * per_row * most))  # 4 bytes a live value
        drop = rng.random(len(live)) < 0.3
        store.release(live[drop])
        for i in live[drop].tolist():
            kept.pop(i, None)
        live = live[~drop]
        worst = max(worst, store.nbytes / (4 * per_row * most))
    # (the rows' own arrays, a few bytes a row and one int64 per id ever stored, take the rest)
    assert worst <= 1 + DEAD_FRACTION + 0.1
    assert store.live_rows == len(live)
    ids = rng.permutation(np.array(sorted(kept)))  # read back in any order
    assert len(ids) > 10
    np.testing.assert_array_equal(store.take(ids).dense(), np.array([kept[i] for i in ids.tolist()]))
    np.testing.assert_array_equal(store.row_nnz(ids), [np.count_nonzero(kept[i]) for i in ids.tolist()])
    assert not list(tmp_path.iterdir())  # a store's file is unlinked at once: nothing is left behind


def test_compact_rows_use_four_bytes_per_non_zero():
    x = np.zeros((10, 1000), np.float32)
    x[:, :100] = 1.0
    rows = CompactRows.from_dense(x)
    assert rows.nnz == 1000 and rows.data.nbytes + rows.indices.nbytes == 4000


@pytest.mark.parametrize("solver", svm.SOLVERS)
def test_a_fit_over_the_memory_budget_keeps_the_hardest_negatives(caplog, solver):
    from spp_detect.training.svm import fit_bytes

    images = _late_positives_stream(n_images=6)
    positives = _positives(images, 6, 12)
    budget = fit_bytes(positives[0], CompactRows.from_dense(np.ones((20, 12), np.float32)), solver)  # ~20 rows
    fitted = []  # (bytes the fit takes, negatives in it)

    class Watched(HardNegativeTrainer):
        def _fit_within_budget(self, st):
            super()._fit_within_budget(st)
            fitted.append((fit_bytes(st.positives, self.store.take(st.neg_ids), solver), len(st.neg_ids)))

    t = Watched(positives, 12, C=0.05, retrain_every=10**9, fit_memory_bytes=budget, workers=1, solver=solver)
    with caplog.at_level(logging.WARNING, logger="spp_detect.training.svm"):
        t.add_image(images[0])  # ~45 negatives for each class, over the budget: trimmed before its fit
    assert all(b <= budget for b, _ in fitted) and 20 <= min(n for _, n in fitted) < 45
    assert any("over svm.memory_mb" in r.message for r in caplog.records)


def test_a_fit_that_collapses_to_the_trivial_solution_is_not_taken(caplog):
    # positives drawn like the negatives: once the hard negatives pile up, the optimum is w = 0,
    # b = -1 (every window -1, all hard). The class keeps its previous model and says so.
    rng = np.random.default_rng(9)
    dim = 8
    pos = CompactRows.from_dense(np.abs(rng.normal(0, 1, (30, dim))).astype(np.float16).astype(np.float32))
    t = HardNegativeTrainer([pos], dim, C=0.001, retrain_every=100, workers=1)
    st = t.states[0]
    with caplog.at_level(logging.WARNING, logger="spp_detect.training.svm"):
        for i in range(40):
            im = _image(rng, i, dim=dim, n_windows=200, n_classes=1)
            im.features[:] = np.abs(im.features)  # indistinguishable from the positives
            t.add_image(im)
        t.finish()
    logged = [e for e in st.log if e["collapsed"]]
    assert logged, [e["objective"] for e in st.log]
    assert any("collapsed to the trivial solution" in r.message for r in caplog.records)
    # the kept model is a real one (not w = 0), and it is the last fit that did not collapse;
    # the class then mined no more: one collapse, no retrain after it, an empty cache
    assert np.abs(st.w).max() > 1e-6
    assert not st.log[0]["collapsed"]
    assert [e["collapsed"] for e in st.log].count(True) == 1 and st.log[-1]["collapsed"]
    assert st.frozen and len(st.neg_ids) == 0 and t.store.live_rows == 0


def test_stopping_tolerance_reaches_liblinear():
    """``svm.tol`` is liblinear's stopping tolerance: a tight one ends at an objective no worse
    than the default's (R-CNN's 0.1), and the two models score alike."""
    from spp_detect.training.svm import _fit

    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(400, 30))) * (rng.random((400, 30)) < 0.4)
    y = np.where(x[:, :5].sum(axis=1) + rng.normal(scale=0.5, size=400) > 1.5, 1.0, -1.0)
    x *= 20.0 / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-9)
    w_loose, b_loose, obj_loose, *_ = _fit(x, y, 0.001, 2.0, 10.0, 0, tol=0.1)
    w_tight, b_tight, obj_tight, *_ = _fit(x, y, 0.001, 2.0, 10.0, 0, tol=1e-6)
    assert obj_tight <= obj_loose + 1e-9
    assert obj_loose <= obj_tight * 1.05
    assert not np.array_equal(w_loose, w_tight)  # the tolerance did reach the solver
    s_loose, s_tight = x @ w_loose + b_loose, x @ w_tight + b_tight
    assert np.corrcoef(s_loose, s_tight)[0, 1] > 0.99


def test_stacked_rows_are_the_rows_one_after_another():
    rng = np.random.default_rng(9)
    a = (rng.random((5, 7)) * (rng.random((5, 7)) < 0.4)).astype(np.float32)
    b = (rng.random((3, 7)) * (rng.random((3, 7)) < 0.4)).astype(np.float32)
    b[1] = 0  # an empty row
    x = CompactRows.stack_csr([CompactRows.from_dense(a), CompactRows.from_dense(b)], 7)
    assert x.dtype == np.float64 and x.shape == (8, 7)
    want = np.concatenate([a, b]).astype(np.float16).astype(np.float64)
    np.testing.assert_array_equal(x.toarray(), want)
    np.testing.assert_array_equal(x.toarray(), CompactRows.concat([CompactRows.from_dense(a), CompactRows.from_dense(b)], 7).to_csr().toarray())


# ------------------------------------------------------------------------------------------
# checkpoints: a run stopped between two images and resumed gives the uninterrupted models


@pytest.mark.parametrize("stop_after,solver", [(1, "dcd"), (5, "dcd"), (13, "dcd"), (5, "liblinear")])
def test_mining_resumed_from_a_checkpoint_gives_the_uninterrupted_models(tmp_path, stop_after, solver):
    from spp_detect.training.svm_checkpoint import load_checkpoint, save_checkpoint

    images = _late_positives_stream()
    k, dim = 6, 12
    kwargs = dict(C=0.05, retrain_every=40, max_negatives=12, workers=1, solver=solver)
    whole = HardNegativeTrainer(_positives(images, k, dim), dim, **kwargs)
    for im in images:
        whole.add_image(im)
    w_ref, b_ref = whole.finish()

    first = HardNegativeTrainer(_positives(images, k, dim), dim, **kwargs)
    for im in images[:stop_after]:
        first.add_image(im)
    stamp = {"svm": "same"}
    path = save_checkpoint(tmp_path / "svm.ckpt.h5", first.state(), stamp)
    cached_before = [st.neg_ids.size for st in first.states]
    rows_before = first.store.live_rows
    del first
    again = HardNegativeTrainer.resume(load_checkpoint(path, stamp), **kwargs)
    assert again.images_seen == stop_after
    assert [st.neg_ids.size for st in again.states] == cached_before and again.store.live_rows == rows_before
    for im in images[stop_after:]:
        again.add_image(im)
    w, b = again.finish()
    np.testing.assert_array_equal(w, w_ref)
    np.testing.assert_array_equal(b, b_ref)
    assert _untimed(again) == _untimed(whole)  # every retrain's log but its seconds
    assert [st.neg_ids.size for st in again.states] == [st.neg_ids.size for st in whole.states]
    assert again.store.live_rows == whole.store.live_rows
    assert again.peak_store_rows == whole.peak_store_rows
    # every retrain's model, the candidates of svm.select = "val", survives the checkpoint too
    for st_again, st_whole in zip(again.states, whole.states, strict=True):
        assert [r for r, _, _ in st_again.models] == [r for r, _, _ in st_whole.models]
        for (_, wa, ba), (_, ww, bw) in zip(st_again.models, st_whole.models, strict=True):
            np.testing.assert_array_equal(wa, ww)
            assert ba == bw


def _untimed(trainer):
    return [[{k: v for k, v in e.items() if k != "seconds"} for e in st.log] for st in trainer.states]


def test_a_checkpoint_of_another_training_is_refused(tmp_path):
    from spp_detect.errors import ArtifactError
    from spp_detect.training.svm_checkpoint import load_checkpoint, save_checkpoint

    images = _late_positives_stream(n_images=3)
    t = HardNegativeTrainer(_positives(images, 6, 12), 12, workers=1)
    t.add_image(images[0])
    path = save_checkpoint(tmp_path / "svm.ckpt.h5", t.state(), {"svm": "C=0.001"})
    with pytest.raises(ArtifactError, match=r"svm.ckpt.h5.*svm.*--overwrite"):
        load_checkpoint(path, {"svm": "C=0.01"})
    path.write_bytes(b"not hdf5")
    with pytest.raises(ArtifactError, match="svm.ckpt.h5"):
        load_checkpoint(path, {"svm": "C=0.001"})


def test_every_retrain_model_is_kept_and_the_last_is_the_result():
    images = _late_positives_stream()
    trainer = HardNegativeTrainer(_positives(images, 6, 12), 12, C=0.05, retrain_every=40, max_negatives=12, workers=1)
    for im in images:
        trainer.add_image(im)
    w, b = trainer.finish()
    for k, st in enumerate(trainer.states):
        if not st.n_positives:
            assert st.models == []
            continue
        taken = [e["retrain"] for e in st.log if not e["collapsed"]]
        assert [r for r, _, _ in st.models] == taken and len(taken) >= 2
        _, w_last, b_last = st.models[-1]
        np.testing.assert_array_equal(w_last, w[k])
        assert np.float32(b_last) == b[k]
        assert not np.array_equal(st.models[0][1], w_last)  # earlier models are other models
