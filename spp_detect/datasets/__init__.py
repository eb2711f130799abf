"""Dataset readers behind one interface (see :mod:`.base`), opened by :func:`open_dataset`."""

from .base import VOC_CLASSES, DetectionDataset, ImageRecord, load_image
from .registry import open_dataset

__all__ = ["VOC_CLASSES", "DetectionDataset", "ImageRecord", "load_image", "open_dataset"]
