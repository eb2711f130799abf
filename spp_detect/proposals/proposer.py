"""What a proposal method is to the rest of the pipeline, and the registry of methods.

A method is a frozen dataclass of plain values (it travels to worker processes, and its
:meth:`~Proposer.to_stamp` goes into the proposals file so a cache made with other settings is
never trusted) with one call: :meth:`~Proposer.propose`, boxes for one image. Adding a method:
write its dataclass, add a ``from_config`` entry to :data:`METHODS`, and add its name to
``propose.method``'s choices in :mod:`spp_detect.config`. The stage, the worker pool, the
proposals file, resuming and recall work unchanged.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Protocol

import numpy as np

MAX_SEARCH_PIXELS = 40_000_000  # past this a working image exhausts memory in OpenCV's segmentation
# a 160 x 60,000 strip made OpenCV's selective search ask for 7 GB (regions of a thin image have
# hardly any neighbours to merge with); real photographs stay far below this
MAX_ASPECT = 25


class Proposer(Protocol):
    def propose(self, image_rgb: np.ndarray, image_id: str = "", source=None) -> tuple[np.ndarray, bool]:
        """Proposals of one RGB uint8 image (H, W, 3): ``(boxes, fallback)``.

        ``boxes``: float32 (N, 4) ``(x1, y1, x2, y2)`` 0-based inclusive pixels of this image, best
        first. ``fallback``: True when nothing survived and the whole image is the only box.
        ``image_id`` seeds any randomness (the same image gets the same boxes in any order or
        process); ``source`` (its file) is what errors name. Bad images raise ``DataError``.
        """

    def to_stamp(self) -> dict:
        """Every setting that changes the boxes, JSON-able (the proposals file's stamp)."""


def image_seed(image_id: str, seed: int, pass_index: int) -> int:
    """A 32-bit seed that depends only on the image, the run seed and the pass."""
    return zlib.crc32(f"{image_id}|{seed}|{pass_index}".encode()) & 0xFFFFFFFF


def check_searchable(image_rgb: np.ndarray, resize_to: int, source) -> None:
    """Refuse an image no segmentation-based search can take: not (H, W, 3) (ValueError), or
    longer than :data:`MAX_ASPECT` times its width (or the reverse), or one that ``resize_to``
    (a working shorter side, 0 = none) would blow up past :data:`MAX_SEARCH_PIXELS`
    (:class:`DataError` naming ``source``)."""
    from ..errors import DataError

    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {image_rgb.shape}")
    height, width = image_rgb.shape[:2]
    if max(height, width) > MAX_ASPECT * min(height, width):
        raise DataError(source, f"aspect ratio over {MAX_ASPECT}:1: selective search's "
                        "segmentation of such a strip exhausts memory", "size", f"{width}x{height}")
    if resize_to and height * width * (resize_to / min(height, width)) ** 2 > MAX_SEARCH_PIXELS:
        raise DataError(source, f"with its shorter side resized to propose.resize_to = "
                        f"{resize_to} it would hold over {MAX_SEARCH_PIXELS // 10**6} million pixels "
                        "(an extreme aspect ratio)", "size", f"{width}x{height}")


def check_settings(method, modes) -> None:
    """The checks every method's settings share (``method``: its dataclass, with ``mode``,
    ``max_proposals``, ``min_size``, ``resize_to``, ``near_duplicate_iou``; ``modes``: the
    method's valid modes): ConfigError naming the ``propose.`` key and the value."""
    from ..errors import ConfigError

    if method.mode not in modes:
        raise ConfigError(f"propose.mode: unknown mode {method.mode!r}; choose one of {', '.join(modes)}")
    if method.max_proposals < 1:
        raise ConfigError(f"propose.max_proposals must be at least 1, got {method.max_proposals}")
    if method.min_size < 1:
        raise ConfigError(f"propose.min_size must be at least 1 pixel, got {method.min_size}")
    if method.resize_to < 0:
        raise ConfigError(f"propose.resize_to must be 0 (original size) or positive, got {method.resize_to}")
    if not 0.0 < method.near_duplicate_iou <= 1.0:
        raise ConfigError(f"propose.near_duplicate_iou must be in (0, 1], got {method.near_duplicate_iou}")


def resize_image(image: np.ndarray, scale: float) -> tuple[np.ndarray, float, float]:
    """``image`` resized by ``scale`` (area interpolation when shrinking), with the exact x and
    y factors (new size / old size); ``scale`` 1 returns ``image`` itself."""
    import cv2

    if scale == 1.0:
        return image, 1.0, 1.0
    h, w = image.shape[:2]
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(image, (nw, nh), interpolation=interp), nw / w, nh / h


def _opencv(p, seed: int):
    from .selective_search import SearchParams

    return SearchParams(mode=p.mode, max_proposals=p.max_proposals, min_size=p.min_size, resize_to=p.resize_to,
                        near_duplicate_iou=p.near_duplicate_iou, seed=seed)


def _uijlings(p, seed: int):
    from .uijlings import UijlingsSearch

    return UijlingsSearch(mode=p.mode, max_proposals=p.max_proposals, min_size=p.min_size, resize_to=p.resize_to,
                          near_duplicate_iou=p.near_duplicate_iou, seed=seed)


# propose.method -> the method built from the [propose] section and the pipeline's seed
METHODS: dict[str, Callable[..., Proposer]] = {"opencv": _opencv, "uijlings": _uijlings}


def proposer_from_config(p, seed: int = 0) -> Proposer:
    """The ``[propose]`` config section (``p``) as its method's :class:`Proposer`."""
    from ..errors import ConfigError

    if p.method not in METHODS:
        raise ConfigError(f"propose.method: unknown method {p.method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[p.method](p, seed)
