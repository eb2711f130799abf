"""PASCAL VOC reader: ``<root>/Annotations/<id>.xml``, ``JPEGImages/<id>.jpg``,
``ImageSets/Main/<split>.txt``.

VOC XML boxes are 1-based inclusive; records carry them converted to the internal convention
(0-based inclusive, see :mod:`spp_detect.core.boxes`).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import IMAGE_EXTENSIONS, VOC_CLASSES, DetectionDataset, ImageRecord, validate_box

log = logging.getLogger(__name__)


def read_class_list(root: Path) -> tuple[str, ...]:
    """Classes of a VOC-style folder: ``classes.txt`` (one per line) if present, else VOC's 20."""
    path = root / "classes.txt"
    if not path.is_file():
        return VOC_CLASSES
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not names:
        raise DataError(path, "class list is empty")
    if len(set(names)) != len(names):
        raise DataError(path, "class list has duplicates", "classes", names)
    return names


def read_split(root: Path, split: str) -> list[str]:
    """Image ids listed in ``ImageSets/Main/<split>.txt``, in file order."""
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        main = root / "ImageSets" / "Main"
        available = sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem or p.stem.endswith("_mini"))
        raise DataError(path, f"split file not found; splits here: {', '.join(available) or 'none'}", "split", split)
    ids, seen = [], set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if line:
            image_id = line.split()[0]
            if image_id in seen:
                raise DataError(path, f"image id listed twice (line {n})", "split", image_id)
            seen.add(image_id)
            ids.append(image_id)
    if not ids:
        raise DataError(path, "the split lists no image", "split", split)
    return ids


def _text(node, tag: str, xml_path: Path, field: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DataError(xml_path, f"missing <{tag}>", field)
    return child.text.strip()


def _number(node, tag: str, xml_path: Path, field: str) -> float:
    text = _text(node, tag, xml_path, field)
    try:
        return float(text)
    except ValueError:
        raise DataError(xml_path, "not a number", field, text) from None


def _box(node, xml_path: Path, field: str, width: int, height: int) -> list[float]:
    """``node``'s validated ``<bndbox>``, VOC's 1-based inclusive pixels -> internal convention."""
    bnd = node.find("bndbox")
    if bnd is None:
        raise DataError(xml_path, "missing <bndbox>", f"{field}/bndbox")
    box = [_number(bnd, t, xml_path, f"{field}/bndbox/{t}") - 1.0 for t in ("xmin", "ymin", "xmax", "ymax")]
    validate_box(xml_path, f"{field}/bndbox", box, width, height)
    return box


def parse_annotation(xml_path: Path, classes: tuple[str, ...]) -> dict:
    """Parse one VOC XML file into a dict of record fields (boxes in the internal convention)."""
    try:
        tree = ET.parse(xml_path)
    except FileNotFoundError:
        raise DataError(xml_path, "annotation file is missing") from None
    except ET.ParseError as exc:
        raise DataError(xml_path, f"malformed XML ({exc})") from None
    root = tree.getroot()
    size = root.find("size")
    if size is None:
        raise DataError(xml_path, "missing <size>", "size")
    width = int(_number(size, "width", xml_path, "size/width"))
    height = int(_number(size, "height", xml_path, "size/height"))
    if width <= 0 or height <= 0:
        raise DataError(xml_path, "image size must be positive", "size", [width, height])
    class_index = {c: i for i, c in enumerate(classes)}
    boxes, labels, difficult, truncated = [], [], [], []
    for k, obj in enumerate(root.findall("object")):
        name = _text(obj, "name", xml_path, f"object[{k}]/name")
        if name not in class_index:
            raise DataError(xml_path, f"unknown class (known: {', '.join(classes)})", f"object[{k}]/name", name)
        boxes.append(_box(obj, xml_path, f"object[{k}]", width, height))
        labels.append(class_index[name])
        diff = obj.find("difficult")
        trunc = obj.find("truncated")
        difficult.append(diff is not None and (diff.text or "0").strip() == "1")
        truncated.append(trunc is not None and (trunc.text or "0").strip() == "1")
    distractor_boxes, distractor_names = [], []
    for k, dis in enumerate(root.findall("distractor")):  # not VOC's: the synthetic dataset's look-alikes
        distractor_names.append(_text(dis, "name", xml_path, f"distractor[{k}]/name"))
        distractor_boxes.append(_box(dis, xml_path, f"distractor[{k}]", width, height))
    filename = root.findtext("filename")
    return dict(
        width=width,
        height=height,
        filename=filename.strip() if filename else None,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        labels=np.asarray(labels, np.int64),
        difficult=np.asarray(difficult, bool),
        truncated=np.asarray(truncated, bool),
        ignore=np.zeros(len(boxes), bool),
        distractor_boxes=np.asarray(distractor_boxes, np.float32).reshape(-1, 4),
        distractor_names=tuple(distractor_names),
    )


def find_image(root: Path, image_id: str, filename: str | None) -> Path:
    folder = root / "JPEGImages"
    if filename:
        candidate = folder / filename
        if candidate.is_file():
            return candidate
    for ext in IMAGE_EXTENSIONS:
        candidate = folder / f"{image_id}{ext}"
        if candidate.is_file():
            return candidate
    raise DataError(folder / f"{image_id}.jpg", "image file is missing", "image_id", image_id)


def read_voc(root: str | Path, split: str, name: str | None = None, skip_bad: bool = False) -> DetectionDataset:
    """Read a VOC-style folder's split. ``skip_bad`` turns per-image errors into warnings."""
    root = Path(root)
    if not (root / "Annotations").is_dir():
        raise DataError(root, "not a VOC-style folder (no Annotations/ inside)", "dataset", str(root))
    classes = read_class_list(root)
    records: list[ImageRecord] = []
    n_bad = 0
    for image_id in read_split(root, split):
        xml_path = root / "Annotations" / f"{image_id}.xml"
        try:
            if not xml_path.is_file():
                raise DataError(
                    root / "ImageSets" / "Main" / f"{split}.txt",
                    "split lists an image with no annotation file",
                    "image_id",
                    image_id,
                )
            fields = parse_annotation(xml_path, classes)
            path = find_image(root, image_id, fields.pop("filename"))
        except DataError as exc:
            if not skip_bad:
                raise
            n_bad += 1
            log.warning("skipping %s: %s", image_id, exc)
            continue
        records.append(ImageRecord(image_id=image_id, path=path, **fields))
    if n_bad:
        log.warning("skipped %d bad image(s) of %d in split '%s'", n_bad, n_bad + len(records), split)
    return DetectionDataset(
        name=name or root.name, split=split, classes=classes, records=records, root=root, n_skipped=n_bad
    )
