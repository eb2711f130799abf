"""PASCAL VOC metrics of a split's detections: per-class AP (the devkit's rules, in
:mod:`spp_detect.core.average_precision`) and mAP."""

from __future__ import annotations

from collections.abc import Mapping

from ..core.average_precision import IOU_THRESHOLD, ClassResult, evaluate_class, voc_ap
from ..datasets.base import class_ground_truth

__all__ = ["IOU_THRESHOLD", "VOC_METRICS", "ClassResult", "class_ground_truth", "evaluate_class", "evaluate_voc",
           "voc_ap"]

VOC_METRICS = ("voc07", "voc10")


def evaluate_voc(dataset, detections: Mapping, metric: str = "voc07", iou_threshold: float = IOU_THRESHOLD):
    """Per-class VOC AP and mAP of ``detections`` on ``dataset``.

    ``detections``: class name -> ``ClassDetections`` (boxes in the internal convention);
    classes missing from it have no detections (AP 0). ``metric``: ``voc07`` (11-point) or
    ``voc10`` (area). mAP is the mean over classes with ground truth (``nan`` APs excluded).
    Returns an :class:`~spp_detect.evaluation.report.EvalResult`.
    """
    from .report import EvalResult
    from .results_io import ClassDetections, check_classes

    if metric not in VOC_METRICS:
        raise ValueError(f"metric must be one of {', '.join(VOC_METRICS)}, got {metric!r}")
    check_classes(detections, dataset.classes)
    ap, n_gt = {}, {}
    for label, name in enumerate(dataset.classes):
        res = evaluate_class(
            detections.get(name, ClassDetections.empty()),
            class_ground_truth(dataset, label),
            iou_threshold=iou_threshold,
            use_07_metric=metric == "voc07",
        )
        ap[name] = res.ap
        n_gt[name] = res.npos
    return EvalResult(metric=metric, ap=ap, n_gt=n_gt, n_images=len(dataset))
