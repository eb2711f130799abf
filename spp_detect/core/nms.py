"""Non-maximum suppression on internal-convention boxes (0-based inclusive pixels)."""

from __future__ import annotations

import numpy as np


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, highest score first.

    ``boxes``: (N, 4) ``(x1, y1, x2, y2)`` 0-based inclusive pixels; ``scores``: (N,). A box is
    suppressed when its IoU (inclusive +1 convention) with a kept, higher-scoring box is
    strictly greater than ``iou_threshold``, as in the released code and torchvision.
    """
    import torch
    import torchvision

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros((0,), np.int64)
    # torchvision measures areas as (x2 - x1) * (y2 - y1): shifting x2, y2 by one pixel makes
    # its areas and intersections exactly the inclusive-pixel ones
    shifted = boxes.copy()
    shifted[:, 2:] += 1.0
    keep = torchvision.ops.nms(torch.from_numpy(shifted), torch.from_numpy(np.asarray(scores, np.float64)), iou_threshold)
    return keep.numpy().astype(np.int64)


def best_after_nms(boxes: np.ndarray, scores: np.ndarray, score_floor: float, iou_threshold: float,
                   max_boxes: int) -> np.ndarray:
    """One class's detections in an image: indices of the windows scoring above ``score_floor``
    that survive :func:`nms`, best first, at most ``max_boxes`` (the released code's rule).
    ``boxes``: (N, 4) 0-based inclusive pixels; ``scores``: (N,)."""
    sel = np.nonzero(scores > score_floor)[0]
    if len(sel) == 0:
        return sel
    return sel[nms(boxes[sel], scores[sel], iou_threshold)][:max_boxes]
