"""The proposals file ``RUN/proposals/<split>.h5``: writer, reader, and resumable partial work.

Layout (HDF5, read fast by image):

- ``image_ids``: (n,) UTF-8 strings, in dataset split order.
- ``offsets``: (n + 1,) int64; image i's boxes are rows ``offsets[i]:offsets[i + 1]``.
- ``boxes``: (total, 4) float32, chunked along rows; internal convention (``(x1, y1, x2, y2)``,
  0-based inclusive pixels of the original image), each image's rows in rank order.
- ``seconds``: (n,) float32, time spent on each image (NaN for imported proposals).
- ``fallback``: (n,) bool, True where the whole image replaced an empty proposal list.
- ``skipped_ids``: image ids left out because their image could not be read (``--skip-bad``).
- attributes ``format`` = ``spp-detect/proposals``, ``format_version`` = 1, and ``stamp``:
  JSON with ``dataset``, ``split``, ``fingerprint`` (of the dataset split) and ``params``.

Partial work never goes into that file. :class:`PartialRun` keeps finished images in
``<split>.parts/``: a ``manifest.json`` with the stamp, then ``part-*.npz`` files, each written
under a temporary name and renamed when complete, so ``kill -9`` loses at most the images not
yet flushed. Only when every image is done is ``<split>.h5`` written (to a temporary name,
renamed) and the parts folder removed. A later stage reads only ``<split>.h5``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..artifacts.files import atomic_path, atomic_write_json
from ..artifacts.parts import PartsFolder
from ..artifacts.stamps import (
    check_stamp,
    first_difference,
    open_h5_checked,
    stamp_differences,
    write_stamp,
)
from ..errors import ArtifactError, OutputExistsError

log = logging.getLogger(__name__)

FORMAT = "spp-detect/proposals"
VERSION = 1
BOX_CHUNK_ROWS = 8192  # 128 KiB chunks: one image's <= 2000 boxes touch one or two chunks


def dataset_stamp(dataset) -> dict:
    """The stamp keys that tie a proposals file to one dataset split."""
    return {"dataset": dataset.name, "split": dataset.split, "fingerprint": dataset.fingerprint(),
            "image_files": dataset.files_fingerprint()}


def _remedy(stamp: dict) -> str:
    return (
        f"this file belongs to another dataset, split or settings; make proposals for this one with "
        f"'spp-detect propose --dataset {stamp.get('dataset', '...')} --split {stamp.get('split', '...')}' "
        "or pass the right --run"
    )


# ---------------------------------------------------------------------------------------------
# the final file


def write_proposals(
    path: str | Path,
    image_ids: list[str],
    boxes: list[np.ndarray],
    stamp: dict,
    seconds: list[float] | np.ndarray | None = None,
    fallback: list[bool] | np.ndarray | None = None,
    skipped_ids: list[str] = (),
) -> Path:
    """Write a complete proposals file atomically (temporary name, then rename)."""
    import h5py

    path = Path(path)
    n = len(image_ids)
    if len(boxes) != n:
        raise ValueError(f"{n} image ids but {len(boxes)} box arrays")
    counts = np.array([len(b) for b in boxes], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    flat = np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]) if n else np.zeros((0, 4), np.float32)
    seconds = np.full(n, np.nan, np.float32) if seconds is None else np.asarray(seconds, np.float32)
    fallback = np.zeros(n, bool) if fallback is None else np.asarray(fallback, bool)
    str_dt = h5py.string_dtype("utf-8")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("image_ids", data=np.array(image_ids, dtype=object), dtype=str_dt)
            h5.create_dataset("offsets", data=offsets)
            h5.create_dataset(
                "boxes",
                data=flat,
                chunks=(max(1, min(len(flat), BOX_CHUNK_ROWS)), 4),
                maxshape=(None, 4),
            )
            h5.create_dataset("seconds", data=seconds)
            h5.create_dataset("fallback", data=fallback)
            h5.create_dataset("skipped_ids", data=np.array(list(skipped_ids), dtype=object), dtype=str_dt)
            write_stamp(h5, FORMAT, VERSION, stamp)
    return path


class ProposalStore:
    """Read-only access to a proposals file, checked against the dataset it will be used with.

    ``ProposalStore(path, dataset)`` refuses (:class:`ArtifactError` naming the file and the
    differing stamp key) a file made for another dataset, split or split content; ``expect``
    adds stamp keys to check (e.g. ``{"params": {...}}``). Boxes are float32 (N, 4) in the
    internal convention, rank order. h5py handles do not survive ``fork``: open one store per
    worker process. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | Path, dataset=None, expect: dict | None = None):
        self.path = Path(path)
        want = dict(dataset_stamp(dataset)) if dataset is not None else {}
        want.update(expect or {})
        hint = {"dataset": want.get("dataset", "..."), "split": want.get("split", "...")}
        missing = f"make it with 'spp-detect propose --dataset {hint['dataset']} --split {hint['split']}'"
        self._h5 = open_h5_checked(self.path, FORMAT, VERSION, remedy=missing if not self.path.exists() else "")
        try:
            self.stamp = check_stamp(self.path, self._h5, FORMAT, VERSION)
            diffs = stamp_differences(self.stamp, want)
            if diffs:
                key, found, wanted = diffs[0]
                raise ArtifactError(
                    f"{self.path}: made with {key}={found!r}, but this run has {key}={wanted!r}; {_remedy(hint)}"
                )
        except Exception:
            self._h5.close()
            raise
        try:
            h5 = self._h5
            for key in ("image_ids", "offsets", "boxes", "seconds", "fallback", "skipped_ids"):
                if key not in h5:
                    raise ArtifactError(f"{self.path}: dataset '{key}' is missing; remove the file and rerun propose")
            self.image_ids = [s.decode() if isinstance(s, bytes) else str(s) for s in h5["image_ids"][()]]
            self.offsets = h5["offsets"][()]
            self.seconds = h5["seconds"][()]
            self.fallback = h5["fallback"][()].astype(bool)
            self.skipped_ids = [s.decode() if isinstance(s, bytes) else str(s) for s in h5["skipped_ids"][()]]
            if len(self.offsets) != len(self.image_ids) + 1 or self.offsets[-1] != h5["boxes"].shape[0]:
                raise ArtifactError(
                    f"{self.path}: 'offsets' ({len(self.offsets)} entries, last {self.offsets[-1] if len(self.offsets) else None}) "
                    f"do not match {len(self.image_ids)} images and {h5['boxes'].shape[0]} boxes; remove the file and rerun propose"
                )
        except Exception:
            self._h5.close()
            raise
        self._index = {iid: i for i, iid in enumerate(self.image_ids)}
        self._skipped = set(self.skipped_ids)

    @property
    def params(self) -> dict:
        return self.stamp.get("params", {})

    def __len__(self) -> int:
        return len(self.image_ids)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._index

    def boxes(self, image_id: str) -> np.ndarray:
        """One image's proposals, float32 (N, 4), rank order."""
        i = self._index.get(image_id)
        if i is None:
            if image_id in self._skipped:
                raise ArtifactError(f"{self.path}: image '{image_id}' was skipped as unreadable when proposals were made")
            raise ArtifactError(f"{self.path}: no proposals for image '{image_id}'")
        return self._h5["boxes"][self.offsets[i] : self.offsets[i + 1]]

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        """``(image_id, boxes)`` in file order, reading the boxes in large slices."""
        boxes = self._h5["boxes"]
        step = 256  # images per read: a few MB, and one read per chunk run
        for start in range(0, len(self.image_ids), step):
            stop = min(start + step, len(self.image_ids))
            block = boxes[self.offsets[start] : self.offsets[stop]]
            base = self.offsets[start]
            for i in range(start, stop):
                yield self.image_ids[i], block[self.offsets[i] - base : self.offsets[i + 1] - base]

    def load_all(self) -> dict[str, np.ndarray]:
        return dict(iter(self))

    def close(self) -> None:
        self._h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_proposals(path: str | Path, dataset) -> dict[str, np.ndarray]:
    """All proposals of ``dataset``'s split: ``{image_id: float32 (N, 4)}``, checked stamp."""
    with ProposalStore(path, dataset) as store:
        return store.load_all()


def check_existing(path: Path, stamp: dict, overwrite: bool) -> bool:
    """True if ``path`` already holds these proposals (the stage can be skipped).

    A file made from other inputs or settings is an :class:`OutputExistsError` unless
    ``overwrite``; then it is left for the new file to replace.
    """
    if not path.exists():
        return False
    if overwrite:
        return False
    try:
        with ProposalStore(path) as store:
            diffs = stamp_differences(store.stamp, stamp)
    except ArtifactError as exc:
        raise OutputExistsError(f"{exc}; pass --overwrite to replace it") from None
    if diffs:
        key, found, wanted = diffs[0]
        raise OutputExistsError(
            f"{path} exists, made with {key}={found!r} (this run: {wanted!r}); pass --overwrite to replace it"
        )
    return True


# ---------------------------------------------------------------------------------------------
# resumable partial work


class PartialRun:
    """Finished images of an unfinished run, kept in ``<split>.parts/`` across interruptions.

    ``stamp`` must equal the one the final file will carry; partial work made with another
    stamp is refused (or, with ``overwrite``, discarded) rather than mixed in.
    """

    def __init__(self, output: str | Path, stamp: dict, overwrite: bool = False, remove_temporaries: bool = True):
        self.parts = PartsFolder(output)
        self.folder = self.parts.folder
        self.stamp = stamp
        self.results: dict[str, tuple[np.ndarray, float, bool]] = {}
        self.skipped: dict[str, str] = {}
        self._pending: list[tuple[str, np.ndarray, float, bool]] = []
        self._pending_skipped: list[tuple[str, str]] = []
        self._last_flush = time.monotonic()
        manifest = self.folder / "manifest.json"
        if overwrite:
            self.parts.remove()
        if manifest.is_file():
            try:
                found = json.loads(manifest.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ArtifactError(f"{manifest}: unreadable ({exc}); remove {self.folder} or pass --overwrite") from None
            diff = first_difference(found, stamp)
            if diff:
                key, was, now = diff
                raise ArtifactError(
                    f"{self.folder}: holds unfinished work made with {key}={was!r} (this run: {now!r}); rerun "
                    "with the same options to resume it, or pass --overwrite to start over"
                )
            self.parts.prepare(remove_temporaries)
            self._load_parts()
        else:
            self.parts.prepare(remove_temporaries)
            atomic_write_json(manifest, stamp)

    def _load_parts(self) -> None:
        for part in self.parts.finished("part-*.npz"):
            try:
                with np.load(part, allow_pickle=False) as z:
                    ids, offsets, boxes = z["image_ids"], z["offsets"], z["boxes"]
                    seconds, fallback = z["seconds"], z["fallback"]
                    skipped_ids, skipped_why = z["skipped_ids"], z["skipped_why"]
            except (OSError, ValueError, KeyError) as exc:
                raise ArtifactError(f"{part}: unreadable partial result ({exc}); remove it to recompute its images") from None
            for i, iid in enumerate(ids):
                self.results[str(iid)] = (boxes[offsets[i] : offsets[i + 1]], float(seconds[i]), bool(fallback[i]))
            for iid, why in zip(skipped_ids, skipped_why, strict=True):
                self.skipped[str(iid)] = str(why)

    @property
    def done(self) -> set[str]:
        return set(self.results) | set(self.skipped)

    def add(self, image_id: str, boxes: np.ndarray, seconds: float, fallback: bool) -> None:
        self.results[image_id] = (boxes, seconds, fallback)
        self._pending.append((image_id, boxes, seconds, fallback))

    def add_skipped(self, image_id: str, reason: str) -> None:
        self.skipped[image_id] = reason
        self._pending_skipped.append((image_id, reason))

    def maybe_flush(self, every_images: int, every_seconds: float) -> None:
        n = len(self._pending) + len(self._pending_skipped)
        if n and (n >= every_images or time.monotonic() - self._last_flush >= every_seconds):
            self.flush()

    def flush(self) -> None:
        """Write the images finished since the last flush as one part, atomically."""
        if not self._pending and not self._pending_skipped:
            return
        pend, skipped = self._pending, self._pending_skipped
        counts = [len(b) for _, b, _, _ in pend]
        with self.parts.write(self.parts.unique_name("part-", ".npz")) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                image_ids=np.array([p[0] for p in pend], dtype=str).reshape(-1),
                offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                boxes=np.concatenate([p[1] for p in pend]).astype(np.float32) if pend else np.zeros((0, 4), np.float32),
                seconds=np.array([p[2] for p in pend], np.float32),
                fallback=np.array([p[3] for p in pend], bool),
                skipped_ids=np.array([s[0] for s in skipped], dtype=str).reshape(-1),
                skipped_why=np.array([s[1] for s in skipped], dtype=str).reshape(-1),
            )
            f.flush()
            os.fsync(f.fileno())
        self._pending, self._pending_skipped = [], []
        self._last_flush = time.monotonic()

    def remove(self) -> None:
        self.parts.remove()
