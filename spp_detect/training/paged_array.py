"""Arrays in memory maps: they grow without copying, give back what they no longer use, and
can live in a file the system pages in and out (the SVM miner's store of cached negatives,
:mod:`.sparse_rows`, is gigabytes at VOC size)."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np

GROWTH = 1.25  # a map grows to at least this times its size (amortised appends; untouched room costs nothing)


class PagedArray:
    """A 1-d array in its own memory map: in memory (anonymous) or, with ``directory``, in a file
    there that the system pages in and out (the file is unlinked at once: it goes away with the
    process, even a killed one). It grows without a copy where the system can remap pages (Linux
    mremap; elsewhere it is copied once, as a numpy array would be), and :meth:`trim` gives back
    what lies past a used prefix. Pages never written take no memory. ``array`` is the current
    view (replaced when the map changes: keep no other view across :meth:`reserve` or :meth:`trim`)."""

    def __init__(self, dtype, directory: str | Path | None = None):
        self.dtype = np.dtype(dtype)
        self.directory = directory
        self._map: mmap.mmap | None = None
        self.array = np.zeros(0, self.dtype)

    def reserve(self, n: int) -> None:
        """Room for at least ``n`` items (geometric growth, :data:`GROWTH`)."""
        if n > len(self.array):
            self._remap(_page_ceil(max(n, int(GROWTH * len(self.array))) * self.dtype.itemsize))

    def trim(self, used: int) -> None:
        """Give back what lies past the first ``used`` items (their content is lost)."""
        size = _page_ceil(used * self.dtype.itemsize)
        if self._map is not None and size < len(self._map):
            self._remap(size, copy_if_needed=False)

    def resident_bound(self, used: int) -> int:
        """Bytes of memory the array can hold when only its first ``used`` items were written
        since the last :meth:`trim` (whole pages)."""
        return _page_ceil(used * self.dtype.itemsize)

    def _remap(self, size: int, copy_if_needed: bool = True) -> None:
        old, keep = self._map, min(len(self.array) * self.dtype.itemsize, size)
        self.array = np.zeros(0, self.dtype)  # a map cannot be resized while a view of it exists
        if old is None:
            self._map = self._new_map(size)
        else:
            try:
                old.resize(size)
            except (OSError, SystemError, ValueError, BufferError):  # no remapping here
                if copy_if_needed:
                    self._map = self._new_map(size)
                    np.frombuffer(self._map, np.uint8)[:keep] = np.frombuffer(old, np.uint8)[:keep]
                    old.close()
        self.array = np.frombuffer(self._map, self.dtype)

    def _new_map(self, size: int) -> mmap.mmap:
        if self.directory is None:
            # private: a shared anonymous map is a fixed-size memory file, and pages past its
            # first size fault (SIGBUS) after a remap; a private one grows
            flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
            return mmap.mmap(-1, size, flags=flags) if flags else mmap.mmap(-1, size)
        import os
        import tempfile

        fd, name = tempfile.mkstemp(prefix=".svm-negatives-", dir=self.directory)
        try:
            os.unlink(name)  # (Windows cannot unlink an open file: it stays until the map is closed)
        except OSError:
            pass
        try:
            os.ftruncate(fd, size)
            return mmap.mmap(fd, size)
        finally:
            os.close(fd)  # the map keeps its own handle


def _page_ceil(nbytes: int) -> int:
    return -(-max(nbytes, 1) // mmap.PAGESIZE) * mmap.PAGESIZE
