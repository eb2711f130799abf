"""Box conventions and the small box operations every stage shares.

Internal convention (used by every function in this package unless its docstring says
otherwise): a float array of shape (N, 4) holding ``(x1, y1, x2, y2)`` in **0-based,
inclusive** pixel coordinates of the original image. A box covering pixel columns 0..9 has
``x1 = 0, x2 = 9`` and width ``x2 - x1 + 1 = 10``. This is PASCAL VOC's convention minus one
(VOC XML is 1-based inclusive) and is what the paper's released code and R-CNN compute IoU on.

Conversions happen only at the edges: :func:`from_voc` / :func:`to_voc` for VOC XML and comp4
result files, :func:`from_coco_xywh` / :func:`to_coco_xywh` for COCO JSON, where
``[x, y, w, h]`` has ``x = x1`` and ``w = x2 - x1 + 1``.
"""

from __future__ import annotations

import numpy as np


def as_boxes(boxes, dtype=np.float32) -> np.ndarray:
    """Return ``boxes`` as a (N, 4) array; an empty input gives shape (0, 4)."""
    arr = np.asarray(boxes, dtype=dtype)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=dtype)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {arr.shape}")
    return arr


def widths_heights(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive widths and heights (``x2 - x1 + 1``) of internal-convention boxes."""
    boxes = as_boxes(boxes, np.float64)
    return boxes[:, 2] - boxes[:, 0] + 1.0, boxes[:, 3] - boxes[:, 1] + 1.0


def areas(boxes: np.ndarray) -> np.ndarray:
    """Inclusive-pixel areas of internal-convention boxes, shape (N,)."""
    w, h = widths_heights(boxes)
    return w * h


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), shape (N, M).

    Both in the internal convention (inclusive pixels, so widths are ``x2 - x1 + 1``), the
    VOC devkit's overlap rule. Non-overlapping pairs give 0.
    """
    a = as_boxes(a, np.float64)
    b = as_boxes(b, np.float64)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    iw = np.clip(ix2 - ix1 + 1.0, 0.0, None)
    ih = np.clip(iy2 - iy1 + 1.0, 0.0, None)
    inter = iw * ih
    union = areas(a)[:, None] + areas(b)[None, :] - inter
    return inter / np.maximum(union, np.finfo(np.float64).eps)


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Clip internal-convention boxes to an image of ``height`` x ``width`` pixels.

    Coordinates end up in ``[0, width - 1]`` and ``[0, height - 1]``; returns a new array.
    """
    out = as_boxes(boxes).copy()
    np.clip(out[:, 0::2], 0, width - 1, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, height - 1, out=out[:, 1::2])
    return out


def from_voc(boxes) -> np.ndarray:
    """VOC 1-based inclusive ``(xmin, ymin, xmax, ymax)`` -> internal 0-based inclusive."""
    return as_boxes(boxes) - 1.0


def to_voc(boxes) -> np.ndarray:
    """Internal 0-based inclusive -> VOC 1-based inclusive ``(xmin, ymin, xmax, ymax)``."""
    return as_boxes(boxes) + 1.0


def from_coco_xywh(xywh) -> np.ndarray:
    """COCO ``[x, y, w, h]`` (top-left corner, sizes in pixels) -> internal boxes."""
    xywh = as_boxes(xywh, np.float64)
    out = xywh.copy()
    out[:, 2] = xywh[:, 0] + xywh[:, 2] - 1.0
    out[:, 3] = xywh[:, 1] + xywh[:, 3] - 1.0
    return out.astype(np.float32)


def to_coco_xywh(boxes) -> np.ndarray:
    """Internal boxes -> COCO ``[x, y, w, h]`` with ``w = x2 - x1 + 1``."""
    boxes = as_boxes(boxes, np.float64)
    w, h = widths_heights(boxes)
    return np.stack([boxes[:, 0], boxes[:, 1], w, h], axis=1)


def flip_horizontal(boxes: np.ndarray, width: int) -> np.ndarray:
    """Mirror internal-convention boxes in an image ``width`` pixels wide."""
    boxes = as_boxes(boxes)
    out = boxes.copy()
    out[:, 0] = width - 1 - boxes[:, 2]
    out[:, 2] = width - 1 - boxes[:, 0]
    return out
