"""Selective search (Uijlings et al. 2013) with OpenCV contrib's ``cv2.ximgproc.segmentation``.

The paper's detector uses selective search in "fast" mode. OpenCV's stock fast mode (HSV and
Lab, graph-segmentation k = 150, 300, 450, strategies colour+fill+texture+size and
fill+texture+size) ranks boxes the opposite way to the paper: it scores a region
``rand() * level`` with level 1 for the initial segments, so the smallest regions come first.
This module drives OpenCV's building blocks (graph segmentation, the four similarity
strategies, hierarchical grouping) itself, with a recipe tuned on VOC2007. On the 200 images
of VOC2007 ``val_mini`` with the defaults (2,000 boxes, 20 px minimum size) it measured recall
0.928 at IoU 0.5 and 0.758 at IoU 0.7 (AR 0.605) against 0.873 / 0.666 / 0.577 for OpenCV's
stock fast mode filtered the same way, at the same time per image (``make bench`` reruns it).
What limits recall at IoU 0.5 is mostly small objects: a ground-truth box 10 px wide cannot
reach IoU 0.5 with any box of at least 20 px, and thin objects 12-20 px wide are rarely one
segment. The union of 34 passes (this recipe, k = 50 at full size, the MATLAB settings, 1.5x and
2x upscaled images; 8,300 boxes per image, no cap) reaches only 0.961 / 0.837 on those images;
adding any of them to this recipe under the 2,000 cap moved recall by at most +0.002.

1. **Passes.** A recipe is a list of :class:`Pass`: one graph segmentation (colour space,
   ``k``, minimum region size, sigma) of the image at a given shorter side, grouped
   hierarchically with one similarity strategy. The tuned "fast" recipe (16 passes) mixes
   cheap coarse passes on a 256 px image (most of the recall at IoU 0.5 per second) with four
   full-size passes (the pixel-accurate boxes that recall at IoU 0.7 needs), over three colour
   spaces (HSV, Lab, rg+intensity) and k from 50 to 400; mostly "fill+size" grouping, whose
   diversity costs far less than the colour/texture histograms.
2. **Ranking inside a pass** follows the paper, not OpenCV: the most recently merged (largest)
   regions first. OpenCV only returns its own order, which is ascending ``rand * level``;
   reversing it gives descending ``rand * level``, i.e. deep regions first with the paper's
   random jitter.
3. **Merging passes** interleaves the ranked lists by rank position (every pass's best box,
   then every pass's second box, ...), so coarse passes with few regions are not buried.
4. The result goes through :func:`.filtering.finalize`: snap to pixels, clip, drop boxes under
   ``min_size``, drop duplicates and near-duplicates (IoU above ``near_duplicate_iou``), keep
   the first ``max_proposals``.

OpenCV's ranking draws from the C library's ``rand()``; it is seeded per image and pass (from
the image id and the run seed) through ``srand()``, so proposals are the same whichever worker
computes an image. "Working size" is the original image, or the image resized so its shorter
side is ``resize_to`` when that is set (selective search time grows with the pixel count).

All boxes returned here are in the internal convention (float32 (N, 4), ``(x1, y1, x2, y2)``,
0-based inclusive pixels of the ORIGINAL image).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from dataclasses import asdict, dataclass

import numpy as np

from ..core.boxes import clip_boxes
from ..errors import ConfigError
from .filtering import (
    finalize,
    interleave_ranked,
    rects_to_boxes,
    snap_to_pixels,
    working_to_original,
)
from .proposer import check_searchable, check_settings, image_seed, resize_image

# strategy letters -> OpenCV factory names; a pass strategy such as "fts" combines several
# with equal weights (OpenCV's SelectiveSearchSegmentationStrategyMultiple)
STRATEGY_LETTERS = {
    "c": "createSelectiveSearchSegmentationStrategyColor",
    "f": "createSelectiveSearchSegmentationStrategyFill",
    "t": "createSelectiveSearchSegmentationStrategyTexture",
    "s": "createSelectiveSearchSegmentationStrategySize",
}
COLOR_SPACES = ("hsv", "lab", "rgi", "h", "i")
MODES = ("lite", "fast", "quality")


@dataclass(frozen=True)
class Pass:
    """One segmentation of the image and its hierarchical groupings.

    ``side``: shorter side, in pixels, of the image this pass searches (0 = the working image;
    never larger than it). ``color``: one of :data:`COLOR_SPACES` (``rgi`` = red, green,
    intensity; ``h`` = hue only; ``i`` = intensity). ``k``: graph-segmentation threshold
    (larger = larger initial regions). ``min_region``: smallest initial region, in pixels of
    the searched image. ``sigma``: Gaussian smoothing before segmenting. ``strategies``:
    similarity combinations, each a string of letters from ``cfts``.
    """

    side: int
    color: str
    k: int
    min_region: int
    sigma: float = 0.8
    strategies: tuple[str, ...] = ("fts",)


COARSE_SIDE = 256  # coarse passes: 2/3 of a 375 px VOC image; a fixed cost on larger images
COARSE_MIN_REGION = 47  # about FINE_MIN_REGION's area in the original at that size
FINE_MIN_REGION = 30  # smallest initial region at full size, pixels


def _coarse(color: str, k: int, strategy: str = "fs") -> Pass:
    return Pass(COARSE_SIDE, color, k, COARSE_MIN_REGION, 0.8, (strategy,))


def _fine(color: str, k: int, strategy: str = "fs") -> Pass:
    return Pass(0, color, k, FINE_MIN_REGION, 0.8, (strategy,))


# "fast": chosen greedily (recall at IoU 0.5 + 0.7 gained per second) from 96 candidate passes
# on the first 100 images of VOC2007 val_mini, checked on all 200. Coarse passes carry recall
# at IoU 0.5 cheaply; the four full-size ones add the exact boxes that IoU 0.7 needs. Order is
# the greedy order and matters: ties in the interleaved ranking go to earlier passes.
# "quality": the same, then every other colour space / k / strategy of the candidate grid.
_FAST = (
    _coarse("rgi", 200),
    _coarse("hsv", 50),
    _coarse("rgi", 100),
    _coarse("hsv", 200, "fts"),
    _coarse("hsv", 100),
    _coarse("lab", 50, "fts"),
    _fine("rgi", 200),
    _coarse("lab", 200, "fts"),
    _coarse("rgi", 50),
    _coarse("hsv", 50, "fts"),
    _fine("rgi", 100),
    _coarse("lab", 100, "fts"),
    _fine("hsv", 200),
    _fine("lab", 400),
    _coarse("hsv", 200),
    _coarse("hsv", 100, "cfts"),
)
_GRID = (
    *(_coarse(c, k, st) for c in ("hsv", "lab", "rgi") for k in (50, 100, 200, 400) for st in ("fts", "fs")),
    *(_fine(c, k, st) for c in ("hsv", "lab", "rgi") for k in (100, 200, 400) for st in ("fts", "fs")),
)
RECIPES: dict[str, tuple[Pass, ...]] = {
    # "lite": the first four passes of "fast" (coarse, 256 px): about a quarter of its time, for
    # small images and the CPU demo, where objects are large relative to the image
    "lite": _FAST[:4],
    "fast": _FAST,
    "quality": _FAST + tuple(p for p in _GRID if p not in _FAST),
}


@dataclass(frozen=True)
class SearchParams:
    """Everything that decides the proposals of an image; stored in the proposals file.

    ``max_proposals``: kept per image, in rank order. ``min_size``: boxes narrower or shorter
    (inclusive pixels) are dropped. ``resize_to``: working shorter side (0 = original).
    ``near_duplicate_iou``: a box overlapping a better-ranked kept box by more is dropped
    (1.0 = off). ``seed``: mixed with each image id to seed OpenCV's ranking.
    """

    mode: str = "fast"
    max_proposals: int = 2000
    min_size: int = 20
    resize_to: int = 0
    near_duplicate_iou: float = 0.9
    seed: int = 0

    def __post_init__(self):
        check_settings(self, RECIPES)

    @property
    def passes(self) -> tuple[Pass, ...]:
        return RECIPES[self.mode]

    def propose(self, image_rgb: np.ndarray, image_id: str = "", source=None) -> tuple[np.ndarray, bool]:
        """:func:`selective_search` with these settings (the :class:`~.proposer.Proposer` call)."""
        return selective_search(image_rgb, self, image_id, source)

    def to_stamp(self) -> dict:
        """JSON-able description, including the full recipe, for the file's stamp."""
        d = asdict(self)
        d["method"] = "selective_search/opencv-" + _opencv_version()
        d["passes"] = [asdict(p) for p in self.passes]
        d["ranking"] = "per pass: reversed OpenCV order (deep regions first); passes interleaved by rank"
        return d


def _opencv_version() -> str:
    import cv2

    return cv2.__version__


@functools.lru_cache(maxsize=1)
def _libc():
    """The C library whose ``rand()`` OpenCV's selective search ranking calls (None if absent)."""
    try:
        name = ctypes.util.find_library("c")
        lib = ctypes.CDLL(name) if name else ctypes.CDLL(None)
        lib.srand.argtypes = [ctypes.c_uint]
        return lib
    except (OSError, AttributeError):  # pragma: no cover - platforms without a shared libc
        return None


def _convert_color(bgr: np.ndarray, color: str) -> np.ndarray:
    import cv2

    if color == "hsv":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    if color == "lab":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab)
    if color == "rgi":
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        return cv2.merge([bgr[:, :, 2], bgr[:, :, 1], gray])
    if color == "h":
        return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)[:, :, 0])
    if color == "i":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    raise ConfigError(f"unknown colour space {color!r}; choose one of {', '.join(COLOR_SPACES)}")


def _strategy(letters: str):
    import cv2

    seg = cv2.ximgproc.segmentation
    multiple = seg.createSelectiveSearchSegmentationStrategyMultiple()
    for letter in letters:
        if letter not in STRATEGY_LETTERS:
            raise ConfigError(f"unknown strategy letter {letter!r} in {letters!r}; use letters of 'cfts'")
        multiple.addStrategy(getattr(seg, STRATEGY_LETTERS[letter])(), 1.0)
    return multiple


def run_pass(bgr: np.ndarray, p: Pass, seed: int) -> np.ndarray:
    """One pass on a BGR uint8 image: its boxes in paper rank order, in ``bgr``'s frame."""
    import cv2

    seg = cv2.ximgproc.segmentation
    shorter = min(bgr.shape[:2])
    img, sx, sy = resize_image(bgr, p.side / shorter) if 0 < p.side < shorter else (bgr, 1.0, 1.0)
    ss = seg.createSelectiveSearchSegmentation()
    ss.setBaseImage(img)
    ss.addImage(_convert_color(img, p.color))
    ss.addGraphSegmentation(seg.createGraphSegmentation(p.sigma, float(p.k), int(p.min_region)))
    for letters in p.strategies:
        ss.addStrategy(_strategy(letters))
    libc = _libc()
    if libc is not None:
        libc.srand(seed)
    rects = ss.process()
    # OpenCV sorts ascending rand()*level (initial segments first); the paper ranks the most
    # recently merged regions first, so reverse
    rects = np.asarray(rects).reshape(-1, 4)[::-1]
    return rects_to_boxes(rects, sx, sy)


def selective_search(image_rgb: np.ndarray, params: SearchParams, image_id: str = "",
                     source=None) -> tuple[np.ndarray, bool]:
    """Proposals for one RGB uint8 image (H, W, 3): ``(boxes, fallback)``.

    ``boxes``: float32 (N, 4), internal convention in the original image's frame, rank order,
    at most ``params.max_proposals``, clipped, none under ``params.min_size``. ``fallback`` is
    True when nothing survived and the whole image is the single box. Images
    :func:`~.proposer.check_searchable` refuses raise its errors (naming ``source``, else
    ``image_id``).
    """
    import cv2

    check_searchable(image_rgb, params.resize_to, source or image_id or None)
    height, width = image_rgb.shape[:2]
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    work, wx, wy = resize_image(bgr, params.resize_to / min(height, width)) if params.resize_to else (bgr, 1.0, 1.0)
    ranked = []
    for i, p in enumerate(params.passes):
        boxes = run_pass(work, p, image_seed(image_id, params.seed, i))
        if wx != 1.0 or wy != 1.0:
            boxes = working_to_original(boxes, wx, wy)
        ranked.append(clip_boxes(snap_to_pixels(boxes), height, width))
    merged = interleave_ranked(ranked)
    return finalize(merged, height, width, params.min_size, params.max_proposals, params.near_duplicate_iou)


