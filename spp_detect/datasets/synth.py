"""The built-in synthetic detection dataset: a small but fair VOC-format problem made from a seed.

Six classes, each a SHAPE painted with its own TEXTURE, so neither shape nor texture nor
colour alone names the class:

==================  ==========  ===========================================
class               shape       texture
==================  ==========  ===========================================
striped_disc        ellipse     parallel stripes of two colours
checkered_square    square      checkerboard aligned with the square
dotted_triangle     triangle    a lattice of dots on a plain ground
ring                annulus     plain (the background shows through the hole)
cross               plus sign   a plain inside and a contrasting outline
star                5-point     radial gradient from centre to tips
==================  ==========  ===========================================

Both colours of every object are drawn from one shared palette (:data:`PALETTE`), so colour
carries no class information. Each image has 1 to 6 objects of nominal size 20 to 250 px
(log-uniform), rotated, stretched and shaded, drawn in order so later objects occlude earlier
ones, over a cluttered background: colour gradients, low-frequency blotches, soft blobs,
random lines, and *distractors* -- shapes that share a shape or a texture with some class but
never both (a plain ellipse, a checkered ellipse, a striped rectangle, a dotted hexagon, an
open arc, ...). Images are 240 to 500 px on each side, chosen independently.

Annotations follow VOC: ``Annotations/<id>.xml`` with 1-based inclusive boxes that are tight
around the object's **visible** pixels (after occlusion by later objects and clipping to the
frame), ``truncated`` when part of the object lies outside the frame, ``occluded`` when a later
object hides part of it, and ``difficult`` when less than 40% of it is visible or its visible
box is small (sqrt of area under 22 px). An object less than 15% visible is not drawn at all,
so nothing visible goes unannotated. Objects are listed in drawing order (back to front).
Distractors at least half visible and 16 px wide and tall follow as ``<distractor>`` elements
(name = texture and shape, e.g. ``checker_disc``; see :data:`DISTRACTOR_KINDS`), which VOC
readers skip: the detector never sees them, but pretraining may learn their kinds as classes of
their own (``pretrain.distractor_classes``), as the paper's ImageNet pretraining names far more
kinds of thing than its detector does.

Every image is a pure function of ``(seed, index)`` (its own RNG from
``SeedSequence([seed, index])``), so a dataset is deterministic for a seed and images can be
made in any order or in parallel. Ids are the global index, ``%06d``; splits take consecutive
indices in the order train, val, test; ``trainval`` is train plus val. With ``pretrain`` > 0,
that many more images follow the test ones, and split ``pretrain`` is the training images plus
them: images for the classification pretraining only (the paper pretrains on ImageNet, far more
images than its detector trains on). A finished dataset that differs only in that number is
extended (or its ``pretrain`` split dropped), its other images untouched.

Writing is crash-safe: ``synth.json`` records the recipe first; each image is written as a JPEG
and then its XML, each under a temporary name renamed into place; ``classes.txt`` and the split
files come after all images and ``synth.json`` is marked complete last. An interrupted run
therefore has no split files (the reader refuses it), and running the same command again
resumes it, keeping the images already written. The XML records the annotation version
(:data:`ANNOTATIONS_VERSION`); images written by an older one have their files rewritten (same
pixels, since they depend on the seed and index only), so an older dataset is brought up to date
in place.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..artifacts.files import atomic_path, atomic_write_json, atomic_write_text
from ..errors import DataError, OutputExistsError

log = logging.getLogger(__name__)

SYNTH_VERSION = 1  # bump when a change to the generator changes its output for a seed
# bump when the annotations of a seed's images change but not their pixels: a finished dataset
# with older annotations has them rewritten, its images kept (2: named distractors)
ANNOTATIONS_VERSION = 2

# class name -> (shape, texture); the order is the label order written to classes.txt
CLASS_SPECS: dict[str, tuple[str, str]] = {
    "striped_disc": ("disc", "stripes"),
    "checkered_square": ("square", "checker"),
    "dotted_triangle": ("triangle", "dots"),
    "ring": ("ring", "solid"),
    "cross": ("cross", "outline"),
    "star": ("star", "radial"),
}
CLASSES: tuple[str, ...] = tuple(CLASS_SPECS)

# Distractor shape -> textures it may carry. A combination that defines a class is left out
# (no striped ellipse, no checkered rectangle, no dotted triangle), and no distractor is an
# annulus, a plus or a star, so a distractor is never a valid instance of any class.
DISTRACTOR_SPECS: dict[str, tuple[str, ...]] = {
    "disc": ("solid", "noise", "checker", "dots", "radial"),
    "rectangle": ("solid", "noise", "stripes", "dots", "outline"),
    "triangle": ("solid", "noise", "stripes", "checker"),
    # Hexagons and blobs are round enough to pass for an ellipse when small: never striped.
    "hexagon": ("solid", "noise", "checker", "dots"),
    "blob": ("solid", "noise", "checker", "dots"),
    "arc": ("solid", "noise"),
    "bar": ("solid", "noise", "stripes"),
}

# One palette for objects, distractors and backgrounds (RGB).
PALETTE = np.array(
    [
        (220, 40, 40), (240, 140, 30), (235, 215, 50), (60, 170, 60), (40, 190, 190),
        (50, 90, 210), (140, 60, 190), (220, 80, 170), (240, 240, 240), (30, 30, 30),
        (130, 130, 130), (130, 85, 45),
    ],
    dtype=np.float32,
)
COLOUR_JITTER = 20.0  # per-channel uniform jitter added to a palette colour
MIN_CONTRAST_BG = 70.0  # RGB distance between an object's main colour and the background under it
MIN_CONTRAST_AB = 90.0  # RGB distance between an object's two colours, so its texture shows

MIN_SIDE, MAX_SIDE = 240, 500  # image width and height, each drawn independently
MIN_OBJECTS, MAX_OBJECTS = 1, 6
MIN_OBJECT_SIZE, MAX_OBJECT_SIZE = 20.0, 250.0  # nominal size: sqrt of the unrotated extent's area
MAX_ASPECT_LOG = 0.35  # objects are stretched by exp(U(-a, a)): aspect ratios 0.70 .. 1.42
MAX_EXTENT_FRACTION = 0.95  # a rotated object's extent is at most this share of the image side
MAX_OUTSIDE = 0.3  # share of an object's extent that may fall outside the frame, per axis
MAX_BOX_COVER = 0.6  # a new object may cover at most this share of an earlier object's box
PLACEMENT_TRIES = 20
MIN_DISTRACTORS, MAX_DISTRACTORS = 2, 8
MIN_DISTRACTOR_SIZE, MAX_DISTRACTOR_SIZE = 12.0, 160.0
# distractors are annotated (for pretraining) when this much of their in-frame shape shows and
# their visible box is at least this wide and tall: smaller or more hidden ones name no kind
DISTRACTOR_VISIBLE = 0.5
DISTRACTOR_MIN_SIDE = 16

DROP_VISIBLE = 0.15  # objects less visible than this are not drawn (nothing visible is unlabelled)
MIN_VISIBLE_SIDE = 6  # nor are objects whose visible box is thinner than this (px)
DIFFICULT_VISIBLE = 0.4  # occluded or truncated beyond 60% -> difficult
DIFFICULT_SIZE = 22.0  # sqrt of the visible box's area below this -> difficult
TRUNCATED_TOLERANCE = 0.99  # a few clipped edge pixels make an object neither truncated nor occluded
JPEG_QUALITY = 90
SUBPIXEL_BITS = 4  # fixed-point bits for cv2.fillPoly, so vertices keep sub-pixel positions

SPLITS = ("train", "val", "test")
RECIPE_FILE = "synth.json"


@dataclass(frozen=True)
class SynthObject:
    """One annotated object. ``box``: visible extent, internal convention (0-based inclusive)."""

    label: int
    box: tuple[int, int, int, int]
    truncated: bool
    occluded: bool
    difficult: bool
    visible: float  # visible pixels / all pixels of the shape

    @property
    def name(self) -> str:
        return CLASSES[self.label]


@dataclass(frozen=True)
class SynthDistractor:
    """One annotated distractor: its kind (:func:`distractor_kind`) and visible extent
    (internal convention, 0-based inclusive)."""

    name: str
    box: tuple[int, int, int, int]


def distractor_kind(shape: str, texture: str) -> str:
    """The name a distractor is annotated with, texture first like the class names."""
    return f"{texture}_{shape}"


DISTRACTOR_KINDS: tuple[str, ...] = tuple(distractor_kind(s, t) for s, ts in DISTRACTOR_SPECS.items() for t in ts)


@dataclass
class SynthImage:
    """One generated image: ``pixels`` is uint8 RGB (height, width, 3)."""

    image_id: str
    width: int
    height: int
    pixels: np.ndarray
    objects: list[SynthObject] = field(default_factory=list)
    distractors: list[SynthDistractor] = field(default_factory=list)


@dataclass
class _Layer:
    """A rasterised shape: ``mask`` and ``texture`` cover a patch whose top-left pixel is at
    ``(x0, y0)`` in the image (possibly outside it)."""

    x0: int
    y0: int
    mask: np.ndarray  # bool (h, w)
    texture: np.ndarray  # float32 (h, w, 3)
    label: int = -1


# ---------------------------------------------------------------------------------------------
# geometry


def _circle(n: int, r: float = 0.5, a0: float = 0.0) -> np.ndarray:
    a = a0 + np.arange(n) * (2 * np.pi / n)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _unit_shape(kind: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Polygons of a shape about the origin, roughly within [-0.5, 0.5]^2.

    The first polygon is filled; any further polygon is cut out of it (the hole of a ring).
    """
    if kind == "disc":
        return [_circle(48)]
    if kind in ("square", "rectangle", "bar"):
        return [np.array([(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)])]
    if kind == "triangle":
        pts = _circle(3, 0.55, -np.pi / 2) + rng.uniform(-0.05, 0.05, (3, 2))
        return [pts - pts.mean(axis=0)]
    if kind == "ring":
        return [_circle(48), _circle(48, 0.5 * rng.uniform(0.45, 0.65))]
    if kind == "cross":
        a = rng.uniform(0.14, 0.2)  # half the arm thickness
        return [np.array([
            (-a, -0.5), (a, -0.5), (a, -a), (0.5, -a), (0.5, a), (a, a),
            (a, 0.5), (-a, 0.5), (-a, a), (-0.5, a), (-0.5, -a), (-a, -a),
        ])]
    if kind == "star":
        outer = _circle(5, 0.5, -np.pi / 2)
        inner = _circle(5, 0.5 * rng.uniform(0.38, 0.5), -np.pi / 2 + np.pi / 5)
        return [np.stack([outer, inner], axis=1).reshape(10, 2)]
    if kind == "hexagon":
        return [_circle(6)]
    if kind == "blob":
        r = rng.uniform(0.35, 1.0, 10)
        r = 0.25 * np.roll(r, 1) + 0.5 * r + 0.25 * np.roll(r, -1)  # lumpy, but not spiky like a star
        return [_circle(10) * r[:, None]]
    if kind == "arc":
        # An open band of at most 180 degrees: it never closes into a ring.
        span = rng.uniform(0.4, 1.0) * np.pi
        a = np.linspace(0, span, 24)
        r_in = 0.5 * rng.uniform(0.55, 0.8)
        outer = 0.5 * np.stack([np.cos(a), np.sin(a)], axis=1)
        inner = (r_in * np.stack([np.cos(a), np.sin(a)], axis=1))[::-1]
        return [np.concatenate([outer, inner])]
    raise ValueError(f"unknown shape {kind!r}")


def _transform(polys: list[np.ndarray], size: float, aspect: float, angle: float) -> list[np.ndarray]:
    """Scale to ``size`` (geometric mean of the sides), stretch by ``aspect``, rotate."""
    sx, sy = size * math.sqrt(aspect), size / math.sqrt(aspect)
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return [(p * (sx, sy)) @ rot.T for p in polys]


def _extent(polys: list[np.ndarray]) -> tuple[float, float, float, float]:
    allp = np.concatenate(polys)
    return float(allp[:, 0].min()), float(allp[:, 1].min()), float(allp[:, 0].max()), float(allp[:, 1].max())


def _rasterise(polys: list[np.ndarray], cx: float, cy: float) -> tuple[int, int, np.ndarray]:
    """Fill the polygons centred at (cx, cy) into a patch: (x0, y0, bool mask)."""
    import cv2

    ex1, ey1, ex2, ey2 = _extent(polys)
    x0, y0 = math.floor(cx + ex1) - 1, math.floor(cy + ey1) - 1
    w, h = math.ceil(cx + ex2) + 2 - x0, math.ceil(cy + ey2) + 2 - y0
    mask = np.zeros((h, w), np.uint8)
    scale = 1 << SUBPIXEL_BITS
    for i, p in enumerate(polys):
        pts = np.round((p + (cx - x0, cy - y0)) * scale).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1 if i == 0 else 0, lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)
    return x0, y0, mask.astype(bool)


def _overlap(layer: _Layer, height: int, width: int):
    """Image and patch slices where a layer overlaps the image, or None."""
    h, w = layer.mask.shape
    ix0, iy0 = max(layer.x0, 0), max(layer.y0, 0)
    ix1, iy1 = min(layer.x0 + w, width), min(layer.y0 + h, height)
    if ix0 >= ix1 or iy0 >= iy1:
        return None
    img = (slice(iy0, iy1), slice(ix0, ix1))
    patch = (slice(iy0 - layer.y0, iy1 - layer.y0), slice(ix0 - layer.x0, ix1 - layer.x0))
    return img, patch


# ---------------------------------------------------------------------------------------------
# colour and texture


def _colour(rng: np.random.Generator, index: int | None = None) -> np.ndarray:
    i = int(rng.integers(len(PALETTE))) if index is None else index
    return np.clip(PALETTE[i] + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, 3), 0, 255).astype(np.float32)


def _object_colours(rng: np.random.Generator, under: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two palette colours: the first stands out from ``under`` (the mean background colour
    beneath the object), the second from the first, so both shape and texture are visible."""
    a = _colour(rng)
    for _ in range(8):
        if np.linalg.norm(a - under) >= MIN_CONTRAST_BG:
            break
        a = _colour(rng)
    b = _colour(rng)
    for _ in range(8):
        if np.linalg.norm(b - a) >= MIN_CONTRAST_AB:
            break
        b = _colour(rng)
    return a, b


def _texture(
    kind: str,
    rng: np.random.Generator,
    mask: np.ndarray,
    cx: float,
    cy: float,
    size: float,
    angle: float,
    colours: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Paint a patch: ``t`` in [0, 1] mixes the two colours; then a linear shading.

    ``(cx, cy)`` is the shape's centre in patch coordinates, ``angle`` its rotation (used to
    align checkers with a square's sides).
    """
    import cv2

    h, w = mask.shape
    ys = np.arange(h, dtype=np.float32)[:, None] - cy
    xs = np.arange(w, dtype=np.float32)[None, :] - cx
    if kind in ("stripes", "checker", "dots"):
        theta = angle if kind == "checker" else rng.uniform(0, np.pi)
        c, s = math.cos(theta), math.sin(theta)
        u, v = xs * c + ys * s, ys * c - xs * s
    if kind == "stripes":
        period = max(3.0, size * rng.uniform(0.12, 0.22))
        t = np.floor(u / period + rng.uniform()) % 2
    elif kind == "checker":
        cell = max(3.0, size * rng.uniform(0.14, 0.24))
        t = (np.floor(u / cell + 0.5) + np.floor(v / cell + 0.5)) % 2
    elif kind == "dots":
        spacing = max(4.0, size * rng.uniform(0.16, 0.24))
        radius = rng.uniform(0.22, 0.34)  # in units of the spacing
        fu = u / spacing + rng.uniform()
        fv = v / spacing + rng.uniform()
        fu -= np.round(fu)
        fv -= np.round(fv)
        t = (fu * fu + fv * fv < radius * radius).astype(np.float32)
    elif kind == "radial":
        t = np.clip(np.sqrt(xs * xs + ys * ys) / (0.5 * size), 0, 1)
    elif kind == "outline":
        border = max(1, round(size * rng.uniform(0.05, 0.09)))
        inner = cv2.erode(mask.astype(np.uint8), np.ones((2 * border + 1, 2 * border + 1), np.uint8))
        t = (mask & (inner == 0)).astype(np.float32)
    elif kind == "noise":
        small = rng.random((max(2, h // 6), max(2, w // 6)), dtype=np.float32)
        t = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    elif kind == "solid":
        t = np.zeros((h, w), np.float32)
    else:
        raise ValueError(f"unknown texture {kind!r}")
    t = np.broadcast_to(t, (h, w)).astype(np.float32)
    a, b = colours
    tex = a + t[..., None] * (b - a)
    phi = rng.uniform(0, 2 * np.pi)
    shade = 1.0 + rng.uniform(0.0, 0.35) * (xs * math.cos(phi) + ys * math.sin(phi)) / max(size, 1.0)
    return tex * shade[..., None]


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Clutter: a two-colour gradient, low-frequency blotches, soft blobs, then sharp lines."""
    import cv2

    # Palette colours pulled towards grey: backgrounds share the objects' hues, muted on average.
    c0, c1 = (_colour(rng) * (m := np.float32(rng.uniform(0.3, 0.8))) + 128 * (1 - m) for _ in range(2))
    # The gradient and the blotches are smooth, so they are made on a coarse grid and upsampled
    # in one resize (a linear ramp survives the cubic resize unchanged).
    cell = int(rng.integers(24, 64))
    gh, gw = max(2, height // cell), max(2, width // cell)
    phi = rng.uniform(0, 2 * np.pi)
    ramp = (np.linspace(0, 1, gw, dtype=np.float32)[None, :] * math.cos(phi)
            + np.linspace(0, 1, gh, dtype=np.float32)[:, None] * math.sin(phi))
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    coarse = c0 + ramp[..., None] * (c1 - c0)
    coarse += rng.standard_normal((gh, gw, 3), dtype=np.float32) * np.float32(rng.uniform(8, 30))
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(0, 6))):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(10, 80)), int(rng.integers(10, 80)))
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, _colour(rng).tolist(), -1)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.5, 4.0))
    for _ in range(int(rng.integers(0, 16))):
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.line(img, p1, p2, _colour(rng).tolist(), int(rng.integers(1, 4)), cv2.LINE_AA)
    return img


def _paste(img: np.ndarray, layer: _Layer) -> None:
    where = _overlap(layer, img.shape[0], img.shape[1])
    if where is None:
        return
    (iy, ix), (py, px) = where
    np.copyto(img[iy, ix], layer.texture[py, px], where=layer.mask[py, px][..., None])


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _shape_layer(
    rng: np.random.Generator,
    shape: str,
    texture: str,
    size: float,
    aspect: float,
    bg: np.ndarray,
    placed_boxes: list[tuple[float, float, float, float]] | None,
    label: int = -1,
) -> _Layer | None:
    """Place and paint one shape, or None when no placement satisfies the occlusion limit.

    ``placed_boxes`` (objects only): full boxes of earlier objects, each of which the new shape
    may cover only up to :data:`MAX_BOX_COVER`. Distractors pass None and go anywhere.
    """
    height, width = bg.shape[:2]
    angle = float(rng.uniform(0, 2 * np.pi))
    polys = _transform(_unit_shape(shape, rng), size, aspect, angle)
    ex1, ey1, ex2, ey2 = _extent(polys)
    bw, bh = ex2 - ex1, ey2 - ey1
    # Shrink what would not fit, so every object can be placed mostly inside the frame.
    fit = min(1.0, MAX_EXTENT_FRACTION * width / bw, MAX_EXTENT_FRACTION * height / bh)
    if fit < 1.0:
        size *= fit
        polys = [p * fit for p in polys]
        ex1, ey1, ex2, ey2 = ex1 * fit, ey1 * fit, ex2 * fit, ey2 * fit
        bw, bh = bw * fit, bh * fit
    out = MAX_OUTSIDE if placed_boxes is not None else 0.5
    for _ in range(PLACEMENT_TRIES):
        cx = rng.uniform(-ex1 - out * bw, width - 1 - ex2 + out * bw)
        cy = rng.uniform(-ey1 - out * bh, height - 1 - ey2 + out * bh)
        box = (cx + ex1, cy + ey1, cx + ex2, cy + ey2)
        if placed_boxes is None or all(_cover(box, b) <= MAX_BOX_COVER for b in placed_boxes):
            break
    else:
        return None
    x0, y0, mask = _rasterise(polys, cx, cy)
    layer = _Layer(x0, y0, mask, np.zeros(mask.shape + (3,), np.float32), label)
    where = _overlap(layer, height, width)
    under = bg[where[0]].reshape(-1, 3).mean(axis=0) if where is not None else bg.reshape(-1, 3).mean(axis=0)
    colours = _object_colours(rng, under)
    layer.texture = _texture(texture, rng, mask, cx - x0, cy - y0, size, angle, colours)
    if placed_boxes is not None:
        placed_boxes.append(box)
    return layer


def _cover(new, old) -> float:
    """Share of box ``old`` covered by box ``new`` (continuous coordinates)."""
    iw = min(new[2], old[2]) - max(new[0], old[0])
    ih = min(new[3], old[3]) - max(new[1], old[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / max((old[2] - old[0]) * (old[3] - old[1]), 1e-6)


def _visibility(layers: list[_Layer], height: int, width: int):
    """Owner map (index of the topmost layer per pixel, -1 for background) and per-layer
    counts of visible, in-frame and total pixels."""
    owner = np.full((height, width), -1, np.int16)
    in_frame = np.zeros(len(layers), np.int64)
    for k, layer in enumerate(layers):
        where = _overlap(layer, height, width)
        if where is None:
            continue
        m = layer.mask[where[1]]
        owner[where[0]][m] = k
        in_frame[k] = int(m.sum())
    visible = np.bincount(owner.ravel() + 1, minlength=len(layers) + 1)[1:]
    total = np.array([int(layer.mask.sum()) for layer in layers], np.int64)
    return owner, visible, in_frame, total


def _visible_box(owner: np.ndarray, k: int, layer: _Layer) -> tuple[int, int, int, int] | None:
    where = _overlap(layer, owner.shape[0], owner.shape[1])
    if where is None:
        return None
    sub = owner[where[0]] == k
    cols = np.flatnonzero(sub.any(axis=0))
    rows = np.flatnonzero(sub.any(axis=1))
    if cols.size == 0:
        return None
    ox, oy = where[0][1].start, where[0][0].start
    return (ox + int(cols[0]), oy + int(rows[0]), ox + int(cols[-1]), oy + int(rows[-1]))


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The RNG of image ``index``: independent of every other image, so order does not matter."""
    return np.random.default_rng(np.random.SeedSequence([SYNTH_VERSION, int(seed), int(index)]))


def render_image(seed: int, index: int) -> SynthImage:
    """Make image ``index`` of the dataset with ``seed`` (a pure function of both)."""
    import cv2

    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    rng = image_rng(seed, index)
    width, height = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2))

    # 1. cluttered background, then distractors that are no class
    img = _background(rng, height, width)
    distractors: list[tuple[_Layer, str]] = []
    for _ in range(int(rng.integers(MIN_DISTRACTORS, MAX_DISTRACTORS + 1))):
        shape = list(DISTRACTOR_SPECS)[int(rng.integers(len(DISTRACTOR_SPECS)))]
        textures = DISTRACTOR_SPECS[shape]
        texture = textures[int(rng.integers(len(textures)))]
        aspect = math.exp(rng.uniform(1.5, 2.5)) if shape == "bar" else math.exp(rng.uniform(-0.6, 0.6))
        size = _log_uniform(rng, MIN_DISTRACTOR_SIZE, MAX_DISTRACTOR_SIZE)
        layer = _shape_layer(rng, shape, texture, size, aspect, img, None)
        _paste(img, layer)
        distractors.append((layer, distractor_kind(shape, texture)))

    # 2. place the objects, back to front, limiting how much of each earlier box is covered
    layers: list[_Layer] = []
    placed: list[tuple[float, float, float, float]] = []
    for _ in range(int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))):
        label = int(rng.integers(len(CLASSES)))
        shape, texture = CLASS_SPECS[CLASSES[label]]
        size = _log_uniform(rng, MIN_OBJECT_SIZE, MAX_OBJECT_SIZE)
        aspect = math.exp(rng.uniform(-MAX_ASPECT_LOG, MAX_ASPECT_LOG))
        layer = _shape_layer(rng, shape, texture, size, aspect, img, placed, label)
        if layer is not None:
            layers.append(layer)

    # 3. drop objects hidden almost entirely, so every drawn object can be annotated; removing
    #    an occluder only uncovers the others, so one recount is enough
    owner, visible, in_frame, total = _visibility(layers, height, width)
    keep = []
    for k, layer in enumerate(layers):
        box = _visible_box(owner, k, layer)
        big_enough = box is not None and min(box[2] - box[0], box[3] - box[1]) + 1 >= MIN_VISIBLE_SIDE
        if visible[k] >= DROP_VISIBLE * total[k] and big_enough:
            keep.append(layer)
    if not keep and layers:
        keep = [layers[-1]]  # the topmost object is only ever truncated, never occluded
    layers = keep
    owner, visible, in_frame, total = _visibility(layers, height, width)

    # 4. draw the objects and annotate their visible extent
    objects = []
    for k, layer in enumerate(layers):
        _paste(img, layer)
        box = _visible_box(owner, k, layer)
        frac = float(visible[k]) / max(int(total[k]), 1)
        area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
        objects.append(
            SynthObject(
                label=layer.label,
                box=box,
                truncated=bool(in_frame[k] < TRUNCATED_TOLERANCE * total[k]),
                occluded=bool(visible[k] < TRUNCATED_TOLERANCE * in_frame[k]),
                difficult=bool(frac < DIFFICULT_VISIBLE or math.sqrt(area) < DIFFICULT_SIZE),
                visible=round(frac, 4),
            )
        )

    # 5. annotate the distractors that show enough to be named (for pretraining, which may learn
    #    their kinds as classes); objects lie on top of them, so both go into one owner map
    d_layers = [layer for layer, _ in distractors]
    owner, visible, in_frame, _ = _visibility(d_layers + layers, height, width)
    named = []
    for k, (layer, kind) in enumerate(distractors):
        if visible[k] == 0 or visible[k] < DISTRACTOR_VISIBLE * in_frame[k]:
            continue
        box = _visible_box(owner, k, layer)
        if min(box[2] - box[0], box[3] - box[1]) + 1 >= DISTRACTOR_MIN_SIDE:
            named.append(SynthDistractor(kind, box))

    # 6. camera: slight blur and sensor noise
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.9))
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(2.0, 8.0))
    pixels = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return SynthImage(image_id=f"{index:06d}", width=width, height=height, pixels=pixels, objects=objects, distractors=named)


# ---------------------------------------------------------------------------------------------
# writing


def _bndbox_lines(box) -> list[str]:
    x1, y1, x2, y2 = (v + 1 for v in box)  # internal 0-based -> VOC 1-based
    return ["\t\t<bndbox>", f"\t\t\t<xmin>{x1}</xmin>", f"\t\t\t<ymin>{y1}</ymin>", f"\t\t\t<xmax>{x2}</xmax>",
            f"\t\t\t<ymax>{y2}</ymax>", "\t\t</bndbox>"]


def annotation_xml(image: SynthImage) -> str:
    """VOC XML for one image: boxes 1-based inclusive, objects back to front, then the named
    distractors as ``<distractor>`` elements (which VOC readers, looking for ``<object>``, skip)."""
    lines = [
        "<annotation>",
        "\t<folder>synth</folder>",
        f"\t<filename>{image.image_id}.jpg</filename>",
        "\t<source>",
        f"\t\t<database>{_DATABASE}</database>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{image.width}</width>",
        f"\t\t<height>{image.height}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for o in image.objects:
        lines += [
            "\t<object>",
            f"\t\t<name>{o.name}</name>",
            "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{int(o.truncated)}</truncated>",
            f"\t\t<occluded>{int(o.occluded)}</occluded>",
            f"\t\t<difficult>{int(o.difficult)}</difficult>",
            *_bndbox_lines(o.box),
            "\t</object>",
        ]
    for d in image.distractors:
        lines += ["\t<distractor>", f"\t\t<name>{d.name}</name>", *_bndbox_lines(d.box), "\t</distractor>"]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


_DATABASE = f"spp-detect synthetic v{SYNTH_VERSION}, annotations v{ANNOTATIONS_VERSION}"


def _is_written(root: Path, index: int) -> bool:
    """Whether image ``index`` is in ``root`` with this version's annotations."""
    try:
        return f"<database>{_DATABASE}</database>" in (root / "Annotations" / f"{index:06d}.xml").read_text()
    except OSError:
        return False


def write_image(root: Path, image: SynthImage) -> None:
    """Write the JPEG, then the XML (the XML's presence marks the image as done)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", image.pixels[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise DataError(root / "JPEGImages" / f"{image.image_id}.jpg", "JPEG encoding failed")
    with atomic_path(root / "JPEGImages" / f"{image.image_id}.jpg") as tmp:
        tmp.write_bytes(buf.tobytes())
    atomic_write_text(root / "Annotations" / f"{image.image_id}.xml", annotation_xml(image))


def _make_and_write(root: Path, seed: int, index: int) -> int:
    write_image(root, render_image(seed, index))
    return index


def split_indices(train: int, val: int, test: int, pretrain: int = 0) -> dict[str, list[int]]:
    """Global indices per split: train, val, test consecutive in that order; with ``pretrain``
    > 0 also ``pretrain``, the training images followed by ``pretrain`` more after the test ones
    (pretraining-only images: the detector never trains on them)."""
    n = train + val + test
    splits = {"train": list(range(0, train)), "val": list(range(train, train + val)), "test": list(range(train + val, n))}
    if pretrain:
        splits["pretrain"] = splits["train"] + list(range(n, n + pretrain))
    return splits


def _recipe(train: int, val: int, test: int, seed: int, pretrain: int = 0) -> dict:
    recipe = {"generator": "spp-detect data synth", "version": SYNTH_VERSION, "seed": seed,
              "train": train, "val": val, "test": test, "classes": list(CLASSES), "annotations": ANNOTATIONS_VERSION}
    if pretrain:  # absent when 0, so datasets written before this option keep their recipe
        recipe["pretrain"] = pretrain
    return recipe


_OWNED = ("Annotations", "JPEGImages", "ImageSets", "classes.txt", RECIPE_FILE)


def read_recipe(out: str | Path) -> dict:
    """``synth.json`` of the dataset in ``out``; empty when there is none or it cannot be read."""
    try:
        return json.loads((Path(out) / RECIPE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _differences(old: dict, want: dict) -> str:
    return ", ".join(f"{k}={old.get(k)!r} (now {v!r})" for k, v in want.items() if old.get(k) != v)


def _prepare_out(out: Path, recipe: dict, overwrite: bool) -> bool:
    """Get ``out`` ready; return True when resuming an unfinished run of the same recipe.

    A folder without ``synth.json`` was not made here and is never deleted, even with
    ``overwrite``: pointing ``--out`` at a real dataset by mistake must not cost it.
    """
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder; choose another --out")
    if not out.exists() or not any(out.iterdir()):
        return False
    recipe_path = out / RECIPE_FILE
    if not recipe_path.is_file():
        raise OutputExistsError(
            f"{out} is not empty and holds no {RECIPE_FILE}, so it was not made by "
            "'spp-detect data synth'; refusing to touch it (choose an empty or new --out)"
        )
    old = read_recipe(out)
    # what a finished or unfinished dataset may differ in and still be completed in place: every
    # image is a function of (seed, index), so the ones written stay valid (more or fewer
    # pretraining images; older annotations, rewritten image by image)
    mutable = ("pretrain", "annotations")
    if overwrite:
        log.info("removing the synthetic dataset in %s (--overwrite)", out)
        for name in _OWNED:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        return False
    base = {k: v for k, v in recipe.items() if k not in mutable}
    if old.get("complete"):
        if {k: old.get(k) for k in base} == base and any(old.get(k, 0) != recipe.get(k, 0) for k in mutable):
            return True
        differ = _differences(old, base)
        made_with = f" made with {differ}" if differ else ""
        raise OutputExistsError(f"{out} already holds a complete synthetic dataset{made_with}; pass --overwrite to replace it")
    differ = _differences(old, base)
    if differ:
        raise OutputExistsError(
            f"{out} holds an unfinished synthetic dataset made with {differ}; "
            "rerun with the same settings to resume, or pass --overwrite to start over"
        )
    return True


def generate_synth(
    out: str | Path,
    train: int = 300,
    val: int = 60,
    test: int = 150,
    seed: int = 0,
    overwrite: bool = False,
    workers: int = 1,
    show_progress: bool = True,
    pretrain: int = 0,
) -> dict:
    """Write the synthetic dataset to ``out`` (see the module docstring); resume an unfinished
    run of the same settings, or add pretraining images to a finished one that differs only in
    ``pretrain``. Returns ``synth.json``'s content: recipe, statistics, timing."""
    from ..progress import progress

    for name, n in (("train", train), ("val", val), ("test", test), ("seed", seed), ("pretrain", pretrain)):
        if int(n) < 0:
            raise ValueError(f"{name} must be non-negative, got {n}")
    if train + val + test == 0:
        raise ValueError("the dataset would have no images: train, val and test are all 0")
    out = Path(out)
    recipe = _recipe(train, val, test, seed, pretrain)
    resuming = _prepare_out(out, recipe, overwrite)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for stale in list(out.glob("*/.*.tmp-*")) + list(out.glob("ImageSets/Main/.*.tmp-*")):
        stale.unlink()  # temp files of an interrupted run: never renamed, never trusted
    atomic_write_json(out / RECIPE_FILE, {**recipe, "complete": False})

    n_total = train + val + test + pretrain
    todo = [i for i in range(n_total) if not _is_written(out, i)]
    if resuming:
        log.info("completing %s: %d of %d images already written with this version's annotations", out, n_total - len(todo), n_total)
    started = time.perf_counter()
    with progress(total=n_total, initial=n_total - len(todo), desc="synth", unit="img", disable=not show_progress) as bar:
        if workers > 1 and len(todo) > 1:
            from concurrent.futures import ProcessPoolExecutor
            from functools import partial

            with ProcessPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(partial(_make_and_write, out, seed), todo, chunksize=4):
                    bar.update(1)
        else:
            for i in todo:
                _make_and_write(out, seed, i)
                bar.update(1)
    seconds = time.perf_counter() - started

    # The class list and the split files come only after every image: a reader that finds the
    # splits finds the whole dataset.
    atomic_write_text(out / "classes.txt", "".join(f"{c}\n" for c in CLASSES))
    splits = split_indices(train, val, test, pretrain)
    stale_pretrain = out / "ImageSets" / "Main" / "pretrain.txt"
    if not pretrain and stale_pretrain.is_file():
        stale_pretrain.unlink()  # this dataset no longer has a pretraining split
    for name, idx in splits.items():
        atomic_write_text(out / "ImageSets" / "Main" / f"{name}.txt", "".join(f"{i:06d}\n" for i in idx))
    trainval = list(splits["train"]) + list(splits["val"])
    atomic_write_text(out / "ImageSets" / "Main" / "trainval.txt", "".join(f"{i:06d}\n" for i in trainval))
    stats = dataset_stats(out, range(n_total))
    summary = {
        **recipe,
        "complete": True,
        "stats": stats,
        "generated": len(todo),
        "reused": n_total - len(todo),
        "seconds": round(seconds, 3),
        "images_per_second": round(len(todo) / seconds, 1) if todo and seconds > 0 else None,
    }
    atomic_write_json(out / RECIPE_FILE, summary)
    return summary


def dataset_stats(root: str | Path, indices) -> dict:
    """Counts and size figures of written images, read back from their XML."""
    from .voc import parse_annotation

    root = Path(root)
    per_class = dict.fromkeys(CLASSES, 0)
    per_image, sides, widths, heights = [], [], [], []
    n_difficult = n_truncated = n_occluded = n_distractors = 0
    for i in indices:
        xml_path = root / "Annotations" / f"{i:06d}.xml"
        rec = parse_annotation(xml_path, CLASSES)
        per_image.append(len(rec["labels"]))
        widths.append(rec["width"])
        heights.append(rec["height"])
        for lab in rec["labels"]:
            per_class[CLASSES[lab]] += 1
        b = rec["boxes"]
        sides += np.sqrt((b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)).tolist()
        n_difficult += int(rec["difficult"].sum())
        n_truncated += int(rec["truncated"].sum())
        n_distractors += len(rec["distractor_names"])
        n_occluded += sum(o.findtext("occluded", "0").strip() == "1" for o in ET.parse(xml_path).getroot().iter("object"))
    n_obj = int(sum(per_image))
    return {
        "images": len(per_image),
        "objects": n_obj,
        "per_class": per_class,
        "objects_per_image": {str(k): per_image.count(k) for k in range(0, MAX_OBJECTS + 1) if per_image.count(k)},
        "difficult": n_difficult,
        "truncated": n_truncated,
        "occluded": n_occluded,
        "distractors": n_distractors,  # annotated ones (for pretraining), not every one drawn
        "box_size_px": {  # sqrt of the visible box's area
            "min": round(min(sides), 1) if sides else None,
            "median": round(float(np.median(sides)), 1) if sides else None,
            "max": round(max(sides), 1) if sides else None,
        },
        "image_width": [min(widths), max(widths)] if widths else None,
        "image_height": [min(heights), max(heights)] if heights else None,
    }
