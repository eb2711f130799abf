"""The ``detect`` stage: every test image's windows scored by the SVMs, regressed and NMS-ed,
written as comp4 files and a COCO results JSON under ``RUN/detections/``.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from ..artifacts.layout import (
    bbox_path,
    comp4_dir,
    detections_path,
    detections_stamp_path,
    examples_dir,
    features_path,
    head_path,
    svm_path,
)
from ..config import PipelineConfig, config_hash
from ..datasets.base import DetectionDataset
from ..features.stage import open_features, scaling_stamp
from ..runtime import resolve_device
from ..training.stage import feature_provider, load_svms
from .scoring import DetectParams


def detect_params(cfg: PipelineConfig) -> DetectParams:
    """``[detect]`` as the per-image detector takes it (split and loose images alike)."""
    d = cfg.detect
    return DetectParams(d.score_floor, d.nms_iou, d.max_per_class, d.bbox_regression)


def run_detect(cfg: PipelineConfig, run: Path, ds: DetectionDataset, overwrite: bool = False) -> dict:
    import numpy as np

    from ..artifacts.files import atomic_write_json, check_overwrite, check_writable, staged_outputs
    from ..evaluation.results_io import (
        DetectionCollector,
        comp4_filename,
        write_coco_results,
        write_comp4,
    )
    from ..progress import progress
    from ..training.bbox import BoxRegressors
    from .scoring import SharedRows, detect_image

    d = cfg.detect
    out_json = detections_path(run, ds.split)
    out_comp4 = comp4_dir(run, ds.split)
    # every refusal before the work: outputs that would be replaced, a folder that cannot be written
    for path in [out_json, *(out_comp4 / comp4_filename(ds.split, c) for c in ds.classes)]:
        check_overwrite(path, overwrite)
    check_writable(out_json.parent)
    svms = load_svms(run, expect=scaling_stamp(cfg))
    w, b = svms.weights, svms.bias
    if tuple(svms.classes) != tuple(ds.classes):
        from ..errors import ArtifactError

        raise ArtifactError(f"{svm_path(run)}: trained for classes {svms.classes}, the dataset has {list(ds.classes)}")
    cache = open_features(run, ds)
    # fc7 computed as the SVMs saw it when they were trained
    provider, _ = feature_provider(cfg, run, cache, svms.features, resolve_device(d.device, "detect.device"),
                                   svms.fc7_precision)
    regressors = BoxRegressors.load(bbox_path(run)) if d.bbox_regression else None
    params = detect_params(cfg)
    collector = DetectionCollector(ds.classes)
    for image_id in progress(cache.image_ids, desc=f"detect {ds.split}", unit="img"):
        record = ds.record(image_id)
        win = cache.windows(image_id)
        idx = np.arange(win.n_gt, len(win.boxes))  # proposals only: ground truth is not an input
        # windows with the same features (the same conv5 cells at the same scale) are scored
        # once; the boxes, and so NMS and regression, stay per window
        _, first, inverse = np.unique(cache.window_keys(win)[idx], return_index=True, return_inverse=True)
        pooled = provider.pooled(image_id, idx[first], windows=win)
        all_scores = provider.scores(pooled, w, b)[inverse]  # on the provider's device
        pooled = SharedRows(pooled.cpu().numpy(), inverse)  # the regressors read the kept boxes' rows
        for c, boxes, scores in detect_image(None, pooled, win.boxes[idx], w, b, regressors,
                                             record.height, record.width, params, scores=all_scores):
            collector.add(image_id, c, boxes, scores)
    dets = collector.finish()
    # all or nothing: comp4 files, the JSON and, last, the stamp that says they are current
    with staged_outputs(out_json.parent) as staged:
        write_comp4(staged.path(out_comp4), dets, ds.classes, ds.split)
        write_coco_results(staged.path(out_json), dets, ds)
        atomic_write_json(staged.path(detections_stamp_path(run, ds.split)), {"stamp": detect_stamp(cfg, run, ds)})
    return {"path": str(out_json), "comp4": str(out_comp4), "detections": sum(len(v.scores) for v in dets.values())}


def detect_stamp(cfg: PipelineConfig, run: Path, ds: DetectionDataset) -> str:
    """Hash of what the detections of a split were made from (models, features, settings)."""
    import json

    parts = [config_hash(replace(cfg.detect, device="")), ds.fingerprint()]
    for path in (svm_path(run), bbox_path(run), head_path(run)):
        parts.append(hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "-")
    fpath = features_path(run, ds.split)
    if fpath.is_file():
        import h5py

        with h5py.File(fpath, "r") as h5:
            features_stamp = json.loads(h5.attrs.get("stamp", "{}"))
        parts.append(features_stamp.get("backbone_weights", ""))
        # later additions only when present, so detections made before them still match
        if "image_files" in features_stamp:
            parts.append(features_stamp["image_files"])
    if scaling_stamp(cfg):
        parts.append(scaling_stamp(cfg))
    return config_hash(parts)


def detections_current(cfg: PipelineConfig, run: Path, ds: DetectionDataset) -> bool:
    import json

    path = detections_stamp_path(run, ds.split)
    if not path.is_file() or not (detections_path(run, ds.split)).is_file():
        return False
    return json.loads(path.read_text()).get("stamp") == detect_stamp(cfg, run, ds)


def annotate_examples(cfg: PipelineConfig, run: Path, ds: DetectionDataset, n: int = 6) -> list[Path]:
    """Draw the test detections of a few images into RUN/examples/ (pictures to look at)."""
    import numpy as np

    from ..datasets.base import load_image
    from ..evaluation.results_io import read_detections
    from .draw import draw_detections, write_png

    dets = read_detections(detections_path(run, ds.split), ds)
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
        written.append(write_png(examples_dir(run) / f"{record.image_id}.png", picture))
    return written
