"""The spatial pyramid pooling (SPP) layer: any (H, W) conv map -> one fixed-length vector.

Bin rule (PAPER.md, "Pyramid pooling"): for a map (or window) of ``h x w`` conv cells and a
level of ``n x n`` bins, bin ``i`` covers rows ``[floor(i*h/n), ceil((i+1)*h/n))``, columns
likewise. Bins may overlap, are never empty, and every level gives ``n x n`` outputs for
every ``h, w >= 1``. This is exactly the bin rule of ``torch.nn.functional.adaptive_max_pool2d``
(start ``floor(i*h/n)``, end ``ceil((i+1)*h/n)``), which :func:`spp_pool` therefore uses; the
tests check it against a loop over bins for every ``h, w`` from 1 to 40.

Output layout: levels are concatenated in the order given by :func:`ordered_levels`
(``coarse_first``, the released network's fc6 layout: 1x1, 2x2, 3x3, 6x6; or ``as_given``),
each level flattened channel-major as (C, n, n) with rows then columns, so a vector is
``[level_a (C, n_a, n_a).ravel(), level_b (C, n_b, n_b).ravel(), ...]``.

Two entry points:

- :func:`spp_pool` pools whole maps (classification, and pretraining with multi-size inputs).
- :func:`roi_spp_pool` pools windows of one map given as conv-cell rectangles (detection); it
  is the fast sparse-table implementation in :mod:`spp_detect.core.roi_spp`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .pyramid import DEFAULT_LEVELS, ordered_levels, spp_output_dim
from .roi_spp import roi_spp_pool as _roi_spp_pool


def sliding_window_params(a: int, n: int) -> tuple[int, int]:
    """(window, stride) of the paper's fixed-size classification form: ``ceil(a/n)``, ``floor(a/n)``.

    For an ``a x a`` map this is how the released Caffe network realises level ``n`` with
    ordinary max-pooling layers (13 -> (5, 4) for 3x3, (7, 6) for 2x2, (13, 13) for 1x1). It
    does NOT give ``n x n`` outputs for every ``a`` (``a = 10, n = 6``: window 2, stride 1, 9
    outputs); :func:`spp_pool` uses the bin form, which always does.
    """
    if a < 1 or n < 1:
        raise ValueError(f"need a >= 1 and n >= 1, got a={a}, n={n}")
    # a < n would give stride 0 (the fixed-size form is undefined there); report stride 1
    return math.ceil(a / n), max(1, a // n)


def spp_pool(features: torch.Tensor, levels=DEFAULT_LEVELS, concat_order: str = "coarse_first") -> torch.Tensor:
    """Max-pool whole maps into the pyramid.

    ``features``: (N, C, H, W) float, any ``H, W >= 1`` (conv5 after ReLU). Returns
    (N, C * sum(n^2)) in the layout of the module docstring (levels in
    :func:`ordered_levels` order, each (C, n, n) channel-major).
    """
    if not torch.is_tensor(features) or features.dim() != 4:
        shape = tuple(features.shape) if hasattr(features, "shape") else type(features).__name__
        raise ValueError(f"spp_pool expects an (N, C, H, W) tensor, got {shape}")
    n_img, _c, h, w = features.shape
    if h < 1 or w < 1:
        raise ValueError(f"spp_pool needs a map of at least 1x1 cells, got {h}x{w}")
    order = ordered_levels(levels, concat_order)
    # adaptive_max_pool2d's bins are exactly floor(i*h/n) .. ceil((i+1)*h/n), the paper's rule
    return torch.cat([F.adaptive_max_pool2d(features, n).reshape(n_img, -1) for n in order], dim=1)


def roi_spp_pool(
    feature_map: torch.Tensor | np.ndarray,
    rects: torch.Tensor | np.ndarray,
    levels=DEFAULT_LEVELS,
    concat_order: str = "coarse_first",
) -> torch.Tensor:
    """SPP-pool windows of one conv map.

    ``feature_map``: (C, H, W). ``rects``: (R, 4) int conv-cell rectangles ``(x1, y1, x2, y2)``,
    0-based **inclusive** cell indices in the map's frame, inside the map (as produced by
    :func:`spp_detect.core.geometry.project_boxes`). Each window is pooled with the bin rule above
    applied to its own ``h x w`` cells. Returns (R, C * sum(n^2)) float32 in the layout of the
    module docstring. Delegates to the sparse-table implementation of :mod:`spp_detect.core.roi_spp`.
    """
    ordered_levels(levels, concat_order)  # same validation and message as spp_pool
    return _roi_spp_pool(feature_map, rects, tuple(int(n) for n in levels), concat_order)


class SpatialPyramidPooling(nn.Module):
    """:func:`spp_pool` as a module: (N, C, H, W) -> (N, C * sum(n^2)) for any H, W >= 1."""

    def __init__(self, levels=DEFAULT_LEVELS, concat_order: str = "coarse_first"):
        super().__init__()
        self.order = ordered_levels(levels, concat_order)
        self.levels = tuple(int(n) for n in levels)
        self.concat_order = concat_order

    def output_dim(self, channels: int) -> int:
        return spp_output_dim(channels, self.levels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return spp_pool(features, self.levels, self.concat_order)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, concat_order={self.concat_order!r}"
