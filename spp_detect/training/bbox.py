"""Bounding-box regression (PAPER.md): per-class ridge regression from the pooled SPP vector to
the centre/size offsets of the matched ground-truth box.

Boxes are the internal convention (0-based inclusive pixels), so a box's width is
``x2 - x1 + 1`` and its centre ``x1 + 0.5 * (width - 1)``... precisely as R-CNN: centre
``x1 + 0.5 * w`` with ``w = x2 - x1 + 1``; decoding inverts that exactly.
"""

from __future__ import annotations

import numpy as np


def _centre_size(boxes: np.ndarray) -> tuple[np.ndarray, ...]:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    w = boxes[:, 2] - boxes[:, 0] + 1.0
    h = boxes[:, 3] - boxes[:, 1] + 1.0
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


def encode(proposals: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Targets ``(dx, dy, dw, dh)`` = ``((gx - px)/pw, (gy - py)/ph, log(gw/pw), log(gh/ph))``.

    ``proposals``, ``gt``: (N, 4) internal-convention boxes, row-aligned. Returns (N, 4).
    """
    px, py, pw, ph = _centre_size(proposals)
    gx, gy, gw, gh = _centre_size(gt)
    return np.stack([(gx - px) / pw, (gy - py) / ph, np.log(gw / pw), np.log(gh / ph)], axis=1)


def decode(proposals: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Apply ``deltas`` (N, 4) to ``proposals`` (N, 4, internal convention): the inverse of
    :func:`encode`. Returns float (N, 4) internal-convention boxes (not clipped)."""
    px, py, pw, ph = _centre_size(proposals)
    deltas = np.asarray(deltas, np.float64).reshape(-1, 4)
    cx = px + deltas[:, 0] * pw
    cy = py + deltas[:, 1] * ph
    # exp of a huge predicted log-size would overflow; no real box grows by e^10
    w = pw * np.exp(np.minimum(deltas[:, 2], 10.0))
    h = ph * np.exp(np.minimum(deltas[:, 3], 10.0))
    x1 = cx - 0.5 * w
    y1 = cy - 0.5 * h
    return np.stack([x1, y1, x1 + w - 1.0, y1 + h - 1.0], axis=1)


def fit_ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression with an unregularised bias: ``min ||x W + b - y||^2 + lam ||W||^2``.

    ``x``: (N, D), ``y``: (N, T). Returns ``(W (D, T), b (T,))``. Solved in the dual (N x N)
    when N < D, which is the usual case for per-class regressors on 12,800-d SPP vectors.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    mu_x, mu_y = x.mean(0), y.mean(0)
    xc, yc = x - mu_x, y - mu_y
    n, d = xc.shape
    if n < d:
        alpha = np.linalg.solve(xc @ xc.T + lam * np.eye(n), yc)
        w = xc.T @ alpha
    else:
        w = np.linalg.solve(xc.T @ xc + lam * np.eye(d), xc.T @ yc)
    return w, mu_y - mu_x @ w


class Reservoir:
    """A uniform random sample of at most ``size`` rows of a stream (Algorithm R), kept float16.

    Box regression's training windows (every window with IoU >= 0.6, tens of thousands per class
    at VOC size, 25,600-d each) are sampled while they stream past, so memory stays at ``size``
    rows per class whatever the dataset's size. Until ``size`` rows have come, every row is kept,
    in order.
    """

    def __init__(self, size: int, rng: np.random.Generator):
        self.size, self.rng, self.seen = size, rng, 0
        self.x: np.ndarray | None = None
        self.y: np.ndarray | None = None

    def __len__(self) -> int:
        return min(self.seen, self.size)

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        if self.x is None:
            self.x = np.empty((0, x.shape[1]), np.float16)
            self.y = np.empty((0, y.shape[1]), np.float64)
        room = max(0, self.size - len(self.x))
        if room:  # filling up: keep them all
            self.x = np.concatenate([self.x, x[:room].astype(np.float16)])
            self.y = np.concatenate([self.y, y[:room]])
        for i in range(min(room, len(x)), len(x)):  # then each row replaces a random one with p = size / seen
            j = self.rng.integers(0, self.seen + i + 1)
            if j < self.size:
                self.x[j], self.y[j] = x[i], y[i]
        self.seen += len(x)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x.astype(np.float32), self.y


class BoxRegressors:
    """One ridge regressor per class; ``weights[c]`` is (D, 4), ``bias[c]`` (4,); a class
    without training windows keeps zeros (boxes unchanged)."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray):
        self.weights = np.asarray(weights, np.float32)  # (K, D, 4)
        self.bias = np.asarray(bias, np.float32)  # (K, 4)

    def predict(self, cls: int, features: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Regressed boxes for class ``cls``: features (N, D) raw pooled, boxes (N, 4) internal."""
        deltas = np.asarray(features, np.float32) @ self.weights[cls] + self.bias[cls]
        return decode(boxes, deltas)

    def save(self, path, meta: dict) -> None:
        import json

        import h5py

        from ..artifacts.files import atomic_path
        from ..artifacts.stamps import write_stamp

        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as h5:
                write_stamp(h5, BBOX_FORMAT, BBOX_VERSION, meta.get("stamp", {}))
                h5.attrs["meta"] = json.dumps(meta)
                h5.create_dataset("weights", data=self.weights, compression="gzip", compression_opts=1)
                h5.create_dataset("bias", data=self.bias)

    @classmethod
    def load(cls, path, expect: dict | None = None) -> BoxRegressors:
        from ..artifacts.stamps import open_h5_checked

        with open_h5_checked(path, BBOX_FORMAT, BBOX_VERSION, expect, remedy="rerun 'spp-detect train-bbox'") as h5:
            return cls(h5["weights"][()], h5["bias"][()])


BBOX_FORMAT = "spp-detect/bbox"
BBOX_VERSION = 1
