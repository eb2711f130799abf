"""The ``eval`` stage: a split's detections against its ground truth, into ``RUN/eval/<split>.json``."""

from __future__ import annotations

from pathlib import Path

from ..artifacts.layout import detections_path, detections_stamp_path, eval_path
from ..config import PipelineConfig
from ..datasets.base import DetectionDataset


def run_eval(cfg: PipelineConfig, run: Path, ds: DetectionDataset, overwrite: bool = False) -> dict:
    import json

    from ..artifacts.files import atomic_write_json, check_overwrite
    from . import evaluate
    from .report import format_table, result_to_json
    from .results_io import read_detections

    out = eval_path(run, ds.split)
    dets = read_detections(detections_path(run, ds.split), ds)
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
