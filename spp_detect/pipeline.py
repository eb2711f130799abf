"""The stages as functions of the resolved config: what each command and ``spp-detect run`` call.

Each ``run_<stage>`` turns its config sections into plain arguments for the stage's own module
(STYLE.md: the config stops at the edge), decides the artifact paths inside the run folder,
and returns a small summary dict for the command to print.

Run folder layout (DESIGN.md)::

    RUN/config.toml                 the resolved config
    RUN/pretrain/backbone.pt        (pretrain) the backbone trained here
    RUN/proposals/<split>.h5        (propose)
    RUN/features/<split>.h5         (extract) + <split>.parts/
    RUN/models/head.pt              (finetune)
    RUN/models/svm.h5               (train-svm)
    RUN/models/bbox.h5              (train-bbox)
    RUN/detections/<split>.json     (detect) + <split>/comp4_det_<split>_<class>.txt
    RUN/eval/<split>.json           (eval)
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path

from .config import PipelineConfig, config_hash
from .datasets.base import DetectionDataset
from .errors import ConfigError

log = logging.getLogger(__name__)


def features_path(run: Path, split: str) -> Path:
    return Path(run) / "features" / f"{split}.h5"


def proposals_path(run: Path, split: str) -> Path:
    return Path(run) / "proposals" / f"{split}.h5"


def resolve_device(device: str, option: str = "extract.device") -> str:
    """``auto`` -> cuda when there is one, else cpu; ``option`` names the setting in errors."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"{option}: unknown device {device!r}; use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{option}: 'cuda' was asked for but no CUDA device is available; use auto or cpu")
    return device


def resolve_weights(cfg: PipelineConfig, run: Path) -> str:
    """``pretrained`` means the backbone this run's ``pretrain`` stage wrote."""
    return str(run) if cfg.backbone.weights == "pretrained" else cfg.backbone.weights


def load_backbone(cfg: PipelineConfig, run: Path):
    from .backbones import backbone_from_config

    return backbone_from_config(cfg.backbone, resolve_weights(cfg, run))


def backbone_fingerprint(backbone) -> str:
    """Hash of the backbone's weights: caches are keyed on content, not on a file name."""
    h = hashlib.sha256()
    for k, v in sorted(backbone.trunk.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(repr(backbone.input_convention).encode())
    return h.hexdigest()[:16]


def load_proposals(run: Path, ds: DetectionDataset) -> tuple[dict, str]:
    """Proposals of a split as ``{image_id: float32 (N, 4)}`` plus a hash of the file's stamp."""
    from .proposals.store import ProposalStore

    with ProposalStore(proposals_path(run, ds.split), ds) as store:
        return store.load_all(), config_hash(store.stamp)


def flips_split(cfg: PipelineConfig, split: str | None) -> bool:
    """Whether ``split``'s cache gets mirrored images: ``extract.flip`` applies to the training
    split only (fine-tuning reads mirrors; detection and evaluation never do)."""
    return cfg.extract.flip and split == cfg.data.train_split


def extract_settings(cfg: PipelineConfig, images_per_part: int | None = None, split: str | None = None):
    """``split``: the split extracted (mirrors for the training split only, :func:`flips_split`).
    ``images_per_part``: override the part size (tests make one part per image to kill a run
    between parts); it changes where images are stored, not the features, so it is not stamped."""
    from .features.extract import ExtractSettings

    e = replace(cfg.extract, flip=flips_split(cfg, split))
    extra = {} if images_per_part is None else {"images_per_part": images_per_part}
    return ExtractSettings(
        scales=e.scales, max_size=e.max_size, target_size=e.target_size, projection=e.projection, cache=e.cache,
        flip=e.flip, levels=cfg.spp.levels, concat_order=cfg.spp.concat_order,
        norm_sample_images=e.norm_sample_images, norm_sample_windows=e.norm_sample_windows, seed=e.seed,
        warp_size=e.warp_size, **extra,
    )


def features_stamp(cfg: PipelineConfig, ds: DetectionDataset, proposals_hash: str, backbone) -> dict:
    """What a feature cache is keyed on; each option separately so a mismatch names it."""
    e = replace(cfg.extract, flip=flips_split(cfg, ds.split))
    return {
        "dataset": ds.name, "split": ds.split, "data_fingerprint": ds.fingerprint(), "proposals": proposals_hash,
        "backbone": backbone.name, "backbone_weights": backbone_fingerprint(backbone),
        "scales": list(e.scales), "max_size": e.max_size, "target_size": e.target_size, "projection": e.projection,
        "cache": e.cache, "flip": e.flip, "levels": list(cfg.spp.levels), "concat_order": cfg.spp.concat_order,
        **({"warp_size": e.warp_size} if e.cache == "warped" else {}),
    }


def run_extract(cfg: PipelineConfig, run: Path, ds: DetectionDataset, overwrite: bool = False,
                images_per_part: int | None = None, delay: float = 0.0) -> dict:
    """``images_per_part`` and ``delay`` (seconds slept after each image) are for tests that
    interrupt a run part way; see :func:`extract_settings` and :func:`extract_split`."""
    from .features.extract import cache_meta, extract_split, finalize_index, world

    rank, world_size = world()
    if world_size > 1:
        _init_distributed()
    if cfg.backbone.weights == "none":
        log.warning("backbone.weights = none: features of an UNTRAINED %s trunk (random weights); detections "
                    "will be poor. Use backbone.weights = imagenet, a weights file, or 'pretrained' with "
                    "'spp-detect pretrain' (see the pipeline file's header)", cfg.backbone.name)
    backbone = load_backbone(cfg, run)
    proposals, proposals_hash = load_proposals(run, ds)
    settings = extract_settings(cfg, images_per_part, ds.split)
    stamp = features_stamp(cfg, ds, proposals_hash, backbone)
    out = features_path(run, ds.split)
    device = resolve_device(cfg.extract.device)
    if device == "cuda" and world_size > 1:
        import torch

        torch.cuda.set_device(rank % torch.cuda.device_count())
    summary = extract_split(
        ds, proposals, backbone, settings, out, stamp, device=device, overwrite=overwrite,
        rank=rank, world_size=world_size, skip_bad=cfg.data.skip_bad, delay=delay,
    )
    summary["path"] = str(out)
    if summary.get("skipped"):
        return summary
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()
    if rank == 0:
        index = finalize_index(out, ds.image_ids, stamp, cache_meta(backbone, settings), settings)
        # 'images' stays what this call extracted (a resumed run does only the rest); the
        # index's count includes the images of earlier, interrupted runs
        summary.update(pool_norm_mean=index["pool_norm_mean"], indexed_images=index["images"])
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()
    return summary


def _init_distributed() -> None:
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


# ---------------------------------------------------------------------------------------------
# training and detection


def models_dir(run: Path) -> Path:
    return Path(run) / "models"


def open_features(run: Path, ds: DetectionDataset, memory_mb: int = 0):
    from .features.cache import FeatureCache

    return FeatureCache(features_path(run, ds.split), expect={"split": ds.split, "data_fingerprint": ds.fingerprint()},
                        memory_bytes=memory_mb << 20)


def feature_key(cache) -> str:
    """Identity of a feature cache (its stamp), what trained models are keyed on."""
    return config_hash(cache.stamp)


def run_finetune(cfg: PipelineConfig, run: Path, train_ds: DetectionDataset, val_ds: DetectionDataset | None,
                 overwrite: bool = False, resume: bool = False) -> dict:
    from .artifacts.files import check_overwrite
    from .features.extract import world
    from .training.finetune import finetune

    out = models_dir(run) / "head.pt"
    f = cfg.finetune
    _, world_size = world()
    if world_size > 1:
        _init_distributed()
    cache = open_features(run, train_ds)
    # how many processes and which device do not change the result: left out of the stamp. RAM can:
    # windows that do not fit come from a sample (fg/bg_per_image, stamped), but a different
    # memory_mb that keeps the same choice gives the same head, so it is not stamped either
    stamp = {"features": feature_key(cache), "finetune": config_hash(replace(f, memory_mb=0, workers=0, device=""))}
    device = resolve_device(f.device, "finetune.device")
    if out.exists() and not overwrite:
        from .training.head import load_head

        load_head(out, expect=stamp)
        return {"skipped": True, "path": str(out)}
    check_overwrite(out, True)
    val = None
    if val_ds is not None and features_path(run, val_ds.split).is_file():
        val = (open_features(run, val_ds), val_ds)
    out.parent.mkdir(parents=True, exist_ok=True)
    pretrained = None
    if f.init == "pretrained":
        from .backbones import pretrained_head

        pretrained = pretrained_head(resolve_weights(cfg, run))
    summary = finetune(
        cache, train_ds, val, out, stamp, fc_dim=f.fc_dim, dropout=f.dropout, iterations=f.iterations, lr=f.lr,
        lr_steps=f.lr_steps, momentum=f.momentum, weight_decay=f.weight_decay, batch_size=f.batch_size,
        images_per_batch=f.images_per_batch, fg_fraction=f.fg_fraction, fg_iou=f.fg_iou, bg_iou_low=f.bg_iou_low,
        flip=f.flip, random_scale=f.random_scale, val_every=f.val_every, val_images=f.val_images,
        norm_target=cfg.extract.norm_target, seed=f.seed, resume=resume, pretrained=pretrained,
        memory_bytes=f.memory_mb << 20, fg_per_image=f.fg_per_image, bg_per_image=f.bg_per_image, device=device,
    )
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()  # rank 0 writes head.pt: no rank goes on before it exists
    summary["path"] = str(out)
    return summary


def feature_provider(cfg: PipelineConfig, run: Path, cache, kind: str, device: str = "cpu"):
    from .detection.scoring import FeatureProvider
    from .training.head import load_head

    if kind == "fc7":
        head, meta = load_head(models_dir(run) / "head.pt")
        provider = FeatureProvider("fc7", cache, head, meta, cfg.extract.norm_target, device=device)
        return provider, config_hash(meta["stamp"], meta["fc7_norm_mean"])
    return FeatureProvider("pool", cache, target=cfg.extract.norm_target, device=device), "pool"


SVM_FORMAT = "spp-detect/svm"
SVM_VERSION = 2  # 2: positives gathered before mining, capped caches (version 1 streamed positives in)


def run_train_svm(cfg: PipelineConfig, run: Path, train_ds: DetectionDataset, overwrite: bool = False) -> dict:
    import json
    import os

    import h5py
    import numpy as np

    from .artifacts.files import atomic_path, open_h5_checked, write_stamp
    from .core.matching import usable_gt
    from .progress import progress
    from .training.prefetch import prefetched
    from .training.svm import SvmImage, gather_positives, train_svms, window_keys

    s = cfg.svm
    out = models_dir(run) / "svm.h5"
    cache = open_features(run, train_ds)
    device = resolve_device(s.device, "svm.device")
    provider, head_key = feature_provider(cfg, run, cache, s.features, device)
    # where it runs and how much RAM it may take do not change the SVMs: left out of the stamp
    stamp = {"features": feature_key(cache), "head": head_key,
             "svm": config_hash(replace(s, workers=0, memory_mb=0, device=""))}
    if out.exists() and not overwrite:
        open_h5_checked(out, SVM_FORMAT, SVM_VERSION, stamp, remedy="pass --overwrite to train again").close()
        return {"skipped": True, "path": str(out)}

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

    def images():
        for image_id in progress(cache.image_ids, desc="train-svm mining", unit="img"):
            win = cache.windows(image_id)
            best = win.best_scale
            keys = window_keys(win.rects[np.arange(len(best)), best], best)
            # proposals only (ground truth is never a negative), each conv5 window once: windows
            # that project onto the same cells at the same scale have the same features
            _, first = np.unique(keys[win.n_gt :], return_index=True)
            idx = np.sort(first) + win.n_gt
            feats = provider.from_pooled(provider.pooled(image_id, idx, windows=win))
            gt_boxes, gt_labels = labelled(image_id)
            yield SvmImage(image_id, feats.astype(np.float32, copy=False), win.boxes[idx], keys[idx],
                           np.full(len(idx), -1), gt_boxes, gt_labels)

    workers = s.workers or os.cpu_count() or 1
    n_classes = len(train_ds.classes)
    # the next images' features are computed while liblinear's fits run (prefetch thread)
    pos = gather_positives(prefetched(positives()), n_classes, provider.dim)
    w, b, logs, memory = train_svms(
        pos, prefetched(images()), provider.dim, C=s.C, positive_weight=s.positive_weight,
        bias_feature=s.bias_feature, negative_iou=s.negative_iou, hard_threshold=s.hard_threshold,
        evict_threshold=s.evict_threshold, retrain_every=s.retrain_every, max_negatives=s.max_negatives,
        fit_memory_bytes=s.memory_mb << 20, workers=workers, seed=s.seed,
    )
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as h5:
            write_stamp(h5, SVM_FORMAT, SVM_VERSION, stamp)
            h5.attrs["features"] = s.features
            h5.attrs["classes"] = json.dumps(list(train_ds.classes))
            h5.attrs["logs"] = json.dumps(logs)
            h5.attrs["memory"] = json.dumps(memory)
            h5.create_dataset("weights", data=w)
            h5.create_dataset("bias", data=b)
    return {"path": str(out), "retrains": [len(x) for x in logs], "final": [x[-1] if x else {} for x in logs],
            **memory}


def load_svms(run: Path):
    import json

    from .artifacts.files import open_h5_checked

    with open_h5_checked(models_dir(run) / "svm.h5", SVM_FORMAT, SVM_VERSION, remedy="run 'spp-detect train-svm'") as h5:
        return h5["weights"][()], h5["bias"][()], str(h5.attrs["features"]), json.loads(h5.attrs["classes"])


def run_train_bbox(cfg: PipelineConfig, run: Path, train_ds: DetectionDataset, overwrite: bool = False,
                   max_per_class: int = 5000) -> dict:
    import numpy as np

    from .artifacts.files import open_h5_checked
    from .core.matching import label_windows, usable_gt
    from .detection.scoring import FeatureProvider
    from .progress import progress
    from .training.bbox import BoxRegressors, Reservoir, encode, fit_ridge

    bb = cfg.bbox
    out = models_dir(run) / "bbox.h5"
    cache = open_features(run, train_ds)
    stamp = {"features": feature_key(cache), "bbox": config_hash(bb), "max_per_class": max_per_class}
    if out.exists() and not overwrite:
        from .training.bbox import BBOX_FORMAT, BBOX_VERSION

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
    BoxRegressors(weights, bias, 1.0).save(out, {"stamp": stamp, "classes": list(train_ds.classes), "counts": counts})
    return {"path": str(out), "windows_per_class": counts}


def run_detect(cfg: PipelineConfig, run: Path, ds: DetectionDataset, overwrite: bool = False) -> dict:
    import numpy as np

    from .artifacts.files import check_overwrite
    from .detection.scoring import DetectParams, detect_image
    from .evaluation.results_io import DetectionCollector, write_coco_results, write_comp4
    from .progress import progress
    from .training.bbox import BoxRegressors
    from .training.svm import window_keys

    d = cfg.detect
    out_json = Path(run) / "detections" / f"{ds.split}.json"
    out_comp4 = Path(run) / "detections" / ds.split
    check_overwrite(out_json, overwrite)
    w, b, kind, classes = load_svms(run)
    if tuple(classes) != tuple(ds.classes):
        from .errors import ArtifactError

        raise ArtifactError(f"{models_dir(run) / 'svm.h5'}: trained for classes {classes}, the dataset has {list(ds.classes)}")
    cache = open_features(run, ds)
    provider, _ = feature_provider(cfg, run, cache, kind, resolve_device(d.device, "detect.device"))
    regressors = BoxRegressors.load(models_dir(run) / "bbox.h5") if d.bbox_regression else None
    params = DetectParams(d.score_floor, d.nms_iou, d.max_per_class, d.bbox_regression)
    collector = DetectionCollector(ds.classes)
    for image_id in progress(cache.image_ids, desc=f"detect {ds.split}", unit="img"):
        record = ds.record(image_id)
        win = cache.windows(image_id)
        idx = np.arange(win.n_gt, len(win.boxes))  # proposals only: ground truth is not an input
        # windows projecting onto the same conv5 cells at the same scale have the same features:
        # compute them once (the boxes, and so NMS and regression, stay per window)
        best = win.best_scale[idx]
        _, first, inverse = np.unique(window_keys(win.rects[idx, best], best), return_index=True,
                                      return_inverse=True)
        pooled = provider.pooled(image_id, idx[first], windows=win)
        feats = provider.from_pooled(pooled)[inverse]
        pooled = pooled.cpu().numpy()[inverse]
        for c, boxes, scores in detect_image(feats, pooled, win.boxes[idx], w, b, regressors,
                                             record.height, record.width, params):
            collector.add(image_id, c, boxes, scores)
    dets = collector.finish()
    write_comp4(out_comp4, dets, ds.classes, ds.split, overwrite=overwrite)
    write_coco_results(out_json, dets, ds, overwrite=overwrite)
    from .artifacts.files import atomic_write_json

    atomic_write_json(detections_stamp_path(run, ds.split), {"stamp": detect_stamp(cfg, run, ds)})
    return {"path": str(out_json), "comp4": str(out_comp4), "detections": sum(len(v.scores) for v in dets.values())}


def detections_stamp_path(run: Path, split: str) -> Path:
    return Path(run) / "detections" / f"{split}.stamp.json"


def detect_stamp(cfg: PipelineConfig, run: Path, ds: DetectionDataset) -> str:
    """Hash of what the detections of a split were made from (models, features, settings)."""
    import json

    parts = [config_hash(replace(cfg.detect, device="")), ds.fingerprint()]
    for name in ("svm.h5", "bbox.h5", "head.pt"):
        path = models_dir(run) / name
        parts.append(hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "-")
    fpath = features_path(run, ds.split)
    if fpath.is_file():
        import h5py

        with h5py.File(fpath, "r") as h5:
            parts.append(json.loads(h5.attrs.get("stamp", "{}")).get("backbone_weights", ""))
    return config_hash(parts)


def detections_current(cfg: PipelineConfig, run: Path, ds: DetectionDataset) -> bool:
    import json

    path = detections_stamp_path(run, ds.split)
    if not path.is_file() or not (Path(run) / "detections" / f"{ds.split}.json").is_file():
        return False
    return json.loads(path.read_text()).get("stamp") == detect_stamp(cfg, run, ds)


def run_eval(cfg: PipelineConfig, run: Path, ds: DetectionDataset, overwrite: bool = False) -> dict:
    import json

    from .artifacts.files import atomic_write_json, check_overwrite
    from .evaluation import evaluate
    from .evaluation.report import format_table, result_to_json
    from .evaluation.results_io import read_detections

    out = Path(run) / "eval" / f"{ds.split}.json"
    dets = read_detections(Path(run) / "detections" / f"{ds.split}.json", ds)
    result = evaluate(ds, dets, cfg.eval.metric)
    record = dict(result_to_json(result))
    stamp_path = detections_stamp_path(run, ds.split)
    record["detections_stamp"] = json.loads(stamp_path.read_text())["stamp"] if stamp_path.is_file() else None
    if out.exists() and not overwrite:
        old = json.loads(out.read_text())
        if old.get("detections_stamp") != record["detections_stamp"] or old.get("metric") != record["metric"]:
            check_overwrite(out, overwrite)  # made from other detections: refuse to replace it
        return {"path": str(out), "table": format_table(result), "mAP": result.mAP, "skipped": True}
    atomic_write_json(out, record)
    return {"path": str(out), "table": format_table(result), "mAP": result.mAP}


# ---------------------------------------------------------------------------------------------
# the whole pipeline


def ensure_synth(cfg: PipelineConfig) -> bool:
    """Write the built-in synthetic dataset if the pipeline uses it and a split it reads is missing.

    A dataset already there is used as it is (whatever its counts); one that lacks only the
    pretraining split gets ``data.synth_pretrain`` pretraining images added to it, and one
    written with older annotations has them rewritten (its pixels do not change). Returns
    whether it wrote anything, so ``run`` can report the data stage as up to date.
    """
    from .datasets.registry import default_data_root

    d = cfg.data
    if d.dataset != "synth":
        return False
    import os

    from .datasets.synth import ANNOTATIONS_VERSION, generate_synth, read_recipe

    root = (Path(d.data_root) if d.data_root else default_data_root()) / "synth"
    splits = {d.train_split, d.val_split, d.test_split, d.pretrain_split} - {""}
    made = read_recipe(root)
    stale = bool(made.get("complete")) and made.get("annotations", 1) < ANNOTATIONS_VERSION
    if not stale and all((root / "ImageSets" / "Main" / f"{s}.txt").is_file() for s in splits):
        return False
    counts = {"train": d.synth_train, "val": d.synth_val, "test": d.synth_test, "seed": d.synth_seed}
    if made.get("complete"):
        if not stale and made.get("pretrain", 0) == d.synth_pretrain:
            return False  # nothing to add: the stage that reads the missing split names it
        # keep the dataset that is there: add the pretraining images, bring its annotations up to date
        counts = {k: made[k] for k in counts}
    log.info("writing the synthetic dataset to %s", root)
    generate_synth(root, **counts, pretrain=d.synth_pretrain, workers=min(4, os.cpu_count() or 1))
    return True


def annotate_examples(cfg: PipelineConfig, run: Path, ds: DetectionDataset, n: int = 6) -> list[Path]:
    """Draw the test detections of a few images into RUN/examples/ (pictures to look at)."""
    import numpy as np

    from .datasets.base import load_image
    from .detection.draw import draw_detections, write_png
    from .evaluation.results_io import read_detections

    dets = read_detections(Path(run) / "detections" / f"{ds.split}.json", ds)
    written = []
    for record in ds.records[:n]:
        boxes, labels, scores = [], [], []
        for c, name in enumerate(ds.classes):
            cd = dets.get(name)
            if cd is None:
                continue
            m = (np.asarray(cd.image_ids) == record.image_id) & (np.asarray(cd.scores) > cfg.detect.score_threshold)
            boxes += list(np.asarray(cd.boxes)[m])
            scores += list(np.asarray(cd.scores)[m])
            labels += [c] * int(m.sum())
        picture = draw_detections(load_image(record.path), np.array(boxes).reshape(-1, 4), labels, scores, ds.classes)
        written.append(write_png(Path(run) / "examples" / f"{record.image_id}.png", picture))
    return written


def run_pipeline(cfg: PipelineConfig, run: Path, overwrite: bool = False, until: str | None = None):
    """Run every stage in order; yields ``(stage, summary, seconds)`` after each.

    A stage whose outputs are complete and current reports ``skipped``; one whose outputs exist
    but were made from other inputs is refused with the file to remove, unless ``overwrite``.
    """
    import time

    from .cli.common import open_split
    from .pretrain.train import run_pretrain
    from .proposals.stage import run_propose

    d = cfg.data

    def split(name):
        return open_split(cfg, None, name, None, None, None)

    def timed(stage, f):
        t = time.perf_counter()
        summary = f()
        return stage, summary, time.perf_counter() - t

    stages = []
    stages.append(("data", lambda: {"skipped": not ensure_synth(cfg)}))
    if cfg.backbone.weights == "pretrained":
        stages.append(("pretrain", lambda: run_pretrain(cfg, run, split(d.pretraining_split), split(d.val_split) if d.val_split else None, overwrite=overwrite)))
    splits = [d.train_split] + ([d.val_split] if d.val_split else []) + [d.test_split]
    stages.append(("propose", lambda: [run_propose(cfg, run, split(s), overwrite=overwrite) for s in splits][-1]))
    stages.append(("extract", lambda: [run_extract(cfg, run, split(s), overwrite=overwrite) for s in splits][-1]))
    stages.append(("finetune", lambda: run_finetune(cfg, run, split(d.train_split), split(d.val_split) if d.val_split else None, overwrite=overwrite)))
    stages.append(("train-svm", lambda: run_train_svm(cfg, run, split(d.train_split), overwrite=overwrite)))
    stages.append(("train-bbox", lambda: run_train_bbox(cfg, run, split(d.train_split), overwrite=overwrite)))

    def detect():
        test = split(d.test_split)
        if not overwrite and detections_current(cfg, run, test):
            return {"skipped": True}
        return run_detect(cfg, run, test, overwrite=overwrite)

    def evaluate_and_draw():
        test = split(d.test_split)
        summary = run_eval(cfg, run, test, overwrite=overwrite)
        summary["examples"] = [str(p) for p in annotate_examples(cfg, run, test)]
        return summary

    stages.append(("detect", detect))
    stages.append(("eval", evaluate_and_draw))
    for stage, f in stages:
        yield timed(stage, f)
        if stage == until:
            return
