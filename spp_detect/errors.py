"""Exceptions that reach the user as a one-line message and a non-zero exit.

Library code raises these; the CLI turns them into ``Error: ...`` without a traceback.
Each message names the file, the field and the offending value where there is one.
"""

from __future__ import annotations

from pathlib import Path


class SppError(Exception):
    """Base class for every error the user can fix (bad input, stale cache, bad option)."""


class DataError(SppError):
    """Bad dataset input: unreadable image, malformed annotation, inconsistent split."""

    def __init__(self, path: str | Path | None, message: str, field: str | None = None, value=None):
        self.path = None if path is None else str(path)
        self.message = message
        self.field = field
        self.value = value
        parts = []
        if self.path:
            parts.append(self.path)
        if field is not None:
            parts.append(f"field '{field}'")
        if value is not None:
            parts.append(f"value {value!r}")
        where = ": ".join([", ".join(parts)]) if parts else ""
        super().__init__(f"{where}: {message}" if where else message)

    def __reduce__(self):
        # rebuilt from its parts when it crosses a process boundary (a worker's bad image)
        return type(self), (self.path, self.message, self.field, self.value)


class ConfigError(SppError):
    """Unknown key, wrong type or invalid value in a pipeline file or a command-line override."""


class ArtifactError(SppError):
    """A stage's file is missing, incomplete, of another format version, or made from other inputs."""


class OutputExistsError(SppError):
    """An output exists and would be overwritten; the user must pass --overwrite or remove it."""
