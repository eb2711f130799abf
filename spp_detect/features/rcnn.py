"""R-CNN's window features, the baseline SPP-net is measured against (PAPER.md, "The idea").

R-CNN runs the conv trunk once per window: each window is cropped with ``context`` pixels of
surrounding image at the warped size (R-CNN: 16), warped (stretched, aspect ratio ignored) to
the trunk's input size, and run through the trunk; here its whole conv5 map is then pooled by
the same spatial pyramid as SPP-net's windows, so both methods give vectors of the same layout
to the same SVMs, regressors and head. Only where conv5 comes from differs.
"""

from __future__ import annotations

import numpy as np

RCNN_CONTEXT = 16  # pixels of context around the box at the warped size (R-CNN's padding)


def rcnn_warp(image: np.ndarray, box: np.ndarray, size: int = 224, context: int = RCNN_CONTEXT) -> np.ndarray:
    """The crop R-CNN feeds its network for ``box`` (x1, y1, x2, y2, 0-based inclusive pixels).

    The box is grown so that, once warped to ``size`` x ``size``, ``context`` pixels on each side
    are image context (clipped at the image border), then resized: a (size, size, 3) uint8 array.
    """
    import cv2

    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1 + 1, y2 - y1 + 1
    sx, sy = context * w / (size - 2 * context), context * h / (size - 2 * context)
    height, width = image.shape[:2]
    a, b = int(max(0, np.floor(x1 - sx))), int(max(0, np.floor(y1 - sy)))
    c, d = int(min(width - 1, np.ceil(x2 + sx))), int(min(height - 1, np.ceil(y2 + sy)))
    c, d = max(c, a), max(d, b)
    return cv2.resize(image[b : d + 1, a : c + 1], (size, size), interpolation=cv2.INTER_LINEAR)


def warped_features(backbone, image: np.ndarray, boxes: np.ndarray, size: int, levels, concat_order: str,
                    device: str = "cpu", batch: int = 64):
    """SPP vectors (float32 tensor (N, C * sum(n^2)), on the CPU) of R-CNN-warped windows.

    ``boxes``: (N, 4) internal convention (0-based inclusive image pixels).
    """
    import torch

    from ..core.spp import spp_pool

    dim = backbone.out_channels * sum(n * n for n in levels)
    out = torch.empty((len(boxes), dim))
    for s in range(0, len(boxes), batch):
        crops = [rcnn_warp(image, box, size) for box in boxes[s : s + batch]]
        with torch.inference_mode():
            conv5 = backbone(backbone.preprocess(crops, device=device))
            out[s : s + len(crops)] = spp_pool(conv5.float(), levels, concat_order).cpu()
    return out
