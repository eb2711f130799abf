"""PASCAL VOC average precision of one class, as the devkit's ``VOCevaldet`` computes it.

Per class (PAPER.md, Evaluation): detections are sorted by score, highest first (stable, so
equal scores keep their input order, as MATLAB's ``sort`` does). Each detection is compared
with the ground truth of its image; IoU uses inclusive pixels (``+1`` on widths and heights,
:func:`spp_detect.core.boxes.iou_matrix`). Following the devkit exactly, a detection looks only at
the ground-truth box it overlaps most:

- best IoU ``>= iou_threshold`` and that box is difficult (or COCO ``iscrowd``): ignored,
  neither true nor false positive;
- best IoU ``>= iou_threshold`` and that box is not yet matched: true positive, box matched;
- best IoU ``>= iou_threshold`` and that box already matched: false positive (a duplicate),
  even if another unmatched box also overlaps enough;
- otherwise: false positive.

Difficult and ignored boxes do not count in ``npos`` (recall's denominator).

A class with no (non-difficult) ground truth in the split has no defined recall: its AP is
``nan``, it is left out of mAP and reports print it as ``-``. (The devkit divides by zero.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import DataError

IOU_THRESHOLD = 0.5


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """AP from a precision/recall curve (detections in score order).

    ``use_07_metric``: VOC2007's 11-point AP, the mean over thresholds ``t`` of the maximum
    precision at recall ``>= t`` (0 if the curve never reaches ``t``). The thresholds are
    ``np.arange(0, 1.1, 0.1)`` as in the devkit's Python port (py-faster-rcnn, Detectron), so
    published figures are reproduced to the last digit, float rounding of ``0.3`` included.
    Otherwise VOC2010+'s AP: the area under the monotone (non-increasing) precision envelope,
    summed at the points where recall changes, exactly as ``VOCap.m``.
    """
    recall = np.asarray(recall, np.float64).reshape(-1)
    precision = np.asarray(precision, np.float64).reshape(-1)
    if use_07_metric:
        points = []
        for t in np.arange(0.0, 1.1, 0.1):
            reached = recall >= t
            points.append(float(np.max(precision[reached])) if reached.any() else 0.0)
        return sum(points) / len(points)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    # The envelope: precision at recall r becomes the best precision at any recall >= r.
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


@dataclass(frozen=True)
class ClassResult:
    """One class's evaluation: AP, the curve, and the counts behind it.

    ``order``: (N,) the input index of each detection in score order (highest first, stable).
    ``tp``/``fp``: (N,) bool per detection in score order (both False for an ignored one).
    ``recall``/``precision``: cumulative, (N,); recall is ``nan`` when ``npos == 0``.
    """

    ap: float
    npos: int
    n_detections: int
    tp: np.ndarray
    fp: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    order: np.ndarray


def evaluate_class(
    detections,
    ground_truth: Mapping[str, tuple[np.ndarray, np.ndarray]],
    iou_threshold: float = IOU_THRESHOLD,
    use_07_metric: bool = True,
) -> ClassResult:
    """Devkit AP of one class (rules in the module docstring).

    ``detections``: a :class:`~spp_detect.evaluation.results_io.ClassDetections` (or anything
    with ``image_ids``, ``scores``, ``boxes``), boxes (N, 4) internal convention: 0-based
    inclusive ``(x1, y1, x2, y2)``. ``ground_truth``: image id -> ``(boxes, ignore)`` for this
    class, boxes (M, 4) in the same convention and ``ignore`` (M,) bool (difficult or crowd).
    Every image of the split must be a key (empty arrays where the class is absent); a
    detection on an image that is not raises :class:`DataError`, as the devkit does.
    """
    from .boxes import as_boxes, iou_matrix

    # Flatten the ground truth: one global index per box, per-image offsets.
    image_index: dict[str, int] = {}
    offsets = [0]
    gt_boxes, gt_ignore = [], []
    for i, (image_id, (boxes, ignore)) in enumerate(ground_truth.items()):
        boxes = as_boxes(boxes, np.float64)
        ignore = np.asarray(ignore, bool).reshape(-1)
        if len(ignore) != len(boxes):
            raise ValueError(f"image {image_id}: {len(boxes)} boxes but {len(ignore)} ignore flags")
        image_index[str(image_id)] = i
        offsets.append(offsets[-1] + len(boxes))
        gt_boxes.append(boxes)
        gt_ignore.append(ignore)
    gt_ignore_all = np.concatenate(gt_ignore) if gt_ignore else np.zeros(0, bool)
    npos = int((~gt_ignore_all).sum())

    scores = np.asarray(detections.scores, np.float64).reshape(-1)
    n = len(scores)
    # Sort by score, highest first; stable so ties keep input order (MATLAB's sort is stable).
    order = np.argsort(-scores, kind="stable")
    det_ids = np.asarray(detections.image_ids, object).reshape(-1)[order]
    det_boxes = as_boxes(detections.boxes, np.float64)[order] if n else np.zeros((0, 4))

    # For each detection: the ground-truth box it overlaps most and by how much.
    best_iou = np.full(n, -np.inf)
    best_gt = np.full(n, -1, np.int64)
    if n:
        uniq, inverse = np.unique(det_ids.astype(str), return_inverse=True)
        for u, image_id in enumerate(uniq):
            if image_id not in image_index:
                raise DataError(None, "detection for an image that has no ground-truth entry", "image_id", str(image_id))
            i = image_index[image_id]
            if offsets[i + 1] == offsets[i]:
                continue
            rows = np.nonzero(inverse == u)[0]
            ov = iou_matrix(det_boxes[rows], gt_boxes[i])
            j = np.argmax(ov, axis=1)  # first maximum, as MATLAB's max
            best_iou[rows] = ov[np.arange(len(rows)), j]
            best_gt[rows] = offsets[i] + j

    # Match in score order: the first detection to claim a box is a TP, later ones are FPs.
    hit = best_iou >= iou_threshold
    ignored = hit & gt_ignore_all[np.where(hit, best_gt, 0)] if n and len(gt_ignore_all) else np.zeros(n, bool)
    claims = hit & ~ignored
    tp = np.zeros(n, bool)
    claim_idx = np.nonzero(claims)[0]
    _, first = np.unique(best_gt[claim_idx], return_index=True)
    tp[claim_idx[first]] = True
    fp = ~tp & ~ignored

    ctp = np.cumsum(tp, dtype=np.float64)
    cfp = np.cumsum(fp, dtype=np.float64)
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    if npos == 0:
        recall = np.full(n, np.nan)
        ap = math.nan
    else:
        recall = ctp / npos
        ap = voc_ap(recall, precision, use_07_metric)
    return ClassResult(ap=ap, npos=npos, n_detections=n, tp=tp, fp=fp, recall=recall, precision=precision,
                       order=order)
