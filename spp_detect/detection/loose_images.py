"""``spp-detect detect IMAGE...``: the whole test-time pipeline on image files with a trained run.

For each file: selective search with the run's proposal settings, conv5 at the run's scales,
windows projected and pooled, fc7 (or the SPP vector) scored by the SVMs, NMS, box regression.
Writes ``<name>.json`` (boxes in 1-based inclusive VOC pixels and as COCO ``[x, y, w, h]``,
class names, scores) and ``<name>.png`` with the boxes drawn.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..artifacts.layout import bbox_path, head_path
from ..config import PipelineConfig
from ..errors import ArtifactError, DataError

log = logging.getLogger(__name__)


def detect_files(cfg: PipelineConfig, run: Path, paths: list[Path], out_dir: Path, overwrite: bool = False) -> list:

    from ..artifacts.files import atomic_write_json, check_overwrite
    from ..artifacts.layout import features_path
    from ..core.boxes import to_coco_xywh, to_voc
    from ..core.roi_spp import RoiSppPooler
    from ..datasets.base import load_image
    from ..features.cache import FeatureCache
    from ..features.extract import Extractor, pool_at_best_scales
    from ..features.stage import extract_settings, load_backbone, scaling_stamp
    from ..proposals.proposer import proposer_from_config
    from ..runtime import resolve_device
    from ..training.bbox import BoxRegressors
    from ..training.head import load_head
    from ..training.stage import load_svms
    from ..training.svm_features import FeatureScaler
    from .draw import draw_detections, write_png
    from .scoring import detect_image
    from .stage import detect_params

    svms = load_svms(run, expect=scaling_stamp(cfg))
    w, b, features_kind, classes = svms.weights, svms.bias, svms.features, svms.classes
    train_cache_path = features_path(run, cfg.data.train_split)
    if not train_cache_path.is_file():
        raise ArtifactError(f"{train_cache_path}: needed for the feature normalisation; is {run} a trained run folder?")
    with FeatureCache(train_cache_path) as train_cache:
        pool_scale = train_cache.norm_scale(cfg.extract.norm_target)
        pooler = RoiSppPooler(train_cache.levels, train_cache.concat_order)
    head, meta = load_head(head_path(run)) if features_kind == "fc7" else (None, None)
    scaler = FeatureScaler(features_kind, pool_scale, head, meta, cfg.extract.norm_target,
                           resolve_device(cfg.detect.device, "detect.device"), svms.fc7_precision)
    regressors = BoxRegressors.load(bbox_path(run)) if cfg.detect.bbox_regression else None
    settings = extract_settings(cfg)
    extractor = Extractor(load_backbone(cfg, run), settings, resolve_device(cfg.extract.device, "extract.device"))
    params = detect_params(cfg)
    proposer = proposer_from_config(cfg.propose, cfg.seed)
    written, n_bad = [], 0
    for path in paths:
        stem = Path(path).stem
        out_json, out_png = out_dir / f"{stem}.json", out_dir / f"{stem}.png"
        check_overwrite(out_json, overwrite)
        check_overwrite(out_png, overwrite)
        try:
            image = load_image(path)
            h, wd = image.shape[:2]
            boxes, _fallback = proposer.propose(image, stem, source=path)
            if len(boxes) == 0:
                raise DataError(path, "selective search found no window")
            result = extractor.run(image, boxes, source=path)
        except DataError as exc:
            if not cfg.data.skip_bad:
                raise
            n_bad += 1
            log.warning("skipping %s: %s", path, exc)
            continue
        pooled = scaler.scale_pooled(pool_at_best_scales(result, pooler))
        found = detect_image(None, pooled.numpy(), boxes, w, b, regressors, h, wd, params,
                             scores=scaler.scores(pooled, w, b))
        rows = []
        for c, cboxes, scores in found:
            for box, score in zip(cboxes, scores, strict=True):
                if score > cfg.detect.score_threshold:
                    rows.append((c, box, float(score)))
        rows.sort(key=lambda r: -r[2])
        record = {
            "image": str(path), "width": wd, "height": h, "score_threshold": cfg.detect.score_threshold,
            "detections": [
                {"class": classes[c], "score": s, "box_voc": [round(float(v), 2) for v in to_voc(box[None])[0]],
                 "bbox_xywh": [round(float(v), 2) for v in to_coco_xywh(box[None])[0]]}
                for c, box, s in rows
            ],
        }
        atomic_write_json(out_json, record)
        picture = draw_detections(image, np.array([r[1] for r in rows]).reshape(-1, 4), [r[0] for r in rows],
                                  [r[2] for r in rows], classes)
        write_png(out_png, picture)
        written.append((out_json, len(rows)))
        log.info("%s: %d boxes", path, len(rows))
    if n_bad:
        log.warning("skipped %d bad image(s) of %d", n_bad, len(paths))
    return written
