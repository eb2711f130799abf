"""How well proposals cover the ground truth: recall at fixed IoUs and average recall.

Recall at IoU t with the first N proposals: the fraction of ground-truth boxes (VOC
"difficult" and COCO crowd boxes excluded, as in evaluation) whose best IoU with any of the
image's first N proposals is at least t. Average recall (AR) at N: the mean of that recall over
t = 0.50, 0.55, ..., 0.95 (COCO's thresholds). IoU uses inclusive pixels, as the VOC devkit.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.boxes import iou_matrix

RECALL_IOUS = (0.5, 0.7)
AR_IOUS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
PROPOSAL_COUNTS = (100, 300, 1000, 2000)


def best_overlaps(gt: np.ndarray, proposals: np.ndarray, counts=PROPOSAL_COUNTS) -> np.ndarray:
    """(len(counts), G): each ground-truth box's best IoU with the first N proposals."""
    out = np.zeros((len(counts), len(gt)))
    if len(gt) == 0 or len(proposals) == 0:
        return out
    iou = iou_matrix(gt, proposals)
    # running max along the ranking, read at each N
    running = np.maximum.accumulate(iou, axis=1)
    for j, n in enumerate(counts):
        out[j] = running[:, min(n, iou.shape[1]) - 1]
    return out


def proposal_recall(dataset, proposals, counts=PROPOSAL_COUNTS, recall_ious=RECALL_IOUS, ar_ious=AR_IOUS,
                    seconds: np.ndarray | None = None) -> dict:
    """Recall figures of ``proposals`` (``{image_id: (N, 4)}`` or a ProposalStore) on ``dataset``.

    Returns ``{"boxes_per_image", "seconds_per_image", "recall": {"0.5": {"100": r, ...}, ...},
    "average_recall": {"100": r, ...}, "images", "gt_boxes"}``. Images missing from the
    proposals (skipped as unreadable) count as finding nothing. ``seconds``: per-image times
    (NaN entries ignored); None or all NaN gives ``seconds_per_image`` = None.
    """
    per_count = []
    n_boxes = []
    for r in dataset.records:
        keep = ~(r.difficult | r.ignore) if len(r.boxes) else np.zeros(0, bool)
        gt = r.boxes[keep]
        if hasattr(proposals, "boxes"):  # a ProposalStore
            props = proposals.boxes(r.image_id) if r.image_id in proposals else None
        else:
            props = proposals.get(r.image_id)
        props = np.zeros((0, 4), np.float32) if props is None else props
        n_boxes.append(len(props))
        if len(gt):
            per_count.append(best_overlaps(gt, props, counts))
    overlaps = np.concatenate(per_count, axis=1) if per_count else np.zeros((len(counts), 0))
    n_gt = overlaps.shape[1]

    def recall_at(t: float) -> np.ndarray:
        if n_gt == 0:
            return np.full(len(counts), math.nan)
        return (overlaps >= t).mean(axis=1)

    recall = {f"{t:g}": {str(n): _num(v) for n, v in zip(counts, recall_at(t), strict=True)} for t in recall_ious}
    ar = np.mean([recall_at(t) for t in ar_ious], axis=0)
    secs = None
    if seconds is not None:
        s = np.asarray(seconds, np.float64)
        s = s[np.isfinite(s)]
        secs = float(s.mean()) if len(s) else None
    return {
        "boxes_per_image": float(np.mean(n_boxes)) if n_boxes else 0.0,
        "seconds_per_image": secs,
        "recall": recall,
        "average_recall": {str(n): _num(v) for n, v in zip(counts, ar, strict=True)},
        "images": len(dataset),
        "gt_boxes": int(n_gt),
    }


def _num(v) -> float | None:
    v = float(v)
    return None if math.isnan(v) else round(v, 4)


def format_recall_table(report: dict) -> str:
    """The report as a plain-text table (one row per measure, one column per N)."""
    counts = list(report["average_recall"])
    rows = [[f"recall@IoU{t}"] + [report["recall"][t][n] for n in counts] for t in report["recall"]]
    rows.append(["AR@0.5:0.95"] + [report["average_recall"][n] for n in counts])
    head = ["proposals"] + counts
    cells = [[str(c) for c in head]] + [[r[0]] + ["-" if v is None else f"{v:.3f}" for v in r[1:]] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    secs = report.get("seconds_per_image")
    lines.append("")
    lines.append(f"images: {report['images']}  ground-truth boxes: {report['gt_boxes']}  "
                 f"boxes/image: {report['boxes_per_image']:.1f}  "
                 f"seconds/image: {'-' if secs is None else f'{secs:.3f}'}")
    return "\n".join(lines)
