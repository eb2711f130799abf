"""COCO reader: an instances JSON (``images``, ``annotations``, ``categories``) and an image folder.

COCO ``bbox`` is ``[x, y, w, h]``; records carry boxes in the internal convention
(0-based inclusive, ``x2 = x + w - 1``, see :mod:`spp_detect.core.boxes`). Classes are the
categories sorted by id; the dataset keeps ``category_ids`` so results map back. ``iscrowd``
objects are kept with ``ignore=True``: evaluation ignores them as pycocotools does, training
skips them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..artifacts.files import read_json
from ..errors import DataError
from .base import DetectionDataset, ImageRecord, validate_box

log = logging.getLogger(__name__)


def _require(obj: dict, key: str, path: Path, where: str):
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(path, f"missing key '{key}'", where)
    return obj[key]


def _integer(obj: dict, key: str, path: Path, where: str, positive: bool = False) -> int:
    value = _require(obj, key, path, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise DataError(path, "must be an integer", where, value)
    if positive and value <= 0:
        raise DataError(path, "must be positive", where, value)
    return int(value)


def _image_path(image_dir: Path, file_name, path: Path, where: str) -> Path:
    """``image_dir / file_name``, refusing a name that leaves ``image_dir`` (absolute, or ``..``)."""
    if not isinstance(file_name, str) or not file_name:
        raise DataError(path, "must be a file name", where, file_name)
    name = Path(file_name)
    if name.is_absolute() or ".." in name.parts:
        raise DataError(path, f"must be a path inside the image folder {image_dir}", where, file_name)
    return image_dir / name


def read_coco(ann_file: str | Path, image_dir: str | Path, split: str | None = None, skip_bad: bool = False) -> DetectionDataset:
    """Read a COCO instances file; images are looked up in ``image_dir`` by ``file_name``."""
    ann_file = Path(ann_file)
    image_dir = Path(image_dir)
    data = read_json(ann_file, "annotation file")
    if not isinstance(data, dict):
        raise DataError(ann_file, "top level must be an object with images/annotations/categories")
    images = _require(data, "images", ann_file, "images")
    anns = data.get("annotations", [])
    cats = _require(data, "categories", ann_file, "categories")
    cats = sorted(cats, key=lambda c: _require(c, "id", ann_file, "categories[].id"))
    classes = tuple(str(_require(c, "name", ann_file, f"categories[id={c['id']}].name")) for c in cats)
    cat_ids = tuple(int(c["id"]) for c in cats)
    label_of = {cid: i for i, cid in enumerate(cat_ids)}

    if not isinstance(images, list) or not isinstance(anns, list):
        raise DataError(ann_file, "must be a list", "images" if not isinstance(images, list) else "annotations")
    if not images:
        raise DataError(ann_file, "the file lists no image", "images", [])
    image_ids: dict = {}
    for k, img in enumerate(images):
        img_id = _integer(img, "id", ann_file, f"images[{k}].id")
        if img_id in image_ids:
            raise DataError(ann_file, f"image id also used by images[{image_ids[img_id]}]", f"images[{k}].id", img_id)
        image_ids[img_id] = k
    by_image: dict[int, list[dict]] = {}
    for k, a in enumerate(anns):
        img_id = _integer(a, "image_id", ann_file, f"annotations[{k}].image_id")
        if img_id not in image_ids:
            raise DataError(ann_file, "no image has this id", f"annotations[{k}].image_id", img_id)
        by_image.setdefault(img_id, []).append(a)

    records: list[ImageRecord] = []
    n_bad = 0
    for k, img in enumerate(images):
        try:
            img_id = int(img["id"])
            file_name = _require(img, "file_name", ann_file, f"images[{k}].file_name")
            width = _integer(img, "width", ann_file, f"images[{k}].width", positive=True)
            height = _integer(img, "height", ann_file, f"images[{k}].height", positive=True)
            path = _image_path(image_dir, file_name, ann_file, f"images[{k}].file_name")
            if not path.is_file():
                raise DataError(path, "image file is missing", f"images[{k}].file_name", file_name)
            boxes, labels, ignore = [], [], []
            for j, a in enumerate(by_image.get(img_id, [])):
                where = f"annotations[image_id={img_id}][{j}]"
                cid = _integer(a, "category_id", ann_file, f"{where}.category_id")
                if cid not in label_of:
                    raise DataError(ann_file, f"unknown category (known ids: {list(cat_ids)})", f"{where}.category_id", cid)
                bbox = _require(a, "bbox", ann_file, f"{where}.bbox")
                if (not isinstance(bbox, list) or len(bbox) != 4
                        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
                    raise DataError(ann_file, "bbox must be [x, y, w, h] numbers", f"{where}.bbox", bbox)
                x, y, w, h = (float(v) for v in bbox)
                if w <= 0 or h <= 0:
                    raise DataError(ann_file, "bbox has non-positive width or height", f"{where}.bbox", bbox)
                box = [x, y, x + w - 1.0, y + h - 1.0]
                # COCO boxes are continuous: one may end on the image's far edge, one pixel past the last
                validate_box(ann_file, f"{where}.bbox", box, width, height, slack=1.0)
                boxes.append([box[0], box[1], min(box[2], width - 1.0), min(box[3], height - 1.0)])
                labels.append(label_of[cid])
                ignore.append(bool(a.get("iscrowd", 0)))
        except DataError as exc:
            if not skip_bad:
                raise
            n_bad += 1
            log.warning("skipping image %s: %s", img.get("id"), exc)
            continue
        n = len(boxes)
        records.append(
            ImageRecord(
                image_id=str(img_id),
                path=path,
                width=width,
                height=height,
                boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                labels=np.asarray(labels, np.int64),
                difficult=np.zeros(n, bool),
                truncated=np.zeros(n, bool),
                ignore=np.asarray(ignore, bool),
                source_id=img_id,
            )
        )
    if n_bad:
        log.warning("skipped %d bad image(s) of %d in %s", n_bad, n_bad + len(records), ann_file)
    return DetectionDataset(
        name=ann_file.stem,
        split=split or ann_file.stem,
        classes=classes,
        records=records,
        root=image_dir,
        n_skipped=n_bad,
        category_ids=cat_ids,
    )
