"""One writer per output: an OS lock beside the file a stage writes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import ArtifactError


@contextlib.contextmanager
def output_lock(output: str | Path, rank: int = 0) -> Iterator[None]:
    """Hold an exclusive lock on writing ``output`` for the duration, or refuse at once.

    Two ``propose`` (or ``extract``...) runs on one run folder and split would both compute
    everything and remove each other's partial files; the second one is refused instead, with
    the process that holds the lock named. The lock is an OS lock (``flock``) on
    ``.<name>.lock`` beside the output, released when the process ends, however it ends. Under
    torchrun each rank locks its own share (``rank``).
    """
    import fcntl
    import sys
    import time

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    lock = output.with_name(f".{output.name}.r{rank}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise ArtifactError(f"{output} is being written by {holder}; wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} ('{' '.join(sys.argv)[:200]}', since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')})".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
