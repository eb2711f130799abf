"""Writing outputs safely: atomic files, all-or-nothing groups of files, no silent overwrites.

The rule every stage follows: a file that a later stage trusts appears only when it is
complete. Partial work goes to a temporary name (or to parts, :mod:`.parts`) and is renamed at
the end, so Ctrl-C or ``kill -9`` never leaves a file that reads as complete. What an artifact
was made from is its stamp (:mod:`.stamps`).
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


def check_writable(folder: str | Path) -> None:
    """Refuse at once, naming the folder, when a stage could not write its outputs into
    ``folder`` (read-only, not ours): before hours of work, not after."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temp_path_for(folder / "write-test")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ArtifactError(f"{folder}: cannot write here ({exc.strerror or exc}); "
                            "make it writable or choose another run folder") from None


class StagedOutputs:
    """The outputs of one stage, written all-or-nothing (see :func:`staged_outputs`)."""

    def __init__(self, staging: Path, folder: Path):
        self.staging, self.folder = staging, folder
        self._moves: list[tuple[Path, Path]] = []

    def path(self, final: str | Path) -> Path:
        """Where to write what becomes ``final`` (a file, or a folder of files) on success.
        Files go into place in the order their paths were asked for: ask for a stamp last."""
        final = Path(final)
        tmp = self.staging / f"{len(self._moves)}-{final.name}"
        self._moves.append((tmp, final))
        return tmp

    def commit(self) -> None:
        for tmp, final in self._moves:
            if tmp.is_dir():
                final.mkdir(parents=True, exist_ok=True)
                for f in sorted(tmp.iterdir()):
                    os.replace(f, final / f.name)
            elif tmp.exists():
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)


@contextlib.contextmanager
def staged_outputs(folder: str | Path) -> Iterator[StagedOutputs]:
    """Write a stage's several outputs under ``folder`` all-or-nothing.

    Everything is written into a hidden staging folder inside ``folder`` (same filesystem) and
    renamed into place only once all of it is written; an error while writing (a full disk, a
    refusal) leaves the old outputs as they were and removes the staging folder. A folder that
    cannot be written is an :class:`ArtifactError` naming it, before anything is touched.
    """
    import shutil
    import tempfile

    folder = Path(folder)
    check_writable(folder)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    try:
        outputs = StagedOutputs(staging, folder)
        yield outputs
        outputs.commit()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
