"""The ``pretrain`` stage: the trunk trained as a classifier into ``RUN/pretrain/backbone.pt``."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..artifacts.layout import pretrain_dir
from ..artifacts.stamps import first_difference
from ..config import to_dict
from ..errors import ConfigError, OutputExistsError
from ..runtime import resolve_device
from .train import (
    CropSource,
    crop_source_from_detection,
    distractor_kinds_of,
    holdout_split,
    pretrain,
)

log = logging.getLogger(__name__)


def pretrain_stamp(cfg, train: CropSource, val: CropSource) -> dict:
    """What a pretrained backbone is keyed on; each value separately so a mismatch names it."""

    p = to_dict(cfg.pretrain)
    p.pop("workers", None)  # data-loading processes do not change the result
    if not p["distractor_classes"]:
        p.pop("distractor_classes")  # absent when off, so backbones pretrained before it keep their stamp
    b = cfg.backbone
    return {
        "backbone": b.name,
        "init_weights": _init_weights(b.weights),
        "width": b.width,
        **({"channels": list(b.channels)} if b.channels else {}),  # absent when unset: older stamps still match
        "batch_norm": b.batch_norm,
        "input_convention": b.input_convention,
        **{f"pretrain.{k}": (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
        "levels": [int(n) for n in cfg.spp.levels],
        "concat_order": cfg.spp.concat_order,
        "train": f"{train.name}/{train.split}/{train.fingerprint}",
        "val": f"{val.name}/{val.split}/{val.fingerprint}",
        # windows are resized and projected as extraction does it
        **({f"extract.{k}": (list(v) if isinstance(v, tuple) else v) for k, v in to_dict(cfg.extract).items()
            if k in ("scales", "target_size", "max_size", "projection")} if cfg.pretrain.mode == "windows" else {}),
    }


def _init_weights(weights: str) -> str:
    # 'pretrained' names what this stage produces; the stage itself starts from scratch
    return "none" if weights == "pretrained" else weights


def read_saved_stamp(path: Path) -> dict | None:
    """The stamp stored in a backbone.pt, or None when the file cannot be read."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    return obj.get("stamp") if isinstance(obj, dict) else None


def run_pretrain(cfg, run: Path, train_ds, val_ds=None, overwrite: bool = False) -> dict:
    """Pretrain as ``cfg`` says into ``run/pretrain/``; skip when it is already done.

    ``train_ds`` / ``val_ds``: a :class:`DetectionDataset` or a :class:`CropSource`; without a
    validation split every 10th training image is held out. An existing ``backbone.pt`` with
    the same stamp is kept (``{"skipped": True}``); one made otherwise is replaced only with
    ``overwrite``.
    """
    from ..backbones import backbone_from_config

    run = Path(run)
    out_dir = pretrain_dir(run)
    kinds: tuple[str, ...] = ()
    if cfg.pretrain.distractor_classes:
        if isinstance(train_ds, CropSource):
            raise ConfigError("pretrain.distractor_classes: needs a detection dataset with <distractor> annotations, not an image folder")
        kinds = distractor_kinds_of(train_ds)
        if not kinds:
            raise ConfigError(
                f"pretrain.distractor_classes: split '{train_ds.split}' of {train_ds.name} annotates no distractors "
                "(<distractor> elements: the synthetic dataset has them since annotations v2; "
                "'spp-detect data synth' brings an older one up to date); set it to false for this dataset"
            )
        log.info("pretraining also names %d distractor kinds as classes of their own", len(kinds))
    train = train_ds if isinstance(train_ds, CropSource) else crop_source_from_detection(train_ds, kinds)
    if val_ds is None:
        log.info("no validation split: holding out every 10th training image for validation")
        train, val = holdout_split(train)
    else:
        val = val_ds if isinstance(val_ds, CropSource) else crop_source_from_detection(val_ds, kinds)
    stamp = pretrain_stamp(cfg, train, val)
    final = out_dir / "backbone.pt"
    if final.is_file():
        saved = read_saved_stamp(final)
        if saved is not None and cfg.backbone.weights == "pretrained":
            # 'pretrained' is what this stage made, not how it started: any start will do
            saved = {**saved, "init_weights": stamp["init_weights"]}
        diff = None if saved is None else first_difference(saved, stamp)
        if saved is not None and diff is None and not overwrite:
            log.info("%s is up to date", final)
            metrics_path = out_dir / "metrics.json"
            summary = {"skipped": True, "backbone": str(final)}
            if metrics_path.is_file():
                import json

                summary["val_top1"] = {k: v["top1"] for k, v in json.loads(metrics_path.read_text())["val"].items()}
            return summary
        if not overwrite:
            why = "cannot be read" if saved is None else f"was made with {diff[0]}={diff[1]!r}, this run has {diff[2]!r}"
            raise OutputExistsError(f"{final} exists and {why}; pass --overwrite to replace it")
        ckpt = out_dir / "checkpoint.pt"
        if ckpt.is_file():
            ckpt.unlink()
    elif overwrite and (out_dir / "checkpoint.pt").is_file():
        (out_dir / "checkpoint.pt").unlink()

    backbone = backbone_from_config(cfg.backbone, _init_weights(cfg.backbone.weights))
    p = cfg.pretrain
    device = resolve_device(p.device, "pretrain.device")
    task = None
    if p.mode == "windows":
        from ..core.geometry import WindowGeometry
        from .windows import WindowSampling, WindowTask

        if train.items and train.items[0].boxes is None:
            raise ConfigError("pretrain.mode: 'windows' needs a detection dataset (boxes); an image folder trains on crops")
        e = cfg.extract
        geometry = WindowGeometry(tuple(e.scales), e.target_size, e.max_size, e.projection)
        sampling = WindowSampling(geometry, p.windows_per_image, p.fg_fraction, p.fg_iou)
        task = WindowTask(sampling, cfg.spp.levels, cfg.spp.concat_order)
    elif p.mode != "crops":
        raise ConfigError(f"pretrain.mode: unknown mode {p.mode!r}; use crops or windows")
    t0 = time.perf_counter()
    metrics = pretrain(
        train, val, backbone, out_dir, task=task,
        sizes=p.sizes, eval_sizes=p.eval_sizes, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr,
        momentum=p.momentum, weight_decay=p.weight_decay, warmup=p.warmup, optimizer_name=p.optimizer,
        crops_per_image=p.crops_per_image,
        background_crops=p.background_crops, context=p.context, background_iou=p.background_iou,
        fc_dim=p.fc_dim, dropout=p.dropout, levels=cfg.spp.levels, concat_order=cfg.spp.concat_order,
        workers=p.workers, seed=p.seed, device=device, stamp=stamp,
    )
    return {
        "skipped": False,
        "backbone": str(final),
        "val_top1": {k: v["top1"] for k, v in metrics["val"].items()},
        "chance_top1": metrics["chance_top1"],
        "majority_top1": metrics["majority_top1"],
        "seconds": time.perf_counter() - t0,
    }
