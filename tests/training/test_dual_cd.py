"""The warm-started dual coordinate descent against liblinear itself (scikit-learn's LinearSVC),
the solver of record: the same objective, the same optimum, the same stopping rule."""

import threading

import numpy as np
import pytest

from spp_detect.training import dual_cd
from spp_detect.training.sparse_rows import CompactRows
from spp_detect.training.svm import _fit

C, POS_WEIGHT, BIAS = 0.01, 2.0, 10.0


def _problem(seed=0, n_pos=60, n_neg=240, dim=40, overlap=1.0):
    """Post-ReLU-like rows (about half zero, float16 values, norm-scaled as the miner's), the
    positives shifted along a few dimensions; ``overlap`` widens the classes into each other."""
    rng = np.random.default_rng(seed)
    x = np.abs(rng.normal(0, overlap, (n_pos + n_neg, dim)))
    x[:n_pos, :4] += 1.0
    x[rng.random(x.shape) < 0.5] = 0
    x *= 20.0 / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-9)
    x = x.astype(np.float16).astype(np.float32)
    return CompactRows.from_dense(x[:n_pos]), CompactRows.from_dense(x[n_pos:])


def _liblinear(pos, neg, tol):
    x = CompactRows.stack_csr([pos, neg], pos.dim)
    y = np.concatenate([np.ones(len(pos)), -np.ones(len(neg))])
    return _fit(x, y, C, POS_WEIGHT, BIAS, 0, tol)


def _dual_objective(pos, neg, alpha):
    """The dual liblinear minimises, written out: 1/2 |sum a_i y_i [x_i, B]|^2 - sum a_i."""
    x = np.concatenate([pos.dense(), neg.dense()]).astype(np.float64)
    x = np.concatenate([x, np.full((len(x), 1), BIAS)], 1)
    y = np.concatenate([np.ones(len(pos)), -np.ones(len(neg))])
    v = x.T @ (alpha * y)
    return 0.5 * v @ v - alpha.sum(), v


def test_the_same_optimum_as_liblinear():
    pos, neg = _problem()
    ours = dual_cd.fit(pos, neg, C, POS_WEIGHT, BIAS, 0, tol=1e-8)
    ref = _liblinear(pos, neg, tol=1e-8)
    assert ours[2] == pytest.approx(ref[2], rel=1e-7)
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-4, atol=1e-6)
    assert ours[1] == pytest.approx(ref[1], abs=1e-5)
    assert ours[3] and ref[3]


def test_the_default_tolerance_is_as_good_as_liblinears():
    """At R-CNN's tolerance (0.1) neither is optimal; ours ends no further from the optimum
    than liblinear does, by more than the slack the stopping rule allows."""
    pos, neg = _problem(seed=1, overlap=2.0)
    best = dual_cd.fit(pos, neg, C, POS_WEIGHT, BIAS, 0, tol=1e-8)[2]
    ours = dual_cd.fit(pos, neg, C, POS_WEIGHT, BIAS, 0, tol=0.1)[2]
    ref = _liblinear(pos, neg, tol=0.1)[2]
    assert best <= ours <= best * 1.05 and best <= ref + 1e-9
    assert ours - best <= 2 * (ref - best) + 1e-3 * best


def test_dual_variables_are_feasible_and_give_the_model():
    pos, neg = _problem(seed=2)
    w, b, objective, _, neg_scores, a_pos, a_neg = dual_cd.fit(pos, neg, C, POS_WEIGHT, BIAS, 0, tol=1e-6)
    alpha = np.concatenate([a_pos, a_neg])
    upper = np.concatenate([np.full(len(pos), C * POS_WEIGHT), np.full(len(neg), C)])
    assert np.all(alpha >= 0) and np.all(alpha <= upper)
    dual, v = _dual_objective(pos, neg, alpha)
    np.testing.assert_allclose(w, v[:-1], rtol=1e-5, atol=1e-7)  # w = sum a_i y_i x_i
    assert b == pytest.approx(v[-1] * BIAS, rel=1e-6)
    # strong duality: at the optimum, primal = -dual
    assert objective == pytest.approx(-dual, rel=1e-4)
    # the negatives' scores are the float32 model's
    np.testing.assert_allclose(neg_scores, neg.dense().astype(np.float64) @ w.astype(np.float64) + b, rtol=1e-9)


def test_a_warm_start_reaches_the_cold_optimum_and_starts_from_the_last_fit():
    pos, neg = _problem(seed=3, overlap=2.0, n_neg=300)
    first = CompactRows.concat([_rows(neg, 0, 200)], neg.dim)
    before = dual_cd.fit(pos, first, C, POS_WEIGHT, BIAS, 0, tol=1e-8)
    # mining: 100 new negatives come in, 50 of the old ones are evicted
    kept = np.arange(50, 200)
    grown = CompactRows.concat([_rows(neg, 50, 200), _rows(neg, 200, 300)], neg.dim)
    start = np.concatenate([before[6][kept], np.zeros(100)])
    warm = dual_cd.fit(pos, grown, C, POS_WEIGHT, BIAS, 0, tol=1e-8, alpha_pos=before[5], alpha_neg=start)
    cold = dual_cd.fit(pos, grown, C, POS_WEIGHT, BIAS, 0, tol=1e-8)
    assert warm[2] == pytest.approx(cold[2], rel=1e-7)
    np.testing.assert_allclose(warm[0], cold[0], rtol=1e-4, atol=1e-6)
    # the start is used: from the optimum itself one pass finds nothing to change, where a cold
    # fit of this overlapping problem needs many
    again = dual_cd.fit(pos, grown, C, POS_WEIGHT, BIAS, 0, tol=1e-3, alpha_pos=warm[5], alpha_neg=warm[6],
                        max_iter=2)
    assert again[3] and again[2] == pytest.approx(warm[2], rel=1e-6)
    assert not dual_cd.fit(pos, grown, C, POS_WEIGHT, BIAS, 0, tol=1e-3, max_iter=2)[3]


def _rows(rows: CompactRows, a: int, b: int) -> CompactRows:
    lo, hi = int(rows.indptr[a]), int(rows.indptr[b])
    return CompactRows(rows.indptr[a : b + 1] - lo, rows.indices[lo:hi], rows.data[lo:hi], rows.dim)


def test_the_same_fit_in_threads_at_once_is_the_same_model():
    """Fits run in threads (the loop releases the GIL): each gives what it gives alone."""
    pos, neg = _problem(seed=4, overlap=2.0)
    alone = dual_cd.fit(pos, neg, C, POS_WEIGHT, BIAS, 7, tol=0.1)
    out = [None] * 3

    def run(k):
        out[k] = dual_cd.fit(pos, neg, C, POS_WEIGHT, BIAS, 7, tol=0.1)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in out:
        np.testing.assert_array_equal(r[0], alone[0])
        assert r[2] == alone[2]


def test_edge_cases():
    pos, neg = _problem(seed=5)
    empty = CompactRows.concat([], pos.dim)
    w, b, objective, converged, scores, *_ = dual_cd.fit(pos, empty, C, POS_WEIGHT, BIAS, 0)
    assert b == 1.0 and not w.any() and converged and len(scores) == 0
    w, b, *_ = dual_cd.fit(empty, neg, C, POS_WEIGHT, BIAS, 0)
    assert b == -1.0 and not w.any()
    with pytest.raises(ValueError, match="alpha_neg has 3 values for 240 rows"):
        dual_cd.fit(pos, neg, C, POS_WEIGHT, BIAS, 0, alpha_neg=np.zeros(3))
    # a start outside the box is clipped into it
    r = dual_cd.fit(pos, neg, C, POS_WEIGHT, BIAS, 0, alpha_neg=np.full(len(neg), 5.0))
    assert r[6].max() <= C
