"""The training stages: ``finetune`` (``RUN/models/head.pt``), ``train-svm`` (``svm.h5``) and
``train-bbox`` (``bbox.h5``), each on the training split's feature cache.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..artifacts.layout import (
    bbox_path,
    features_path,
    head_path,
    models_dir,
    svm_checkpoint_path,
    svm_path,
)
from ..config import PipelineConfig, config_hash, to_dict
from ..datasets.base import DetectionDataset
from ..features.stage import features_hash, open_features, scaling_stamp, weights_source
from ..runtime import barrier, resolve_device, start_world


def run_finetune(cfg: PipelineConfig, run: Path, train_ds: DetectionDataset, val_ds: DetectionDataset | None,
                 overwrite: bool = False, resume: bool = False) -> dict:
    from ..artifacts.files import check_overwrite
    from ..config import check_combinations
    from .finetune import finetune

    check_combinations(cfg)  # command-line options (--fc-dim...) come after the file's check
    out = head_path(run)
    f = cfg.finetune
    _, world_size = start_world()
    cache = open_features(run, train_ds)
    # how many processes and which device do not change the result: left out of the stamp. RAM can:
    # windows that do not fit come from a sample (fg/bg_per_image, stamped), but a different
    # memory_mb that keeps the same choice gives the same head, so it is not stamped either
    stamp = {"features": features_hash(cache), "finetune": config_hash(replace(f, memory_mb=0, workers=0, device="")),
             **scaling_stamp(cfg)}
    device = resolve_device(f.device, "finetune.device")
    if out.exists() and not overwrite:
        from .head import load_head

        load_head(out, expect=stamp)
        return {"skipped": True, "path": str(out)}
    check_overwrite(out, True)
    val = None
    if val_ds is not None and features_path(run, val_ds.split).is_file():
        val = (open_features(run, val_ds), val_ds)
    out.parent.mkdir(parents=True, exist_ok=True)
    pretrained = None
    if f.init == "pretrained":
        from ..backbones import pretrained_head

        pretrained = pretrained_head(weights_source(cfg, run))
    elif f.init == "imagenet":
        from .imagenet_head import imagenet_pretrained

        b = cfg.backbone
        pretrained = imagenet_pretrained(b.name, weights_source(cfg, run), b.input_convention, cache.channels,
                                         cache.levels, cache.concat_order)
    summary = finetune(
        cache, train_ds, val, out, stamp, fc_dim=f.fc_dim, dropout=f.dropout, iterations=f.iterations, lr=f.lr,
        lr_steps=f.lr_steps, momentum=f.momentum, weight_decay=f.weight_decay, batch_size=f.batch_size,
        images_per_batch=f.images_per_batch, fg_fraction=f.fg_fraction, fg_iou=f.fg_iou, bg_iou_low=f.bg_iou_low,
        flip=f.flip, random_scale=f.random_scale, val_every=f.val_every, val_images=f.val_images,
        norm_target=cfg.extract.norm_target, seed=f.seed, resume=resume, pretrained=pretrained,
        memory_bytes=f.memory_mb << 20, fg_per_image=f.fg_per_image, bg_per_image=f.bg_per_image, device=device,
    )
    barrier()  # rank 0 writes head.pt: no rank goes on before it exists
    summary["path"] = str(out)
    return summary


def feature_provider(cfg: PipelineConfig, run: Path, cache, kind: str, device: str = "cpu",
                     precision: str = "float32"):
    """What scores a cache's windows for the SVMs: fc7 of the run's head (computed in
    ``precision``) or the SPP vector; and the key of those features that models are stamped with."""
    from .head import load_head
    from .svm_features import FeatureProvider

    if kind == "fc7":
        head, meta = load_head(head_path(run))
        provider = FeatureProvider("fc7", cache, head, meta, cfg.extract.norm_target, device=device,
                                   precision=precision)
        return provider, config_hash(meta["stamp"], meta["fc7_norm_mean"])
    return FeatureProvider("pool", cache, target=cfg.extract.norm_target, device=device), "pool"


SVM_FORMAT = "spp-detect/svm"


SVM_VERSION = 2  # 2: positives gathered before mining, capped caches (version 1 streamed positives in)


def run_train_svm(cfg: PipelineConfig, run: Path, train_ds: DetectionDataset, overwrite: bool = False,
                  val_ds: DetectionDataset | None = None) -> dict:
    """Mine and train the SVMs -> ``svm.h5``. Mining saves its state every ``svm.checkpoint_minutes``
    (``svm.ckpt.h5``); run again after a kill, it goes on from there (``overwrite``: starts over).
    With ``svm.select = "val"``, each class's model is chosen among its retrains' on ``val_ds``'s
    cached windows (:mod:`.svm_select`)."""
    import logging
    import os
    import time

    import numpy as np

    from ..artifacts.stamps import open_h5_checked
    from ..config import check_combinations
    from ..datasets.base import usable_gt
    from ..errors import ArtifactError
    from ..progress import progress
    from .prefetch import prefetched
    from .svm import HardNegativeTrainer, SvmImage, gather_positives, mine
    from .svm_checkpoint import load_checkpoint, save_checkpoint
    from .svm_features import resolve_fc7_precision

    s = cfg.svm
    check_combinations(cfg)  # command-line options (--features) come after the file's check
    out = svm_path(run)
    cache = open_features(run, train_ds)
    device = resolve_device(s.device, "svm.device")
    precision = resolve_fc7_precision(s.fc7_precision, device) if s.features == "fc7" else "float32"
    provider, head_key = feature_provider(cfg, run, cache, s.features, device, precision)
    # where it runs, where the cached rows live and how often it saves its state do not change the
    # SVMs: left out of the stamp.
    # memory_mb can (a fit over it keeps only its class's hardest negatives), so it stays in
    settings_key = to_dict(replace(s, workers=0, device="", checkpoint_minutes=0.0, cache="memory"))
    settings_key["fc7_precision"] = precision  # what ran: auto and its resolution give the same SVMs
    if precision == "float32":
        del settings_key["fc7_precision"]  # absent: float32, so SVMs trained before it existed stay current
    if s.select == "last":
        del settings_key["select"], settings_key["select_significance"]  # absent likewise
    if s.classifier == "svm":
        del settings_key["classifier"]  # absent likewise
    else:  # no mining: none of its settings change the models
        settings_key = {k: settings_key[k] for k in ("features", "classifier", "fc7_precision") if k in settings_key}
    stamp = {"features": features_hash(cache), "head": head_key, "svm": config_hash(settings_key),
             **scaling_stamp(cfg)}
    selecting = s.select == "val" and s.classifier == "svm"
    if selecting:
        val_cache = _validation_cache(cfg, run, val_ds)
        d = cfg.detect  # what the choice is measured with: the windows detect would keep
        stamp["select"] = {"val_features": features_hash(val_cache),
                           "detect": config_hash([d.score_floor, d.nms_iou, d.max_per_class])}
    if out.exists() and not overwrite:
        open_h5_checked(out, SVM_FORMAT, SVM_VERSION, stamp, remedy="pass --overwrite to train again").close()
        return {"skipped": True, "path": str(out)}

    if s.classifier == "softmax":
        w, b = provider.head.log_odds(provider.fc7_scale)
        logs, memory = [[] for _ in train_ds.classes], {}
        _write_svms(out, stamp, s.features, precision, train_ds.classes, w, b, logs, memory)
        return {"path": str(out), "classifier": "softmax", "final": [{} for _ in logs]}

    def labelled(image_id):
        gt_boxes, gt_labels = usable_gt(train_ds.record(image_id))
        return gt_boxes, np.asarray(gt_labels)

    def positives():
        # every ground-truth window of every image, before mining (R-CNN's positive pool)
        for image_id in progress(cache.image_ids, desc="train-svm positives", unit="img"):
            win = cache.windows(image_id)
            _, gt_labels = labelled(image_id)
            if win.n_gt == 0:
                continue
            feats = provider.from_pooled(provider.pooled(image_id, np.arange(win.n_gt), windows=win))
            yield feats, gt_labels[: win.n_gt]

    def images(start: int):
        ids = cache.image_ids
        for image_id in progress(ids[start:], total=len(ids), initial=start, desc="train-svm mining", unit="img"):
            win = cache.windows(image_id)
            keys = cache.window_keys(win)
            # proposals only (ground truth is never a negative), each distinct feature vector once
            _, first = np.unique(keys[win.n_gt :], return_index=True)
            idx = np.sort(first) + win.n_gt
            feats = provider.from_pooled(provider.pooled(image_id, idx, windows=win))
            gt_boxes, gt_labels = labelled(image_id)
            yield SvmImage(image_id, feats.astype(np.float32, copy=False), win.boxes[idx], keys[idx],
                           np.full(len(idx), -1), gt_boxes, gt_labels)

    workers = s.workers or os.cpu_count() or 1
    n_classes = len(train_ds.classes)
    settings = dict(C=s.C, positive_weight=s.positive_weight, bias_feature=s.bias_feature,
                    negative_iou=s.negative_iou, hard_threshold=s.hard_threshold, evict_threshold=s.evict_threshold,
                    retrain_every=s.retrain_every, max_negatives=s.max_negatives, fit_memory_bytes=s.memory_mb << 20,
                    workers=workers, seed=s.seed, tol=s.tol, solver=s.solver)
    ckpt = svm_checkpoint_path(run)
    store_dir = None
    if s.cache == "disk":
        store_dir = models_dir(run)
        store_dir.mkdir(parents=True, exist_ok=True)
    settings["store_dir"] = store_dir
    if overwrite:
        ckpt.unlink(missing_ok=True)
    if ckpt.is_file():
        state = load_checkpoint(ckpt, stamp, store_dir)
        seen = list(cache.image_ids[: state.images_seen])
        if state.image_ids != seen:
            raise ArtifactError(f"{ckpt}: mined images {state.image_ids[:3]}... are not the first "
                                f"{state.images_seen} of this feature cache; pass --overwrite to start over")
        trainer = HardNegativeTrainer.resume(state, **settings)
        del state
        logging.getLogger(__name__).info("train-svm: going on from %s after %d of %d images", ckpt,
                                         trainer.images_seen, len(cache.image_ids))
    else:
        # the next images' features are computed while liblinear's fits run (prefetch thread)
        pos = gather_positives(prefetched(positives()), n_classes, provider.dim)
        trainer = HardNegativeTrainer(pos, provider.dim, **settings)
        del pos
    saved = time.monotonic()

    def checkpoint(t):
        nonlocal saved
        if time.monotonic() - saved >= 60 * s.checkpoint_minutes and t.images_seen < len(cache.image_ids):
            save_checkpoint(ckpt, t.state(), stamp)
            saved = time.monotonic()

    w, b, logs, memory = mine(trainer, prefetched(images(trainer.images_seen)), after_image=checkpoint)
    selection = None
    if selecting:
        from .svm_select import Candidates, choose, gain_p_values, validate

        candidates = Candidates.from_models([st.models for st in trainer.states], provider.dim)
        val_provider, _ = feature_provider(cfg, run, val_cache, s.features, device, precision)
        scored = validate(candidates, val_provider, val_cache, val_ds, d.score_floor, d.nms_iou, d.max_per_class,
                          metric="voc10" if cfg.eval.metric == "voc10" else "voc07")
        p = gain_p_values(candidates, scored, seed=s.seed) if s.select_significance < 1 else None
        w, b, selection = choose(candidates, scored.ap, n_classes, provider.dim, p, s.select_significance)
        selection = {"split": val_ds.split, "significance": s.select_significance, "classes": selection}
    _write_svms(out, stamp, s.features, precision, train_ds.classes, w, b, logs, memory, selection,
                candidates if selecting else None)
    ckpt.unlink(missing_ok=True)
    return {"path": str(out), "retrains": [len(x) for x in logs], "final": [x[-1] if x else {} for x in logs],
            "selection": selection, **memory}


def _validation_cache(cfg: PipelineConfig, run: Path, val_ds: DetectionDataset | None):
    """The validation split's feature cache that svm.select = "val" chooses on (refused, naming
    what is missing, before any mining)."""
    from ..errors import ConfigError

    if val_ds is None:
        raise ConfigError("svm.select = 'val' chooses each class's SVM on the validation split, but none was given: "
                          "set data.val_split (or svm.select = 'last')")
    if not features_path(run, val_ds.split).is_file():
        raise ConfigError(f"svm.select = 'val': {features_path(run, val_ds.split)} does not exist; run "
                          f"'spp-detect extract --split {val_ds.split}' first (or svm.select = 'last')")
    return open_features(run, val_ds)


def _write_svms(out: Path, stamp: dict, features: str, precision: str, classes, w, b, logs, memory,
                selection: dict | None = None, candidates=None) -> None:
    import json

    import h5py

    from ..artifacts.files import atomic_path
    from ..artifacts.stamps import write_stamp

    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as h5:
            write_stamp(h5, SVM_FORMAT, SVM_VERSION, stamp)
            h5.attrs["features"] = features
            h5.attrs["fc7_precision"] = precision
            h5.attrs["classes"] = json.dumps(list(classes))
            h5.attrs["logs"] = json.dumps(logs)
            h5.attrs["memory"] = json.dumps(memory)
            if selection is not None:  # svm.select = "val": each class's candidates and their validation AP
                h5.attrs["selection"] = json.dumps(selection)
            if candidates is not None:  # and the candidates themselves, so any retrain's model can be studied
                candidates.write(h5.create_group("candidates"))
            h5.create_dataset("weights", data=w)
            h5.create_dataset("bias", data=b)


class Svms(NamedTuple):
    """The SVMs of a run: ``weights`` float32 (K, D), ``bias`` (K,), ``features`` what they score
    (``fc7`` or ``pool``), ``classes`` their names in order, ``fc7_precision`` the arithmetic
    fc7 was computed in when they were trained (``svm.fc7_precision``)."""

    weights: np.ndarray
    bias: np.ndarray
    features: str
    classes: list
    fc7_precision: str = "float32"


def load_svms(run: Path, expect: dict | None = None) -> Svms:
    """The run's SVMs; ``expect``: stamp values they must have been trained with."""
    import json

    from ..artifacts.stamps import open_h5_checked

    with open_h5_checked(svm_path(run), SVM_FORMAT, SVM_VERSION, expect,
                         remedy="run 'spp-detect train-svm' (with --overwrite to replace them)") as h5:
        return Svms(h5["weights"][()], h5["bias"][()], str(h5.attrs["features"]), json.loads(h5.attrs["classes"]),
                    str(h5.attrs.get("fc7_precision", "float32")))


def run_train_bbox(cfg: PipelineConfig, run: Path, train_ds: DetectionDataset, overwrite: bool = False,
                   max_per_class: int = 5000) -> dict:
    import numpy as np

    from ..artifacts.stamps import open_h5_checked
    from ..core.matching import label_windows
    from ..datasets.base import usable_gt
    from ..progress import progress
    from .bbox import BoxRegressors, Reservoir, encode, fit_ridge
    from .svm_features import FeatureProvider

    bb = cfg.bbox
    out = bbox_path(run)
    cache = open_features(run, train_ds)
    stamp = {"features": features_hash(cache), "bbox": config_hash(bb), "max_per_class": max_per_class,
             **scaling_stamp(cfg)}
    if out.exists() and not overwrite:
        from .bbox import BBOX_FORMAT, BBOX_VERSION

        open_h5_checked(out, BBOX_FORMAT, BBOX_VERSION, stamp, remedy="pass --overwrite to train again").close()
        return {"skipped": True, "path": str(out)}
    provider = FeatureProvider("pool", cache, target=cfg.extract.norm_target)
    k = len(train_ds.classes)
    rng = np.random.default_rng(0)
    # bounded memory and solve time: a uniform random sample of each class's windows, drawn as
    # they stream past (every window is kept when there are no more than max_per_class)
    samples = [Reservoir(max_per_class, rng) for _ in range(k)]
    for image_id in progress(cache.image_ids, desc="train-bbox", unit="img"):
        record = train_ds.record(image_id)
        win = cache.windows(image_id)
        gt_boxes, gt_labels = usable_gt(record)
        lab = label_windows(win.boxes, gt_boxes, gt_labels)
        sel = np.nonzero(lab.max_iou >= bb.min_iou)[0]
        if len(sel) == 0:
            continue
        feats = provider.pooled(image_id, sel, windows=win).numpy()
        targets = encode(win.boxes[sel], gt_boxes[lab.gt_index[sel]])
        for c in np.unique(lab.gt_label[sel]):
            m = lab.gt_label[sel] == c
            samples[c].add(feats[m], targets[m])
    dim = cache.dim
    weights = np.zeros((k, dim, 4), np.float32)
    bias = np.zeros((k, 4), np.float32)
    counts = []
    for c in range(k):
        counts.append(len(samples[c]))
        if not len(samples[c]):
            continue
        x, y = samples[c].arrays()
        samples[c] = None  # the sample's memory goes as soon as its class is fitted
        w, b = fit_ridge(x, y, bb.ridge_lambda)
        weights[c], bias[c] = w, b
    BoxRegressors(weights, bias).save(out, {"stamp": stamp, "classes": list(train_ds.classes), "counts": counts})
    return {"path": str(out), "windows_per_class": counts}
