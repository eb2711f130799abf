"""Window features for the SVMs and regressors, and per-image detection (PAPER.md steps 6-7)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.boxes import clip_boxes
from ..core.nms import nms
from ..features.cache import FeatureCache, Windows
from ..training.bbox import BoxRegressors
from ..training.head import SppHead


class FeatureProvider:
    """Norm-scaled features of cached windows: the SPP vector (``pool``) or fine-tuned fc7.

    Every layer is scaled so its mean L2 norm is ``target`` (20): the pooled vector with the
    cache's measured mean, fc7 with the mean the fine-tuning stage measured. Pooling and the
    head run on ``device`` ("cpu" or "cuda"); what is returned is on the CPU.
    """

    def __init__(self, kind: str, cache: FeatureCache, head: SppHead | None = None, head_meta: dict | None = None,
                 target: float = 20.0, device: str = "cpu"):
        if kind not in ("pool", "fc7"):
            raise ValueError(f"features must be pool or fc7, got {kind!r}")
        if kind == "fc7" and head is None:
            raise ValueError("fc7 features need a fine-tuned head")
        self.kind, self.cache, self.device = kind, cache, device
        self.head = head.to(device) if head is not None else None
        self.pool_scale = cache.norm_scale(target)
        self.fc7_scale = target / head_meta["fc7_norm_mean"] if head_meta else 1.0
        self.dim = cache.dim if kind == "pool" else head.fc_dim

    def pooled(self, image_id: str, index=None, windows: Windows | None = None, flip: bool = False) -> torch.Tensor:
        """Norm-scaled SPP vectors (R, D), on the provider's device."""
        return self.cache.pool(image_id, index, windows=windows, flip=flip, device=self.device) * self.pool_scale

    def from_pooled(self, pooled: torch.Tensor) -> np.ndarray:
        """The provider's features (float32 numpy, (R, dim)) of :meth:`pooled` vectors."""
        if self.kind == "pool":
            return pooled.cpu().numpy()
        with torch.no_grad():
            return (self.head.fc7_features(pooled.to(self.device)) * self.fc7_scale).cpu().numpy()


@dataclass(frozen=True)
class DetectParams:
    score_floor: float = -1.5
    nms_iou: float = 0.3
    max_per_class: int = 100
    bbox_regression: bool = True


def detect_image(
    features: np.ndarray,
    pooled: np.ndarray,
    boxes: np.ndarray,
    svm_w: np.ndarray,
    svm_b: np.ndarray,
    regressors: BoxRegressors | None,
    height: int,
    width: int,
    params: DetectParams,
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Score windows and keep the best per class.

    ``features`` (N, D) for the SVMs, ``pooled`` (N, D') norm-scaled SPP vectors for the
    regressors, ``boxes`` (N, 4) internal convention. Per class: scores above the floor, NMS,
    at most ``max_per_class``, then box regression of the kept boxes, clipped to the image
    (scores unchanged). Returns ``[(class, boxes (K, 4) internal, scores (K,))]``.
    """
    scores = features @ svm_w.T + svm_b  # (N, K)
    out = []
    for c in range(svm_w.shape[0]):
        sel = np.nonzero(scores[:, c] > params.score_floor)[0]
        if len(sel) == 0:
            continue
        keep = sel[nms(boxes[sel], scores[sel, c], params.nms_iou)][: params.max_per_class]
        kept_boxes = boxes[keep].astype(np.float64)
        if params.bbox_regression and regressors is not None:
            kept_boxes = regressors.predict(c, pooled[keep], kept_boxes)
        out.append((c, clip_boxes(kept_boxes, height, width), scores[keep, c]))
    return out
