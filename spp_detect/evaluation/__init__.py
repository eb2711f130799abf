"""Evaluation of detections: PASCAL VOC AP (VOC07 11-point, VOC10 area) and COCO metrics.

Detections in memory are a :data:`DetectionsByClass` (class name -> :class:`ClassDetections`,
boxes in the internal convention: 0-based inclusive ``(x1, y1, x2, y2)``); on disk a comp4
folder or a COCO results JSON (:mod:`.results_io`). :func:`evaluate` picks the metric.
"""

from __future__ import annotations

from .report import EvalResult, format_table, result_to_json
from .results_io import (
    ClassDetections,
    DetectionCollector,
    DetectionsByClass,
    read_coco_results,
    read_comp4,
    read_detections,
    write_coco_results,
    write_comp4,
)
from .voc_ap import evaluate_class, evaluate_voc, voc_ap

METRICS = ("voc07", "voc10", "coco")


def evaluate(dataset, detections, metric: str = "voc07") -> EvalResult:
    """Evaluate ``detections`` (class name -> ClassDetections, internal-convention boxes)
    on ``dataset`` with ``metric``: ``voc07``, ``voc10`` or ``coco``."""
    if metric == "coco":
        from .coco_eval import coco_evaluate

        return coco_evaluate(dataset, detections)
    if metric in ("voc07", "voc10"):
        return evaluate_voc(dataset, detections, metric)
    raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


__all__ = [
    "METRICS",
    "ClassDetections",
    "DetectionCollector",
    "DetectionsByClass",
    "EvalResult",
    "evaluate",
    "evaluate_class",
    "evaluate_voc",
    "format_table",
    "read_coco_results",
    "read_comp4",
    "read_detections",
    "result_to_json",
    "voc_ap",
    "write_coco_results",
    "write_comp4",
]
