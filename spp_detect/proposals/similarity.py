"""The four similarities of selective search (Uijlings et al., IJCV 2013, section 3.2) and their
combinations, vectorised over many region pairs.

For regions ``a`` and ``b`` of an image of ``image_size`` pixels:

- colour: ``sum_k min(colour_a[k], colour_b[k])`` (histogram intersection, in [0, 1]);
- texture: the same on the texture histograms;
- size: ``1 - (size_a + size_b) / image_size`` (small regions merge first);
- fill: ``1 - (size(box_ab) - size_a - size_b) / image_size``, ``box_ab`` the tight box around
  both (regions that fill each other's gaps merge first).

A strategy is a string of the letters ``c``, ``t``, ``s``, ``f``; its similarity is the sum of
those terms with weight 1 (the paper's fast mode: ``ctsf`` and ``tsf``). Boxes are 0-based
inclusive pixels ``(x1, y1, x2, y2)``.
"""

from __future__ import annotations

import numpy as np

LETTERS = "ctsf"


def histogram_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(m,) intersections of histograms ``a`` (m, d) or (d,) with ``b`` (m, d)."""
    return np.minimum(a, b).sum(axis=-1, dtype=np.float64)


def size_similarity(size_a: np.ndarray, size_b: np.ndarray, image_size: int) -> np.ndarray:
    return 1.0 - (size_a + size_b) / image_size


def fill_similarity(box_a: np.ndarray, box_b: np.ndarray, size_a: np.ndarray, size_b: np.ndarray,
                    image_size: int) -> np.ndarray:
    """Fill term; boxes (m, 4) or (4,) inclusive pixels."""
    x1 = np.minimum(box_a[..., 0], box_b[..., 0])
    y1 = np.minimum(box_a[..., 1], box_b[..., 1])
    x2 = np.maximum(box_a[..., 2], box_b[..., 2])
    y2 = np.maximum(box_a[..., 3], box_b[..., 3])
    box_size = (x2 - x1 + 1) * (y2 - y1 + 1)
    return 1.0 - (box_size - size_a - size_b) / image_size


def similarity(strategy: str, color, texture, size, boxes, a, b, image_size: int) -> np.ndarray:
    """(m,) similarities under ``strategy`` of regions ``a`` and ``b`` (index arrays of equal
    length, or one side a scalar index) whose features are the rows of ``color``, ``texture``,
    ``size`` and ``boxes``."""
    a = np.asarray(a)
    b = np.asarray(b)
    m = max(a.size, b.size)
    out = np.zeros(m)
    if "c" in strategy:
        out += histogram_intersection(color[a], color[b])
    if "t" in strategy:
        out += histogram_intersection(texture[a], texture[b])
    if "s" in strategy:
        out += size_similarity(size[a], size[b], image_size)
    if "f" in strategy:
        out += fill_similarity(boxes[a], boxes[b], size[a], size[b], image_size)
    return out
