"""Pretraining on windows of whole images: ``pretrain.mode = "windows"``.

Crop pretraining (:mod:`spp_detect.pretrain.train`, the paper's classification side) shows the trunk
each object warped to fill a square input, aligned with the conv grid, nothing around it, the
SPP layer pooling the whole map. The detector shows it something else: a window of a whole
image at one of a few scales, aspect kept, at any offset to the stride-16 grid, neighbours and
clutter around it, only the cells inside the window pooled, and windows partly off an object
that must read as background. A trunk trained on crops alone transfers badly to that (on the
synthetic data: 0.91 top-1 on crops, 0.47 on the same boxes pooled from image maps). This mode
trains the trunk on windows the way SPP-net later sees them:

1. Each training image is mirrored half of the time and resized to one of ``extract.scales``
   (drawn at random, ``extract.max_size`` cap), one conv pass.
2. Its windows (:func:`sample_windows`) are those the extraction's scale choice
   (``extract.target_size``, jittered by up to 20% so boundary windows go to either side) would
   pool at that scale: ``fg_fraction`` of them with IoU >= ``fg_iou`` to a usable ground-truth
   box (its class), the rest background (below ``fg_iou`` with every annotated box, difficult
   ones included), half near an object, half anywhere.
3. Each window is projected onto the map (``extract.projection``) and pooled with the exact SPP
   bins (:func:`spp_detect.core.spp.spp_pool`, so gradients reach the trunk; the same numbers as the
   detection pooler), then fc6 -> fc7 -> fc8 over the classes plus background.
4. Validation: fixed windows of every validation image, top-1 at each extraction scale.

Measured on the CPU demo's budget (3 minutes from scratch) it learns far more slowly than crop
pretraining and gives a worse detector (mAP 0.17 against 0.33), so the demo pretrains on crops;
this mode is for budgets that can train the trunk longer, or to adapt a pretrained one.

Boxes are in the package's internal convention (float (N, 4) ``(x1, y1, x2, y2)``, 0-based
inclusive pixels), in the original image's frame unless the resized one is named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..core.boxes import flip_horizontal, iou_matrix
from ..core.geometry import WindowGeometry
from ..core.spp import spp_pool

NEAR_SIGMA = 0.35  # relative jitter (centre shift, log size) of "near an object" candidates
FG_SIGMA = 0.1  # relative jitter of "on the object" candidates
MIN_WINDOW_SIDE = 8  # px in the original frame: smaller windows are not drawn


def _jitter(rng: np.random.Generator, boxes: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 + rng.normal(size=len(boxes)) * sigma * w
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 + rng.normal(size=len(boxes)) * sigma * h
    w = w * np.exp(rng.normal(size=len(boxes)) * sigma)
    h = h * np.exp(rng.normal(size=len(boxes)) * sigma)
    return np.stack([cx - (w - 1) / 2, cy - (h - 1) / 2, cx + (w - 1) / 2, cy + (h - 1) / 2], axis=1)


def _random_boxes(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    # object-like windows anywhere: side log-uniform from 16 px to the shorter side, aspect 1/3..3
    short = min(height, width)
    side = np.exp(rng.uniform(math.log(min(16, short)), math.log(short), n))
    aspect = np.exp(rng.uniform(-math.log(3), math.log(3), n))
    w = np.minimum(width, side * np.sqrt(aspect))
    h = np.minimum(height, side / np.sqrt(aspect))
    x1 = rng.uniform(0, 1, n) * (width - w)
    y1 = rng.uniform(0, 1, n) * (height - h)
    return np.stack([x1, y1, x1 + w - 1, y1 + h - 1], axis=1)


def sample_windows(
    rng: np.random.Generator,
    boxes: np.ndarray,
    labels: np.ndarray,
    avoid: np.ndarray,
    height: int,
    width: int,
    n_windows: int,
    fg_fraction: float,
    fg_iou: float,
    background_label: int,
    accept=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the windows of one image: (float32 (n, 4) original frame, int64 (n,) labels).

    ``boxes``/``labels``: the objects that may be named; ``avoid``: every annotated box (a
    background window keeps below ``fg_iou`` with each). About ``fg_fraction`` of the windows
    are objects (fewer when the image has too few distinct candidates), the rest background:
    half of it jittered from the objects (partly on them), half anywhere. ``n`` can fall short of
    ``n_windows`` only for an image too small to hold a window, or when ``accept`` (a function
    of the candidate boxes returning a bool mask) turns too many down.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    avoid = np.asarray(avoid, np.float64).reshape(-1, 4)
    m = 4 * n_windows
    parts = [_random_boxes(rng, m, height, width)]
    if len(boxes):
        pick = rng.integers(0, len(boxes), 2 * m)
        sigma = np.where(np.arange(2 * m) < m, FG_SIGMA, NEAR_SIGMA)
        parts.append(_jitter(rng, boxes[pick], sigma))
    cand = np.concatenate(parts)
    cand[:, 0::2] = np.clip(cand[:, 0::2], 0, width - 1)
    cand[:, 1::2] = np.clip(cand[:, 1::2], 0, height - 1)
    ok = (cand[:, 2] - cand[:, 0] + 1 >= MIN_WINDOW_SIDE) & (cand[:, 3] - cand[:, 1] + 1 >= MIN_WINDOW_SIDE)
    is_random = np.arange(len(cand)) < m
    cand, is_random = cand[ok], is_random[ok]
    if accept is not None and len(cand):
        keep = np.asarray(accept(cand), bool)
        cand, is_random = cand[keep], is_random[keep]
    if len(cand) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    fg_label = np.full(len(cand), -1)
    if len(boxes):
        iou = iou_matrix(cand, boxes)
        best = iou.argmax(1)
        on = iou[np.arange(len(cand)), best] >= fg_iou
        fg_label[on] = np.asarray(labels)[best[on]]
    clear = iou_matrix(cand, avoid).max(1) < fg_iou if len(avoid) else np.ones(len(cand), bool)
    fg = np.flatnonzero(fg_label >= 0)
    near = np.flatnonzero(clear & ~is_random)
    far = np.flatnonzero(clear & is_random)
    n_fg = min(len(fg), int(round(n_windows * fg_fraction)))
    n_near = min(len(near), (n_windows - n_fg) // 2)
    n_far = min(len(far), n_windows - n_fg - n_near)
    chosen = np.concatenate([
        rng.choice(fg, n_fg, replace=False),
        rng.choice(near, n_near, replace=False),
        rng.choice(far, n_far, replace=False),
    ]).astype(np.int64)
    out_labels = np.where(fg_label[chosen] >= 0, fg_label[chosen], background_label)
    return cand[chosen].astype(np.float32), out_labels.astype(np.int64)


@dataclass(frozen=True)
class WindowSampling:
    """Which windows of which image scale an example holds (the extraction's settings included)."""

    geometry: WindowGeometry  # scales, target size, cap and rule of the extraction ([extract])
    windows_per_image: int
    fg_fraction: float
    fg_iou: float


class WindowDataset:
    """Images of a :class:`~spp_detect.pretrain.train.CropSource` at one scale each, with windows.

    Item ``i``: ``(uint8 (h, w, 3) image resized to one of ``scales``, float32 (n, 4) windows in
    the resized frame, int64 (n,) labels)``. The windows are those the extraction's scale choice
    (:class:`spp_detect.core.geometry.WindowGeometry`, ``target_size``) would pool at that scale, so
    the trunk learns each window at the size it will see it. Training items draw the scale, the
    windows and a mirror from an RNG seeded by (seed, epoch, index); validation items draw
    windows from (seed, index) and take every scale in turn as ``size`` is set.
    """

    def __init__(self, source, train: bool, sampling: WindowSampling, seed: int):
        self.source = source
        self.train = train
        self.sampling = sampling
        self.scales = sampling.geometry.scales
        self.seed = seed
        self.background_label = len(source.classes)
        self.size: int | None = None
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.source.items)

    def __getitem__(self, index: int):
        from ..datasets.base import load_image

        item = self.source.items[index]
        image = load_image(item.path)
        height, width = image.shape[:2]
        rng = np.random.default_rng([self.seed, 3, self.epoch, index] if self.train else [self.seed, 4, index])
        if self.train:
            k = int(rng.integers(len(self.scales)))
        elif self.size is None or int(self.size) not in self.scales:
            raise RuntimeError(f"WindowDataset.size must be one of {self.scales} for validation, got {self.size}")
        else:
            k = self.scales.index(int(self.size))

        sp = self.sampling

        def at_this_scale(cand):
            target = sp.geometry.target_size
            if self.train:  # a window near the boundary between two scales may go to either
                target *= math.exp(rng.uniform(-0.2, 0.2))
            return sp.geometry.best_scales(cand, height, width, target) == k

        windows, labels = sample_windows(
            rng, item.boxes, item.labels, item.avoid, height, width, sp.windows_per_image, sp.fg_fraction,
            sp.fg_iou, self.background_label, accept=at_this_scale,
        )
        if self.train and rng.random() < 0.5:
            image = np.ascontiguousarray(image[:, ::-1])
            windows = flip_horizontal(windows, width)
        resized = sp.geometry.resize(image, k)
        in_resized = sp.geometry.to_resized(windows, height, width, resized.shape[0], resized.shape[1])
        return resized, in_resized.astype(np.float32), labels


def collate_windows(batch):
    """Items of one batch kept as a list: their images differ in size."""
    return list(batch)


class WindowTask:
    """What :func:`spp_detect.pretrain.train.pretrain` needs to train on windows instead of crops."""

    name = "windows"
    collate = staticmethod(collate_windows)

    def __init__(self, sampling: WindowSampling, levels, concat_order: str):
        self.sampling = sampling
        self.scales = sampling.geometry.scales
        self.levels = tuple(levels)
        self.concat_order = concat_order

    def per_item(self, source) -> int:
        return self.sampling.windows_per_image

    def datasets(self, train, val, seed: int):
        return WindowDataset(train, True, self.sampling, seed), WindowDataset(val, False, self.sampling, seed)

    def epoch_size(self, epoch: int) -> list[int]:
        return list(self.scales)  # every image draws its scale

    def epoch_label(self, epoch: int) -> str:
        return "@" + "/".join(str(s) for s in self.scales) + "px"

    def eval_sizes(self, configured) -> list[int]:
        return list(self.scales)  # each scale with the windows extraction pools there

    def forward(self, model, batch, device):
        """Logits and labels of the batch's windows: one conv pass per image, exact SPP bins."""
        pooled, targets = [], []
        for image, windows, labels in batch:
            if len(labels) == 0:
                continue
            fmap = model.backbone(model.backbone.preprocess(image, device=device))
            rects = self.sampling.geometry.project(windows, model.backbone.stride, model.backbone.offset,
                                                   fmap.shape[2], fmap.shape[3])
            pooled += [spp_pool(fmap[:, :, y1 : y2 + 1, x1 : x2 + 1], self.levels, self.concat_order)
                       for x1, y1, x2, y2 in rects.tolist()]
            targets.append(torch.from_numpy(labels))
        if not pooled:
            return None, torch.zeros(0, dtype=torch.int64)
        return model.head(torch.cat(pooled)), torch.cat(targets).to(device)
