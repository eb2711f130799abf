"""Feature rows kept compactly: post-ReLU vectors as CSR with float16 values.

The SVM miner holds thousands of feature vectors per class (positives and cached hard
negatives). Pooled conv5 vectors and fc7 are post-ReLU, so most entries are zero (38% of the
SPP vector of ImageNet SqueezeNet on VOC windows is non-zero), and liblinear's time follows the
non-zeros. So rows are stored as CSR: float16 values (the conv5 cache is float16 already) and
uint16 column indices when the dimension allows, 4 bytes per non-zero instead of 4 per entry.

:class:`SparseRows` is a store of such rows shared by all classes: a window that is a hard
negative of several classes is stored once and reference-counted; a row nobody holds any more
is dropped, and the values are compacted in place once dropped ones reach a quarter of the live
ones (the values live in memory maps, in memory or in a file: :mod:`.paged_array`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .paged_array import GROWTH, PagedArray

BLOCK_ROWS = 2048  # rows scored at a time: bounds the temporary float64 matrix
# the store's memory: its values live in memory maps that grow without a copy (PagedArray), and
# it compacts once dropped rows' values reach a quarter of the live ones, giving the freed pages
# back: at most 1 + 1/4 of the live values are held
DEAD_FRACTION = 0.25


@dataclass(frozen=True)
class CompactRows:
    """Rows in CSR form: ``indptr`` int64 (n + 1,), ``indices`` (nnz,), ``data`` float16 (nnz,).

    What is handed to a fit (also across processes: it pickles at 4 bytes per non-zero).
    """

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    dim: int

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    @staticmethod
    def from_dense(x: np.ndarray) -> CompactRows:
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"rows must be a 2-d array, got shape {x.shape}")
        rows, cols = np.nonzero(x)
        indptr = np.zeros(len(x) + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=len(x)), out=indptr[1:])
        return CompactRows(indptr, cols.astype(index_dtype(x.shape[1])), x[rows, cols].astype(np.float16), x.shape[1])

    @staticmethod
    def concat(parts: list[CompactRows], dim: int) -> CompactRows:
        if not parts:
            return CompactRows(np.zeros(1, np.int64), np.zeros(0, index_dtype(dim)), np.zeros(0, np.float16), dim)
        offsets = np.cumsum([0] + [p.nnz for p in parts[:-1]])
        indptr = np.concatenate([[0]] + [p.indptr[1:] + o for p, o in zip(parts, offsets, strict=True)])
        return CompactRows(indptr.astype(np.int64), np.concatenate([p.indices for p in parts]),
                           np.concatenate([p.data for p in parts]), dim)

    @staticmethod
    def stack_csr(parts: list[CompactRows], dim: int):
        """The rows of ``parts``, one after another, as one float64 scipy CSR matrix: each value
        is converted once, straight into place (no intermediate concatenation)."""
        import scipy.sparse as sp

        nnz = sum(p.nnz for p in parts)
        data = np.empty(nnz, np.float64)
        indices = np.empty(nnz, np.int32)
        indptr = np.zeros(sum(len(p) for p in parts) + 1, np.int64)
        at = row = 0
        for p in parts:
            data[at : at + p.nnz] = p.data
            indices[at : at + p.nnz] = p.indices
            indptr[row + 1 : row + len(p) + 1] = p.indptr[1:] + at
            at, row = at + p.nnz, row + len(p)
        return sp.csr_matrix((data, indices, indptr), shape=(row, dim))

    def to_csr(self):
        """A scipy CSR matrix of float64 (what liblinear takes without another copy)."""
        return CompactRows.stack_csr([self], self.dim)

    def dense(self) -> np.ndarray:
        return self.to_csr().toarray().astype(np.float32)


def index_dtype(dim: int):
    return np.uint16 if dim <= np.iinfo(np.uint16).max + 1 else np.int32


class SparseRows:
    """A growing, reference-counted store of :class:`CompactRows` rows, addressed by stable ids.

    ``add`` stores rows and returns their ids (each held once); ``retain`` and ``release`` count
    holders; a row released by its last holder is gone. Ids stay valid across compactions.
    """

    def __init__(self, dim: int, directory: str | Path | None = None):
        """``directory``: keep the values in a file there, paged by the system, instead of in
        memory (see :class:`.paged_array.PagedArray`)."""
        self.dim = dim
        self._indptr = np.zeros(1, np.int64)  # row r's values: [_indptr[r], _indptr[r + 1])
        # the values and their column indices: nearly all of the store's memory
        self._index_pages = PagedArray(index_dtype(dim), directory)
        self._value_pages = PagedArray(np.float16, directory)
        self._nnz = 0  # used part of _indices / _data (the rest is reserved room or given back)
        self._rows = 0
        self._row_id = np.zeros(0, np.int64)  # row -> id
        self._refs = np.zeros(0, np.int32)  # per row
        self._pos = np.zeros(0, np.int64)  # id -> row, -1 once dropped
        self._next_id = 0
        self._dead_nnz = 0

    # ------------------------------------------------------------------ size
    @property
    def live_rows(self) -> int:
        return int((self._refs[: self._rows] > 0).sum())

    @property
    def _indices(self) -> np.ndarray:
        return self._index_pages.array

    @property
    def _data(self) -> np.ndarray:
        return self._value_pages.array

    @property
    def nbytes(self) -> int:
        """Memory the store's arrays can hold: the pages of the values stored since the last
        compaction gave the rest back (dropped ones included), and the row arrays (allocated)."""
        pages = self._index_pages.resident_bound(self._nnz) + self._value_pages.resident_bound(self._nnz)
        return pages + sum(a.nbytes for a in (self._indptr, self._row_id, self._refs, self._pos))

    # ------------------------------------------------------------------ rows
    def add(self, x: np.ndarray) -> np.ndarray:
        """Store the rows of dense ``x`` (n, dim); returns their ids (int64), each held once."""
        if x.shape[1] != self.dim:
            raise ValueError(f"rows have {x.shape[1]} columns, the store {self.dim}")
        return self.add_rows(CompactRows.from_dense(x))

    def add_rows(self, rows: CompactRows) -> np.ndarray:
        """Store compact ``rows``; returns their ids (int64), each held once."""
        if rows.dim != self.dim:
            raise ValueError(f"rows have {rows.dim} columns, the store {self.dim}")
        n, nnz = len(rows), rows.nnz
        self._reserve(self._nnz + nnz, self._rows + n)
        self._indices[self._nnz : self._nnz + nnz] = rows.indices
        self._data[self._nnz : self._nnz + nnz] = rows.data
        self._indptr[self._rows + 1 : self._rows + n + 1] = rows.indptr[1:] + self._nnz
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._row_id[self._rows : self._rows + n] = ids
        self._refs[self._rows : self._rows + n] = 1
        if len(self._pos) < self._next_id + n:
            self._pos = _grown(self._pos, self._next_id + n, fill=-1)
        self._pos[ids] = np.arange(self._rows, self._rows + n)
        self._next_id += n
        self._rows += n
        self._nnz += nnz
        return ids

    def retain(self, ids: np.ndarray) -> None:
        np.add.at(self._refs, self._row(ids), 1)

    def release(self, ids: np.ndarray) -> np.ndarray:
        """Drop one hold on each id; returns the ids whose rows are now gone."""
        rows = self._row(ids)
        np.add.at(self._refs, rows, -1)
        dead = np.unique(rows[self._refs[rows] == 0])
        self._dead_nnz += int((self._indptr[dead + 1] - self._indptr[dead]).sum())
        gone = self._row_id[dead]
        self._pos[gone] = -1
        if self._dead_nnz > max((self._nnz - self._dead_nnz) * DEAD_FRACTION, 1 << 20):
            self._compact()
        return gone

    def take(self, ids: np.ndarray) -> CompactRows:
        """The rows of ``ids``, in that order."""
        rows = self._row(ids)
        starts, ends = self._indptr[rows], self._indptr[rows + 1]
        indptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(ends - starts, out=indptr[1:])
        indices = np.empty(indptr[-1], self._indices.dtype)
        data = np.empty(indptr[-1], np.float16)
        # slices, a run of rows stored one after another at a time (a cache's rows mostly come in
        # runs: the windows of one image): a memcpy each, no index array of 8 bytes per value
        for a, b in _runs(starts, ends):
            lo, hi, at = int(starts[a]), int(ends[b - 1]), int(indptr[a])
            indices[at : at + hi - lo] = self._indices[lo:hi]
            data[at : at + hi - lo] = self._data[lo:hi]
        return CompactRows(indptr, indices, data, self.dim)

    def row_nnz(self, ids: np.ndarray) -> np.ndarray:
        """Non-zeros of each row of ``ids`` (int64), without gathering the rows."""
        rows = self._row(ids)
        return self._indptr[rows + 1] - self._indptr[rows]

    def scores(self, ids: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
        """``x @ w + b`` (float64) for the rows of ``ids``, a block at a time."""
        out = np.empty(len(ids), np.float64)
        for s in range(0, len(ids), BLOCK_ROWS):
            out[s : s + BLOCK_ROWS] = self.take(ids[s : s + BLOCK_ROWS]).to_csr() @ np.asarray(w, np.float64) + b
        return out

    # ------------------------------------------------------------------ internals
    def _row(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        rows = self._pos[ids] if len(ids) else np.zeros(0, np.int64)
        if len(rows) and rows.min() < 0:
            raise KeyError(f"row ids no longer stored: {ids[rows < 0][:5].tolist()}")
        return rows

    def _reserve(self, nnz: int, rows: int) -> None:
        self._index_pages.reserve(nnz)
        self._value_pages.reserve(nnz)
        if rows + 1 > len(self._indptr):
            self._indptr = _grown(self._indptr, rows + 1)
        if rows > len(self._refs):
            self._row_id = _grown(self._row_id, rows)
            self._refs = _grown(self._refs, rows)

    def _compact(self) -> None:
        """Move the live rows' values down over the dropped ones, in place (no second copy of the
        store), a run of consecutive live rows at a time; ids keep their rows."""
        live = np.nonzero(self._refs[: self._rows] > 0)[0]
        starts, ends = self._indptr[live], self._indptr[live + 1]
        at = 0
        for a, b in _runs(starts, ends):
            lo, hi = int(starts[a]), int(ends[b - 1])
            if lo != at:  # destination below source: slice assignment copies overlapping ranges safely
                self._indices[at : at + hi - lo] = self._indices[lo:hi]
                self._data[at : at + hi - lo] = self._data[lo:hi]
            at += hi - lo
        self._indptr[0] = 0
        np.cumsum(ends - starts, out=self._indptr[1 : len(live) + 1])
        ids = self._row_id[live]
        self._refs[: len(live)] = self._refs[live]
        self._row_id[: len(live)] = ids
        self._nnz, self._rows, self._dead_nnz = at, len(live), 0
        self._pos[ids] = np.arange(len(live))
        # the pages past the live values go back to the system: the store's memory follows its
        # live rows, not the most it ever held
        self._index_pages.trim(at)
        self._value_pages.trim(at)


def _runs(starts: np.ndarray, ends: np.ndarray) -> list[tuple[int, int]]:
    """``(a, b)`` spans of rows ``a..b-1`` whose values lie one after another in storage (row k
    holds ``[starts[k], ends[k])``)."""
    if not len(starts):
        return []
    breaks = (np.nonzero(starts[1:] != ends[:-1])[0] + 1).tolist()
    return list(zip([0, *breaks], [*breaks, len(starts)], strict=True))


def _grown(a: np.ndarray, need: int, fill=0) -> np.ndarray:
    """``a`` copied into an array of at least ``need`` entries (geometric growth: amortised appends)."""
    out = np.full(max(need, int(GROWTH * len(a)), 16), fill, a.dtype)
    out[: len(a)] = a
    return out
