"""Turn a ``--dataset`` value into a reader: the one place dataset names are resolved.

Accepted values:

- ``voc2007`` / ``voc2012``: ``<data-root>/VOCdevkit/VOC2007`` (or 2012).
- ``synth``: the built-in synthetic dataset at ``<data-root>/synth`` (``spp-detect data synth``).
- a path to a VOC-style folder (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``), or to a
  folder holding ``VOCdevkit/VOC2007``.
- a path to a COCO instances ``.json``; images from ``image_dir``, or else the folder beside
  the ``annotations/`` folder named after the file's split (``instances_val2017.json`` ->
  ``val2017/``), or else the JSON's own folder.

COCO splits are files, one JSON per split (as COCO ships them). A split is named either by
path (``--split annotations/instances_val2017.json``) or by name: ``val2017`` is the dataset
JSON itself when that file is ``instances_val2017.json``, else the ``instances_val2017.json``
(or ``val2017.json``) beside it. A name with no such file is an error: one file never serves as every split.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .base import DetectionDataset
from .coco import read_coco
from .voc import read_voc

NAMED = {"voc2007": ("VOCdevkit", "VOC2007"), "voc2012": ("VOCdevkit", "VOC2012"), "synth": ("synth",)}
DEFAULT_DATA_ROOT = "data"


def default_data_root() -> Path:
    """``$SPP_DATA`` if set, else ``data/`` (relative to the working directory)."""
    return Path(os.environ.get("SPP_DATA", DEFAULT_DATA_ROOT))


def resolve_voc_root(dataset: str, data_root: str | Path | None = None) -> Path:
    """The VOC-style folder a dataset name or path designates."""
    data_root = Path(data_root) if data_root is not None else default_data_root()
    if dataset.lower() in NAMED:
        root = data_root.joinpath(*NAMED[dataset.lower()])
        if not root.is_dir():
            hint = (
                "run 'spp-detect data fetch voc2007' or pass --data-root"
                if dataset.lower().startswith("voc")
                else "run 'spp-detect data synth --out " + str(root) + "'"
            )
            raise DataError(root, f"dataset folder not found ({hint})", "dataset", dataset)
        return root
    path = Path(dataset)
    if path.is_dir():
        if (path / "Annotations").is_dir():
            return path
        for year in ("VOC2007", "VOC2012"):
            if (path / "VOCdevkit" / year / "Annotations").is_dir():
                return path / "VOCdevkit" / year
        raise DataError(path, "not a VOC-style folder (no Annotations/ or VOCdevkit/VOC2007 inside)", "dataset", dataset)
    raise DataError(
        None,
        f"unknown dataset; use one of {', '.join(NAMED)}, a VOC-style folder or a COCO .json file",
        "dataset",
        dataset,
    )


def _coco_image_dir(ann_file: Path) -> Path:
    split_name = coco_split_name(ann_file)
    for candidate in (ann_file.parent.parent / split_name, ann_file.parent / split_name, ann_file.parent / "images"):
        if candidate.is_dir():
            return candidate
    return ann_file.parent


def coco_split_name(ann_file: str | Path) -> str:
    """The split a COCO annotation file holds, by its name: ``instances_val2017.json`` -> ``val2017``."""
    stem = Path(ann_file).stem
    return stem.split("_", 1)[1] if stem.startswith("instances_") else stem


def coco_split_file(dataset: str | Path, split: str) -> Path:
    """The annotation file of ``split`` for the COCO dataset named by ``dataset`` (one of its
    JSON files); see the module docstring."""
    if str(split).lower().endswith(".json"):
        path = Path(split)
        if not path.is_file():
            raise DataError(path, "COCO annotation file not found", "split", str(split))
        return path
    ann = Path(dataset)
    if coco_split_name(ann) == split:
        return ann
    sibling = ann.with_name(f"instances_{split}.json")
    for candidate in (sibling, ann.with_name(f"{split}.json")):
        if candidate.is_file():
            return candidate
    raise DataError(ann, f"holds split '{coco_split_name(ann)}', and there is no {sibling.name} beside it for "
                    f"split '{split}'; COCO splits are one JSON each: pass --split path/to/instances_{split}.json "
                    "(or set data.<role>_split to it)", "split", split)


def split_source(dataset: str, split: str) -> str:
    """What a split is read from, to tell two splits apart: a COCO split's annotation file, or
    the split's name for VOC-style datasets."""
    if str(dataset).lower().endswith(".json"):
        try:
            return str(coco_split_file(dataset, split).resolve())
        except DataError:
            return str(split)
    return str(split)


def open_dataset(
    dataset: str,
    split: str,
    data_root: str | Path | None = None,
    skip_bad: bool = False,
    image_dir: str | Path | None = None,
) -> DetectionDataset:
    """Open ``split`` of ``dataset`` (see the module docstring for accepted values)."""
    if str(dataset).lower().endswith(".json"):
        ann = coco_split_file(dataset, split)
        return read_coco(ann, Path(image_dir) if image_dir else _coco_image_dir(ann), split=coco_split_name(ann),
                         skip_bad=skip_bad)
    root = resolve_voc_root(str(dataset), data_root)
    name = str(dataset).lower() if str(dataset).lower() in NAMED else root.name
    return read_voc(root, split, name=name, skip_bad=skip_bad)
