"""An evaluation's result, its printed table and its JSON.

The table has one row per class (class, AP, number of ground-truth boxes counted in recall)
and the mAP; a class without ground truth has AP ``nan``, printed ``-`` and written ``null``.
The JSON (``--json-out``) is ``{"metric", "mAP", "ap": {class: AP}, "n_images"}`` plus
``n_gt`` (per class), and for COCO ``coco_stats`` (the twelve pycocotools summary numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# pycocotools' COCOeval.summarize() order.
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass(frozen=True)
class EvalResult:
    """Per-class AP (fractions in [0, 1], ``nan`` for classes without ground truth) and mAP.

    ``n_gt``: ground-truth boxes per class that count in recall (difficult/crowd excluded).
    ``mAP`` defaults to the mean of the non-nan APs (``nan`` if there are none); the COCO
    evaluator passes pycocotools' own AP instead. ``extra``: metric-specific numbers
    (``coco_stats``) copied into the JSON.
    """

    metric: str
    ap: dict[str, float]
    n_gt: dict[str, int]
    n_images: int
    mAP: float | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.mAP is None:
            object.__setattr__(self, "mAP", mean_ap(self.ap.values()))


def mean_ap(values) -> float:
    """Mean of the APs that are not nan; nan when every AP is nan (no ground truth at all)."""
    kept = [float(v) for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _fmt(v: float) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.4f}"


def _json_number(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def format_table(result: EvalResult) -> str:
    """The per-class AP table and the mAP line (COCO: followed by the summary numbers)."""
    width = max([len("class"), len("mAP")] + [len(c) for c in result.ap])
    lines = [f"{'class':<{width}}  {'AP':>7}  {'n_gt':>6}", "-" * (width + 17)]
    for name, ap in result.ap.items():
        lines.append(f"{name:<{width}}  {_fmt(ap):>7}  {result.n_gt.get(name, 0):>6}")
    lines.append("-" * (width + 17))
    lines.append(f"{'mAP':<{width}}  {_fmt(result.mAP):>7}  {sum(result.n_gt.values()):>6}")
    stats = result.extra.get("coco_stats")
    if stats:
        lines.append("")
        lines.append("  ".join(f"{k}={_fmt(v)}" for k, v in stats.items()))
    lines.append(f"({result.metric}, {result.n_images} images; '-' = no ground truth, left out of mAP)")
    return "\n".join(lines)


def result_to_json(result: EvalResult) -> dict:
    """The ``--json-out`` document; nan (no ground truth) becomes ``null``."""
    out = {
        "metric": result.metric,
        "mAP": _json_number(result.mAP),
        "ap": {k: _json_number(v) for k, v in result.ap.items()},
        "n_images": int(result.n_images),
        "n_gt": {k: int(v) for k, v in result.n_gt.items()},
    }
    for key, value in result.extra.items():
        out[key] = {k: _json_number(v) for k, v in value.items()} if isinstance(value, dict) else value
    return out
