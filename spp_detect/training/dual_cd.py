"""liblinear's SVM solver, with a warm start: dual coordinate descent for the L2-regularised
hinge loss (Hsieh et al., ICML 2008; liblinear's ``solve_l2r_l1l2_svc``, the solver R-CNN ran).

Why not liblinear itself: hard-negative mining retrains a class every time 2,000 new negatives
have come in, on a cache that is mostly the same rows as last time. liblinear starts every fit
from zero; on the 25,600-d SPP vector of VOC that is hours of refitting the same support
vectors. This solver minimises the same objective,

    min_w  1/2 |w|^2 + sum_i C_i max(0, 1 - y_i w.[x_i, B])    (C_i = C * positive_weight for positives)

(the bias feature B is part of w and regularised, as in liblinear), through its dual
``min_a 1/2 a'Qa - sum a``, ``0 <= a_i <= C_i``, with liblinear's steps: one coordinate at a
time in a random order, liblinear's shrinking, and its stopping rule (the largest violation of
the optimality conditions below ``tol``). A fit may start from the dual variables of the last
one (rows kept from the last fit keep theirs, new rows start at 0, dropped rows leave): any such
start is feasible, and the stopping rule is the same, so warm and cold fits are equally
optimal. Tested against liblinear (scikit-learn's ``LinearSVC``) in ``tests/training``.

The coordinate loop is compiled with numba (it visits one row at a time: millions of short
steps that no array operation expresses) and releases the GIL, so classes train in threads that
share the miner's memory instead of in processes that are sent copies of the rows.
"""

from __future__ import annotations

import functools

import numpy as np

from .sparse_rows import CompactRows

MAX_ITER = 10000  # as the liblinear path's cap (svm.MAX_ITER): passes over the active rows
# bytes a fit takes per non-zero of its rows: float32 values and the rows' column indices (the
# matrix the solver reads), and the compact float16 rows gathered for it
BYTES_PER_NONZERO = 12


@functools.cache
def _kernel():
    """The compiled loop (numba imported on first use: ``--help`` and the liblinear path never
    pay for it; compiled once and cached on disk)."""
    from numba import njit

    return njit(cache=True, nogil=True)(_dcd), njit(cache=True, nogil=True)(_csr_scores)


def _dcd(indptr, indices, data, y, upper, bias_feature, alpha, w, tol, max_iter, seed):  # pragma: no cover (compiled)
    """Dual coordinate descent in place on ``alpha`` (n,) from where it stands; ``w`` (d + 1,),
    float64, zeros on entry, holds ``sum alpha_i y_i [x_i, B]`` on return. Returns the number of
    passes made."""
    n = len(y)
    d = len(w) - 1
    qd = np.empty(n)
    for i in range(n):
        s = bias_feature * bias_feature
        c = alpha[i] * y[i]
        for k in range(indptr[i], indptr[i + 1]):
            s += np.float64(data[k]) * data[k]
            w[indices[k]] += c * data[k]
        w[d] += c * bias_feature
        qd[i] = s
    index = np.arange(n)
    active = n
    pg_max_old, pg_min_old = np.inf, -np.inf
    state = np.uint64(seed * 2654435761 + 88172645463325252)  # xorshift64: the same order in any thread
    it = 0
    while it < max_iter:
        pg_max, pg_min = -np.inf, np.inf
        for i in range(active):  # shuffle the active rows (Fisher-Yates, as liblinear)
            state ^= state << np.uint64(13)
            state ^= state >> np.uint64(7)
            state ^= state << np.uint64(17)
            j = i + int(state % np.uint64(active - i))
            index[i], index[j] = index[j], index[i]
        s = 0
        while s < active:
            i = index[s]
            g = w[d] * bias_feature
            for k in range(indptr[i], indptr[i + 1]):
                g += data[k] * w[indices[k]]
            g = g * y[i] - 1.0
            a, u = alpha[i], upper[i]
            pg = 0.0
            if a == 0.0:
                if g > pg_max_old:  # at the bound and pushing out: shrink
                    active -= 1
                    index[s], index[active] = index[active], index[s]
                    continue
                if g < 0.0:
                    pg = g
            elif a == u:
                if g < pg_min_old:
                    active -= 1
                    index[s], index[active] = index[active], index[s]
                    continue
                if g > 0.0:
                    pg = g
            else:
                pg = g
            pg_max = max(pg_max, pg)
            pg_min = min(pg_min, pg)
            if abs(pg) > 1e-12:
                new = min(max(a - g / qd[i], 0.0), u)
                step = (new - a) * y[i]
                alpha[i] = new
                for k in range(indptr[i], indptr[i + 1]):
                    w[indices[k]] += step * data[k]
                w[d] += step * bias_feature
            s += 1
        it += 1
        if pg_max - pg_min <= tol:
            if active == n:
                break
            active = n  # converged on the active rows: check every row once more
            pg_max_old, pg_min_old = np.inf, -np.inf
            continue
        pg_max_old = pg_max if pg_max > 0 else np.inf
        pg_min_old = pg_min if pg_min < 0 else -np.inf
    return it


def _csr_scores(indptr, indices, data, w, b):  # pragma: no cover (compiled)
    out = np.empty(len(indptr) - 1)
    for i in range(len(out)):
        s = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            s += np.float64(data[k]) * w[indices[k]]
        out[i] = s + b
    return out


def fit(pos: CompactRows, neg: CompactRows, C: float, positive_weight: float, bias_feature: float, seed: int,
        tol: float = 0.1, alpha_pos: np.ndarray | None = None, alpha_neg: np.ndarray | None = None,
        max_iter: int = MAX_ITER):
    """One class's SVM on its positives and negatives (rows of the same dimension).

    ``alpha_pos``/``alpha_neg``: where to start the dual variables (None or empty: 0,
    liblinear's start), one per row; values are clipped into their box. Returns ``(w (D,) float32, b, objective,
    converged, neg_scores, alpha_pos, alpha_neg)``: ``objective`` is the primal objective of the
    returned model (bias feature included in the norm), ``neg_scores`` float64 the negatives'
    ``x @ w + b`` with the float32 ``w`` returned (as the miner scores), ``alpha_*`` float64
    the dual variables to start the next fit from.
    """
    dcd, scores = _kernel()
    n_pos, n_neg, dim = len(pos), len(neg), pos.dim
    if n_pos == 0 or n_neg == 0:
        b = 1.0 if n_neg == 0 else -1.0
        return (np.zeros(dim, np.float32), b, 0.0, True, np.full(n_neg, b), np.zeros(n_pos), np.zeros(n_neg))
    indptr = np.concatenate([pos.indptr, neg.indptr[1:] + pos.nnz])
    indices = np.concatenate([pos.indices, neg.indices])
    data = np.concatenate([pos.data, neg.data]).astype(np.float32)
    y = np.concatenate([np.ones(n_pos), -np.ones(n_neg)])
    upper = np.where(y > 0, C * positive_weight, C)
    alpha = np.zeros(n_pos + n_neg)
    for name, start, part, n in (("alpha_pos", 0, alpha_pos, n_pos), ("alpha_neg", n_pos, alpha_neg, n_neg)):
        if part is not None and len(part):  # empty: a first fit
            if len(part) != n:
                raise ValueError(f"{name} has {len(part)} values for {n} rows")
            alpha[start : start + n] = part
    np.clip(alpha, 0.0, upper, out=alpha)
    w = np.zeros(dim + 1)
    iters = dcd(indptr, indices, data, y, upper, float(bias_feature), alpha, w, float(tol), int(max_iter), int(seed))
    b = float(w[dim] * bias_feature)
    margins = y * scores(indptr, indices, data, w[:dim], b)
    objective = 0.5 * float(w @ w) + float((upper * np.maximum(0.0, 1.0 - margins)).sum())
    w32 = w[:dim].astype(np.float32)
    neg_scores = scores(neg.indptr, neg.indices, data[pos.nnz:], w32.astype(np.float64), b)
    return w32, b, objective, iters < max_iter, neg_scores, alpha[:n_pos].copy(), alpha[n_pos:].copy()
