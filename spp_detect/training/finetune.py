"""Fine-tuning the fc layers on cached SPP features, conv layers frozen (PAPER.md, "Fine-tuning").

Sampler: a window is foreground if its max IoU with a ground-truth box is >= ``fg_iou`` (label:
that box's class), background if in ``[bg_iou_low, fg_iou)``. A batch of ``batch_size`` windows
holds ``fg_fraction`` foreground and comes from ``images_per_batch`` random images (each image's
conv5 map is read once per step), mirrored images half of the time when the cache has them, and
a random scale per window. SGD with momentum and weight decay, biases at twice the learning rate,
the learning rate divided by 10 at each step in ``lr_steps``.

fc6 and fc7 start from the pretrained network's (PAPER.md: only the fc layers are fine-tuned,
from their pretrained values) when the backbone was pretrained here with the same SPP layout and
fc width; the classifier too when that pretraining named the same classes plus background.
With ``finetune.init = "imagenet"`` they start from the trunk's own ImageNet classifier
(:mod:`.imagenet_head`); with ``"random"``, or when nothing fits, from random weights.

Model selection uses the validation split's cache (never the test split): the head with the
lowest validation loss is kept. Checkpoints allow ``--resume``. Under torchrun the head runs in
DistributedDataParallel: each of the N ranks draws ``batch_size / N`` windows from
``images_per_batch / N`` images with its own random stream, and the averaged gradient is that of
one ``batch_size`` batch, so the configured numbers mean the same whatever N is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..artifacts.files import atomic_path
from ..artifacts.stamps import first_difference
from ..core.matching import label_windows
from ..datasets.base import DetectionDataset, usable_gt
from ..errors import ConfigError
from ..features.cache import FeatureCache, mean_window_norm
from ..pretrain.train import BACKGROUND
from ..progress import progress
from ..runtime import barrier, world
from .head import SppHead, save_head
from .prefetch import prefetched

log = logging.getLogger(__name__)


@dataclass
class ImageSamples:
    image_id: str
    fg: np.ndarray  # window indices
    fg_labels: np.ndarray  # class index + 1 (0 is background)
    bg: np.ndarray


def build_samples(cache: FeatureCache, ds: DetectionDataset, fg_iou: float, bg_low: float) -> list[ImageSamples]:
    """Foreground and background windows of every cached image of ``ds``."""
    out = []
    for image_id in cache.image_ids:
        record = ds.record(image_id)
        win = cache.windows(image_id)
        gt_boxes, gt_labels = usable_gt(record)
        lab = label_windows(win.boxes, gt_boxes, gt_labels)
        fg = np.nonzero(lab.max_iou >= fg_iou)[0]
        bg = np.nonzero((lab.max_iou >= bg_low) & (lab.max_iou < fg_iou))[0]
        out.append(ImageSamples(image_id, fg, lab.gt_label[fg] + 1, bg))
    return [s for s in out if len(s.fg) or len(s.bg)]


class WindowMemory:
    """Pooled SPP vectors of all of an image's training windows, per (image, scale, mirror), in RAM.

    A batch takes a few windows from each of many images; pooling them one by one on every step
    dominated fine-tuning's time, while pooling all of an image's windows at once costs about
    as much as pooling a handful (:class:`spp_detect.core.roi_spp.RoiSppPooler`). So when the
    training windows' vectors fit in ``memory_bytes``, each (image, scale, mirror) is pooled
    once, on first use, and kept as float16 (maxima of a float16 map: exact).
    ``scale`` -1 means each window's best scale.
    """

    def __init__(self, cache: FeatureCache):
        self.cache = cache
        self._rows: dict[tuple[str, int, bool], torch.Tensor] = {}

    @staticmethod
    def bytes_needed(cache: FeatureCache, samples: list[ImageSamples], random_scale: bool, flip: bool) -> int:
        windows = sum(len(s.fg) + len(s.bg) for s in samples)
        return windows * cache.dim * 2 * (len(cache.scales) if random_scale else 1) * (2 if flip else 1)

    def rows(self, s: ImageSamples, scale: int, flip: bool) -> torch.Tensor:
        """(len(s.fg) + len(s.bg), D) float16: foreground windows first, then background."""
        key = (s.image_id, scale, flip)
        rows = self._rows.get(key)
        if rows is None:
            idx = np.concatenate([s.fg, s.bg])
            per_window = None if scale < 0 else np.full(len(idx), scale)
            rows = self.cache.pool(s.image_id, idx, scale=per_window, flip=flip).half()
            self._rows[key] = rows
        return rows


class WindowSample:
    """A fixed sample of each training image's windows, pooled once, as float16 rows in a file.

    For datasets whose training windows do not fit in RAM (VOC: about 11 GB at one scale with
    mirrors). Per (image, mirror): up to ``fg_per_image`` foreground and ``bg_per_image``
    background windows drawn once (seeded), each at a scale drawn once when ``random_scale``
    (else its best scale), pooled and written to ``path`` (a ``.npy`` file read through a
    memory map: the OS keeps what fits of it in its page cache); ``path`` with ``.json``
    holds the index and the stamp, and is written last, so a sample whose index is there is
    complete and is reused by a rerun or ``--resume`` with the same inputs.
    """

    def __init__(self, path: Path, index: dict):
        self.path, self.index = Path(path), index
        self.rows = np.load(self.path, mmap_mode="r", allow_pickle=False)
        # per sample k and mirror f: (first row, n_fg, n_bg, fg labels); the entries also list the
        # windows (indices into the image's cached windows) and the scale each was pooled at
        self.entries = {(k, bool(f)): (off, nf, nb, np.asarray(lab, np.int64))
                        for k, f, off, nf, nb, lab, *_ in index["entries"]}

    @staticmethod
    def index_path(path: Path) -> Path:
        return Path(path).with_suffix(".json")

    @classmethod
    def open_or_build(cls, path: Path, cache: FeatureCache, samples: list[ImageSamples], fg_per_image: int,
                      bg_per_image: int, flip: bool, random_scale: bool, seed: int, stamp: dict) -> WindowSample:
        import json

        from ..artifacts.files import atomic_write_json

        path = Path(path)
        settings = {"stamp": stamp, "fg_per_image": fg_per_image, "bg_per_image": bg_per_image, "flip": flip,
                    "random_scale": random_scale, "seed": seed, "images": len(samples)}
        ipath = cls.index_path(path)
        if ipath.is_file() and path.is_file():
            index = json.loads(ipath.read_text())
            if index.get("settings") == settings:
                log.info("fine-tuning windows: reusing the sample in %s", path)
                return cls(path, index)
        ipath.unlink(missing_ok=True)  # an index only ever describes a complete file
        rng = np.random.default_rng(seed)
        plan = []  # (sample k, mirror, window indices, scale per window or None, n_fg, labels)
        for k, s in enumerate(samples):
            for f in ((False, True) if flip else (False,)):
                fg = np.sort(rng.choice(len(s.fg), min(len(s.fg), fg_per_image), replace=False))
                bg = np.sort(rng.choice(len(s.bg), min(len(s.bg), bg_per_image), replace=False))
                idx = np.concatenate([s.fg[fg], s.bg[bg]])
                scale = rng.integers(0, len(cache.scales), len(idx)) if random_scale else None
                plan.append((k, f, idx, scale, len(fg), s.fg_labels[fg]))
        n_rows = sum(len(p[2]) for p in plan)
        log.info("fine-tuning windows: pooling a fixed sample of %d windows once (%.1f GB of float16 on disk, %s)",
                 n_rows, n_rows * cache.dim * 2 / 1e9, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".partial.npy")
        rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n_rows, cache.dim))
        entries, off = [], 0
        try:
            for k, f, idx, scale, n_fg, labels in progress(plan, desc="finetune sample", unit="img"):
                if len(idx):
                    rows[off : off + len(idx)] = cache.pool(samples[k].image_id, idx, scale=scale, flip=f).half().numpy()
                entries.append([k, f, off, n_fg, len(idx) - n_fg, labels.tolist(), idx.tolist(),
                                None if scale is None else scale.tolist()])
                off += len(idx)
            rows.flush()
            del rows
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        index = {"settings": settings, "entries": entries}
        atomic_write_json(ipath, index)
        return cls(path, index)

    def remove(self) -> None:
        del self.rows
        self.index_path(self.path).unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)


class BatchSampler:
    """Draws (features, labels) batches from the cache as described in the module docstring.

    ``memory_bytes``: RAM for a :class:`WindowMemory` when the training windows fit in it.
    Otherwise, with a :class:`WindowSample` (``sample``), windows are drawn from its fixed
    per-image sample, read from disk; without one, each batch's windows are pooled from the
    cache's conv5 maps on every step (the same numbers as the memory, slower).
    """

    def __init__(self, cache: FeatureCache, samples: list[ImageSamples], batch_size: int, images_per_batch: int,
                 fg_fraction: float, flip: bool, random_scale: bool, norm_scale: float, seed: int,
                 memory_bytes: int = 0, sample: WindowSample | None = None, device: str = "cpu"):
        """``device``: where windows pooled on every step are pooled (the maps go there); vectors
        kept in RAM or in a sample are moved there by the caller."""
        if not samples:
            raise ValueError("no training windows: every image lacks foreground and background windows")
        self.cache, self.samples = cache, samples
        self.batch_size, self.images_per_batch = batch_size, min(images_per_batch, len(samples))
        self.fg_fraction, self.flip = fg_fraction, flip and cache.has_flip
        self.random_scale, self.norm_scale = random_scale, norm_scale
        self.rng = np.random.default_rng(seed)
        self.memory_needed = WindowMemory.bytes_needed(cache, samples, random_scale, self.flip)
        self.memory = WindowMemory(cache) if 0 < self.memory_needed <= memory_bytes else None
        self.sample = sample if self.memory is None else None
        self.device = device

    @staticmethod
    def fits(cache: FeatureCache, samples: list[ImageSamples], random_scale: bool, flip: bool,
             memory_bytes: int) -> bool:
        """Whether every training window's pooled vector fits in ``memory_bytes``."""
        return 0 < WindowMemory.bytes_needed(cache, samples, random_scale, flip and cache.has_flip) <= memory_bytes

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self.rng
        picks = rng.choice(len(self.samples), self.images_per_batch, replace=False)
        per_image = np.full(self.images_per_batch, self.batch_size // self.images_per_batch)
        per_image[: self.batch_size % self.images_per_batch] += 1
        if self.sample is not None:
            return self._draw_from_sample(picks, per_image)
        feats, labels = [], []
        for k, n in zip(picks, per_image, strict=True):
            s = self.samples[k]
            n_fg = min(len(s.fg), int(round(n * self.fg_fraction))) if len(s.fg) else 0
            n_bg = n - n_fg if len(s.bg) else 0
            if n_bg == 0 and len(s.fg):
                n_fg = n
            fg_pick = rng.choice(len(s.fg), n_fg, replace=n_fg > len(s.fg)) if n_fg else np.zeros(0, int)
            bg_pick = rng.choice(len(s.bg), n_bg, replace=n_bg > len(s.bg)) if n_bg else np.zeros(0, int)
            lab = np.concatenate([s.fg_labels[fg_pick], np.zeros(n_bg, np.int64)])
            flip = bool(self.flip and rng.random() < 0.5)
            scale = rng.integers(0, len(self.cache.scales), len(lab)) if self.random_scale else None
            if self.memory is None:
                idx = np.concatenate([s.fg[fg_pick], s.bg[bg_pick]])
                feats.append(self.cache.pool(s.image_id, idx, scale=scale, flip=flip, device=self.device))
            else:
                feats.append(self._from_memory(s, np.concatenate([fg_pick, len(s.fg) + bg_pick]), scale, flip)
                             .to(self.device))
            labels.append(torch.from_numpy(lab.astype(np.int64)))
        return torch.cat(feats) * self.norm_scale, torch.cat(labels)

    def _draw_from_sample(self, picks: np.ndarray, per_image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The same draw over the sample's windows: fg share, mirror per image; scales were drawn
        when the sample was made."""
        rng = self.rng
        rows, labels = [], []
        for k, n in zip(picks, per_image, strict=True):
            flip = bool(self.flip and rng.random() < 0.5)
            off, n_fg_have, n_bg_have, fg_labels = self.sample.entries[(int(k), flip)]
            n_fg = min(n_fg_have, int(round(n * self.fg_fraction))) if n_fg_have else 0
            n_bg = n - n_fg if n_bg_have else 0
            if n_bg == 0 and n_fg_have:
                n_fg = n
            fg_pick = rng.choice(n_fg_have, n_fg, replace=n_fg > n_fg_have) if n_fg else np.zeros(0, int)
            bg_pick = rng.choice(n_bg_have, n_bg, replace=n_bg > n_bg_have) if n_bg else np.zeros(0, int)
            rows.append(off + np.concatenate([fg_pick, n_fg_have + bg_pick]))
            labels.append(np.concatenate([fg_labels[fg_pick], np.zeros(n_bg, np.int64)]))
        rows = np.concatenate(rows)
        order = np.argsort(rows, kind="stable")  # read the file in order, then put rows back
        x = np.empty((len(rows), self.cache.dim), np.float16)
        x[order] = self.sample.rows[rows[order]]
        return torch.from_numpy(x).float() * self.norm_scale, torch.from_numpy(np.concatenate(labels))

    def _from_memory(self, s: ImageSamples, rows: np.ndarray, scale: np.ndarray | None, flip: bool) -> torch.Tensor:
        if scale is None:
            return self.memory.rows(s, -1, flip)[torch.from_numpy(rows)].float()
        out = torch.empty((len(rows), self.cache.dim))
        for k in np.unique(scale):
            sel = np.nonzero(scale == k)[0]
            out[torch.from_numpy(sel)] = self.memory.rows(s, int(k), flip)[torch.from_numpy(rows[sel])].float()
        return out


def fixed_batches(sampler: BatchSampler, n_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [sampler.draw() for _ in range(n_batches)]


def evaluate_head(head: nn.Module, batches, device: str = "cpu") -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``head`` on fixed batches."""
    head.eval()
    loss, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            logits = head(x)
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
    head.train()
    return loss / max(n, 1), correct / max(n, 1)


def finetune(
    train_cache: FeatureCache,
    train_ds: DetectionDataset,
    val: tuple[FeatureCache, DetectionDataset] | None,
    out_path: Path,
    stamp: dict,
    *,
    fc_dim: int,
    dropout: float,
    iterations: int,
    lr: float,
    lr_steps: tuple[int, ...],
    momentum: float,
    weight_decay: float,
    batch_size: int,
    images_per_batch: int,
    fg_fraction: float,
    fg_iou: float,
    bg_iou_low: float,
    flip: bool,
    random_scale: bool,
    val_every: int,
    val_images: int,
    norm_target: float = 20.0,
    seed: int = 0,
    resume: bool = False,
    pretrained: dict | None = None,
    memory_bytes: int = 0,
    fg_per_image: int = 16,
    bg_per_image: int = 48,
    sample_path: Path | None = None,
    device: str = "cpu",
) -> dict:
    """Train the head and save the selected one to ``out_path`` (models/head.pt).

    When the training windows do not fit in ``memory_bytes``, batches come from a
    :class:`WindowSample` of ``fg_per_image`` / ``bg_per_image`` windows per image and mirror,
    written to ``sample_path`` (default: beside ``out_path``) and removed once the head is saved.
    """
    rank, world_size = world()
    torch.manual_seed(seed + rank)
    rank_batch, rank_images = split_batch(batch_size, images_per_batch, world_size)
    n_classes = len(train_ds.classes)
    norm_scale = train_cache.norm_scale(norm_target)
    samples = build_samples(train_cache, train_ds, fg_iou, bg_iou_low)
    n_fg = sum(len(s.fg) for s in samples)
    log.info("fine-tuning on %d images: %d foreground, %d background windows", len(samples), n_fg,
             sum(len(s.bg) for s in samples))
    import time

    t_sample = time.perf_counter()
    sampler, sample = _training_sampler(
        train_cache, samples, out_path, sample_path, stamp, rank, rank_batch, rank_images, fg_fraction, flip,
        random_scale, norm_scale, seed, memory_bytes, fg_per_image, bg_per_image, device)
    t_sample = time.perf_counter() - t_sample
    val_batches = _validation_batches(val, fg_iou, bg_iou_low, val_images, batch_size, images_per_batch,
                                      fg_fraction, norm_target, seed)
    head = SppHead(train_cache.dim, fc_dim, n_classes, dropout)
    ckpt_path = out_path.with_name("finetune.ckpt")
    copied = init_from_pretrained(head, pretrained, train_ds.classes, train_cache.levels, train_cache.concat_order,
                                  norm_scale)
    log.info("fc layers copied from the pretraining: %s", copied)
    fc6_scale = None
    if copied == "fc6" and not (resume and ckpt_path.is_file()):
        fc6_scale = scale_fc6_outputs(head, train_cache, norm_scale, norm_target, seed, device)
    head.to(device)
    model: nn.Module = head
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(head)
        log.info("DistributedDataParallel over %d processes: %d windows from %d images per process and step",
                 world_size, rank_batch, rank_images)
    opt, sched = _optimizer(head, lr, lr_steps, momentum, weight_decay)

    start, best, history = 0, None, []
    if resume and ckpt_path.is_file():
        start, best, history = _resume(ckpt_path, stamp, head, opt, sched)
        sampler.rng = np.random.default_rng(seed + 1000 * rank + start)

    head.train()
    bar = progress(total=iterations, initial=start, desc="finetune", unit="it")
    running = []
    t_draw = t_train = 0.0  # seconds waiting for batches and taking SGD steps (validation apart)
    # the next batches are drawn in a thread while the step runs (the sampler's own generator
    # makes the same batches in the same order, so the head is the one drawn in line would give)
    batches = prefetched((sampler.draw() for _ in range(start, iterations)), depth=2)
    try:
        for it in range(start, iterations):
            t0 = time.perf_counter()
            x, y = next(batches)
            t1 = time.perf_counter()
            loss = nn.functional.cross_entropy(model(x.to(device, non_blocking=True)), y.to(device, non_blocking=True))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            running.append(loss.item())
            t_draw, t_train = t_draw + (t1 - t0), t_train + (time.perf_counter() - t1)
            bar.update(1)
            done = it + 1
            if done % val_every == 0 or done == iterations:
                train_loss = float(np.mean(running))
                running = []
                entry = {"iteration": done, "train_loss": train_loss}
                if val_batches is not None:
                    entry["val_loss"], entry["val_accuracy"] = evaluate_head(head, val_batches, device)
                    if best is None or entry["val_loss"] < best["val_loss"]:
                        best = {"val_loss": entry["val_loss"], "iteration": done,
                                "state": {k: v.clone() for k, v in head.state_dict().items()}}
                history.append(entry)
                bar.set_postfix({k: round(v, 4) for k, v in entry.items() if k != "iteration"})
                if rank == 0:
                    with atomic_path(ckpt_path) as tmp:
                        torch.save({"head": head.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                                    "iteration": done, "best": best, "history": history, "stamp": stamp}, tmp)
    finally:
        batches.close()  # stops the drawing thread, also when a step fails
    bar.close()
    if best is not None:
        head.load_state_dict(best["state"])
    head.eval()
    with torch.no_grad():
        fc7_norm = mean_window_norm(train_cache, seed, images=200, windows=200, device=device,
                                    transform=lambda pooled: head.fc7_features(pooled * norm_scale))
    head.cpu()
    meta = {
        "stamp": stamp, "classes": list(train_ds.classes), "dropout": dropout, "pool_norm_scale": norm_scale,
        "fc7_norm_mean": fc7_norm, "history": history, "selected_iteration": best["iteration"] if best else iterations,
        "timing": _timing(t_sample, t_draw, t_train, iterations - start, sampler), "initialised": copied,
        "fc6_scale": fc6_scale,
    }
    if rank == 0:
        save_head(out_path, head, meta)
        if sample is not None:
            sample.remove()  # tens of GB at VOC size; a later run pools a new one
    return {"history": history, "selected_iteration": meta["selected_iteration"], "fc7_norm_mean": fc7_norm,
            "initialised": copied, "fc6_scale": fc6_scale, "timing": meta["timing"]}


def _training_sampler(train_cache, samples, out_path, sample_path, stamp, rank, rank_batch, rank_images, fg_fraction,
                      flip, random_scale, norm_scale, seed, memory_bytes, fg_per_image, bg_per_image, device="cpu"):
    """The batch sampler, and the :class:`WindowSample` it draws from when the training
    windows do not fit in ``memory_bytes`` (rank 0 builds it; the other ranks open it)."""
    sample = None
    if memory_bytes > 0 and not BatchSampler.fits(train_cache, samples, random_scale, flip, memory_bytes):
        sample_path = Path(sample_path) if sample_path is not None else out_path.with_name("finetune_windows.npy")
        sample_args = (sample_path, train_cache, samples, fg_per_image, bg_per_image, flip and train_cache.has_flip,
                       random_scale, seed, stamp)
        if rank == 0:
            sample = WindowSample.open_or_build(*sample_args)
        barrier()  # rank 0 wrote the sample; the others open it
        if rank != 0:
            sample = WindowSample.open_or_build(*sample_args)
    sampler = BatchSampler(train_cache, samples, rank_batch, rank_images, fg_fraction, flip, random_scale,
                           norm_scale, seed + 1000 * rank, memory_bytes=memory_bytes, sample=sample, device=device)
    need = sampler.memory_needed >> 20
    if sampler.memory is not None:
        log.info("training windows pooled once and kept in RAM (%d MB of finetune.memory_mb)", need)
    elif sample is not None:
        log.info("training windows need %d MB, over finetune.memory_mb: batches come from a fixed sample of "
                 "%d foreground and %d background windows per image and mirror", need, fg_per_image, bg_per_image)
    else:
        log.info("training windows pooled on every step: their vectors need %d MB, over finetune.memory_mb", need)
        train_cache.keep_maps(memory_bytes)
    return sampler, sample


def _validation_batches(val, fg_iou, bg_iou_low, val_images, batch_size, images_per_batch, fg_fraction,
                        norm_target, seed):
    """Fixed batches of the validation split (the same every evaluation), or None without one."""
    if val is None:
        log.warning("no validation features: the last iterate is kept (extract the val split for model selection)")
        return None
    v_cache, v_ds = val
    v_samples = build_samples(v_cache, v_ds, fg_iou, bg_iou_low)[:val_images]
    if not v_samples:
        return None
    v_sampler = BatchSampler(v_cache, v_samples, batch_size, images_per_batch, fg_fraction, False, False,
                             v_cache.norm_scale(norm_target), seed + 7)
    return fixed_batches(v_sampler, max(1, len(v_samples) // max(1, images_per_batch)))


def _optimizer(head, lr, lr_steps, momentum, weight_decay):
    """SGD as the released solver: biases at twice the learning rate and without weight decay;
    the rate divided by 10 at each of ``lr_steps``."""
    weights = [p for n, p in head.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in head.named_parameters() if n.endswith("bias")]
    groups = [
        {"params": weights, "lr": lr, "weight_decay": weight_decay},
        {"params": biases, "lr": 2 * lr, "weight_decay": 0.0},
    ]
    try:
        # the fused step makes one pass over each tensor: the same updates, bit for bit, but the
        # unfused one reads fc6's weights three times and was 40% of a CPU training step
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a torch without a fused SGD for this device
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum)
    return opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(lr_steps), gamma=0.1)


def _resume(ckpt_path, stamp, head, opt, sched):
    """Load a checkpoint into ``head``, ``opt`` and ``sched``; ``(iteration, best, history)``.

    Loaded with ``weights_only``: a checkpoint is plain tensors and numbers, and a crafted pickle
    in a run folder someone hands you must not run code. One made with other settings is refused
    (as pretraining does): never used, never silently thrown away.
    """
    from ..errors import ArtifactError

    try:
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
        raise ArtifactError(f"{ckpt_path}: not a fine-tuning checkpoint this version can read ({exc}); "
                            "remove it to start again") from None
    diff = first_difference(ck.get("stamp", {}), stamp)
    if diff is not None:
        raise ArtifactError(f"{ckpt_path}: checkpoint of another fine-tuning ({diff[0]}={diff[1]!r}, this run "
                            f"has {diff[2]!r}); pass --overwrite to start over, or drop --resume")
    head.load_state_dict(ck["head"])
    opt.load_state_dict(ck["opt"])
    sched.load_state_dict(ck["sched"])
    log.info("resuming fine-tuning at iteration %d", ck["iteration"])
    return ck["iteration"], ck["best"], ck["history"]


def _timing(sample_s: float, draw_s: float, train_s: float, steps: int, sampler: BatchSampler) -> dict:
    """Where fine-tuning's time went (this process; a resumed run counts its own steps only)."""
    source = "memory" if sampler.memory is not None else "sample" if sampler.sample is not None else "pooled each step"
    return {"windows_from": source, "sample_seconds": sample_s, "steps": steps,
            "draw_ms": 1e3 * draw_s / max(steps, 1), "step_ms": 1e3 * train_s / max(steps, 1),
            "iterations_per_s": steps / max(draw_s + train_s, 1e-9)}


def split_batch(batch_size: int, images_per_batch: int, world_size: int) -> tuple[int, int]:
    """Windows and images per step for each of ``world_size`` ranks (see the module docstring)."""
    if batch_size % world_size:
        raise ConfigError(f"finetune.batch_size: {batch_size} windows cannot be split evenly over {world_size} "
                          "processes; use a multiple of the process count")
    return batch_size // world_size, max(1, images_per_batch // world_size)


def scale_fc6_outputs(head: SppHead, cache: FeatureCache, norm_scale: float, norm_target: float, seed: int,
                      device: str = "cpu") -> float:
    """Scale a pretrained fc6 that comes without its fc7 so its outputs have mean L2 norm ``norm_target``
    on the training windows; returns the factor.

    An ImageNet classifier's logits (SqueezeNet's conv10 on Caffe-range inputs) reach hundreds: a
    random fc7 fed them takes steps a hundred times a random fc6's, and fine-tuning at the CPU
    schedule's learning rate diverged (validation no better than calling every window background
    after 2,000 iterations). A positive factor commutes with the ReLU, so fc6 keeps what it
    detects, and fc7 sees inputs of the scale every feature layer gets here (PAPER.md, mean norm 20).
    """
    with torch.no_grad():
        norm = mean_window_norm(cache, seed, images=200, windows=200, device=device,
                                transform=lambda pooled: torch.relu(head.fc6(pooled * norm_scale)))
        factor = norm_target / norm if norm > 0 else 1.0
        head.fc6.weight.mul_(factor)
        head.fc6.bias.mul_(factor)
    log.info("fc6 from the pretrained classifier: outputs of mean norm %.1f scaled by %.4g to %g", norm, factor,
             norm_target)
    return factor


def init_from_pretrained(head: SppHead, pretrained: dict | None, classes, levels, concat_order: str,
                         norm_scale: float) -> str:
    """Copy fc layers of a pretraining (:func:`spp_detect.backbones.pretrained_head`) into ``head``.

    The pretrained fc6 saw raw SPP vectors, fine-tuning feeds them times ``norm_scale``: fc6's
    weights are divided by it so the layer computes what it did. Returns what was copied
    ("fc6, fc7, classifier", "fc6, fc7") or why nothing was.
    """
    if pretrained is None:
        return "nothing: the backbone was not pretrained by spp-detect pretrain"
    state = pretrained["state_dict"]
    if list(pretrained["levels"]) and (sorted(pretrained["levels"]) != sorted(levels)
                                       or pretrained["concat_order"] != concat_order):
        return f"nothing: pretrained with SPP levels {pretrained['levels']}, the cache has {list(levels)}"
    # fc7 is optional: a classifier with one layer before its outputs (SqueezeNet's conv10) gives fc6 alone
    shapes = {"fc6.weight": head.fc6.weight.shape}
    if "fc7.weight" in state:
        shapes["fc7.weight"] = head.fc7.weight.shape
    for key, shape in shapes.items():
        if key not in state or tuple(state[key].shape) != tuple(shape):
            got = tuple(state[key].shape) if key in state else None
            return f"nothing: pretrained {key} has shape {got}, the head needs {tuple(shape)}"
    with torch.no_grad():
        head.fc6.weight.copy_(state["fc6.weight"] / norm_scale)
        head.fc6.bias.copy_(state["fc6.bias"])
        if "fc7.weight" not in state:
            return "fc6"
        head.fc7.weight.copy_(state["fc7.weight"])
        head.fc7.bias.copy_(state["fc7.bias"])
        if pretrained["labels"] == [*classes, BACKGROUND] and "fc8.weight" in state:
            # pretraining put background last; the head has it first
            order = [len(classes), *range(len(classes))]
            head.cls.weight.copy_(state["fc8.weight"][order])
            head.cls.bias.copy_(state["fc8.bias"][order])
            return "fc6, fc7, classifier"
    return "fc6, fc7"
