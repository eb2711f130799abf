"""COCO-style evaluation through pycocotools, for any dataset (VOC included).

The ground truth is built in memory from the dataset's records (:func:`dataset_to_coco_gt`):

- image ids: the COCO integer ids for COCO datasets; otherwise the 1-based position in the
  split (VOC ids such as ``"000005"`` are strings, which pycocotools cannot key on).
- category ids: the dataset's COCO category ids, otherwise class index + 1.
- boxes: internal convention -> ``[x, y, w, h]`` with ``w = x2 - x1 + 1`` (inclusive pixels
  become the continuous span pycocotools measures); ``area = w * h``. For real COCO files
  this box area replaces the segment area COCO uses for its small/medium/large ranges, so
  APs/APm/APl can differ slightly from the official numbers; AP, AP50 and AP75 do not.
- ``iscrowd = 1`` for COCO crowds (``ignore``) **and for VOC difficult boxes**: pycocotools
  ignores crowd regions as the devkit ignores difficult ones, so a detection on a difficult
  object is neither true nor false positive under either metric. (A crowd region may absorb
  several detections and its IoU is intersection over the detection's area; that is the
  price of using pycocotools unchanged.)

Ids in annotations start at 1: pycocotools' accumulate treats a matched ground-truth id of 0
as "no match".
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from collections.abc import Mapping

import numpy as np

from .report import COCO_STAT_NAMES, EvalResult

log = logging.getLogger(__name__)


def coco_image_ids(dataset) -> dict[str, int]:
    """Dataset image id (str) -> the integer id used in the in-memory COCO ground truth."""
    sources = [r.source_id for r in dataset.records]
    if sources and all(isinstance(s, int) and not isinstance(s, bool) for s in sources) and len(set(sources)) == len(sources):
        return {r.image_id: int(r.source_id) for r in dataset.records}
    return {r.image_id: i + 1 for i, r in enumerate(dataset.records)}


def category_ids(dataset) -> tuple[int, ...]:
    """COCO category id of each class, in label order (class index + 1 without ids)."""
    if dataset.category_ids is not None:
        return tuple(int(c) for c in dataset.category_ids)
    return tuple(range(1, len(dataset.classes) + 1))


def dataset_to_coco_gt(dataset) -> dict:
    """A COCO instances dict (``images``, ``annotations``, ``categories``) for ``dataset``.

    Record boxes are internal convention (0-based inclusive ``(x1, y1, x2, y2)``) and become
    ``[x, y, w, h]`` with ``w = x2 - x1 + 1``; difficult and crowd boxes get ``iscrowd = 1``
    (see the module docstring).
    """
    from ..core.boxes import to_coco_xywh

    img_ids = coco_image_ids(dataset)
    cat_ids = category_ids(dataset)
    images, annotations = [], []
    for r in dataset.records:
        images.append({"id": img_ids[r.image_id], "width": int(r.width), "height": int(r.height), "file_name": r.path.name})
        xywh = to_coco_xywh(r.boxes)
        crowd = np.asarray(r.difficult, bool) | np.asarray(r.ignore, bool)
        for box, label, is_crowd in zip(xywh, r.labels, crowd, strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": img_ids[r.image_id],
                    "category_id": cat_ids[int(label)],
                    "bbox": [float(v) for v in box],
                    "area": float(box[2] * box[3]),
                    "iscrowd": int(is_crowd),
                }
            )
    categories = [{"id": cid, "name": name} for cid, name in zip(cat_ids, dataset.classes, strict=True)]
    return {"info": {}, "images": images, "annotations": annotations, "categories": categories}


def detections_to_coco_results(dataset, detections: Mapping) -> list[dict]:
    """pycocotools result entries with the in-memory ground truth's integer image ids.

    ``detections``: class name -> ``ClassDetections``, boxes internal convention (0-based
    inclusive ``(x1, y1, x2, y2)``), converted to ``[x, y, w, h]`` with ``w = x2 - x1 + 1``.
    """
    from ..core.boxes import to_coco_xywh
    from ..errors import DataError
    from .results_io import check_classes

    check_classes(detections, dataset.classes)
    img_ids = coco_image_ids(dataset)
    cat_ids = category_ids(dataset)
    out = []
    for label, name in enumerate(dataset.classes):
        dets = detections.get(name)
        if dets is None or not len(dets):
            continue
        for image_id, score, box in zip(dets.image_ids, dets.scores, to_coco_xywh(dets.boxes), strict=True):
            if image_id not in img_ids:
                raise DataError(None, f"detection of class '{name}' for an image not in split '{dataset.split}'", "image_id", image_id)
            out.append({"image_id": img_ids[image_id], "category_id": cat_ids[label], "bbox": [float(v) for v in box], "score": float(score)})
    return out


def per_class_ap(coco_eval, cat_ids) -> list[float]:
    """AP of each category in ``cat_ids`` from an accumulated COCOeval.

    Mean of ``eval['precision'][:, :, k, area=all, maxDets=last]`` over IoU 0.5:0.95 and the
    101 recall points, skipping pycocotools' -1 (undefined); nan when all are undefined
    (the category has no ground truth).
    """
    precision = coco_eval.eval["precision"]  # [T, R, K, A, M]
    order = list(coco_eval.params.catIds)
    out = []
    for cid in cat_ids:
        p = precision[:, :, order.index(cid), 0, -1]
        valid = p[p > -1]
        out.append(float(valid.mean()) if valid.size else math.nan)
    return out


def coco_evaluate(dataset, detections: Mapping) -> EvalResult:
    """COCO box metrics of ``detections`` on ``dataset`` via pycocotools ``COCOeval``.

    ``detections``: class name -> ``ClassDetections`` (boxes in the internal convention).
    Returns per-class AP (IoU 0.5:0.95), mAP = pycocotools' AP, and ``extra["coco_stats"]``
    with the twelve summary numbers (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs,
    ARm, ARl; -1 where undefined becomes nan).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_dict = dataset_to_coco_gt(dataset)
    results = detections_to_coco_results(dataset, detections)
    cat_ids = category_ids(dataset)
    n_gt = {name: 0 for name in dataset.classes}
    for a in gt_dict["annotations"]:
        if not a["iscrowd"]:
            n_gt[dataset.classes[cat_ids.index(a["category_id"])]] += 1

    if not results:
        # pycocotools cannot load an empty result list; with no detections every class with
        # ground truth has AP and AR 0, and the rest are undefined.
        ap = {name: (0.0 if n_gt[name] else math.nan) for name in dataset.classes}
        any_gt = any(n_gt.values())
        stats = {k: (0.0 if any_gt else math.nan) for k in COCO_STAT_NAMES}
        return EvalResult("coco", ap, n_gt, len(dataset), mAP=stats["AP"], extra={"coco_stats": stats})

    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):  # pycocotools prints progress to stdout
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    log.debug("pycocotools:\n%s", captured.getvalue())
    stats = {k: (math.nan if v < 0 else float(v)) for k, v in zip(COCO_STAT_NAMES, ev.stats, strict=True)}
    ap = dict(zip(dataset.classes, per_class_ap(ev, cat_ids), strict=True))
    return EvalResult("coco", ap, n_gt, len(dataset), mAP=stats["AP"], extra={"coco_stats": stats})
