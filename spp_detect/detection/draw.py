"""Pictures of detections: boxes and labels drawn on an image, written as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def class_colour(label: int) -> tuple[int, int, int]:
    """A distinct, stable BGR colour per class."""
    hue = (label * 47) % 180
    import cv2

    hsv = np.uint8([[[hue, 200, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_detections(image_rgb: np.ndarray, boxes: np.ndarray, labels, scores, classes) -> np.ndarray:
    """A BGR copy of ``image_rgb`` with each box (internal convention: 0-based inclusive pixels)
    outlined and labelled ``class score``."""
    import cv2

    out = cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR)
    thickness = max(1, round(min(out.shape[:2]) / 300))
    for box, label, score in sorted(zip(boxes, labels, scores, strict=True), key=lambda t: t[2]):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        colour = class_colour(int(label))
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        text = f"{classes[int(label)]} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        ty = max(y1, th + base)
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw, ty), colour, -1)
        cv2.putText(out, text, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def write_png(path: Path, image_bgr: np.ndarray) -> Path:
    import cv2

    from ..artifacts.files import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        ok, data = cv2.imencode(".png", image_bgr)
        if not ok:
            raise OSError(f"{path}: PNG encoding failed")
        tmp.write_bytes(data.tobytes())
    return path
