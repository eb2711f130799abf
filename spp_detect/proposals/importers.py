"""Read precomputed proposals: R-CNN / Fast R-CNN selective-search ``.mat`` files and JSON.

- ``.mat`` (MATLAB v5 via scipy, or v7.3/HDF5 via h5py), as published with R-CNN and
  Fast R-CNN (``selective_search_data/voc_2007_trainval.mat``): ``boxes`` is a cell array
  with one (n, 4) matrix per image holding ``[y1 x1 y2 x2]`` in 1-based inclusive pixels;
  ``images`` (when present) is a cell array of image ids in the same order. Without
  ``images`` the file must list exactly the split's images, in split order.
- ``.json``: ``{"<image_id>": [[x1, y1, x2, y2], ...], ...}`` in the internal convention
  (0-based inclusive pixels), boxes in rank order.

Both return ``{image_id: float32 (N, 4)}`` in the internal convention; the caller applies the
same clipping, size filter, dedup and cap as for computed proposals.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..artifacts.files import read_json
from ..errors import DataError

log = logging.getLogger(__name__)

IMPORT_FORMATS = (".mat", ".json")


def _check_boxes(path: Path, image_id: str, arr, field: str) -> np.ndarray:
    try:
        boxes = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(path, "boxes are not numbers", f"{field}[{image_id!r}]") from None
    if boxes.size == 0:
        return np.zeros((0, 4), np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(path, f"expected an (n, 4) array of boxes, got shape {boxes.shape}", f"{field}[{image_id!r}]")
    bad = ~np.isfinite(boxes).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(path, "box has a non-finite coordinate", f"{field}[{image_id!r}][{i}]", boxes[i].tolist())
    return boxes


def read_json_proposals(path: str | Path) -> dict[str, np.ndarray]:
    """``{"image_id": [[x1, y1, x2, y2], ...]}`` (internal convention) -> arrays."""
    path = Path(path)
    data = read_json(path, "proposals file")
    if not isinstance(data, dict):
        raise DataError(path, 'expected an object {"<image_id>": [[x1, y1, x2, y2], ...]}', "top level", type(data).__name__)
    out = {}
    for image_id, boxes in data.items():
        boxes = _check_boxes(path, str(image_id), boxes, "")
        _check_order(path, str(image_id), boxes, "")
        out[str(image_id)] = boxes.astype(np.float32)
    return out


def _check_order(path: Path, image_id: str, boxes: np.ndarray, field: str) -> None:
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(path, "box has x2 < x1 or y2 < y1", f"{field}[{image_id!r}][{i}]", boxes[i].tolist())


def _mat_string(x) -> str:
    """A MATLAB char array as loaded by scipy (array of str) or h5py (uint16 codes)."""
    arr = np.asarray(x)
    if arr.dtype.kind in "US":
        return "".join(str(s) for s in arr.ravel())
    return "".join(chr(int(c)) for c in arr.ravel())


def _load_mat_v5(path: Path) -> tuple[list, list | None]:
    import scipy.io

    mat = scipy.io.loadmat(str(path))
    if "boxes" not in mat:
        raise DataError(path, f"no 'boxes' variable (found: {', '.join(k for k in mat if not k.startswith('__'))})", "boxes")
    boxes = [np.asarray(b) for b in np.asarray(mat["boxes"], dtype=object).ravel()]
    images = None
    if "images" in mat:
        images = [_mat_string(s) for s in np.asarray(mat["images"], dtype=object).ravel()]
    return boxes, images


def _load_mat_v73(path: Path) -> tuple[list, list | None]:
    import h5py

    with h5py.File(path, "r") as f:
        if "boxes" not in f:
            raise DataError(path, f"no 'boxes' variable (found: {', '.join(f.keys())})", "boxes")
        # MATLAB stores matrices column-major: each referenced (n, 4) matrix reads as (4, n)
        boxes = [np.asarray(f[ref]).T for ref in np.asarray(f["boxes"]).ravel()]
        images = None
        if "images" in f:
            images = [_mat_string(f[ref][()]) for ref in np.asarray(f["images"]).ravel()]
    return boxes, images


def read_mat_proposals(path: str | Path, image_ids: list[str] | None = None) -> dict[str, np.ndarray]:
    """An R-CNN selective-search ``.mat`` -> ``{image_id: internal boxes}``.

    ``image_ids`` gives the order to assume when the file has no ``images`` variable.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "proposals file not found")
    with open(path, "rb") as f:
        head = f.read(512)
    try:
        if head.startswith(b"\x89HDF") or b"MATLAB 7.3" in head[:128]:
            boxes, images = _load_mat_v73(path)
        else:
            boxes, images = _load_mat_v5(path)
    except DataError:
        raise
    except Exception as exc:  # scipy/h5py raise many types for a damaged file
        raise DataError(path, f"cannot be read as a MATLAB .mat file ({type(exc).__name__}: {exc})") from None
    if images is None:
        if image_ids is None or len(image_ids) != len(boxes):
            raise DataError(
                path,
                f"has no 'images' variable, so its {len(boxes)} box sets must match the split's "
                f"{len(image_ids) if image_ids is not None else '?'} images one to one, in order",
                "images",
            )
        images = list(image_ids)
    if len(images) != len(boxes):
        raise DataError(path, f"'images' has {len(images)} entries but 'boxes' has {len(boxes)}", "images")
    out = {}
    for image_id, b in zip(images, boxes, strict=True):
        b = _check_boxes(path, image_id, b, "boxes")
        # [y1 x1 y2 x2], 1-based inclusive -> (x1, y1, x2, y2), 0-based inclusive
        b = b[:, [1, 0, 3, 2]] - 1.0
        _check_order(path, image_id, b, "boxes")
        out[image_id] = b.astype(np.float32)
    return out


def read_proposal_file(path: str | Path, image_ids: list[str] | None = None) -> dict[str, np.ndarray]:
    """Dispatch on the extension (``.mat`` or ``.json``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".mat":
        return read_mat_proposals(path, image_ids)
    if suffix == ".json":
        return read_json_proposals(path)
    raise DataError(path, f"unknown proposals format; expected one of {', '.join(IMPORT_FORMATS)}", "--import", suffix)


def file_sha256(path: str | Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def import_proposals(
    dataset,
    source: str | Path,
    out_path: str | Path,
    min_size: int,
    max_proposals: int,
    overwrite: bool = False,
) -> dict:
    """Convert ``source`` into ``out_path`` for ``dataset``'s split; returns a summary dict.

    Boxes are clipped, filtered by ``min_size``, deduplicated and capped at ``max_proposals``
    in file order, like computed ones. Images of the file that the split lacks are ignored
    (published files cover whole trainval/test sets); split images the file lacks are an error.
    """
    from .filtering import finalize
    from .store import check_existing, dataset_stamp, write_proposals

    source = Path(source)
    out_path = Path(out_path)
    params = {
        "method": "import",
        "import_file": source.name,
        "import_sha256": file_sha256(source) if source.is_file() else None,
        "min_size": int(min_size),
        "max_proposals": int(max_proposals),
    }
    stamp = {**dataset_stamp(dataset), "params": params}
    if check_existing(out_path, stamp, overwrite):
        log.info("%s is up to date (imported from the same file); nothing to do", out_path)
        return {"path": out_path, "up_to_date": True, "images": len(dataset), "fallback": 0, "ignored": 0}
    found = read_proposal_file(source, dataset.image_ids)
    missing = [iid for iid in dataset.image_ids if iid not in found]
    if missing:
        raise DataError(
            source,
            f"has no proposals for {len(missing)} of the {len(dataset)} images of split '{dataset.split}' "
            f"(first: {', '.join(missing[:5])})",
            "image_id",
        )
    ignored = len(set(found) - set(dataset.image_ids))
    if ignored:
        log.info("%s: ignoring %d image(s) not in split '%s'", source, ignored, dataset.split)
    ids, boxes, fallback = [], [], []
    n_fallback = 0
    for r in dataset.records:
        b, fb = finalize(found[r.image_id], r.height, r.width, min_size, max_proposals)
        if fb:
            n_fallback += 1
            if n_fallback <= 5:
                log.warning("image %s: no imported proposal survived the filters; using the whole image", r.image_id)
        ids.append(r.image_id)
        boxes.append(b)
        fallback.append(fb)
    if n_fallback > 5:
        log.warning("%d image(s) in total got the whole image as their only proposal", n_fallback)
    write_proposals(out_path, ids, boxes, stamp, None, fallback)
    log.info("imported %s -> %s (%d images, %d boxes)", source, out_path, len(ids), sum(len(b) for b in boxes))
    return {"path": out_path, "up_to_date": False, "images": len(ids), "fallback": n_fallback, "ignored": ignored}
