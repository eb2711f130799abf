"""Detections in memory and on disk: PASCAL devkit comp4 files and COCO results JSON.

In memory (what the detect stage produces and every evaluator consumes), detections are a
:data:`DetectionsByClass`: a dict from class name to a :class:`ClassDetections`, three parallel
arrays ``image_ids`` (N,) str, ``scores`` (N,) float64 and ``boxes`` (N, 4) float64 in the
internal convention (``(x1, y1, x2, y2)``, 0-based inclusive pixels of the original image, see
:mod:`spp_detect.core.boxes`). Build one per image with :class:`DetectionCollector`.

On disk, two formats:

- **comp4 folder** (PASCAL devkit): one file per class named
  ``comp4_det_<split>_<class>.txt``, one detection a line,
  ``<image_id> <score> <xmin> <ymin> <xmax> <ymax>`` with VOC's 1-based inclusive coordinates,
  which is what the devkit's ``VOCevaldet`` reads. The writer writes a file for every class
  (empty when a class has no detections) and writes scores exactly (shortest round-trip repr)
  so ties and order survive a round trip; coordinates are written to 1/100 pixel.
  The reader accepts any ``comp<N>`` prefix. A file whose class is not one of the dataset's
  classes is a :class:`DataError` (a typo or another dataset would otherwise silently score
  0 AP); a class with no file gets no detections and a warning.
- **COCO results JSON**: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``
  with ``w = x2 - x1 + 1``. ``category_id`` is the dataset's COCO category id, or the class
  index + 1 for datasets without ids (VOC). ``image_id`` is the COCO integer id for COCO
  datasets and the string id (``"000005"``) for VOC datasets, whose ids are not integers;
  the COCO evaluator maps both to the integer ids of its in-memory ground truth.

Both readers check every line or entry and raise :class:`DataError` naming the file, the line
(or entry index), the field and the value; detections for images not in the split are errors,
as in the devkit ("unrecognized image").
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts.files import atomic_path, check_overwrite, read_json
from ..errors import DataError

log = logging.getLogger(__name__)

COMP4_PREFIX = "comp4"
COMP_FILE_RE = re.compile(r"^(comp\d+)_det_(.+)\.txt$")
# Digits written for comp4 coordinates: 1/100 pixel is far below what the IoU test can see.
COORD_DECIMALS = 2


@dataclass(frozen=True)
class ClassDetections:
    """The detections of one class over a split, as parallel arrays.

    ``image_ids``: (N,) array of str. ``scores``: (N,) float64, higher is more confident.
    ``boxes``: (N, 4) float64, internal convention: ``(x1, y1, x2, y2)``, 0-based inclusive
    pixels of the original image (width ``x2 - x1 + 1``). Order is arbitrary; evaluators sort
    by score (stable, so equal scores keep this order).
    """

    image_ids: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray

    def __post_init__(self):
        ids = np.asarray(self.image_ids, dtype=object).reshape(-1)
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        boxes = np.asarray(self.boxes, dtype=np.float64)
        boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must have shape (N, 4), got {boxes.shape}")
        if not (len(ids) == len(scores) == len(boxes)):
            raise ValueError(f"{len(ids)} image ids, {len(scores)} scores and {len(boxes)} boxes differ in length")
        object.__setattr__(self, "image_ids", ids)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "boxes", boxes)

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> ClassDetections:
        return cls(np.zeros(0, object), np.zeros(0), np.zeros((0, 4)))

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, float, Iterable[float]]]) -> ClassDetections:
        """From ``(image_id, score, (x1, y1, x2, y2))`` tuples, boxes in the internal convention."""
        rows = list(rows)
        if not rows:
            return cls.empty()
        ids, scores, boxes = zip(*rows, strict=True)
        return cls(np.asarray(ids, object), np.asarray(scores, np.float64), np.asarray(boxes, np.float64))

    @classmethod
    def concat(cls, parts: Iterable[ClassDetections]) -> ClassDetections:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.image_ids for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.boxes for p in parts]),
        )

    def rows(self) -> Iterable[tuple[str, float, np.ndarray]]:
        """``(image_id, score, box)`` per detection; boxes in the internal convention."""
        return zip(self.image_ids, self.scores, self.boxes, strict=True)


DetectionsByClass = dict[str, ClassDetections]


class DetectionCollector:
    """Accumulates per-image detections into a :data:`DetectionsByClass`.

    The detect stage calls :meth:`add` once per image and class, then :meth:`finish`::

        collector = DetectionCollector(dataset.classes)
        collector.add("000005", "chair", boxes, scores)   # boxes: internal convention
        detections = collector.finish()
    """

    def __init__(self, classes: Iterable[str]):
        self.classes = tuple(classes)
        self._parts: dict[str, list[ClassDetections]] = {c: [] for c in self.classes}

    def add(self, image_id: str, class_name: str | int, boxes, scores) -> None:
        """Add one image's detections of one class (``class_name`` may be a label index).

        ``boxes``: (K, 4) internal convention (0-based inclusive ``(x1, y1, x2, y2)``).
        """
        if not isinstance(class_name, str):
            class_name = self.classes[int(class_name)]
        if class_name not in self._parts:
            raise ValueError(f"unknown class {class_name!r}; classes are {', '.join(self.classes)}")
        scores = np.asarray(scores, np.float64).reshape(-1)
        if len(scores) == 0:
            return
        ids = np.full(len(scores), str(image_id), dtype=object)
        self._parts[class_name].append(ClassDetections(ids, scores, np.asarray(boxes, np.float64)))

    def finish(self) -> DetectionsByClass:
        return {c: ClassDetections.concat(self._parts[c]) for c in self.classes}


def check_classes(detections: Mapping[str, ClassDetections], classes: Iterable[str], source=None) -> None:
    """Raise :class:`DataError` if ``detections`` has a class the dataset does not."""
    classes = tuple(classes)
    for name in detections:
        if name not in classes:
            raise DataError(source, f"unknown class (dataset classes: {', '.join(classes)})", "class", name)


# ---------------------------------------------------------------------------------------------
# comp4 folder


def comp4_filename(split: str, class_name: str, comp: str = COMP4_PREFIX) -> str:
    return f"{comp}_det_{split}_{class_name}.txt"


def write_comp4(
    folder: str | Path,
    detections: Mapping[str, ClassDetections],
    classes: Iterable[str],
    split: str,
    overwrite: bool = False,
    comp: str = COMP4_PREFIX,
) -> list[Path]:
    """Write ``<folder>/<comp>_det_<split>_<class>.txt`` for every class, as the devkit reads them.

    Boxes go from the internal convention to VOC's 1-based inclusive coordinates. Classes
    without detections get an empty file (the devkit expects one per class). Refuses to
    replace any existing file unless ``overwrite``; each file appears atomically.
    """
    from ..core.boxes import to_voc

    folder = Path(folder)
    classes = tuple(classes)
    check_classes(detections, classes, folder)
    paths = [folder / comp4_filename(split, c, comp) for c in classes]
    for path in paths:  # check all before writing any, so a refusal leaves nothing half-done
        check_overwrite(path, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in zip(classes, paths, strict=True):
        dets = detections.get(name, ClassDetections.empty())
        voc = to_voc(dets.boxes).astype(np.float64) if len(dets) else np.zeros((0, 4))
        lines = [
            f"{image_id} {float(score)!r} " + " ".join(f"{v:.{COORD_DECIMALS}f}" for v in box)
            for image_id, score, box in zip(dets.image_ids, dets.scores, voc, strict=True)
        ]
        with atomic_path(path) as tmp:
            tmp.write_text("".join(line + "\n" for line in lines))
    return paths


def _parse_float(text: str, where: str, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(where, "not a number", field, text) from None
    if not math.isfinite(value):
        raise DataError(where, "must be finite", field, text)
    return value


def read_comp4_file(path: str | Path, image_ids: Iterable[str] | None = None) -> ClassDetections:
    """Read one comp4 file (``<image_id> <score> <xmin> <ymin> <xmax> <ymax>``, VOC 1-based).

    Returns boxes in the internal convention (0-based inclusive). Blank lines are skipped.
    A malformed line, or an image id not in ``image_ids`` (when given), raises
    :class:`DataError` naming ``path:line``, the field and the value.
    """
    path = Path(path)
    known = None if image_ids is None else set(image_ids)
    ids, scores, boxes = [], [], []
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DataError(path, "not a text file") from None
    names = ("xmin", "ymin", "xmax", "ymax")
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path}:{lineno}"
        if len(parts) != 6:
            raise DataError(where, f"expected 6 fields '<image_id> <score> <xmin> <ymin> <xmax> <ymax>', got {len(parts)}", "line", line.strip())
        image_id = parts[0]
        if known is not None and image_id not in known:
            raise DataError(where, "image id not in the split being evaluated", "image_id", image_id)
        score = _parse_float(parts[1], where, "score")
        box = [_parse_float(t, where, n) for t, n in zip(parts[2:], names, strict=True)]
        if box[0] > box[2] or box[1] > box[3]:
            raise DataError(where, "box has xmin > xmax or ymin > ymax", "box", box)
        ids.append(image_id)
        scores.append(score)
        boxes.append(box)
    if not ids:
        return ClassDetections.empty()
    return ClassDetections(np.asarray(ids, object), np.asarray(scores), np.asarray(boxes) - 1.0)


def read_comp4(folder: str | Path, classes: Iterable[str], split: str, image_ids: Iterable[str] | None = None) -> DetectionsByClass:
    """Read a folder of ``comp<N>_det_<split>_<class>.txt`` files into a :data:`DetectionsByClass`.

    Every class of ``classes`` gets an entry (empty when it has no file, with a warning).
    Raises :class:`DataError` for: no file for ``split`` at all, a file for a class not in
    ``classes``, two files (different ``comp<N>``) for one class, or any malformed line.
    Files of other splits are ignored, including splits whose name extends this one
    (``comp4_det_val_mini_cat.txt`` when reading ``val``).
    """
    folder = Path(folder)
    classes = tuple(classes)
    if not folder.is_dir():
        raise DataError(folder, "detections folder not found")
    image_ids = None if image_ids is None else list(image_ids)
    prefix = f"_det_{split}_"
    found: dict[str, Path] = {}
    other_splits = set()
    for path in sorted(folder.iterdir()):
        m = COMP_FILE_RE.match(path.name)
        if not m or not path.is_file():
            continue
        if not path.name.startswith(m.group(1) + prefix):
            rest = m.group(2)
            other_splits.update(rest[: -len(c) - 1] for c in classes if rest.endswith("_" + c))
            continue
        name = path.name[len(m.group(1) + prefix) : -len(".txt")]
        if name not in classes:
            if any(name.endswith("_" + c) for c in classes):
                continue  # another split whose name starts with this one's
            raise DataError(path, f"file name names an unknown class (classes: {', '.join(classes)})", "class", name)
        if name in found:
            raise DataError(path, f"two result files for one class (also {found[name].name})", "class", name)
        found[name] = path
    if not found:
        raise DataError(
            folder,
            f"no comp<N>_det_{split}_<class>.txt files for split '{split}' "
            f"(files here are for: {', '.join(sorted(other_splits)) or 'no split'})",
            "split",
            split,
        )
    missing = [c for c in classes if c not in found]
    if missing:
        log.warning("%s: no result file for %d class(es) (%s); they score 0 AP", folder, len(missing), ", ".join(missing))
    return {c: read_comp4_file(found[c], image_ids) if c in found else ClassDetections.empty() for c in classes}


# ---------------------------------------------------------------------------------------------
# COCO results JSON


def _category_ids(dataset) -> tuple[int, ...]:
    if dataset.category_ids is not None:
        return tuple(int(c) for c in dataset.category_ids)
    return tuple(range(1, len(dataset.classes) + 1))


def _json_image_id(record):
    if isinstance(record.source_id, int) and not isinstance(record.source_id, bool):
        return int(record.source_id)
    return record.image_id


def detections_to_coco_list(detections: Mapping[str, ClassDetections], dataset) -> list[dict]:
    """COCO results entries for ``detections`` (internal-convention boxes -> ``[x, y, w, h]``).

    ``dataset``: the :class:`~spp_detect.datasets.DetectionDataset` the detections are for;
    it supplies category ids and the image ids to write (see the module docstring).
    """
    from ..core.boxes import to_coco_xywh

    check_classes(detections, dataset.classes)
    cat_ids = _category_ids(dataset)
    json_id = {r.image_id: _json_image_id(r) for r in dataset.records}
    out = []
    for label, name in enumerate(dataset.classes):
        dets = detections.get(name)
        if dets is None or not len(dets):
            continue
        xywh = to_coco_xywh(dets.boxes)
        for image_id, score, box in zip(dets.image_ids, dets.scores, xywh, strict=True):
            if image_id not in json_id:
                raise DataError(None, f"detection of class '{name}' for an image not in split '{dataset.split}'", "image_id", image_id)
            out.append(
                {
                    "image_id": json_id[image_id],
                    "category_id": cat_ids[label],
                    "bbox": [round(float(v), COORD_DECIMALS) for v in box],
                    "score": float(score),
                }
            )
    return out


def write_coco_results(path: str | Path, detections: Mapping[str, ClassDetections], dataset, overwrite: bool = False) -> Path:
    """Write a COCO results JSON for ``detections`` of ``dataset`` (atomically; refuses to overwrite)."""
    path = Path(path)
    check_overwrite(path, overwrite)
    entries = detections_to_coco_list(detections, dataset)
    with atomic_path(path) as tmp:
        # One entry a line: readable, diffable, and still a plain JSON list.
        tmp.write_text("[\n" + ",\n".join(json.dumps(e) for e in entries) + ("\n]\n" if entries else "]\n"))
    return path


def _number(value, where, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(where, "must be a number", field, value)
    if not math.isfinite(value):
        raise DataError(where, "must be finite", field, value)
    return float(value)


def read_coco_results(path: str | Path, dataset) -> DetectionsByClass:
    """Read a COCO results JSON for ``dataset``; boxes come back in the internal convention.

    ``image_id`` may be an integer (COCO ids) or a string (VOC ids); either must name an image
    of the split. ``category_id`` must be one of the dataset's (class index + 1 for VOC).
    Errors name the file, the entry index, the field and the value.
    """
    path = Path(path)
    data = read_json(path, "detections file")
    if not isinstance(data, list):
        raise DataError(path, "a COCO results file is a JSON list of {image_id, category_id, bbox, score}", "top level", type(data).__name__)
    cat_ids = _category_ids(dataset)
    label_of = {c: i for i, c in enumerate(cat_ids)}
    split_ids = set(dataset.image_ids)
    per_label: list[tuple[list, list, list]] = [([], [], []) for _ in dataset.classes]
    for k, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise DataError(path, "entry must be an object", f"[{k}]", entry)
        for key in ("image_id", "category_id", "bbox", "score"):
            if key not in entry:
                raise DataError(path, f"missing key '{key}'", f"[{k}].{key}")
        raw_id = entry["image_id"]
        if isinstance(raw_id, bool) or not isinstance(raw_id, (int, str)):
            raise DataError(path, "must be an integer or a string", f"[{k}].image_id", raw_id)
        image_id = str(raw_id)
        if image_id not in split_ids:
            raise DataError(path, f"image id not in split '{dataset.split}'", f"[{k}].image_id", raw_id)
        cid = entry["category_id"]
        if isinstance(cid, bool) or not isinstance(cid, int) or cid not in label_of:
            shown = ", ".join(map(str, cat_ids[:10])) + (", ..." if len(cat_ids) > 10 else "")
            raise DataError(path, f"unknown category id (valid: {shown})", f"[{k}].category_id", cid)
        bbox = entry["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DataError(path, "bbox must be [x, y, w, h]", f"[{k}].bbox", bbox)
        x, y, w, h = (_number(v, path, f"[{k}].bbox") for v in bbox)
        if w <= 0 or h <= 0:
            raise DataError(path, "bbox has non-positive width or height", f"[{k}].bbox", bbox)
        score = _number(entry["score"], path, f"[{k}].score")
        ids, scores, boxes = per_label[label_of[cid]]
        ids.append(image_id)
        scores.append(score)
        boxes.append([x, y, x + w - 1.0, y + h - 1.0])
    out: DetectionsByClass = {}
    for name, (ids, scores, boxes) in zip(dataset.classes, per_label, strict=True):
        out[name] = ClassDetections(np.asarray(ids, object), np.asarray(scores), np.asarray(boxes)) if ids else ClassDetections.empty()
    return out


def read_detections(path: str | Path, dataset) -> DetectionsByClass:
    """Read detections for ``dataset`` from a comp4 folder or a COCO results ``.json``."""
    path = Path(path)
    if path.is_dir():
        return read_comp4(path, dataset.classes, dataset.split, dataset.image_ids)
    if path.suffix.lower() == ".json":
        return read_coco_results(path, dataset)
    if not path.exists():
        raise DataError(path, "detections not found", "detections", str(path))
    raise DataError(path, "expected a folder of comp4_det_<split>_<class>.txt files or a COCO results .json", "detections", str(path))
