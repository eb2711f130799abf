"""Labelling windows against ground truth: the fine-tuning, SVM and regression samplers' shared step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .boxes import iou_matrix


@dataclass(frozen=True)
class WindowLabels:
    """Per window: the best-overlapping ground-truth box, its IoU and its class.

    ``max_iou`` (N,), ``gt_index`` (N,) index into the usable ground truth (-1 if none),
    ``gt_label`` (N,) class index (-1 if none).
    """

    max_iou: np.ndarray
    gt_index: np.ndarray
    gt_label: np.ndarray


def label_windows(boxes: np.ndarray, gt_boxes: np.ndarray, gt_labels: np.ndarray) -> WindowLabels:
    """Match windows (N, 4) to ground truth (M, 4), both internal convention."""
    n = len(boxes)
    if len(gt_boxes) == 0 or n == 0:
        return WindowLabels(np.zeros(n), np.full(n, -1), np.full(n, -1))
    iou = iou_matrix(boxes, gt_boxes)
    best = iou.argmax(1)
    return WindowLabels(iou[np.arange(n), best], best, np.asarray(gt_labels)[best])
