"""Stamps: what an artifact was made from, written into it and compared when it is read.

Every HDF5 artifact carries ``format``, ``format_version`` and ``stamp`` (a JSON dict of the
settings and input hashes that made it). :func:`stamp_differences` is the one comparison: it
names the dotted key that differs, so a refusal says ``extract.scales`` rather than "stale".
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ArtifactError


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
    differences = stamp_differences(stamp, expect or {})
    if differences:
        raise ArtifactError(f"{path}: {describe_difference(*differences[0])}{tail}")
    return stamp


def describe_difference(key: str, found, wanted) -> str:
    """One line for a :func:`stamp_differences` entry (``made with k=v, but this run has k=w``)."""
    if found is None:
        return f"stamp has no '{key}'"
    return f"made with {key}={found!r}, but this run has {key}={wanted!r}"


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


def stamp_differences(found: dict, want: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """``(dotted key, found value, wanted value)`` for every key of ``want`` that ``found``
    lacks or holds differently, recursing into dicts so a message names ``params.min_size``
    rather than the whole parameter set."""
    out = []
    for key, value in want.items():
        name = f"{prefix}{key}"
        if key not in found:
            out.append((name, None, value))
            continue
        got = found[key]
        if isinstance(value, dict) and isinstance(got, dict):
            out.extend(stamp_differences(got, value, name + "."))
        elif json.loads(json.dumps(got)) != json.loads(json.dumps(value)):
            out.append((name, got, value))
    return out


def first_difference(found: dict, want: dict) -> tuple[str, object, object] | None:
    """The first ``(dotted key, found value, wanted value)`` where two stamps disagree, a key
    that only one of them has included (its missing side is None); None when they agree."""
    diffs = stamp_differences(found, want) or [(k, f, w) for k, w, f in stamp_differences(want, found)]
    return diffs[0] if diffs else None
