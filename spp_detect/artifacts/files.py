"""Writing outputs safely: atomic files, refusing silent overwrites, stamped HDF5 artifacts.

The rule every stage follows: a file that a later stage trusts appears only when it is
complete. Partial work goes to a temporary name (or to chunk files that are each renamed into
place when done) and is renamed at the end, so Ctrl-C or ``kill -9`` never leaves a file that
reads as complete. Every HDF5 artifact carries ``format``, ``format_version`` and a ``stamp``
(a JSON dict of the config and input hashes that made it); readers check all three and name
the file and the key that differs.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..errors import ArtifactError, OutputExistsError


def temp_path_for(path: Path) -> Path:
    """A unique temporary name beside ``path`` (same filesystem, so rename is atomic)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success it is renamed to ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path, what: str):
    """Parse a JSON file; a missing or malformed file is a :class:`DataError` naming it."""
    from ..errors import DataError

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(path, f"{what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(path, f"malformed JSON ({exc})") from None


def check_overwrite(path: str | Path, overwrite: bool) -> None:
    """Refuse to replace an existing output unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")


# ---------------------------------------------------------------------------------------------
# HDF5 stamps


def write_stamp(h5, kind: str, version: int, stamp: dict) -> None:
    """Stamp an open h5py File with its format, version and the inputs that made it."""
    h5.attrs["format"] = kind
    h5.attrs["format_version"] = int(version)
    h5.attrs["stamp"] = json.dumps(stamp, sort_keys=True)


def read_stamp(h5) -> dict:
    raw = h5.attrs.get("stamp")
    return json.loads(raw) if raw is not None else {}


def check_stamp(path: str | Path, h5, kind: str, version: int, expect: dict | None = None, remedy: str = "") -> dict:
    """Check an open artifact's format, version and the ``expect``-ed stamp values.

    Raises :class:`ArtifactError` naming the file and the first key that differs, with
    ``remedy`` (e.g. "remove it or pass --overwrite") appended. Returns the stamp.
    """
    path = Path(path)
    tail = f"; {remedy}" if remedy else ""
    found_kind = h5.attrs.get("format")
    if isinstance(found_kind, bytes):
        found_kind = found_kind.decode()
    if found_kind != kind:
        raise ArtifactError(f"{path}: not a {kind} file (format is {found_kind!r}){tail}")
    found_version = int(h5.attrs.get("format_version", -1))
    if found_version != version:
        raise ArtifactError(f"{path}: format version {found_version}, this spp-detect reads version {version}{tail}")
    stamp = read_stamp(h5)
    for key, value in (expect or {}).items():
        if key not in stamp:
            raise ArtifactError(f"{path}: stamp has no '{key}'{tail}")
        if _normalise(stamp[key]) != _normalise(value):
            raise ArtifactError(f"{path}: made with {key}={stamp[key]!r}, but this run has {key}={value!r}{tail}")
    return stamp


def _normalise(v):
    return json.loads(json.dumps(v))


def open_h5_checked(path: str | Path, kind: str, version: int, expect: dict | None = None, remedy: str = ""):
    """Open an artifact read-only after checking it exists and its stamp matches."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: not found; {remedy or 'run the stage that writes it first'}")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot be read as HDF5 ({exc}); remove it and rerun the stage") from None
    try:
        check_stamp(path, h5, kind, version, expect, remedy)
    except Exception:
        h5.close()
        raise
    return h5
