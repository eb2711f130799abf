import numpy as np

from spp_detect.svm import HardNegativeTrainer, SvmImage, _fit, train_svms, window_keys


def _image(rng, i, dim=8, n_windows=60):
    """Two classes, each a Gaussian blob in feature space; negatives elsewhere."""
    gt_boxes = np.array([[10, 10, 50, 50], [100, 100, 150, 160]], np.float32)
    gt_labels = np.array([0, 1])
    props = rng.uniform(0, 200, (n_windows, 2))
    props = np.concatenate([props, props + rng.uniform(5, 60, (n_windows, 2))], 1).astype(np.float32)
    boxes = np.concatenate([gt_boxes, props])
    feats = rng.normal(0, 1, (len(boxes), dim)).astype(np.float32)
    feats[0, 0] += 4.0
    feats[1, 1] += 4.0
    labels = np.array([0, 1] + [-1] * n_windows)
    keys = np.arange(len(boxes)) + 1000 * i
    return SvmImage(f"{i}", feats, boxes, keys, labels, gt_boxes, gt_labels)


def test_svm_separates_and_mines():
    rng = np.random.default_rng(0)
    images = [_image(rng, i) for i in range(40)]
    w, b, logs = train_svms(images, 2, 8, C=0.1, retrain_every=300, workers=1)
    assert w.shape == (2, 8) and b.shape == (2,)
    test = _image(np.random.default_rng(99), 0)
    scores = test.features @ w.T + b
    assert scores[0, 0] > np.median(scores[2:, 0]) and scores[1, 1] > np.median(scores[2:, 1])
    # retrained during the pass (more than the final retrain) and logged cache sizes
    assert len(logs[0]) >= 2 and all("objective" in e for e in logs[0])


def test_first_image_all_negatives_then_only_hard():
    rng = np.random.default_rng(1)
    t = HardNegativeTrainer(1, 8, retrain_every=10**9, hard_threshold=-1.0001)
    img = _image(rng, 0)
    t.add_image(img)
    st = t.states[0]
    n_first = len(st.neg_features)
    assert n_first > 0
    # with w = 0, b = 0 every score is 0 > -1.0001, so all negatives of image 2 are hard too
    t.add_image(_image(rng, 1))
    assert len(st.neg_features) > n_first
    # a model that scores everything -5 admits no new negatives
    st.w[:] = 0
    st.b = -5.0
    before = len(st.neg_features)
    t.add_image(_image(rng, 2))
    assert len(st.neg_features) == before


def test_duplicates_count_once_and_eviction():
    rng = np.random.default_rng(2)
    t = HardNegativeTrainer(1, 8, retrain_every=10**9)
    img = _image(rng, 0)
    t.add_image(img)
    n = len(t.states[0].neg_features)
    t.add_image(img)  # the same windows (same keys) again
    assert len(t.states[0].neg_features) == n
    t.evict_threshold = 10.0  # every negative scores below: all evicted after the retrain
    t._retrain(t.states)
    assert len(t.states[0].neg_features) == 0 and not t.states[0].neg_keys


def test_equal_rectangles_of_different_images_are_different_negatives():
    # window keys name a conv5 rectangle and scale within an image: a 3x3-cell window at the
    # same place in two images is two negatives, not a duplicate
    rng = np.random.default_rng(4)
    t = HardNegativeTrainer(1, 8, retrain_every=10**9)
    a = _image(rng, 0)
    b = SvmImage("another", a.features + 0.5, a.boxes, a.keys.copy(), a.window_labels, a.gt_boxes, a.gt_labels)
    t.add_image(a)
    n = len(t.states[0].neg_features)
    t.add_image(b)  # w = 0 scores everything 0 > -1.0001: all of b's negatives are hard
    assert len(t.states[0].neg_features) == 2 * n


def test_fit_objective_and_bias_feature():
    rng = np.random.default_rng(3)
    pos = rng.normal(2, 1, (30, 4)).astype(np.float32)
    neg = rng.normal(-2, 1, (60, 4)).astype(np.float32)
    w, b, obj, converged = _fit(pos, neg, 1.0, 2.0, 10.0, 0)
    acc = ((pos @ w + b) > 0).mean() * 0.5 + ((neg @ w + b) < 0).mean() * 0.5
    assert acc > 0.95 and obj > 0 and converged


def test_a_fit_that_hits_the_iteration_cap_is_logged_and_recorded(monkeypatch, caplog):
    # overlapping classes need more than two liblinear iterations; with the cap at 2 the fit
    # stops early, and the retrain log and a warning naming the class must say so
    import logging

    from spp_detect import svm

    rng = np.random.default_rng(5)
    t = HardNegativeTrainer(1, 8, C=0.1, retrain_every=10**9)
    t.add_image(_image(rng, 0))
    t.states[0].positives.append(rng.normal(1.5, 1, (40, 8)).astype(np.float32))
    t._retrain(t.states)
    assert t.states[0].log[-1]["converged"] is True
    monkeypatch.setattr(svm, "MAX_ITER", 2)
    with caplog.at_level(logging.WARNING, logger="spp_detect.svm"):
        t._retrain(t.states)
    assert t.states[0].log[-1]["converged"] is False
    assert any("class 0 retrain 2" in r.message and "svm.C" in r.message for r in caplog.records)


def test_window_keys_unique_per_rect_and_scale():
    rects = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 2]])
    k = window_keys(rects, np.array([0, 1, 0]))
    assert len(set(k.tolist())) == 3
    assert window_keys(rects[:1], np.array([0]))[0] == k[0]
