"""The initial regions of selective search (Uijlings et al., IJCV 2013, section 3) and what the
grouping needs to know of each: colour and texture histograms, size, bounding box, neighbours.

An image is first turned into one of the paper's colour spaces (:func:`to_color_space`, every
channel scaled to [0, 1]) and over-segmented with the graph-based method of Felzenszwalb and
Huttenlocher (:func:`segment`; OpenCV's implementation of it, already a dependency). Per region
(:func:`initial_regions`):

- colour: a 25-bin histogram per channel over [0, 1], the channels side by side (75 values for
  three channels), L1-normalised over the whole vector;
- texture: Gaussian derivatives (sigma = 1) in 8 orientations per channel, each orientation's
  response a 10-bin histogram (240 values for three channels), L1-normalised. Only regions of
  the same image are ever compared, so the bins span [0, the channel's largest response in this
  image]: they adapt to the image's contrast instead of leaving most pixels in the first bin;
- size in pixels and the bounding box (0-based inclusive pixels ``x1, y1, x2, y2``);
- neighbours: pairs of regions with 4-connected touching pixels, ``i < j``.

Histograms are exact per-pixel counts divided by the region's total, so the histogram of a
union is the size-weighted mean of its parts: that is how :mod:`.grouping` merges them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

COLOR_BINS = 25
TEXTURE_BINS = 10
ORIENTATIONS = 8
TEXTURE_SIGMA = 1.0
# the paper's colour spaces used by its strategies: HSV, Lab, rgI (normalised r, g and
# intensity), H (hue only), I (intensity only)
COLOR_SPACES = ("hsv", "lab", "rgi", "h", "i")


def to_color_space(rgb: np.ndarray, space: str) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (H, W, C) in ``space`` with every channel in [0, 1]."""
    import cv2

    img = rgb.astype(np.float32) / 255.0
    if space in ("hsv", "h"):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)  # H in degrees [0, 360), S and V in [0, 1]
        hsv[:, :, 0] /= 360.0
        return np.ascontiguousarray(hsv if space == "hsv" else hsv[:, :, :1])
    if space == "lab":
        lab = cv2.cvtColor(img, cv2.COLOR_RGB2Lab)  # L in [0, 100], a and b within about +-128
        lab[:, :, 0] /= 100.0
        lab[:, :, 1:] = (lab[:, :, 1:] + 128.0) / 255.0
        return np.clip(lab, 0.0, 1.0)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if space == "i":
        return gray[:, :, None]
    if space == "rgi":
        total = img.sum(axis=2)
        # black pixels have no chromaticity: give them the neutral r = g = 1/3
        safe = np.where(total > 0, total, 1.0)
        r = np.where(total > 0, img[:, :, 0] / safe, 1.0 / 3.0)
        g = np.where(total > 0, img[:, :, 1] / safe, 1.0 / 3.0)
        return np.stack([r, g, gray], axis=2).astype(np.float32)
    raise ConfigError(f"unknown colour space {space!r}; choose one of {', '.join(COLOR_SPACES)}")


def segment(image01: np.ndarray, k: float, min_size: int, sigma: float = 0.8) -> np.ndarray:
    """Felzenszwalb-Huttenlocher graph segmentation of a [0, 1] image (H, W, C): int32 labels
    0..n-1. ``k`` is the paper's threshold on the 0-255 intensity scale (its fast mode: 50 and
    100, with ``min_size`` = k); ``sigma`` the smoothing before segmenting."""
    import cv2

    seg = cv2.ximgproc.segmentation.createGraphSegmentation(float(sigma), float(k), int(min_size))
    labels = seg.processImage(np.ascontiguousarray(image01 * 255.0, np.float32))
    return _compact(labels)


def _compact(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..n-1 in order of first appearance in raster order. OpenCV's
    segmentation already numbers its regions so (its components are numbered as a raster scan
    meets them): then every value 0..n-1 is present and the labels are returned as they are."""
    flat = labels.ravel()
    if flat.min() >= 0 and np.bincount(flat).all():
        return labels.astype(np.int32, copy=False)
    _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # rank of each label's first pixel
    return order[inverse].reshape(labels.shape).astype(np.int32)


def _gaussian_kernels(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    radius = max(1, math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    # derivative of the normalised Gaussian; the sign makes +x the direction of increasing values
    # under OpenCV's correlation (sepFilter2D does not flip the kernel)
    dg = x / sigma**2 * g
    return g.astype(np.float32), dg.astype(np.float32)


def texture_bins(image01: np.ndarray, sigma: float = TEXTURE_SIGMA) -> np.ndarray:
    """uint8 (C * ORIENTATIONS, H, W): each pixel's texture bin per channel and orientation.

    Orientation ``o`` is the direction ``o * 45`` degrees; its response is the positive part of
    the Gaussian derivative along it (the opposite direction is another orientation). Bins
    divide [0, the channel's largest response] into :data:`TEXTURE_BINS`.
    """
    import cv2

    g, dg = _gaussian_kernels(sigma)
    h, w, c = image01.shape
    out = np.empty((c * ORIENTATIONS, h, w), np.uint8)
    angles = np.arange(ORIENTATIONS) * (2 * np.pi / ORIENTATIONS)
    for ch in range(c):
        plane = np.ascontiguousarray(image01[:, :, ch], np.float32)
        dx = cv2.sepFilter2D(plane, cv2.CV_32F, dg, g, borderType=cv2.BORDER_REFLECT)
        dy = cv2.sepFilter2D(plane, cv2.CV_32F, g, dg, borderType=cv2.BORDER_REFLECT)
        responses = [np.maximum(np.cos(a) * dx + np.sin(a) * dy, 0.0) for a in angles]
        top = max(float(r.max()) for r in responses)
        scale = TEXTURE_BINS / top if top > 0 else 0.0
        for o, r in enumerate(responses):
            out[ch * ORIENTATIONS + o] = np.minimum(r * scale, TEXTURE_BINS - 1).astype(np.uint8)
    return out


def color_bins(image01: np.ndarray) -> np.ndarray:
    """uint8 (C, H, W): each pixel's colour bin per channel (:data:`COLOR_BINS` over [0, 1])."""
    bins = np.minimum(image01 * COLOR_BINS, COLOR_BINS - 1).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(bins, 2, 0))


@dataclass
class Regions:
    """The initial regions of one segmentation (row ``i`` = label ``i``).

    ``color`` (n, 25 C) and ``texture`` (n, 80 C): L1-normalised float32 histograms.
    ``size``: pixels (float64). ``boxes``: float64 (n, 4) ``(x1, y1, x2, y2)`` 0-based inclusive
    pixels. ``pairs``: int64 (m, 2) neighbouring regions, ``i < j``, sorted. ``image_size``:
    the image's pixel count (the size and fill similarities divide by it).
    """

    color: np.ndarray
    texture: np.ndarray
    size: np.ndarray
    boxes: np.ndarray
    pairs: np.ndarray
    image_size: int

    def __len__(self) -> int:
        return len(self.size)


def _histograms(labels: np.ndarray, bins: np.ndarray, n_bins: int, n: int) -> np.ndarray:
    """(n, layers * n_bins) counts of ``bins`` (layers, H, W) per label, layers side by side."""
    layers = bins.shape[0]
    width = layers * n_bins
    # int32 indices where they fit: this array is the largest the search makes (layers x pixels)
    dtype = np.int32 if n * width < 2**31 else np.int64
    flat = labels.ravel().astype(dtype) * dtype(width)
    offsets = (np.arange(layers, dtype=dtype) * dtype(n_bins))[:, None]
    index = flat[None, :] + offsets
    index += bins.reshape(layers, -1)
    return np.bincount(index.ravel(), minlength=n * width).reshape(n, width)


def region_boxes(labels: np.ndarray, n: int) -> np.ndarray:
    """float64 (n, 4) inclusive bounding box of every label."""
    w = labels.shape[1]
    # pixels grouped by label, raster order kept inside each group (a stable sort): a group's
    # first pixel has its smallest y and its last the largest; x needs a reduction per group
    order = np.argsort(labels.ravel(), kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(labels.ravel(), minlength=n))[:-1]])
    ends = np.concatenate([starts[1:], [labels.size]]) - 1
    ys, xs = np.divmod(order, w)
    boxes = np.empty((n, 4))
    boxes[:, 0] = np.minimum.reduceat(xs, starts)
    boxes[:, 1] = ys[starts]
    boxes[:, 2] = np.maximum.reduceat(xs, starts)
    boxes[:, 3] = ys[ends]
    return boxes


def adjacent_pairs(labels: np.ndarray) -> np.ndarray:
    """int64 (m, 2) pairs of labels whose pixels touch horizontally or vertically, ``i < j``,
    each once, sorted."""
    n = int(labels.max()) + 1
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()]).astype(np.int64)
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()]).astype(np.int64)
    differ = a != b
    lo, hi = np.minimum(a[differ], b[differ]), np.maximum(a[differ], b[differ])
    keys = np.unique(lo * n + hi)
    return np.stack(np.divmod(keys, n), axis=1)


def initial_regions(labels: np.ndarray, colors: np.ndarray, textures: np.ndarray) -> Regions:
    """Features of every label of ``labels`` (int, 0..n-1, every label present), from the
    per-pixel bins of :func:`color_bins` and :func:`texture_bins` of the same image."""
    n = int(labels.max()) + 1
    size = np.bincount(labels.ravel(), minlength=n).astype(np.float64)
    color = _histograms(labels, colors, COLOR_BINS, n).astype(np.float32)
    texture = _histograms(labels, textures, TEXTURE_BINS, n).astype(np.float32)
    color /= (size * colors.shape[0])[:, None].astype(np.float32)
    texture /= (size * textures.shape[0])[:, None].astype(np.float32)
    return Regions(color, texture, size, region_boxes(labels, n), adjacent_pairs(labels), labels.size)
