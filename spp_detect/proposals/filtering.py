"""Pure box operations that turn a ranked list of raw proposals into what is stored.

Every function takes and returns boxes in the package's internal convention (see
:mod:`spp_detect.core.boxes`): float32 (N, 4) ``(x1, y1, x2, y2)``, 0-based **inclusive** pixels of
the original image. Row order is rank order (best first) and every step keeps it, so "keep
the first k" always means "keep the k best".

The steps, in the order :func:`finalize` applies them: snap to whole pixels, clip to the image,
drop boxes narrower or shorter than ``min_size``, drop exact duplicates (first occurrence wins),
optionally drop near-duplicates, keep the first ``max_proposals``, and fall back to the whole
image when nothing is left.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.boxes import as_boxes, clip_boxes, iou_matrix, widths_heights


def rects_to_boxes(rects: np.ndarray, scale_x: float = 1.0, scale_y: float = 1.0) -> np.ndarray:
    """OpenCV rectangles ``(x, y, w, h)`` found on a resized image -> internal boxes.

    ``scale_x``/``scale_y`` are resized size / original size. A rectangle covers the half-open
    pixel range ``[x, x + w)`` of the resized image, i.e. ``[x / sx, (x + w) / sx)`` of the
    original; the inclusive right edge is that end minus one pixel. Not rounded (see
    :func:`snap_to_pixels`).
    """
    rects = np.asarray(rects, np.float64).reshape(-1, 4)
    out = np.empty_like(rects)
    out[:, 0] = rects[:, 0] / scale_x
    out[:, 1] = rects[:, 1] / scale_y
    out[:, 2] = (rects[:, 0] + rects[:, 2]) / scale_x - 1.0
    out[:, 3] = (rects[:, 1] + rects[:, 3]) / scale_y - 1.0
    return out.astype(np.float32)


def working_to_original(boxes: np.ndarray, scale_x: float, scale_y: float) -> np.ndarray:
    """Boxes in inclusive pixels of an image resized by ``scale_x``/``scale_y`` (resized /
    original) -> boxes of the original: their half-open extents mapped as :func:`rects_to_boxes`
    maps a rectangle. Not rounded."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    xywh = np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1], 1)
    return rects_to_boxes(xywh, scale_x, scale_y)


def snap_to_pixels(boxes: np.ndarray) -> np.ndarray:
    """Round coordinates to whole pixels, so boxes found at different scales can be compared
    exactly (dedup) and the stored boxes are the pixel rectangles the ground truth uses."""
    return np.round(as_boxes(boxes)).astype(np.float32)


def min_size_mask(boxes: np.ndarray, min_size: float) -> np.ndarray:
    """True for boxes at least ``min_size`` pixels wide AND tall (inclusive widths)."""
    w, h = widths_heights(boxes)
    return (w >= min_size) & (h >= min_size)


def filter_min_size(boxes: np.ndarray, min_size: float) -> np.ndarray:
    """Drop boxes narrower or shorter than ``min_size`` pixels; order kept."""
    boxes = as_boxes(boxes)
    return boxes[min_size_mask(boxes, min_size)]


def unique_boxes(boxes: np.ndarray) -> np.ndarray:
    """Drop exact duplicates, keeping each box's first (best-ranked) occurrence."""
    boxes = as_boxes(boxes)
    if len(boxes) < 2:
        return boxes
    _, first = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first)]


def suppress_near_duplicates(boxes: np.ndarray, iou: float, limit: int | None = None) -> np.ndarray:
    """Greedy in rank order: drop a box whose IoU with an already kept box exceeds ``iou``.

    Near-identical windows cost the later stages as much as distinct ones but add almost no
    recall; dropping them lets the ``max_proposals`` budget reach further down the ranking.
    ``iou >= 1`` disables it. Stops once ``limit`` boxes are kept (the rest would be cut).
    Works in blocks so memory stays O(block x kept), not O(N^2).
    """
    boxes = as_boxes(boxes)
    if iou >= 1.0 or len(boxes) < 2:
        return boxes if limit is None else boxes[:limit]
    limit = len(boxes) if limit is None else limit
    kept: list[int] = []
    kept_boxes = np.zeros((0, 4), np.float32)
    block = 256
    for start in range(0, len(boxes), block):
        cand = boxes[start : start + block]
        # candidates already covered by boxes kept in earlier blocks
        alive = np.ones(len(cand), bool)
        if len(kept_boxes):
            alive &= iou_matrix(cand, kept_boxes).max(axis=1) <= iou
        within = iou_matrix(cand, cand)
        new: list[int] = []
        for i in np.flatnonzero(alive):
            if new and within[i, new].max() > iou:
                continue
            new.append(int(i))
            if len(kept) + len(new) >= limit:
                break
        kept.extend(start + i for i in new)
        kept_boxes = boxes[kept]
        if len(kept) >= limit:
            break
    return boxes[kept]


def interleave_ranked(lists: Sequence[np.ndarray]) -> np.ndarray:
    """Merge several rank-ordered box lists into one by rank position.

    The result holds every list's rank-1 box, then every list's rank-2 box, and so on (ties in
    list order), so each list contributes equally to any prefix: a short list from a coarse
    segmentation is not buried under a long list from a fine one.
    """
    lists = [as_boxes(b) for b in lists]
    if not lists:
        return np.zeros((0, 4), np.float32)
    ranks = np.concatenate([np.arange(len(b)) for b in lists])
    source = np.concatenate([np.full(len(b), i) for i, b in enumerate(lists)])
    order = np.lexsort((source, ranks))
    return np.concatenate(lists)[order].astype(np.float32)


def whole_image_box(height: int, width: int) -> np.ndarray:
    """The one box covering the whole image, shape (1, 4)."""
    return np.array([[0.0, 0.0, width - 1.0, height - 1.0]], np.float32)


def finalize(
    boxes: np.ndarray,
    height: int,
    width: int,
    min_size: int,
    max_proposals: int,
    near_duplicate_iou: float = 1.0,
) -> tuple[np.ndarray, bool]:
    """Ranked raw boxes -> the stored proposals of one image.

    Returns ``(boxes, fallback)``: float32 (N, 4), 1 <= N <= ``max_proposals``, clipped to the
    ``height`` x ``width`` image; ``fallback`` is True when nothing survived the filters and
    the whole image was returned as the only box.
    """
    out = clip_boxes(snap_to_pixels(boxes), height, width)
    out = filter_min_size(out, min_size)
    out = unique_boxes(out)
    out = suppress_near_duplicates(out, near_duplicate_iou, limit=max_proposals)
    out = out[:max_proposals]
    if len(out) == 0:
        return whole_image_box(height, width), True
    return np.ascontiguousarray(out, np.float32), False
