"""Classification pretraining with SPP and multi-size training (PAPER.md, "Classification side").

The detector needs a backbone that knows the objects, and published ImageNet weights cannot
always be had (none exist for ZF-5 in torchvision, and there may be no network). This stage
trains backbone + SPP + fc6/fc7/fc8 as a classifier of crops:

1. Crops: every training image gives ``crops_per_image`` object crops (its boxes in turn, each
   with random context and a random mirror) and ``background_crops`` random windows with IoU
   below ``background_iou`` to every annotated box, labelled as an extra ``__background__``
   class. An image-folder dataset (one folder per class) gives whole images instead.
2. Multi-size training: every crop of an epoch is warped to that epoch's size, the sizes
   taking turns epoch by epoch (224, 180, 224, ...); one size is single-size training. The SPP
   layer makes the same weights serve every size.
3. Validation: fixed crops of the validation split (no randomness across epochs or sizes),
   top-1 reported at every size of ``eval_sizes``, including sizes never trained on.
4. Output: ``RUN/pretrain/backbone.pt`` (the trunk, its geometry and input convention, the
   classes, sizes and validation top-1; what ``--weights RUN`` loads) and ``metrics.json``.
   A checkpoint after every epoch makes an interrupted run resume where it stopped.

Boxes are in the package's internal convention (float (N, 4) ``(x1, y1, x2, y2)``, 0-based
inclusive pixels, original image frame) everywhere in this module.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts.stamps import first_difference
from ..core.boxes import as_boxes, iou_matrix
from ..core.pyramid import DEFAULT_LEVELS
from ..datasets.base import IMAGE_EXTENSIONS
from ..errors import ArtifactError, ConfigError, DataError

log = logging.getLogger(__name__)

BACKGROUND = "__background__"
METRICS_FORMAT_VERSION = 1
HOLDOUT_EVERY = 5  # image folders without split subfolders: every 5th image of a class is val
MIN_BACKGROUND_SIDE = 24  # px: smaller random windows carry too little to classify
BACKGROUND_TRIES = 30  # random windows tried per background crop before giving up on it
OPTIMIZERS = ("sgd", "adamw")


# ---------------------------------------------------------------------------------------------
# what crops are cut from


@dataclass(frozen=True)
class CropImage:
    """One image and the crops it can give.

    ``boxes``: float32 (K, 4) objects to crop (internal convention), with ``labels`` (K,); or
    ``None`` when the whole image is one example of ``labels[0]`` (image folders). ``avoid``:
    every annotated box, which background windows keep away from.
    """

    path: Path
    boxes: np.ndarray | None
    labels: np.ndarray
    avoid: np.ndarray


@dataclass
class CropSource:
    """A split as crops: its images, class names and whether a background class is added."""

    name: str
    split: str
    classes: tuple[str, ...]
    items: list[CropImage]
    with_background: bool
    fingerprint: str

    def label_names(self) -> list[str]:
        return list(self.classes) + ([BACKGROUND] if self.with_background else [])


def crop_source_from_detection(ds, distractor_kinds: tuple[str, ...] = ()) -> CropSource:
    """A detection split's objects as crops. Difficult and ignored (crowd) objects are not
    cropped (too small or too hidden to name), but backgrounds keep clear of them too.

    ``distractor_kinds``: also crop the annotated distractors of these kinds, each kind a class
    after the dataset's (labels ``len(ds.classes) + i``); distractors of other kinds are left out
    (a validation split must name what the training split names), and backgrounds keep clear of
    the distractors cropped. Boxes: internal convention.
    """
    kind_label = {kind: len(ds.classes) + i for i, kind in enumerate(distractor_kinds)}
    items = []
    fingerprint = ds.fingerprint()
    digest = hashlib.sha256(fingerprint.encode())  # extended with the distractors cropped
    for r in ds.records:
        boxes = as_boxes(r.boxes)
        keep = ~(np.asarray(r.difficult, bool) | np.asarray(r.ignore, bool))
        boxes_kept, labels = boxes[keep], np.asarray(r.labels, np.int64)[keep]
        if kind_label:
            named = [k for k, name in enumerate(r.distractor_names) if name in kind_label]
            extra = as_boxes(r.distractor_boxes)[named]
            boxes_kept = np.concatenate([boxes_kept, extra])
            labels = np.concatenate([labels, np.array([kind_label[r.distractor_names[k]] for k in named], np.int64)])
            boxes = np.concatenate([boxes, extra])
            digest.update(extra.tobytes() + labels.tobytes())
        items.append(CropImage(Path(r.path), boxes_kept, labels, boxes))
    if kind_label:
        fingerprint = digest.hexdigest()[:16]
    return CropSource(ds.name, ds.split, tuple(ds.classes) + tuple(distractor_kinds), items, True, fingerprint)


def distractor_kinds_of(ds) -> tuple[str, ...]:
    """The distractor kinds annotated in a detection split, sorted."""
    return tuple(sorted({name for r in ds.records for name in r.distractor_names}))


def is_image_folder(path) -> bool:
    """A folder of class folders (or of split folders of class folders), not a VOC tree."""
    p = Path(path)
    if not p.is_dir() or (p / "Annotations").is_dir() or (p / "VOCdevkit").is_dir():
        return False
    for sub in p.iterdir():
        if sub.is_dir() and (_images_in(sub) or any(_images_in(c) for c in sub.iterdir() if c.is_dir())):
            return True
    return False


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)


def open_image_folder(root, split: str, train_split: str = "train") -> CropSource:
    """One folder per class, each image one example.

    ``root/<split>/<class>/*.jpg`` when ``root/<split>`` exists; otherwise ``root/<class>/*.jpg``
    split deterministically: every 5th image of each class (sorted by name) is the validation
    split, the rest ``train_split``.
    """
    import hashlib

    root = Path(root)
    base = root / split if (root / split).is_dir() else root
    holdout = base == root
    class_dirs = sorted(d for d in base.iterdir() if d.is_dir() and _images_in(d))
    if not class_dirs:
        raise DataError(base, "no class folders with images inside (expected <class>/<image>.jpg)", "dataset", str(root))
    classes = tuple(d.name for d in class_dirs)
    items = []
    h = hashlib.sha256(repr(classes).encode())
    for label, d in enumerate(class_dirs):
        images = _images_in(d)
        if holdout:
            is_val = [i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1 for i in range(len(images))]
            images = [im for im, v in zip(images, is_val, strict=True) if v == (split != train_split)]
        for im in images:
            h.update(f"{label}|{im.name}|{im.stat().st_size}".encode())
            items.append(CropImage(im, None, np.array([label], np.int64), np.zeros((0, 4), np.float32)))
    if not items:
        raise DataError(base, f"no images for split '{split}'", "split", split)
    return CropSource(root.name, split, classes, items, False, h.hexdigest()[:16])


def holdout_split(source: CropSource, every: int = 10) -> tuple[CropSource, CropSource]:
    """(train, val) from one source when there is no validation split: every 10th image is val."""
    train = [it for i, it in enumerate(source.items) if i % every != every - 1]
    val = [it for i, it in enumerate(source.items) if i % every == every - 1]
    if not val or not train:
        raise DataError(None, f"split '{source.split}' has {len(source.items)} images: too few to hold out a validation part")

    def part(items, tag):
        return CropSource(source.name, f"{source.split}:{tag}", source.classes, items, source.with_background, f"{source.fingerprint}:{tag}")

    return part(train, "train"), part(val, "val")


# ---------------------------------------------------------------------------------------------
# cutting crops


def with_context(box: np.ndarray, fractions, height: int, width: int) -> np.ndarray:
    """``box`` grown by ``fractions`` (left, top, right, bottom) of its size, clipped to the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1 + 1, y2 - y1 + 1
    fl, ft, fr, fb = fractions
    return np.array(
        [max(0.0, x1 - fl * w), max(0.0, y1 - ft * h), min(width - 1.0, x2 + fr * w), min(height - 1.0, y2 + fb * h)],
        np.float32,
    )


def random_background(rng: np.random.Generator, height: int, width: int, avoid: np.ndarray, max_iou: float):
    """A random window with IoU < ``max_iou`` to every box of ``avoid``, or None after 30 tries.

    Sizes are log-uniform between 24 px and 0.7 of the shorter side, aspect ratio log-uniform
    in [1/2, 2], so backgrounds look like object-sized windows.
    """
    short = min(height, width)
    lo, hi = math.log(min(MIN_BACKGROUND_SIDE, short)), math.log(max(min(MIN_BACKGROUND_SIDE, short), 0.7 * short))
    for _ in range(BACKGROUND_TRIES):
        side = math.exp(rng.uniform(lo, hi))
        aspect = math.exp(rng.uniform(-math.log(2), math.log(2)))
        w = min(width, max(1, int(round(side * math.sqrt(aspect)))))
        h = min(height, max(1, int(round(side / math.sqrt(aspect)))))
        x1 = int(rng.integers(0, width - w + 1))
        y1 = int(rng.integers(0, height - h + 1))
        box = np.array([[x1, y1, x1 + w - 1, y1 + h - 1]], np.float32)
        if len(avoid) == 0 or iou_matrix(box, avoid).max() < max_iou:
            return box[0]
    return None


def cut_crop(image: np.ndarray, box, size: int, flip: bool = False) -> np.ndarray:
    """Cut ``box`` (internal convention, image frame) out of ``image`` and warp it to size x size.

    The box is widened to whole pixels (floor / ceil) and clipped; aspect is not kept (R-CNN's
    warp), so every crop of an epoch has the epoch's size. Returns uint8 (size, size, 3).
    """
    import cv2

    h, w = image.shape[:2]
    x1 = min(max(0, int(math.floor(box[0]))), w - 1)
    y1 = min(max(0, int(math.floor(box[1]))), h - 1)
    x2 = min(max(x1, int(math.ceil(box[2]))), w - 1)
    y2 = min(max(y1, int(math.ceil(box[3]))), h - 1)
    patch = image[y1 : y2 + 1, x1 : x2 + 1]
    shrink = patch.shape[0] > size or patch.shape[1] > size
    out = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if flip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


class CropDataset:
    """Crops of one image per item, as (uint8 (k, size, size, 3), int64 (k,)).

    Training items draw their crops from an RNG seeded by (seed, epoch, index), so an epoch is
    reproducible whatever the worker layout; validation items by (seed, index) only, so every
    size and every epoch sees the same crops. Set ``size`` (and ``epoch``) before iterating.
    """

    def __init__(
        self,
        source: CropSource,
        train: bool,
        crops_per_image: int,
        background_crops: int,
        context: float,
        background_iou: float,
        seed: int,
    ):
        self.source = source
        self.train = train
        self.crops_per_image = crops_per_image
        self.background_crops = background_crops if source.with_background else 0
        self.context = context
        self.background_iou = background_iou
        self.seed = seed
        self.bg_label = len(source.classes)
        self.size: int | None = None
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.source.items)

    def plan(self, index: int, height: int, width: int) -> list[tuple[np.ndarray, int, bool]]:
        """The (box, label, flip) crops of item ``index``, for an image of that size."""
        item = self.source.items[index]
        key = [self.seed, 1, self.epoch, index] if self.train else [self.seed, 2, index]
        rng = np.random.default_rng(key)
        crops = []
        if item.boxes is None:  # a whole image: jitter by cropping up to 10% off each side
            full = np.array([0, 0, width - 1, height - 1], np.float32)
            if self.train:
                cut = rng.uniform(0, 0.1, 4)
                full = with_context(full, -cut, height, width)
            crops.append((full, int(item.labels[0]), bool(self.train and rng.random() < 0.5)))
            return crops
        n = len(item.boxes)
        if n:
            if self.train:
                order = rng.permutation(n)
                for k in range(self.crops_per_image):
                    j = order[k % n]
                    fractions = rng.uniform(0, 2 * self.context, 4)
                    box = with_context(item.boxes[j], fractions, height, width)
                    crops.append((box, int(item.labels[j]), bool(rng.random() < 0.5)))
            else:
                for j in range(n):
                    box = with_context(item.boxes[j], [self.context] * 4, height, width)
                    crops.append((box, int(item.labels[j]), False))
        for _ in range(self.background_crops):
            box = random_background(rng, height, width, item.avoid, self.background_iou)
            if box is not None:
                crops.append((box, self.bg_label, bool(self.train and rng.random() < 0.5)))
        return crops

    def __getitem__(self, index: int):
        from ..datasets.base import load_image

        if self.size is None:
            raise RuntimeError("CropDataset.size must be set before reading crops")
        image = load_image(self.source.items[index].path)
        plan = self.plan(index, image.shape[0], image.shape[1])
        if not plan:
            return np.zeros((0, self.size, self.size, 3), np.uint8), np.zeros((0,), np.int64)
        crops = np.stack([cut_crop(image, box, self.size, flip) for box, _, flip in plan])
        return crops, np.array([label for _, label, _ in plan], np.int64)


def collate_crops(batch):
    """Items of one batch -> (uint8 tensor (N, size, size, 3), int64 tensor (N,))."""
    import torch

    crops = np.concatenate([c for c, _ in batch])
    labels = np.concatenate([lab for _, lab in batch])
    return torch.from_numpy(crops), torch.from_numpy(labels)


# ---------------------------------------------------------------------------------------------
# the classifier


def build_classifier(backbone, num_classes: int, levels, concat_order: str, fc_dim: int, dropout: float):
    """backbone -> SPP -> fc6 (ReLU, dropout) -> fc7 (ReLU, dropout) -> fc8: logits for any input size."""
    from torch import nn

    from ..core.spp import SpatialPyramidPooling

    class SppClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            self.spp = SpatialPyramidPooling(levels, concat_order)
            dim = self.spp.output_dim(backbone.out_channels)
            self.head = nn.Sequential(
                OrderedDict(
                    [
                        ("fc6", nn.Linear(dim, fc_dim)), ("relu6", nn.ReLU(inplace=True)), ("drop6", nn.Dropout(dropout)),
                        ("fc7", nn.Linear(fc_dim, fc_dim)), ("relu7", nn.ReLU(inplace=True)), ("drop7", nn.Dropout(dropout)),
                        ("fc8", nn.Linear(fc_dim, num_classes)),
                    ]
                )
            )

        def forward(self, x):
            return self.head(self.spp(self.backbone(x)))

    return SppClassifier()


# ---------------------------------------------------------------------------------------------
# training


def _loader(dataset, images_per_batch: int, shuffle: bool, workers: int, seed: int, collate=collate_crops):
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=images_per_batch,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=collate,
        generator=generator,
    )


class CropTask:
    """Crops warped to one size per epoch (the paper's classification pretraining)."""

    name = "crops"
    collate = staticmethod(collate_crops)

    def __init__(self, sizes, crops_per_image: int, background_crops: int, context: float, background_iou: float):
        self.sizes = tuple(int(s) for s in sizes)
        self.crops_per_image = crops_per_image
        self.background_crops = background_crops
        self.context = context
        self.background_iou = background_iou

    def per_item(self, source: CropSource) -> int:
        objects = self.crops_per_image if source.items[0].boxes is not None else 1
        return objects + (self.background_crops if source.with_background else 0)

    def datasets(self, train: CropSource, val: CropSource, seed: int):
        return (CropDataset(train, True, self.crops_per_image, self.background_crops, self.context, self.background_iou, seed),
                CropDataset(val, False, self.crops_per_image, self.background_crops, self.context, self.background_iou, seed))

    def epoch_size(self, epoch: int) -> int:
        return self.sizes[epoch % len(self.sizes)]  # multi-size training: one size per epoch, in turn

    def epoch_label(self, epoch: int) -> str:
        return f"@{self.epoch_size(epoch)}px"

    def eval_sizes(self, configured) -> list[int]:
        return [int(s) for s in configured]

    def forward(self, model, batch, device):
        import torch

        crops, target = batch
        if len(target) == 0:
            return None, target
        x = model.backbone.preprocess(crops, device=device).contiguous(memory_format=torch.channels_last)
        return model(x), target.to(device)


def evaluate_classifier(model, task, dataset, size: int, images_per_batch: int, device, workers: int = 0) -> dict:
    """Top-1 over the validation examples (crops or windows) at ``size``: {"top1", "n", "per_class", "counts"}."""
    import torch

    dataset.size = size
    model.eval()
    n_labels = model.head.fc8.out_features
    correct = np.zeros(n_labels, np.int64)
    total = np.zeros(n_labels, np.int64)
    with torch.no_grad():
        for batch in _loader(dataset, images_per_batch, False, workers, 0, task.collate):
            logits, labels = task.forward(model, batch, device)
            if logits is None:
                continue
            pred = logits.argmax(1).cpu().numpy()
            lab = labels.cpu().numpy()
            np.add.at(total, lab, 1)
            np.add.at(correct, lab, (pred == lab).astype(np.int64))
    n = int(total.sum())
    return {
        "top1": float(correct.sum() / n) if n else float("nan"),
        "n": n,
        "per_class": [float(c / t) if t else None for c, t in zip(correct, total, strict=True)],
        "counts": total.tolist(),
    }


def pretrain(
    train: CropSource,
    val: CropSource,
    backbone,
    out_dir: str | Path,
    *,
    task=None,
    sizes=(224, 180),
    eval_sizes=(224, 180, 200),
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    warmup: float = 0.05,
    optimizer_name: str = "sgd",
    crops_per_image: int = 4,
    background_crops: int = 1,
    context: float = 0.1,
    background_iou: float = 0.3,
    fc_dim: int = 4096,
    dropout: float = 0.5,
    levels=DEFAULT_LEVELS,
    concat_order: str = "coarse_first",
    workers: int = 0,
    seed: int = 0,
    device: str = "cpu",
    stamp: dict | None = None,
) -> dict:
    """Train ``backbone`` + SPP + fc head on crops of ``train``; write ``out_dir/backbone.pt``.

    ``task``: what the examples are, :class:`CropTask` built from the crop arguments when None
    (a :class:`~spp_detect.pretrain.windows.WindowTask` trains on windows of whole images).
    Epoch ``e`` of crop training runs at ``sizes[e % len(sizes)]``. After every epoch a checkpoint
    (``out_dir/checkpoint.pt``, keyed on ``stamp``) is written, and a run restarted with the same
    stamp resumes from it. Returns the metrics also written to ``out_dir/metrics.json``.
    """
    import torch

    from ..artifacts.files import atomic_path, atomic_write_json
    from ..backbones import save_backbone

    out_dir = Path(out_dir)
    stamp = dict(stamp or {})
    _check_arguments(backbone, sizes, eval_sizes, epochs, batch_size, crops_per_image, background_crops, train)
    if optimizer_name not in OPTIMIZERS:
        raise ConfigError(f"pretrain.optimizer: unknown optimizer {optimizer_name!r}; use one of {', '.join(OPTIMIZERS)}")
    labels = train.label_names()
    if val.classes != train.classes:
        raise DataError(None, f"validation classes {list(val.classes)} differ from training classes {list(train.classes)}")

    torch.manual_seed(seed)
    model = build_classifier(backbone, len(labels), levels, concat_order, fc_dim, dropout).to(device)
    # NHWC: oneDNN convolutions and pooling run several times faster in it on the CPU
    model = model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(model, optimizer_name, lr, momentum, weight_decay)
    if task is None:
        task = CropTask(sizes, crops_per_image, background_crops, context, background_iou)
    images_per_batch = max(1, int(round(batch_size / max(1, task.per_item(train)))))
    train_set, val_set = task.datasets(train, val, seed)
    steps_per_epoch = math.ceil(len(train_set) / images_per_batch)
    total_steps = max(1, steps_per_epoch * epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup))

    ckpt_path = out_dir / "checkpoint.pt"
    history: list[dict] = []
    start_epoch, seconds = 0, 0.0
    if ckpt_path.is_file():
        start_epoch, history, seconds = _resume(ckpt_path, stamp, model, optimizer, scheduler)
        log.info("resuming pretraining from %s after epoch %d of %d", ckpt_path, start_epoch, epochs)

    for epoch in range(start_epoch, epochs):
        size = task.epoch_size(epoch)
        train_set.size, train_set.epoch = size, epoch
        model.train()
        t0 = time.perf_counter()
        loader = _loader(train_set, images_per_batch, True, workers, seed * 1000 + epoch, task.collate)
        loss_sum, correct, seen = _train_epoch(model, task, loader, optimizer, scheduler, device, lr,
                                               f"pretrain {epoch + 1}/{epochs} {task.epoch_label(epoch)}", epoch)
        seconds += time.perf_counter() - t0
        history.append(
            {"epoch": epoch + 1, "size": size, "loss": loss_sum / max(1, seen), "train_top1": correct / max(1, seen),
             "examples": seen, "lr_end": scheduler.get_last_lr()[0], "seconds": round(seconds, 1)}
        )
        log.info("epoch %d/%d %s: loss %.3f, train top-1 %.3f, %d %s", epoch + 1, epochs, task.epoch_label(epoch),
                 history[-1]["loss"], history[-1]["train_top1"], seen, task.name)
        with atomic_path(ckpt_path) as tmp:
            torch.save(
                {"stamp": stamp, "epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "history": history, "seconds": seconds},
                tmp,
            )

    # validation at every size, including sizes never trained on
    val_results = {}
    for size in task.eval_sizes(eval_sizes):
        val_results[str(int(size))] = evaluate_classifier(model, task, val_set, int(size), images_per_batch, device, workers)
        log.info("validation @%dpx: top-1 %.3f over %d %s", size, val_results[str(int(size))]["top1"], val_results[str(int(size))]["n"], task.name)
    # crops: the same at every size; windows: each scale has its own, the first one's are reported
    counts = np.asarray(next(iter(val_results.values()))["counts"])
    metrics = {
        "format_version": METRICS_FORMAT_VERSION,
        "classes": labels,
        "sizes": [int(s) for s in sizes],
        "epochs": history,
        "val": val_results,
        "val_split": f"{val.name}/{val.split}",
        "val_counts": counts.tolist(),
        "chance_top1": 1.0 / len(labels),
        "majority_top1": float(counts.max() / counts.sum()) if counts.sum() else float("nan"),
        "train_seconds": round(seconds, 1),
        "backbone": backbone.describe(),
        "stamp": stamp,
    }
    save_backbone(
        backbone.cpu(),
        out_dir / "backbone.pt",
        extra={
            "classes": labels,
            "sizes": [int(s) for s in sizes],
            "val_top1": {k: v["top1"] for k, v in val_results.items()},
            "spp": {"levels": [int(n) for n in levels], "concat_order": concat_order},
            "head_state_dict": {k: v.detach().cpu() for k, v in model.head.state_dict().items()},
            "stamp": stamp,
        },
    )
    atomic_write_json(out_dir / "metrics.json", metrics)
    if ckpt_path.is_file():
        os.remove(ckpt_path)  # the finished backbone.pt supersedes it
    return metrics


def _optimizer(model, name: str, lr: float, momentum: float, weight_decay: float):
    """SGD or AdamW, with weight decay on weights only: decaying biases only fights the ReLUs'
    operating points."""
    import torch

    params_decay = [p for p in model.parameters() if p.dim() > 1]
    params_plain = [p for p in model.parameters() if p.dim() <= 1]
    groups = [{"params": params_decay, "weight_decay": weight_decay}, {"params": params_plain, "weight_decay": 0.0}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))


def warmup_cosine(total_steps: int, warmup: float):
    """The learning-rate factor of step ``t``: a linear warm-up over ``warmup`` of the steps (a
    trunk without BatchNorm, ZF-5 by default, can diverge from a cold start at full lr), then
    cosine to 0."""
    warmup_steps = max(1, int(round(warmup * total_steps))) if warmup > 0 else 0

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return lr_factor


def _resume(ckpt_path: Path, stamp: dict, model, optimizer, scheduler) -> tuple[int, list, float]:
    """Load a checkpoint of this pretraining; ``(epochs done, history, seconds)``. One of another
    pretraining (other stamp) is refused, naming the key."""
    import torch

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    diff = first_difference(ckpt.get("stamp", {}), stamp)
    if diff is not None:
        key, found, wanted = diff
        raise ArtifactError(
            f"{ckpt_path}: checkpoint of another pretraining ({key}={found!r}, "
            f"this run has {wanted!r}); pass --overwrite to start over"
        )
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    return int(ckpt["epoch"]), list(ckpt["history"]), float(ckpt["seconds"])


def _train_epoch(model, task, loader, optimizer, scheduler, device, lr: float, desc: str, epoch: int):
    """One pass over ``loader``; ``(summed loss, correct, examples)``."""
    import torch

    from ..progress import progress

    loss_sum, correct, seen = 0.0, 0, 0
    with progress(total=len(loader), desc=desc, unit="batch") as bar:
        for batch in loader:
            logits, target = task.forward(model, batch, device)
            if logits is None:
                bar.update(1)
                continue
            loss = torch.nn.functional.cross_entropy(logits, target)
            if not torch.isfinite(loss):
                raise ArtifactError(
                    f"pretraining diverged in epoch {epoch + 1} (loss {loss.item()}); lower pretrain.lr (now {lr})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            n = len(target)
            loss_sum += loss.item() * n
            correct += int((logits.argmax(1) == target).sum())
            seen += n
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
    return loss_sum, correct, seen


def _check_arguments(backbone, sizes, eval_sizes, epochs, batch_size, crops_per_image, background_crops, train) -> None:
    smallest = backbone.min_input_size()
    for field, values in (("pretrain.sizes", sizes), ("pretrain.eval_sizes", eval_sizes)):
        if not values:
            raise ConfigError(f"{field}: needs at least one size")
        bad = [s for s in values if int(s) < smallest]
        if bad:
            raise ConfigError(f"{field}: {bad[0]} px is below the smallest input {backbone.name} accepts ({smallest} px)")
    for field, value, low in (("pretrain.epochs", epochs, 1), ("pretrain.batch_size", batch_size, 1),
                              ("pretrain.crops_per_image", crops_per_image, 1), ("pretrain.background_crops", background_crops, 0)):
        if value < low:
            raise ConfigError(f"{field}: must be at least {low}, got {value}")
    if not train.items:
        raise DataError(None, f"training split '{train.split}' of {train.name} has no images")


# ---------------------------------------------------------------------------------------------
# from the config (what the command and 'spp-detect run' call)
