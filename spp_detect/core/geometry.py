"""Window geometry: resizing for a scale, choosing a scale per window, projecting onto conv5.

Pure numpy functions (``resize_image`` alone touches pixels, through OpenCV). The frames:

- **Original image frame**: boxes in the package's internal convention (:mod:`spp_detect.core.boxes`):
  float (N, 4) ``(x1, y1, x2, y2)``, 0-based **inclusive** pixels of the image as read.
- **Resized image frame**: the same convention in the image resized for one scale (shorter side
  ``s``), which is what the backbone sees. :func:`boxes_to_resized` maps into it.
- **Conv-cell frame**: integer (N, 4) ``(x1, y1, x2, y2)``, 0-based **inclusive** indices of
  conv5 cells, inside a ``map_h x map_w`` map. Cell ``j`` is centred on resized-image pixel
  ``offset + stride * j`` (pixel ``i``'s centre is at coordinate ``i``); ``stride`` and
  ``offset`` come from the backbone's layer arithmetic (:class:`spp_detect.backbones.Backbone`),
  never typed in. For the released ZF-5 they are 16 and 20 (the released code's 1-based
  "16*(i-1) + 21").

Where the paper and its released code differ, both rules are here (``rule="paper"`` or
``"released"``): PAPER.md, "Pipeline" step 4 and "Projection of a window onto conv5".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .boxes import as_boxes

RULES: tuple[str, ...] = ("paper", "released")

# The released code moves each window edge 6.5 px inward before snapping it to a cell centre,
# for its stride-16 ZF-5; other backbones keep the same fraction of their stride.
RELEASED_INSET_PX = 6.5
RELEASED_STRIDE = 16


def _check_rule(rule: str, what: str) -> None:
    if rule not in RULES:
        raise ValueError(f"{what} rule must be one of {', '.join(RULES)}; got {rule!r}")


def _round_half_up(x: np.ndarray) -> np.ndarray:
    # MATLAB's round (half away from zero) on the non-negative values the released code rounds
    return np.floor(np.asarray(x, np.float64) + 0.5)


# ---------------------------------------------------------------------------------------------
# resizing


def resize_shape(h: int, w: int, scale: int, max_size: int = 0) -> tuple[int, int, float]:
    """Size of an ``h x w`` image resized so its shorter side is ``scale``, aspect kept.

    ``max_size > 0`` caps the longer side: if it would exceed ``max_size``, the factor becomes
    ``max_size / max(h, w)`` instead (the shorter side then ends up below ``scale``). Returns
    ``(new_h, new_w, factor)`` with ``new = round(old * factor)``, at least 1 pixel.
    """
    if h < 1 or w < 1:
        raise ValueError(f"image size must be at least 1x1, got {h}x{w}")
    if scale < 1:
        raise ValueError(f"scale (shorter side) must be >= 1, got {scale}")
    if max_size < 0:
        raise ValueError(f"max_size must be >= 0 (0 = no cap), got {max_size}")
    factor = scale / min(h, w)
    if max_size and max(h, w) * factor > max_size:
        factor = max_size / max(h, w)
    new_h = max(1, int(_round_half_up(h * factor)))
    new_w = max(1, int(_round_half_up(w * factor)))
    return new_h, new_w, factor


def resize_image(image: np.ndarray, scale: int, max_size: int = 0) -> tuple[np.ndarray, float]:
    """Resize an (H, W, C) image for one scale (see :func:`resize_shape`), bilinear.

    Returns ``(resized, factor)``.
    """
    import cv2

    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected an (H, W, C) image, got shape {image.shape}")
    h, w = image.shape[:2]
    new_h, new_w, factor = resize_shape(h, w, scale, max_size)
    if (new_h, new_w) == (h, w):
        return image.copy(), factor
    # INTER_AREA when shrinking avoids aliasing, as MATLAB's imresize (released code) does
    interp = cv2.INTER_AREA if new_h < h else cv2.INTER_LINEAR
    return cv2.resize(image, (new_w, new_h), interpolation=interp), factor


def effective_scales(h: int, w: int, scales, max_size: int = 0) -> np.ndarray:
    """Shorter side of the resized image for each scale (float (S,)); the cap may lower it."""
    out = []
    for s in scales:
        _, _, factor = resize_shape(h, w, int(s), max_size)
        # exact when no cap applies, so the released rule compares whole numbers
        out.append(float(s) if math.isclose(factor, s / min(h, w)) else factor * min(h, w))
    return np.asarray(out, np.float64)


# ---------------------------------------------------------------------------------------------
# scale choice


def choose_scales(
    boxes,
    image_h: int,
    image_w: int,
    scales,
    target_size: int = 224,
    max_size: int = 0,
    rule: str = "paper",
) -> np.ndarray:
    """Pick ONE scale per window: int64 (N,) indices into ``scales``.

    ``boxes``: (N, 4) ``(x1, y1, x2, y2)`` in the ORIGINAL image frame, 0-based inclusive
    (area ``(x2 - x1 + 1) * (y2 - y1 + 1)``). ``scales``: shorter sides, any order.

    - ``paper``: the scale whose resized window area is closest to ``target_size ** 2``.
    - ``released``: ``s* = round(target_size * min_side / sqrt(area))`` and the scale closest
      to ``s*`` (the released code, with ``target_size`` 208 = 13 cells x 16 px).

    Ties go to the smaller scale. Scales are compared by the shorter side the image really gets
    (:func:`effective_scales`, which differs from the nominal one only under a ``max_size`` cap).
    """
    _check_rule(rule, "scale choice")
    boxes = as_boxes(boxes, np.float64)
    scales = np.asarray(scales, np.float64).reshape(-1)
    if scales.size == 0:
        raise ValueError("choose_scales needs at least one scale")
    if target_size <= 0:
        raise ValueError(f"target_size must be positive, got {target_size}")
    if len(boxes) == 0:
        return np.zeros((0,), np.int64)
    widths = boxes[:, 2] - boxes[:, 0] + 1.0
    heights = boxes[:, 3] - boxes[:, 1] + 1.0
    if not np.all(np.isfinite(boxes)) or np.any(widths <= 0) or np.any(heights <= 0):
        k = int(np.flatnonzero(~np.isfinite(boxes).all(1) | (widths <= 0) | (heights <= 0))[0])
        raise ValueError(f"box {k} is empty or not finite: {boxes[k].tolist()}")
    min_side = float(min(image_h, image_w))
    eff = effective_scales(image_h, image_w, scales, max_size)
    area = widths * heights
    if rule == "paper":
        scaled_area = area[:, None] * (eff[None, :] / min_side) ** 2
        dist = np.abs(scaled_area - float(target_size) ** 2)
    else:
        wanted = _round_half_up(target_size * min_side / np.sqrt(area))
        dist = np.abs(eff[None, :] - wanted[:, None])
    # argmin takes the first minimum: visit scales smallest first so ties go to the smaller
    order = np.argsort(eff, kind="stable")
    return order[np.argmin(dist[:, order], axis=1)].astype(np.int64)


# ---------------------------------------------------------------------------------------------
# original image -> resized image


def boxes_to_resized(boxes, image_h: int, image_w: int, new_h: int, new_w: int, rule: str = "paper") -> np.ndarray:
    """Map boxes from the original image frame into the resized image frame (float (N, 4)).

    Both frames 0-based inclusive pixels.

    - ``paper``: pixel centres map as the resize samples them: ``x' = (x + 0.5) * fx - 0.5``
      with ``fx = new_w / image_w`` (``fy`` likewise), the grid ``cv2.resize`` uses.
    - ``released``: the released code's ``b' = (b - 1) * (s - 1) / (min_side - 1) + 1`` on
      1-based pixels, i.e. ``x' = x * (s - 1) / (min_side - 1)`` 0-based, where ``s`` is the
      resized shorter side: first and last pixels map onto first and last pixels.
    """
    _check_rule(rule, "box scaling")
    boxes = as_boxes(boxes, np.float64)
    if rule == "paper":
        fx, fy = new_w / image_w, new_h / image_h
        out = boxes.copy()
        out[:, 0::2] = (boxes[:, 0::2] + 0.5) * fx - 0.5
        out[:, 1::2] = (boxes[:, 1::2] + 0.5) * fy - 0.5
        return out
    min_side, s = min(image_h, image_w), min(new_h, new_w)
    factor = (s - 1) / (min_side - 1) if min_side > 1 else s / min_side
    return boxes * factor


# ---------------------------------------------------------------------------------------------
# resized image -> conv5 cells


def cell_centers(n: int, stride: float, offset: float) -> np.ndarray:
    """Resized-image coordinate of the centre of conv cells ``0 .. n-1``: ``offset + stride * j``."""
    return offset + stride * np.arange(n, dtype=np.float64)


def project_boxes(boxes, stride: float, offset: float, rule: str, map_h: int, map_w: int, inset: float | None = None) -> np.ndarray:
    """Project windows onto a conv map: int64 (N, 4) inclusive cell rectangles, never dropping one.

    ``boxes``: (N, 4) ``(x1, y1, x2, y2)`` in the RESIZED image frame, 0-based inclusive pixels.
    ``stride``/``offset``: the backbone's total stride and the resized-image coordinate of cell
    0's centre. Returned rectangles ``(x1, y1, x2, y2)`` are 0-based inclusive cell indices with
    ``0 <= x1 <= x2 <= map_w - 1`` and ``0 <= y1 <= y2 <= map_h - 1``.

    With ``u = (x - offset) / stride`` (a pixel's position in cell units):

    - ``paper``: left/top ``floor(u1) + 1``, right/bottom ``ceil(u2) - 1``: the cells whose
      centres lie strictly inside the window. This is the paper's ``floor(x/S) + 1`` and
      ``ceil(x/S) - 1``, stated for a network whose cell ``x'`` is centred on pixel ``S * x'``
      (offset 0, "standard" padding), applied relative to the backbone's real offset.
    - ``released``: each edge moved ``inset`` px inward, then snapped to the nearest centre:
      left ``floor((x1 - offset + inset) / S + 0.5)``, right ``ceil((x2 - offset - inset) / S - 0.5)``,
      the released code's formula with its 1-based ``+ 1`` removed on both sides. ``inset``
      defaults to 6.5 px scaled by ``stride / 16``.

    A window that collapses (left > right) gets both edges at ``floor((left + right) / 2)`` (the
    released code's integer midpoint); then every edge is clamped into the map.
    """
    _check_rule(rule, "projection")
    boxes = as_boxes(boxes, np.float64)
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    if map_h < 1 or map_w < 1:
        raise ValueError(f"the conv map must be at least 1x1 cells, got {map_h}x{map_w}")
    if not np.all(np.isfinite(boxes)):
        k = int(np.flatnonzero(~np.isfinite(boxes).all(1))[0])
        raise ValueError(f"box {k} has a non-finite coordinate: {boxes[k].tolist()}")
    if len(boxes) == 0:
        return np.zeros((0, 4), np.int64)
    u1 = (boxes[:, 0:2] - offset) / stride  # left, top
    u2 = (boxes[:, 2:4] - offset) / stride  # right, bottom
    if rule == "paper":
        lo = np.floor(u1) + 1
        hi = np.ceil(u2) - 1
    else:
        if inset is None:
            inset = RELEASED_INSET_PX * stride / RELEASED_STRIDE
        lo = np.floor(u1 + inset / stride + 0.5)
        hi = np.ceil(u2 - inset / stride - 0.5)
    lo = lo.astype(np.int64)
    hi = hi.astype(np.int64)
    collapsed = lo > hi
    mid = (lo + hi) // 2
    lo = np.where(collapsed, mid, lo)
    hi = np.where(collapsed, mid, hi)
    limit = np.array([map_w - 1, map_h - 1], np.int64)
    lo = np.clip(lo, 0, limit)
    hi = np.clip(hi, 0, limit)
    return np.concatenate([lo, hi], axis=1)


# ---------------------------------------------------------------------------------------------
# the three steps under one rule


@dataclass(frozen=True)
class WindowGeometry:
    """How windows of an original image reach conv5 cells: scale choice, box scaling and
    projection, all under ONE ``rule`` (``extract.projection``: ``paper`` or ``released``).

    Extraction and window pretraining both go through this object, so they cannot apply a rule
    to one step and not another. Boxes: (N, 4) ``(x1, y1, x2, y2)``, 0-based inclusive pixels,
    in the original frame unless the resized one is named.
    """

    scales: tuple[int, ...]
    target_size: int = 224
    max_size: int = 0
    rule: str = "paper"

    def __post_init__(self):
        _check_rule(self.rule, "window geometry")

    def best_scales(self, boxes, image_h: int, image_w: int, target_size: float | None = None) -> np.ndarray:
        """One scale index per window (:func:`choose_scales`); ``target_size`` overrides the
        configured one (window pretraining jitters it)."""
        target = self.target_size if target_size is None else target_size
        return choose_scales(boxes, image_h, image_w, self.scales, target, self.max_size, self.rule)

    def resize(self, image: np.ndarray, k: int) -> np.ndarray:
        """The image resized to scale ``k`` (index into :attr:`scales`)."""
        return resize_image(image, self.scales[k], self.max_size)[0]

    def to_resized(self, boxes, image_h: int, image_w: int, new_h: int, new_w: int) -> np.ndarray:
        """Boxes of the original frame in the resized frame (:func:`boxes_to_resized`)."""
        return boxes_to_resized(boxes, image_h, image_w, new_h, new_w, self.rule)

    def project(self, boxes_resized, stride: float, offset: float, map_h: int, map_w: int) -> np.ndarray:
        """Boxes of the resized frame as conv5 cell rectangles (:func:`project_boxes`)."""
        return project_boxes(boxes_resized, stride, offset, self.rule, map_h, map_w)
