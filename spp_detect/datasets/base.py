"""The one reader interface every dataset format is read through.

A :class:`DetectionDataset` is a list of :class:`ImageRecord` plus the class names. Boxes are
in the package's internal convention (see :mod:`spp_detect.core.boxes`: float32 (N, 4),
``(x1, y1, x2, y2)``, 0-based inclusive pixels, original image frame); readers convert at the
edge. Labels are 0-based indices into ``classes``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError

log = logging.getLogger(__name__)

# files an image may be: what VOC-style folders are searched for and image folders list
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


@dataclass(frozen=True)
class ImageRecord:
    """One image and its annotations.

    ``boxes``: float32 (N, 4) internal convention. ``labels``: int64 (N,) indices into the
    dataset's classes. ``difficult``: VOC's flag, ignored in evaluation. ``ignore``: COCO's
    ``iscrowd``, ignored in evaluation the way pycocotools ignores it. ``source_id`` keeps the
    original id where it is not a string (COCO's integer image ids). ``distractor_boxes`` (M, 4)
    and ``distractor_names`` (M,): annotated things that are none of the classes (the synthetic
    dataset's ``<distractor>`` elements); only pretraining reads them, and only when asked to
    (``pretrain.distractor_classes``).
    """

    image_id: str
    path: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    truncated: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    source_id: int | str | None = None
    distractor_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    distractor_names: tuple[str, ...] = ()

    def __post_init__(self):
        n = len(self.boxes)
        for name in ("labels", "difficult", "truncated", "ignore"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{self.image_id}: {name} has {len(getattr(self, name))} entries for {n} boxes")
        if len(self.distractor_names) != len(self.distractor_boxes):
            raise ValueError(
                f"{self.image_id}: {len(self.distractor_names)} distractor names for {len(self.distractor_boxes)} boxes"
            )


@dataclass
class DetectionDataset:
    """A split of a detection dataset: records in split order and class names in label order."""

    name: str
    split: str
    classes: tuple[str, ...]
    records: list[ImageRecord]
    root: Path | None = None
    n_skipped: int = 0
    category_ids: tuple[int, ...] | None = None  # COCO category id of each class, in label order

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[ImageRecord]:
        return iter(self.records)

    def __getitem__(self, i: int) -> ImageRecord:
        return self.records[i]

    @property
    def image_ids(self) -> list[str]:
        return [r.image_id for r in self.records]

    def record(self, image_id: str) -> ImageRecord:
        index = getattr(self, "_index", None)
        if index is None:
            index = {r.image_id: r for r in self.records}
            self._index = index
        try:
            return index[image_id]
        except KeyError:
            raise DataError(self.root, f"image id not in split '{self.split}'", "image_id", image_id) from None

    def fingerprint(self) -> str:
        """A short hash of the image ids, sizes and annotations: what later stages key caches on."""
        h = hashlib.sha256()
        h.update(repr((self.name, self.split, self.classes)).encode())
        for r in self.records:
            h.update(f"{r.image_id}|{r.width}|{r.height}|".encode())
            h.update(np.ascontiguousarray(r.boxes, np.float32).tobytes())
            h.update(np.ascontiguousarray(r.labels, np.int64).tobytes())
            h.update(np.ascontiguousarray(r.difficult, bool).tobytes())
        return h.hexdigest()[:16]

    def files_fingerprint(self) -> str:
        """A short hash of every image file's bytes.

        :meth:`fingerprint` covers ids, sizes and annotations; this covers the pixels, so that an
        image replaced by another of the same size makes the caches built from it stale. The bytes
        rather than size and modification time: a dataset copied without its times (``cp -r``, a
        fresh mount of a shared copy) keeps its hours of proposals and features, and a file
        touched but unchanged is no change. It reads every image of the split once per command:
        0.4 s for VOC 2007's 4,465 JPEGs (159 MB) with the files in the page cache; at that rate
        50 s for COCO train2017's 18 GB (more from a cold disk). A missing file hashes as missing.
        """
        cached = getattr(self, "_files_fingerprint", None)
        if cached is None:
            h = hashlib.sha256()
            for r in self.records:
                try:
                    digest = hashlib.sha256(Path(r.path).read_bytes()).hexdigest()
                    h.update(f"{r.image_id}|{digest}|".encode())
                except OSError:
                    h.update(f"{r.image_id}|missing|".encode())
            cached = self._files_fingerprint = h.hexdigest()[:16]
        return cached


def usable_gt(record: ImageRecord) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth boxes (internal convention) and labels that are not crowd (``ignore``)."""
    keep = ~record.ignore
    return record.boxes[keep], record.labels[keep]


def class_ground_truth(dataset, label: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Image id -> ``(boxes, ignore)`` of class ``label`` for every image of ``dataset``.

    Boxes (M, 4) internal convention (0-based inclusive); ``ignore`` is VOC ``difficult`` or
    COCO ``iscrowd`` (:attr:`ImageRecord.ignore`): both are left out of VOC metrics.
    """
    out = {}
    for r in dataset.records:
        mask = r.labels == label
        out[r.image_id] = (r.boxes[mask], (r.difficult | r.ignore)[mask])
    return out


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB, shape (H, W, 3). Bad files raise :class:`DataError`."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file is missing")
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise DataError(path, "image file cannot be decoded (corrupt or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def validate_box(path, field_name: str, box, width: int | None, height: int | None, slack: float = 0.0) -> None:
    """Raise :class:`DataError` for a box with x1 > x2, y1 > y2, or outside the image.

    ``box`` is internal convention (0-based inclusive); ``width``/``height`` (the image's size)
    may be None when unknown. ``slack``: how far past the last pixel the right and bottom edges
    may reach (COCO's continuous boxes may end on the image's far edge, one pixel past the last).
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(np.isfinite([x1, y1, x2, y2])):
        raise DataError(path, "box has a non-finite coordinate", field_name, [x1, y1, x2, y2])
    if x1 > x2 or y1 > y2:
        raise DataError(path, "box has x1 > x2 or y1 > y2", field_name, [x1, y1, x2, y2])
    if (x1 < 0 or y1 < 0 or (width is not None and x2 > width - 1 + slack)
            or (height is not None and y2 > height - 1 + slack)):
        raise DataError(
            path,
            f"box lies outside the {width}x{height} image",
            field_name,
            [x1, y1, x2, y2],
        )
