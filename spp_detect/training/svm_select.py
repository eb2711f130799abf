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

The best of a class's 20-45 working models on a few hundred images is mostly the luckiest
(measured on VOC: the plain choice helped fc7, whose last models of some classes were near AP 0,
and hurt the SPP vector, whose models all worked). So a class leaves its last model only when
the gain is too large for chance (``svm.select_significance``): a paired bootstrap over the
validation images (the same resamples score every candidate) gives the distribution of the
largest gain over the last model that any candidate shows once each candidate's own gain is
taken away (the max-T test of Westfall and Young, which counts how many candidates were tried);
the best candidate is kept when its gain is beyond that distribution's ``1 - significance``
quantile. A near-trivial last model loses to any working one by far more than chance.
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


@dataclass(frozen=True)
class Ranked:
    """One candidate's validation detections in score order, as the devkit matched them:
    ``image`` (n,) the index of each one's image in the split, ``tp`` and ``fp`` (n,) bool."""

    image: np.ndarray
    tp: np.ndarray
    fp: np.ndarray


@dataclass(frozen=True)
class Validation:
    """Every candidate scored on the validation split: ``ap`` (M,) (``nan`` for a class without
    ground truth there), ``ranked`` its detections, ``positives[k]`` (n_images,) how many of each
    image's boxes of class k count (recall's denominator), ``use_07``: the 11-point AP."""

    ap: np.ndarray
    ranked: list[Ranked]
    positives: dict[int, np.ndarray]
    use_07: bool


def validate(candidates: Candidates, provider, cache, dataset, score_floor: float, nms_iou: float,
             max_per_class: int, metric: str = "voc07") -> Validation:
    """VOC AP (``metric``: voc07 or voc10) of each candidate on ``dataset``'s cached windows
    (``cache``, scored through ``provider``), with ``detect``'s rule for an image's boxes
    (:func:`.best_after_nms`). Ground-truth windows are not inputs, as in ``detect``; boxes are
    not regressed."""
    from ..core.average_precision import evaluate_class
    from ..core.nms import best_after_nms
    from ..datasets.base import class_ground_truth
    from ..progress import progress

    m = len(candidates)
    use_07 = metric == "voc07"
    image_ids = list(cache.image_ids)
    found: list[list[tuple[int, np.ndarray, np.ndarray]]] = [[] for _ in range(m)]
    for i, image_id in enumerate(progress(image_ids, desc="train-svm select", unit="img") if m else []):
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
                found[j].append((i, boxes[keep], scores[keep, j]))
    truth = {k: class_ground_truth(dataset, k) for k in np.unique(candidates.owner).tolist()}
    positives = {k: np.array([int((~np.asarray(t[i][1], bool)).sum()) for i in image_ids], np.int64)
                 for k, t in truth.items()}
    ap, ranked = np.zeros(m), []
    names = np.array(image_ids, dtype=object)
    for j in range(m):
        image = np.concatenate([np.full(len(b), i, np.int32) for i, b, _ in found[j]]) if found[j] else np.zeros(0, np.int32)
        boxes = np.concatenate([b for _, b, _ in found[j]]) if found[j] else np.zeros((0, 4))
        scores = (np.concatenate([s for _, _, s in found[j]]) if found[j] else np.zeros(0)).astype(np.float64)
        result = evaluate_class(_Detections(names[image], scores, boxes.astype(np.float64)),
                                truth[int(candidates.owner[j])], use_07_metric=use_07)
        ap[j] = result.ap
        ranked.append(Ranked(image[result.order], result.tp, result.fp))
    return Validation(ap, ranked, positives, use_07)


def weighted_ap(ranked: Ranked, positives: np.ndarray, weights: np.ndarray, use_07: bool) -> np.ndarray:
    """VOC AP of one candidate's detections on resampled splits: ``weights`` (B, n_images), how
    many times each image is drawn in each resample (an image drawn twice counts its detections
    and its ground truth twice). (B,) float64, ``nan`` where a resample holds no positive.
    With integer weights this is the AP of the split with each image repeated (tested).

    Only the true positives' places in the ranking are computed: recall grows only there, and
    between two of them precision only falls, so the precision envelope (the best precision at
    a recall or beyond) and every point either AP reads are found at them."""
    weights = np.asarray(weights, np.float64)
    npos = weights @ positives.astype(np.float64)
    hits = np.nonzero(ranked.tp)[0]
    if not len(hits):
        return np.where(npos > 0, 0.0, np.nan)
    # per image, how many of its detections (true and false positives) and of its true
    # positives rank at or above each hit; a resample's counts are then one product
    counted = np.nonzero(ranked.tp | ranked.fp)[0]
    n_images = len(positives)
    upto = np.zeros((2, n_images, len(hits)))
    at = np.searchsorted(hits, counted)  # the first hit at or below each counted detection
    inside = at < len(hits)
    np.add.at(upto[0], (ranked.image[counted[inside]], at[inside]), 1.0)
    np.add.at(upto[1], (ranked.image[hits], np.arange(len(hits))), 1.0)
    total, ctp = weights @ np.cumsum(upto, axis=2)  # (B, hits) each
    precision = ctp / np.maximum(total, np.finfo(np.float64).eps)
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = ctp / npos[:, None]
    if use_07:
        # per threshold t, the first hit whose recall reaches it (recall never falls, so the
        # number of hits below t), with the devkit's float comparison (3 of 10 misses 0.3)
        thresholds = np.arange(0.0, 1.1, 0.1)
        first = (recall[:, None, :] < thresholds[None, :, None]).sum(axis=2)  # (B, 11)
        got = np.take_along_axis(envelope, np.minimum(first, len(hits) - 1), axis=1)
        ap = np.where(first < len(hits), got, 0.0).mean(axis=1)
    else:
        ap = (np.diff(recall, axis=1, prepend=0.0) * envelope).sum(axis=1)
    return np.where(npos > 0, ap, np.nan)


def gain_p_values(candidates: Candidates, validation: Validation, resamples: int = 1000,
                  seed: int = 0) -> dict[int, float]:
    """Per class whose best validation candidate (:func:`choose`'s rule) is not its last model:
    the bootstrap p-value of that candidate's gain over the last (module docstring). Resamples
    draw the split's images with replacement; every class and candidate sees the same ones.
    Resamples without a positive of the class are left out."""
    n_images = len(next(iter(validation.positives.values()))) if validation.positives else 0
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_images, np.full(n_images, 1.0 / max(n_images, 1)), size=resamples) if n_images else None
    p: dict[int, float] = {}
    for k in np.unique(candidates.owner).tolist():
        order = _in_retrain_order(candidates, k)
        best, last = _best(order, validation.ap), order[-1]
        if best == last:
            continue
        ap = np.stack([weighted_ap(validation.ranked[j], validation.positives[k], draws, validation.use_07)
                       for j in order])  # (n_candidates, B)
        gain = ap[:-1] - ap[-1]
        seen = validation.ap[order[:-1]] - validation.ap[last]
        valid = ~np.isnan(ap[-1])
        # the largest gain over the last model that chance alone gives any candidate
        chance = np.max(gain[:, valid] - seen[:, None], axis=0)
        p[k] = float((1 + np.sum(chance >= validation.ap[best] - validation.ap[last])) / (1 + valid.sum()))
    return p


def _in_retrain_order(candidates: Candidates, k: int) -> np.ndarray:
    rows = np.nonzero(candidates.owner == k)[0]
    return rows[np.argsort(candidates.retrain[rows], kind="stable")]


def _best(order: np.ndarray, ap: np.ndarray) -> int:
    """The row of the highest AP, the last maximum in retrain order (ties go to the later
    model); the last row when every AP is ``nan``."""
    aps = ap[order]
    if np.all(np.isnan(aps)):
        return int(order[-1])
    return int(order[len(aps) - 1 - int(np.nanargmax(aps[::-1]))])


def choose(candidates: Candidates, ap: np.ndarray, n_classes: int, dim: int,
           p_values: dict[int, float] | None = None, significance: float = 1.0):
    """Per class, the candidate with the highest ``ap`` (ties: the later retrain; a class whose
    APs are all ``nan`` keeps its last model), kept only where its gain over the last model has
    a p-value (``p_values``, :func:`gain_p_values`) at most ``significance``; otherwise the last
    model (``significance`` 1: every best candidate, no test). Returns ``(weights (K, D),
    bias (K,), records)``: a class without candidates gets w = 0, b = -1 (it never fires);
    ``records[k]`` lists its candidates' retrains and APs, the best one, its p-value and the
    retrain kept (``None`` without candidates)."""
    if significance < 1.0 and p_values is None:
        raise ValueError("a significance below 1 needs the p-values of the gains (gain_p_values)")
    weights = np.zeros((n_classes, dim), np.float32)
    bias = np.full(n_classes, -1.0, np.float32)
    records: list[dict | None] = [None] * n_classes
    for k in range(n_classes):
        order = _in_retrain_order(candidates, k)
        if not len(order):
            continue
        best, last = _best(order, ap), int(order[-1])
        p = None if best == last or p_values is None else p_values[k]
        kept = best if p is None or significance >= 1.0 or p <= significance else last
        weights[k], bias[k] = candidates.weights[kept], candidates.bias[kept]
        records[k] = {"retrains": candidates.retrain[order].tolist(),
                      "val_ap": [None if np.isnan(a) else round(float(a), 6) for a in ap[order]],
                      "best": int(candidates.retrain[best]), "p": p,
                      "chosen": int(candidates.retrain[kept]), "last": int(candidates.retrain[last])}
    return weights, bias, records
