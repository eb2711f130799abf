"""Where a detector loses: AP by object size, and what its top false positives are.

Two diagnoses in the spirit of Hoiem et al., "Diagnosing Error in Object Detectors" (the
analysis R-CNN's and SPP-net's papers report), both on the devkit's matching rules
(:mod:`spp_detect.core.average_precision`):

- **AP by size**: a class's AP counting only the objects whose size (square root of the box
  area, in pixels of the original image) falls in a range. Objects outside it are ignored as
  difficult ones are: a detection that finds one is neither a hit nor a false positive, and a
  detection that finds nothing stays a false positive. The default ranges are the split's own
  terciles, so each holds a third of the objects.
- **Top false positives**: for each class, its N highest-scoring detections, N = its number of
  objects (where recall could reach 1; detections of ignored objects are skipped, as they count
  for nothing in AP), each a hit or one of three errors: *localization*
  (overlaps an object of its class by IoU >= 0.1 but is no hit: badly placed, or a duplicate of a
  found object), *confusion* (overlaps an object of another class by >= 0.1), *background*.

Boxes here are the internal convention: 0-based inclusive ``(x1, y1, x2, y2)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..core.average_precision import evaluate_class
from ..datasets.base import class_ground_truth
from .voc_ap import VOC_METRICS

ERROR_KINDS = ("hit", "localization", "confusion", "background")
NEAR_IOU = 0.1  # Hoiem's overlap for "near" an object


@dataclass(frozen=True)
class SizeRange:
    """The objects of sizes in ``[lo, hi)`` pixels: their mAP and how many there are."""

    lo: float
    hi: float
    mAP: float
    n_objects: int
    n_classes: int


@dataclass(frozen=True)
class Diagnosis:
    sizes: list[SizeRange]
    top_kinds: dict[str, int]  # ERROR_KINDS -> count over every class's top detections


def box_sides(boxes: np.ndarray) -> np.ndarray:
    """Square root of each box's area in pixels; boxes (N, 4) internal convention (inclusive)."""
    from ..core.boxes import areas

    return np.sqrt(areas(boxes))


def size_terciles(dataset) -> list[float]:
    """Range edges ``[0, t1, t2, inf]`` holding a third of the split's counted objects each."""
    sides = [box_sides(r.boxes)[~(r.difficult | r.ignore)] for r in dataset.records]
    sides = np.concatenate(sides) if sides else np.zeros(0)
    if not len(sides):
        raise ValueError(f"{dataset.name} {dataset.split}: no objects to size")
    t1, t2 = np.quantile(sides, [1 / 3, 2 / 3])
    return [0.0, float(t1), float(t2), math.inf]


def check_edges(edges: Sequence[float]) -> list[float]:
    """``edges`` as floats; ValueError unless there are two or more, increasing from >= 0."""
    edges = [float(e) for e in edges]
    if len(edges) < 2 or not edges[0] >= 0 or any(not b > a for a, b in zip(edges[:-1], edges[1:], strict=True)):
        raise ValueError(f"size edges must be two or more, increasing and non-negative, got {edges}")
    return edges


def ap_by_size(dataset, detections: Mapping, edges: Sequence[float], use_07_metric: bool = True) -> list[SizeRange]:
    """Per size range ``[edges[i], edges[i+1])``: the mean over classes of the AP counting only
    that range's objects (the others ignored, as difficult ones); classes with none left out."""
    from .results_io import ClassDetections

    edges = check_edges(edges)
    truth = [class_ground_truth(dataset, label) for label in range(len(dataset.classes))]
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        aps, n_objects = [], 0
        for name, gt in zip(dataset.classes, truth, strict=True):
            in_range = {}
            for image_id, (boxes, ignore) in gt.items():
                side = box_sides(boxes)
                in_range[image_id] = (boxes, ignore | (side < lo) | (side >= hi))
            res = evaluate_class(detections.get(name, ClassDetections.empty()), in_range, use_07_metric=use_07_metric)
            if res.npos:
                aps.append(res.ap)
                n_objects += res.npos
        out.append(SizeRange(lo, hi, float(np.mean(aps)) if aps else math.nan, n_objects, len(aps)))
    return out


def top_detection_kinds(dataset, detections: Mapping) -> dict[str, int]:
    """Each class's top N detections (N = its counted objects) sorted into :data:`ERROR_KINDS`."""
    from ..core.boxes import iou_matrix
    from .results_io import ClassDetections

    records = {r.image_id: r for r in dataset.records}
    counts = dict.fromkeys(ERROR_KINDS, 0)
    for label, name in enumerate(dataset.classes):
        dets = detections.get(name, ClassDetections.empty())
        res = evaluate_class(dets, class_ground_truth(dataset, label))
        counted = res.tp | res.fp  # a detection of an ignored (difficult) object is neither
        for rank in np.nonzero(counted)[0][: res.npos].tolist():
            if res.tp[rank]:
                counts["hit"] += 1
                continue
            index = int(res.order[rank])
            record = records[str(dets.image_ids[index])]
            box = np.asarray(dets.boxes[index], np.float64).reshape(1, 4)
            same, other = record.boxes[record.labels == label], record.boxes[record.labels != label]
            if len(same) and iou_matrix(box, same).max() >= NEAR_IOU:
                counts["localization"] += 1
            elif len(other) and iou_matrix(box, other).max() >= NEAR_IOU:
                counts["confusion"] += 1
            else:
                counts["background"] += 1
    return counts


def diagnose(dataset, detections: Mapping, metric: str = "voc07", edges: Sequence[float] | None = None) -> Diagnosis:
    """Both diagnoses of ``detections`` on ``dataset`` (VOC metrics: ``voc07`` or ``voc10``)."""
    if metric not in VOC_METRICS:
        raise ValueError(f"the diagnosis uses VOC's AP (voc07 or voc10), not {metric!r}")
    edges = size_terciles(dataset) if edges is None else edges
    return Diagnosis(ap_by_size(dataset, detections, edges, metric == "voc07"), top_detection_kinds(dataset, detections))


def format_diagnosis(d: Diagnosis) -> str:
    lines = ["mAP by object size (square root of the box area, pixels of the original image):"]
    for s in d.sizes:
        hi = "inf" if math.isinf(s.hi) else f"{s.hi:.0f}"
        value = "-" if math.isnan(s.mAP) else f"{s.mAP:.4f}"
        lines.append(f"  [{s.lo:.0f}, {hi}): {value}  ({s.n_objects} objects, {s.n_classes} classes)")
    total = sum(d.top_kinds.values())
    parts = [f"{k} {v} ({v / total:.1%})" if total else f"{k} 0" for k, v in d.top_kinds.items()]
    lines.append("each class's top detections (as many as its objects): " + ", ".join(parts))
    return "\n".join(lines)


def diagnosis_to_json(d: Diagnosis) -> dict:
    return {
        "sizes": [{"lo": s.lo, "hi": None if math.isinf(s.hi) else s.hi, "mAP": None if math.isnan(s.mAP) else s.mAP,
                   "n_objects": s.n_objects, "n_classes": s.n_classes} for s in d.sizes],
        "top_detections": dict(d.top_kinds),
    }
