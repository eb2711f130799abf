"""Each class's SVM chosen on the validation split among its retrains' models (``svm.select = "val"``).

Mining leaves every class one model per retrain; the paper keeps the last. Where a class's
features hardly separate its positives from the hard negatives that mining keeps finding, the
later fits drift towards the trivial model (w = 0, b = -1; ``benchmarks/REPORT.md``: on VOC with
fc7 of a 512-wide head, a third of the classes), and an earlier retrain's model detects better.
With a validation split, each class keeps the model of its retrains with the highest VOC AP
there, measured as ``detect`` and ``eval`` would measure it: every proposal scored, windows above
``detect.score_floor``, NMS, at most ``detect.max_per_class`` boxes per image. Box regression is
left out: the regressors are trained apart from the SVMs and move a window's box whatever its
score. Ties go to the later retrain, so a class whose models all score alike keeps the paper's.

The choice is as good as the validation split is large: the best of a class's 20-45 working
models on a few hundred images is mostly the luckiest (measured on VOC: it helped fc7, whose
last models of some classes were near AP 0, and hurt the SPP vector, whose models all worked).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_FIELDS = ("weights", "bias", "owner", "retrain")


@dataclass(frozen=True)
class Candidates:
    """Every class's retrain models stacked: ``weights`` (M, D) float32, ``bias`` (M,) float64
    (as mining found it), ``owner`` (M,) the class of each, ``retrain`` (M,) the retrain that
    gave it. Stored the same way in ``svm.h5`` and in the mining checkpoint."""

    weights: np.ndarray
    bias: np.ndarray
    owner: np.ndarray
    retrain: np.ndarray

    @classmethod
    def from_models(cls, models: list[list[tuple[int, np.ndarray, float]]], dim: int) -> Candidates:
        """``models[k]``: class k's ``(retrain, w (D,), b)`` in retrain order (:class:`.svm.ClassState`)."""
        flat = [(k, r, w, b) for k, ms in enumerate(models) for r, w, b in ms]
        weights = np.stack([f[2] for f in flat]).astype(np.float32) if flat else np.zeros((0, dim), np.float32)
        return cls(weights, np.array([f[3] for f in flat], np.float64), np.array([f[0] for f in flat], np.int64),
                   np.array([f[1] for f in flat], np.int64))

    def to_models(self, n_classes: int) -> list[list[tuple[int, np.ndarray, float]]]:
        """:meth:`from_models`'s lists back."""
        models: list[list[tuple[int, np.ndarray, float]]] = [[] for _ in range(n_classes)]
        for k, r, w, b in zip(self.owner.tolist(), self.retrain.tolist(), self.weights, self.bias.tolist(), strict=True):
            models[k].append((r, w, b))
        return models

    def __len__(self) -> int:
        return len(self.owner)

    def write(self, group) -> None:
        """Into an HDF5 group (its four arrays)."""
        for name in _FIELDS:
            group.create_dataset(name, data=getattr(self, name))

    @classmethod
    def from_group(cls, group) -> Candidates:
        """What :meth:`write` wrote."""
        return cls(*(group[name][()] for name in _FIELDS))

    @classmethod
    def read(cls, path) -> Candidates:
        """The candidates kept in an ``svm.h5`` trained with ``svm.select = "val"``."""
        import h5py

        with h5py.File(path, "r") as h5:
            return cls.from_group(h5["candidates"])


@dataclass(frozen=True)
class _Detections:
    """One candidate's detections over the split, as :func:`.evaluate_class` reads them."""

    image_ids: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray


def validation_ap(candidates: Candidates, provider, cache, dataset, score_floor: float, nms_iou: float,
                  max_per_class: int, metric: str = "voc07") -> np.ndarray:
    """VOC AP (``metric``: voc07 or voc10) of each candidate on ``dataset``'s cached windows
    (``cache``, scored through ``provider``), with ``detect``'s rule for an image's boxes
    (:func:`.best_after_nms`): (M,) float64, ``nan`` for a class without ground truth in the
    split. Ground-truth windows are not inputs, as in ``detect``; boxes are not regressed."""
    from ..core.average_precision import evaluate_class
    from ..core.nms import best_after_nms
    from ..datasets.base import class_ground_truth
    from ..progress import progress

    m = len(candidates)
    if m == 0:
        return np.zeros(0)
    found: list[list[tuple[str, np.ndarray, np.ndarray]]] = [[] for _ in range(m)]
    for image_id in progress(cache.image_ids, desc="train-svm select", unit="img"):
        win = cache.windows(image_id)
        idx = np.arange(win.n_gt, len(win.boxes))
        # windows with the same conv5 cells have the same features: pooled and scored once
        _, first, inverse = np.unique(cache.window_keys(win)[idx], return_index=True, return_inverse=True)
        pooled = provider.pooled(image_id, idx[first], windows=win)
        scores = provider.scores(pooled, candidates.weights, candidates.bias)[inverse]
        boxes = win.boxes[idx]
        for j in range(m):
            keep = best_after_nms(boxes, scores[:, j], score_floor, nms_iou, max_per_class)
            if len(keep):
                found[j].append((image_id, boxes[keep], scores[keep, j]))
    truth = {k: class_ground_truth(dataset, k) for k in np.unique(candidates.owner).tolist()}
    ap = np.zeros(m)
    for j in range(m):
        ids = np.array([i for i, b, _ in found[j] for _ in range(len(b))], dtype=object)
        boxes = np.concatenate([b for _, b, _ in found[j]]) if found[j] else np.zeros((0, 4))
        scores = np.concatenate([s for _, _, s in found[j]]) if found[j] else np.zeros(0)
        ap[j] = evaluate_class(_Detections(ids, scores.astype(np.float64), boxes.astype(np.float64)),
                               truth[int(candidates.owner[j])], use_07_metric=metric == "voc07").ap
    return ap


def choose(candidates: Candidates, ap: np.ndarray, n_classes: int, dim: int):
    """Per class, the candidate with the highest ``ap`` (ties: the later retrain; a class whose
    APs are all ``nan`` keeps its last model). Returns ``(weights (K, D), bias (K,), records)``:
    a class without candidates gets w = 0, b = -1 (it never fires); ``records[k]`` lists its
    candidates' retrains and APs and the retrain chosen (``None`` without candidates)."""
    weights = np.zeros((n_classes, dim), np.float32)
    bias = np.full(n_classes, -1.0, np.float32)
    records: list[dict | None] = [None] * n_classes
    for k in range(n_classes):
        rows = np.nonzero(candidates.owner == k)[0]
        if not len(rows):
            continue
        order = rows[np.argsort(candidates.retrain[rows], kind="stable")]
        aps = ap[order]
        best = order[-1]
        if not np.all(np.isnan(aps)):
            # the last maximum in retrain order: ties go to the later model
            best = order[len(aps) - 1 - int(np.nanargmax(aps[::-1]))]
        weights[k], bias[k] = candidates.weights[best], candidates.bias[best]
        records[k] = {"retrains": candidates.retrain[order].tolist(),
                      "val_ap": [None if np.isnan(a) else round(float(a), 6) for a in aps],
                      "chosen": int(candidates.retrain[best]), "last": int(candidates.retrain[order[-1]])}
    return weights, bias, records

