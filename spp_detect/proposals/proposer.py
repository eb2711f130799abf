"""What a proposal method is to the rest of the pipeline, and the registry of methods.

A method is a frozen dataclass of plain values (it travels to worker processes, and its
:meth:`~Proposer.to_stamp` goes into the proposals file so a cache made with other settings is
never trusted) with one call: :meth:`~Proposer.propose`, boxes for one image. Adding a method:
write its dataclass, add a ``from_config`` entry to :data:`METHODS`, and add its name to
``propose.method``'s choices in :mod:`spp_detect.config`. The stage, the worker pool, the
proposals file, resuming and recall work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np


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


def _opencv(p, seed: int):
    from .selective_search import SearchParams

    return SearchParams(mode=p.mode, max_proposals=p.max_proposals, min_size=p.min_size, resize_to=p.resize_to,
                        near_duplicate_iou=p.near_duplicate_iou, seed=seed)


# propose.method -> the method built from the [propose] section and the pipeline's seed
METHODS: dict[str, Callable[..., Proposer]] = {"opencv": _opencv}


def proposer_from_config(p, seed: int = 0) -> Proposer:
    """The ``[propose]`` config section (``p``) as its method's :class:`Proposer`."""
    from ..errors import ConfigError

    if p.method not in METHODS:
        raise ConfigError(f"propose.method: unknown method {p.method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[p.method](p, seed)
