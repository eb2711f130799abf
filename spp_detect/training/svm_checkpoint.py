"""Checkpoints of SVM mining (``RUN/models/svm.ckpt.h5``): ``train-svm`` goes on where it stopped.

Mining is one pass over the training images; on VOC with the 25,600-d SPP vector it takes hours
on a laptop CPU, so a killed run must not start again from image 0. Between two images the miner
saves its whole state (:class:`.svm.MiningState`): every class's model, cache (in cache order),
counters and retrain log, the cached rows and the positives. Going on from it gives the models an
uninterrupted run gives (tested bit for bit).

The file is written under a temporary name and renamed, so a checkpoint on disk is always
complete; it is stamped like ``svm.h5`` and one of another training is refused. Rows are copied
to and from the file a block at a time: a checkpoint costs little memory beyond the miner's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..artifacts.files import atomic_path
from ..artifacts.stamps import open_h5_checked, write_stamp
from ..errors import ArtifactError
from .sparse_rows import CompactRows, SparseRows, index_dtype
from .svm import MiningState
from .svm_select import Candidates

CHECKPOINT_FORMAT = "spp-detect/svm-checkpoint"
CHECKPOINT_VERSION = 2  # 2: the dual variables of each class (the next fit's start)
BLOCK_ROWS = 4096  # rows copied at a time between the store and the file


def save_checkpoint(path: str | Path, state: MiningState, stamp: dict) -> Path:
    """Write ``state`` to ``path`` atomically, stamped with ``stamp``."""
    import h5py

    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        write_stamp(h5, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, stamp)
        h5.attrs["dim"] = state.dim
        h5.attrs["images_seen"] = state.images_seen
        h5.attrs["peak_store_rows"] = state.peak_store_rows
        h5.create_dataset("image_ids", data=np.array(state.image_ids, dtype=object), dtype=h5py.string_dtype())
        h5.create_dataset("logs", data=json.dumps(state.logs))
        for name in ("weights", "bias", "new_since_retrain", "retrains", "frozen", "row_image", "row_key"):
            h5.create_dataset(name, data=getattr(state, name))
        h5.create_dataset("cache_sizes", data=np.array([len(c) for c in state.caches], np.int64))
        h5.create_dataset("caches", data=np.concatenate(state.caches + [np.zeros(0, np.int64)]).astype(np.int64))
        h5.create_dataset("alpha_sizes", data=np.array([len(a) for a in state.alphas], np.int64))
        h5.create_dataset("alphas", data=np.concatenate(state.alphas + [np.zeros(0)]).astype(np.float64))
        # every retrain's model, the candidates of svm.select = "val"
        Candidates.from_models(state.models, state.dim).write(h5.create_group("candidates"))
        pos = state.positives
        h5.create_dataset("positive_counts", data=np.array([len(p) for p in pos], np.int64))
        _write_rows(h5.create_group("positives"), CompactRows.concat(pos, state.dim))
        rows = h5.create_group("rows")
        nnz = state.store.row_nnz(state.row_ids)
        _create_rows(rows, len(state.row_ids), int(nnz.sum()), state.dim)
        rows["indptr"][1:] = np.cumsum(nnz)
        at = 0
        for b in range(0, len(state.row_ids), BLOCK_ROWS):
            block = state.store.take(state.row_ids[b : b + BLOCK_ROWS])
            rows["indices"][at : at + block.nnz] = block.indices
            rows["data"][at : at + block.nnz] = block.data
            at += block.nnz
    return path


def load_checkpoint(path: str | Path, stamp: dict, store_dir: str | Path | None = None) -> MiningState:
    """The state saved at ``path``; one saved under another stamp is refused, naming the key.
    ``store_dir``: the cached rows go to a file there (:class:`.sparse_rows.SparseRows`)."""
    path = Path(path)
    with open_h5_checked(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, stamp,
                         remedy="pass --overwrite to start the SVM training over") as h5:
        try:
            dim = int(h5.attrs["dim"])
            counts = h5["positive_counts"][()]
            everything = _read_rows(h5["positives"], dim)
            starts = np.concatenate([[0], np.cumsum(counts)])
            positives = [_slice_rows(everything, int(a), int(b)) for a, b in zip(starts[:-1], starts[1:], strict=True)]
            del everything
            store = SparseRows(dim, store_dir)
            ids = [np.zeros(0, np.int64)]
            rows = h5["rows"]
            indptr = rows["indptr"][()]
            for b in range(0, len(indptr) - 1, BLOCK_ROWS):
                e = min(b + BLOCK_ROWS, len(indptr) - 1)
                lo, hi = int(indptr[b]), int(indptr[e])
                block = CompactRows(indptr[b : e + 1] - lo, rows["indices"][lo:hi], rows["data"][lo:hi], dim)
                ids.append(store.add_rows(block))
            sizes = h5["cache_sizes"][()]
            flat = h5["caches"][()]
            bounds = np.concatenate([[0], np.cumsum(sizes)])
            alpha_bounds = np.concatenate([[0], np.cumsum(h5["alpha_sizes"][()])])
            alphas = h5["alphas"][()]
            return MiningState(
                dim=dim, images_seen=int(h5.attrs["images_seen"]),
                image_ids=[s.decode() if isinstance(s, bytes) else str(s) for s in h5["image_ids"][()]],
                peak_store_rows=int(h5.attrs["peak_store_rows"]), positives=positives,
                weights=h5["weights"][()], bias=h5["bias"][()], new_since_retrain=h5["new_since_retrain"][()],
                retrains=h5["retrains"][()], frozen=h5["frozen"][()].astype(bool),
                logs=json.loads(h5["logs"][()]), store=store, row_ids=np.concatenate(ids),
                row_image=h5["row_image"][()], row_key=h5["row_key"][()],
                caches=[flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
                alphas=[alphas[a:b] for a, b in zip(alpha_bounds[:-1], alpha_bounds[1:], strict=True)],
                models=_read_models(h5, len(sizes)),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ArtifactError(f"{path}: not a complete SVM checkpoint ({exc}); pass --overwrite to start the "
                                f"SVM training over") from None


def _read_models(h5, n_classes: int) -> list[list[tuple[int, np.ndarray, float]]]:
    """Each class's retrain models; none for a checkpoint written before they were kept (its
    classes' candidates then start at the retrains after it)."""
    if "candidates" not in h5:
        return [[] for _ in range(n_classes)]
    return Candidates.from_group(h5["candidates"]).to_models(n_classes)


def _create_rows(group, n_rows: int, nnz: int, dim: int) -> None:
    group.create_dataset("indptr", data=np.zeros(n_rows + 1, np.int64))
    group.create_dataset("indices", shape=(nnz,), dtype=index_dtype(dim))
    group.create_dataset("data", shape=(nnz,), dtype=np.float16)


def _write_rows(group, rows: CompactRows) -> None:
    for name in ("indptr", "indices", "data"):
        group.create_dataset(name, data=getattr(rows, name))


def _read_rows(group, dim: int) -> CompactRows:
    return CompactRows(group["indptr"][()], group["indices"][()], group["data"][()], dim)


def _slice_rows(rows: CompactRows, a: int, b: int) -> CompactRows:
    lo, hi = int(rows.indptr[a]), int(rows.indptr[b])
    return CompactRows(rows.indptr[a : b + 1] - lo, rows.indices[lo:hi].copy(), rows.data[lo:hi].copy(), rows.dim)
