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

from ..errors import OutputExistsError


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










