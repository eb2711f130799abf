"""Per-image detection (PAPER.md steps 6-7): SVM scores, NMS per class, box regression."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.boxes import clip_boxes
from ..core.nms import best_after_nms
from ..training.bbox import BoxRegressors


class SharedRows:
    """A window per row, where windows with the same features share one stored row: window
    ``i`` is ``rows[inverse[i]]``. Indexing gathers only the windows asked for, so an image's
    kept boxes get their SPP vectors without a copy of every window's (2,000 x 25,600 floats)."""

    def __init__(self, rows: np.ndarray, inverse: np.ndarray):
        self.rows, self.inverse = rows, np.asarray(inverse)

    def __len__(self) -> int:
        return len(self.inverse)

    def __getitem__(self, index) -> np.ndarray:
        return self.rows[self.inverse[index]]


@dataclass(frozen=True)
class DetectParams:
    score_floor: float = -1.5
    nms_iou: float = 0.3
    max_per_class: int = 100
    bbox_regression: bool = True


def detect_image(
    features: np.ndarray | None,
    pooled: np.ndarray | SharedRows,
    boxes: np.ndarray,
    svm_w: np.ndarray,
    svm_b: np.ndarray,
    regressors: BoxRegressors | None,
    height: int,
    width: int,
    params: DetectParams,
    scores: np.ndarray | None = None,
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Score windows and keep the best per class.

    ``features`` (N, D) for the SVMs (or their ``scores`` (N, K), computed elsewhere, e.g. on a
    GPU: then ``features`` may be None), ``pooled`` (N, D') norm-scaled SPP vectors for the
    regressors (an array, or :class:`SharedRows`), ``boxes`` (N, 4) internal convention. Per
    class: scores above the floor, NMS, at most ``max_per_class``, then box regression of the
    kept boxes, clipped to the image (scores unchanged). Returns
    ``[(class, boxes (K, 4) internal, scores (K,))]``.
    """
    if scores is None:
        scores = features @ svm_w.T + svm_b  # (N, K)
    out = []
    for c in range(svm_w.shape[0]):
        keep = best_after_nms(boxes, scores[:, c], params.score_floor, params.nms_iou, params.max_per_class)
        if len(keep) == 0:
            continue
        kept_boxes = boxes[keep].astype(np.float64)
        if params.bbox_regression and regressors is not None:
            kept_boxes = regressors.predict(c, pooled[keep], kept_boxes)
        out.append((c, clip_boxes(kept_boxes, height, width), scores[keep, c]))
    return out
