"""Resumable work: the parts folder beside an output that a long stage fills as it goes.

``RUN/<stage>/<split>.parts/`` holds one file per batch of finished images. A part is written
under a temporary name (``.<name>.tmp-...``) and renamed when complete, so after Ctrl-C or
``kill -9`` the folder holds only whole parts plus, at worst, a temporary that
:meth:`PartsFolder.prepare` removes. A rerun reads the whole parts and computes the rest.
What a part holds is the stage's business (proposals: ``.npz``; features: HDF5); each stage
checks that its parts were made with its stamp before trusting them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from .files import atomic_path


def parts_dir(output: str | Path) -> Path:
    """The parts folder of ``output``: ``<stem>.parts`` beside it."""
    output = Path(output)
    return output.with_name(output.stem + ".parts")


class PartsFolder:
    """The parts folder of one output (see the module docstring)."""

    def __init__(self, output: str | Path):
        self.folder = parts_dir(output)

    def prepare(self, remove_temporaries: bool = True) -> None:
        """Create the folder; drop temporaries of a writer killed mid-write (never complete).

        Under torchrun only one rank removes them, before the others start writing their own
        (``remove_temporaries=False`` on the rest)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if remove_temporaries:
            for stale in self.folder.glob(".*"):
                if stale.is_file():
                    stale.unlink(missing_ok=True)

    def finished(self, pattern: str = "*") -> list[Path]:
        """Complete parts matching ``pattern``, in name order (temporaries never match)."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob(pattern) if not p.name.startswith(".") and p.is_file())

    def unique_name(self, prefix: str, suffix: str) -> str:
        """A part name no other writer (process or rank) picks, ordered by creation time."""
        return f"{prefix}{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:6]}{suffix}"

    @contextlib.contextmanager
    def write(self, name: str) -> Iterator[Path]:
        """Yield a temporary path for part ``name``; renamed into place only when the block ends
        without an error."""
        with atomic_path(self.folder / name) as tmp:
            yield tmp

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
