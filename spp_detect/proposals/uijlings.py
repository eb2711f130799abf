"""Selective search as Uijlings et al. (IJCV 2013) define it and R-CNN / SPP-net ran it:
``propose.method = "uijlings"``.

A strategy set (:data:`STRATEGY_SETS`) lists colour spaces, segmentation thresholds ``k`` and
similarity strategies. For each colour space and ``k`` the image is segmented once
(:mod:`.regions`; minimum region size = ``k``, sigma 0.8) and grouped once per similarity
strategy (:mod:`.grouping`), each grouping a hierarchy of regions. The "fast" set is the one
R-CNN's ``selective_search_boxes`` used for VOC: HSV and Lab, k = 50 and 100, strategies
colour+texture+size+fill and texture+size+fill: 8 hierarchies.

Ranking (paper, section 4.1): in each hierarchy the region created last (the whole image) gets
position 1, the one before it 2, and so on down to the initial regions; each position is
multiplied by a random number in [0, 1) and all hierarchies' regions are sorted by the product,
smallest first. Large regions, which every hierarchy holds near the top, come first without
any one hierarchy dominating. Then, as R-CNN: boxes under ``min_size`` pixels go, duplicates go
(the best-ranked copy stays), and the first ``max_proposals`` are kept. The random numbers come
from a generator seeded by the image id and the run seed, so an image gets the same boxes in
any worker and any order.

Boxes returned: float32 (N, 4) ``(x1, y1, x2, y2)``, 0-based inclusive pixels of the original
image, best first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..core.boxes import clip_boxes
from .filtering import finalize, snap_to_pixels, working_to_original
from .grouping import Hierarchy, group
from .proposer import check_searchable, check_settings, image_seed, resize_image
from .regions import (
    color_bins,
    initial_regions,
    segment,
    texture_bins,
    to_color_space,
)


@dataclass(frozen=True)
class StrategySet:
    """Colour spaces x thresholds ``k`` x similarity strategies: one hierarchy per triple."""

    color_spaces: tuple[str, ...]
    ks: tuple[int, ...]
    similarities: tuple[str, ...]
    sigma: float = 0.8


STRATEGY_SETS = {
    # the paper's "single strategy" (section 5.1): one hierarchy, for small images and quick runs
    "lite": StrategySet(("hsv",), (100,), ("ctsf",)),
    # the paper's fast mode as R-CNN and SPP-net ran it (8 hierarchies)
    "fast": StrategySet(("hsv", "lab"), (50, 100), ("ctsf", "tsf")),
    # the paper's quality mode (80 hierarchies): 5 colour spaces, 4 k, 4 strategies
    "quality": StrategySet(("hsv", "lab", "rgi", "h", "i"), (50, 100, 150, 300), ("ctsf", "tsf", "f", "s")),
}


def rank_hierarchies(hierarchies: list[Hierarchy], rng: np.random.Generator) -> np.ndarray:
    """Every region box of ``hierarchies`` (float64 (R, 4)), ranked as the paper ranks them:
    ascending ``position * U[0, 1)``, position 1 for a hierarchy's last region. Ties keep
    hierarchy order, then creation order (a stable sort)."""
    if not hierarchies:
        return np.zeros((0, 4))
    keys = []
    for h in hierarchies:
        count = len(h.boxes)
        position = np.arange(count, 0, -1, dtype=np.float64)  # creation index 0 -> count
        keys.append(position * rng.random(count))
    order = np.argsort(np.concatenate(keys), kind="stable")
    return np.concatenate([h.boxes for h in hierarchies])[order]


def hierarchies(rgb: np.ndarray, strategies: StrategySet) -> list[Hierarchy]:
    """Every hierarchy of ``strategies`` on an RGB uint8 image, in colour space, k, similarity
    order."""
    out = []
    for space in strategies.color_spaces:
        image = to_color_space(rgb, space)
        colors, textures = color_bins(image), texture_bins(image)
        for k in strategies.ks:
            regions = initial_regions(segment(image, k, k, strategies.sigma), colors, textures)
            out.extend(group(regions, sim) for sim in strategies.similarities)
    return out


@dataclass(frozen=True)
class UijlingsSearch:
    """The :class:`~.proposer.Proposer` of this method; everything that decides the boxes.

    ``mode``: a key of :data:`STRATEGY_SETS`. ``max_proposals``: kept per image, in rank
    order. ``min_size``: boxes narrower or shorter (inclusive pixels) are dropped.
    ``resize_to``: working shorter side (0 = the original image, as the paper).
    ``near_duplicate_iou``: a box overlapping a better-ranked kept box by more is dropped (1.0 =
    only exact duplicates, as the paper). ``seed``: mixed with each image id for the ranking.
    """

    mode: str = "fast"
    max_proposals: int = 2000
    min_size: int = 20
    resize_to: int = 0
    near_duplicate_iou: float = 1.0
    seed: int = 0

    def __post_init__(self):
        check_settings(self, STRATEGY_SETS)

    @property
    def strategies(self) -> StrategySet:
        return STRATEGY_SETS[self.mode]

    def propose(self, image_rgb: np.ndarray, image_id: str = "", source=None) -> tuple[np.ndarray, bool]:
        """Proposals of one RGB uint8 image (H, W, 3): ``(boxes, fallback)`` (see the module)."""
        check_searchable(image_rgb, self.resize_to, source or image_id or None)
        height, width = image_rgb.shape[:2]
        scale = self.resize_to / min(height, width) if self.resize_to else 1.0
        work, sx, sy = resize_image(image_rgb, scale)
        rng = np.random.default_rng(image_seed(image_id, self.seed, 0))
        boxes = rank_hierarchies(hierarchies(work, self.strategies), rng)
        if work is not image_rgb:
            boxes = working_to_original(boxes, sx, sy)
        boxes = clip_boxes(snap_to_pixels(boxes), height, width)
        return finalize(boxes, height, width, self.min_size, self.max_proposals, self.near_duplicate_iou)

    def to_stamp(self) -> dict:
        """JSON-able description, including the strategy set, for the proposals file's stamp."""
        d = asdict(self)
        d["method"] = "selective_search/uijlings"
        d["strategies"] = asdict(self.strategies)
        d["ranking"] = "position (1 = last merged) x U[0,1) per hierarchy, hierarchies merged, ascending"
        return d
