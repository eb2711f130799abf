"""Linear SVMs with hard-negative mining, one per class (PAPER.md, "Linear SVMs").

The mining loop is R-CNN's, as the released SPP code runs it:

- positives: the class's ground-truth boxes; negatives: windows whose IoU with every
  ground-truth box of the class is below ``negative_iou`` (0.3);
- one pass over the training images: the first image contributes all its negatives, later
  images only the hard ones (score > ``hard_threshold``, -1.0001, under the current model);
- retrain when more than ``retrain_every`` (2,000) new negatives have come in, and at the
  end; after each retrain, cached negatives scoring below ``evict_threshold`` (-1.2) are
  dropped. A window seen twice in an image (same conv5 rectangle at the same scale) counts
  once; windows of different images are different negatives even when their rectangles agree.

Solver: scikit-learn's ``LinearSVC`` (liblinear, L2-regularised hinge loss solved in the dual,
``loss="hinge"``), ``C`` = 0.001, positive-class weight 2, and liblinear's bias feature of value
10 (``intercept_scaling``: the learned bias weight times 10 is the final bias, and it is
regularised, exactly as the released code's liblinear call). Features arrive norm-scaled. A fit
that reaches liblinear's iteration cap (:data:`MAX_ITER`) is logged as a warning naming the class
and the retrain, and recorded (``converged``) in that class's retrain log.

Features are streamed image by image; the trainer holds only positives and the hard-negative
caches. Retraining of the classes that need it runs in parallel worker processes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

MAX_ITER = 10000  # liblinear's iteration cap per fit; reaching it means the fit did not converge


@dataclass
class SvmImage:
    """One training image as the miner sees it.

    ``features``: (N, D) float32, norm-scaled; ``boxes``: (N, 4) internal convention (0-based
    inclusive pixels); ``keys``: (N,) int64 identifying each window's conv5 rectangle and scale
    within the image (duplicates share a key; the trainer scopes keys by ``image_id``);
    ``window_labels``: (N,) int, the class of a window that IS a ground-truth box (a positive),
    -1 for proposals; ``gt_boxes``/``gt_labels``: the image's ground truth, to find negatives.
    """

    image_id: str
    features: np.ndarray
    boxes: np.ndarray
    keys: np.ndarray
    window_labels: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray


def _fit(x_pos: np.ndarray, x_neg: np.ndarray, c: float, positive_weight: float, bias_feature: float, seed: int):
    """Train one linear SVM; returns (w (D,), b, objective, converged)."""
    from sklearn.svm import LinearSVC

    x = np.concatenate([x_pos, x_neg]).astype(np.float64)
    y = np.concatenate([np.ones(len(x_pos)), -np.ones(len(x_neg))])
    if len(x_pos) == 0 or len(x_neg) == 0:
        # nothing to separate: score everything as the class that exists (or nothing)
        return np.zeros(x.shape[1], np.float32), (1.0 if len(x_neg) == 0 else -1.0), 0.0, True
    svm = LinearSVC(
        C=c, loss="hinge", dual=True, class_weight={1: positive_weight, -1: 1.0},
        fit_intercept=True, intercept_scaling=bias_feature, max_iter=MAX_ITER, tol=1e-4, random_state=seed,
    )
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    # liblinear's own warning would come from a worker process with no class or retrain named;
    # the caller logs one that does (and records it in the SVM's retrain log)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm.fit(x, y)
    converged = int(np.max(svm.n_iter_)) < MAX_ITER
    w = svm.coef_[0]
    b = float(svm.intercept_[0])
    # primal objective, as liblinear minimises it (bias feature included in the norm)
    margins = y * (x @ w + b)
    weights = np.where(y > 0, positive_weight, 1.0)
    hinge = np.maximum(0.0, 1.0 - margins)
    objective = 0.5 * (w @ w + (b / bias_feature) ** 2) + c * float((weights * hinge).sum())
    return w.astype(np.float32), b, objective, converged


def _fit_task(args):
    return _fit(*args)


@dataclass
class ClassState:
    """Mining state of one class: model, positives, the hard-negative cache."""

    label: int
    w: np.ndarray
    b: float = 0.0
    positives: list[np.ndarray] = field(default_factory=list)
    neg_features: np.ndarray | None = None
    neg_keys: set = field(default_factory=set)  # (image ordinal, window key) of cached negatives
    neg_key_array: np.ndarray | None = None  # (N, 2) int64: the same pairs, row-aligned with neg_features
    new_since_retrain: int = 0
    retrains: int = 0
    log: list[dict] = field(default_factory=list)

    def add_negatives(self, feats: np.ndarray, keys: np.ndarray, image: int) -> int:
        """Cache the windows of image ordinal ``image`` not cached yet; returns how many were new."""
        fresh = [i for i, k in enumerate(keys.tolist()) if (image, k) not in self.neg_keys]
        if not fresh:
            return 0
        self.neg_keys.update((image, k) for k in keys[fresh].tolist())
        f = feats[fresh].astype(np.float16)  # half precision: the cache is what costs memory
        k = np.stack([np.full(len(fresh), image, np.int64), np.asarray(keys, np.int64)[fresh]], 1)
        self.neg_features = f if self.neg_features is None else np.concatenate([self.neg_features, f])
        self.neg_key_array = k if self.neg_key_array is None else np.concatenate([self.neg_key_array, k])
        self.new_since_retrain += len(fresh)
        return len(fresh)


class HardNegativeTrainer:
    """Trains one SVM per class over a stream of :class:`SvmImage` (see the module docstring)."""

    def __init__(
        self,
        n_classes: int,
        dim: int,
        C: float = 0.001,
        positive_weight: float = 2.0,
        bias_feature: float = 10.0,
        negative_iou: float = 0.3,
        hard_threshold: float = -1.0001,
        evict_threshold: float = -1.2,
        retrain_every: int = 2000,
        workers: int = 1,
        seed: int = 0,
    ):
        self.states = [ClassState(label=c, w=np.zeros(dim, np.float32)) for c in range(n_classes)]
        self.C, self.positive_weight, self.bias_feature = C, positive_weight, bias_feature
        self.negative_iou, self.hard_threshold, self.evict_threshold = negative_iou, hard_threshold, evict_threshold
        self.retrain_every, self.workers, self.seed = retrain_every, max(1, workers), seed
        self.first_image_done = [False] * n_classes
        self._image_ordinal: dict[str, int] = {}  # image id -> small int scoping its window keys
        self._pool = ProcessPoolExecutor(self.workers) if self.workers > 1 else None

    # ------------------------------------------------------------------ mining
    def add_image(self, image: SvmImage) -> None:
        from .boxes import iou_matrix

        feats = image.features
        ordinal = self._image_ordinal.setdefault(image.image_id, len(self._image_ordinal))
        scores = feats @ np.stack([s.w for s in self.states], 1) + np.array([s.b for s in self.states], np.float32)
        due = []
        is_gt = image.window_labels >= 0
        for st in self.states:
            c = st.label
            gt_c = image.gt_boxes[image.gt_labels == c]
            mine = image.window_labels == c
            if mine.any():
                st.positives.append(feats[mine].astype(np.float32))
            max_iou = iou_matrix(image.boxes, gt_c).max(1) if len(gt_c) else np.zeros(len(feats))
            neg = (max_iou < self.negative_iou) & ~is_gt
            if self.first_image_done[c]:
                neg &= scores[:, c] > self.hard_threshold
            self.first_image_done[c] = True
            idx = np.nonzero(neg)[0]
            if len(idx):
                st.add_negatives(feats[idx], image.keys[idx], ordinal)
            if st.new_since_retrain > self.retrain_every:
                due.append(st)
        if due:
            self._retrain(due)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Final retrain of every class; returns ``(W (K, D), b (K,))``."""
        self._retrain(self.states)
        if self._pool is not None:
            self._pool.shutdown()
        return np.stack([s.w for s in self.states]), np.array([s.b for s in self.states], np.float32)

    def _retrain(self, states: list[ClassState]) -> None:
        tasks = []
        for st in states:
            pos = np.concatenate(st.positives) if st.positives else np.zeros((0, len(st.w)), np.float32)
            neg = st.neg_features.astype(np.float32) if st.neg_features is not None else np.zeros((0, len(st.w)), np.float32)
            tasks.append((pos, neg, self.C, self.positive_weight, self.bias_feature, self.seed))
        results = list(self._pool.map(_fit_task, tasks)) if self._pool is not None and len(tasks) > 1 else [_fit(*t) for t in tasks]
        for st, (w, b, objective, converged), task in zip(states, results, tasks, strict=True):
            st.w, st.b = w, b
            st.retrains += 1
            n_before = 0 if st.neg_features is None else len(st.neg_features)
            if st.neg_features is not None and len(st.neg_features):
                # evict easy negatives: they no longer shape the margin
                s = st.neg_features.astype(np.float32) @ w + b
                keep = s >= self.evict_threshold
                st.neg_features = st.neg_features[keep]
                dropped = st.neg_key_array[~keep]
                st.neg_key_array = st.neg_key_array[keep]
                st.neg_keys.difference_update(map(tuple, dropped.tolist()))
            entry = {
                "retrain": st.retrains, "positives": len(task[0]), "negatives": n_before,
                "kept_negatives": 0 if st.neg_features is None else len(st.neg_features), "objective": objective,
                "converged": converged,
            }
            st.log.append(entry)
            log.info("class %d retrain %d: %d pos, %d neg cached (%d kept), objective %.4f",
                     st.label, st.retrains, entry["positives"], n_before, entry["kept_negatives"], objective)
            if not converged:
                log.warning("class %d retrain %d: liblinear stopped at its %d-iteration cap before converging; "
                            "this SVM (and the negatives it mines) may be poor: a smaller svm.C converges faster (now %g)",
                            st.label, st.retrains, MAX_ITER, self.C)
            st.new_since_retrain = 0


def train_svms(images: Iterable[SvmImage], n_classes: int, dim: int, **kwargs) -> tuple[np.ndarray, np.ndarray, list[list[dict]]]:
    """Run the mining over ``images``; returns ``(W (K, D), b (K,), per-class retrain logs)``."""
    trainer = HardNegativeTrainer(n_classes, dim, **kwargs)
    for image in images:
        trainer.add_image(image)
    w, b = trainer.finish()
    return w, b, [s.log for s in trainer.states]


def window_keys(rects: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """One int64 key per window from its conv5 rectangle and scale: equal keys = same window."""
    r = np.asarray(rects, np.int64)
    s = np.asarray(scale, np.int64)
    return (((s * 4096 + r[:, 0]) * 4096 + r[:, 1]) * 4096 + r[:, 2]) * 4096 + r[:, 3]

