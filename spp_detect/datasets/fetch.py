"""Download, verify and unpack public datasets (VOC2007) into the data root, with urllib only.

``fetch_dataset("voc2007", data_root)``:

1. does nothing when ``<data-root>/VOCdevkit/VOC2007`` already holds every file in the spec's
   ``required`` list;
2. downloads each archive of the spec into ``<data-root>/downloads/`` through a ``.part`` file,
   resuming a broken download with an HTTP ``Range`` request (and starting over when the
   server ignores it), retrying a dropped connection from where it stopped;
3. checks each archive's MD5; a mismatch deletes the file and names it with both checksums;
4. unpacks every archive into a staging folder beside the downloads, refusing members that
   would land outside it (absolute paths, ``..``, links pointing out, device files), then
   moves the dataset folder into place in one rename, so a half-unpacked dataset is never
   found at the target;
5. deletes the archives unless ``keep_archives``.

The archive list and checksums live in :data:`DATASETS`, a table of :class:`FetchSpec`; tests
pass their own spec.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SppError

log = logging.getLogger(__name__)

VOC2007_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/"
DOWNLOADS = "downloads"  # folder under the data root holding archives while they are needed
PART_SUFFIX = ".part"
CHUNK_BYTES = 1 << 16
HASH_CHUNK_BYTES = 1 << 20
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_RETRIES = 3


class FetchError(SppError):
    """A download or unpack failed: HTTP error, unreachable server, bad checksum, unsafe archive."""


@dataclass(frozen=True)
class Archive:
    """One file to download: its name under the base URL and its MD5 (lower-case hex)."""

    filename: str
    md5: str


@dataclass(frozen=True)
class FetchSpec:
    """What to fetch and how to tell it is present.

    ``target``: path parts under the data root where the dataset lives, and also where it lies
    inside the archives (VOC's tars hold ``VOCdevkit/VOC2007/...``). ``required``: paths under
    the target that a complete copy has.
    """

    name: str
    base_url: str
    archives: tuple[Archive, ...]
    target: tuple[str, ...]
    required: tuple[str, ...] = field(default_factory=tuple)


DATASETS: dict[str, FetchSpec] = {
    "voc2007": FetchSpec(
        name="voc2007",
        base_url=VOC2007_URL,
        archives=(
            Archive("VOCtrainval_06-Nov-2007.tar", "c52e279531787c972589f7e41ab4ae64"),
            Archive("VOCtest_06-Nov-2007.tar", "b6e924de25625d8de591ea690078ad9f"),
        ),
        target=("VOCdevkit", "VOC2007"),
        required=(
            "Annotations",
            "JPEGImages",
            "ImageSets/Main/trainval.txt",
            "ImageSets/Main/test.txt",
        ),
    ),
}


@dataclass
class FetchResult:
    target: Path
    already_present: bool = False
    archives: list[Path] = field(default_factory=list)


class _Interrupted(Exception):
    """A transfer stopped early; what arrived stays in the .part file for the next try."""


def md5_file(path: str | Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def archive_url(base_url: str, filename: str) -> str:
    return base_url.rstrip("/") + "/" + urllib.parse.quote(filename)


def _content_range_start(value: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes START-END/TOTAL``, or None if unparseable."""
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[len("bytes "):].split("-", 1)[0])
    except ValueError:
        return None


def _download_once(url: str, part: Path, timeout: float, show_progress: bool) -> None:
    """Fetch ``url`` into ``part``, continuing from its current size when the server allows."""
    from .. import __version__
    from ..progress import progress

    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"spp-detect/{__version__}"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:
            # Nothing past what we hold: the .part is already whole (the checksum will tell).
            return
        raise FetchError(f"{url}: HTTP error {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Interrupted(f"cannot reach the server ({reason})") from None
    with response:
        status = getattr(response, "status", 200)
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if start and status == 206:
            if _content_range_start(response.headers.get("Content-Range")) != start:
                part.unlink()
                raise _Interrupted("the server answered a different byte range; starting over")
            mode, have = "ab", start
            log.info("resuming %s at byte %d", part.name, start)
        else:
            if start:
                log.warning("%s: the server ignored the Range request; downloading from the start", url)
            mode, have = "wb", 0
        total = have + length if length is not None else None
        desc = part.name[: -len(PART_SUFFIX)]
        with open(part, mode) as f, progress(
            total=total, initial=have, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
            disable=not show_progress,
        ) as bar:
            try:
                while chunk := response.read(CHUNK_BYTES):
                    f.write(chunk)
                    have += len(chunk)
                    bar.update(len(chunk))
            except (OSError, EOFError, http.client.HTTPException) as exc:  # dropped, timed out, IncompleteRead
                raise _Interrupted(f"connection lost after {have} bytes ({exc!r})") from None
        if total is not None and have < total:
            raise _Interrupted(f"connection closed after {have} of {total} bytes")


def download(
    url: str,
    dest: str | Path,
    md5: str | None = None,
    retries: int = DEFAULT_RETRIES,
    timeout: float = DEFAULT_TIMEOUT_S,
    retry_wait: float = 2.0,
    show_progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming what a ``.part`` holds.

    The file appears at ``dest`` only when complete and, when ``md5`` is given, verified. A bad
    checksum deletes the download and raises :class:`FetchError` naming both checksums.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + PART_SUFFIX)
    for attempt in range(retries + 1):
        try:
            _download_once(url, part, timeout, show_progress)
            break
        except _Interrupted as exc:
            if attempt == retries:
                held = part.stat().st_size if part.exists() else 0
                raise FetchError(
                    f"{url}: download failed: {exc}; {held} bytes kept in {part}, "
                    "run the command again to resume (or pass --mirror URL)"
                ) from None
            wait = retry_wait * 2**attempt
            log.warning("%s: %s; retrying in %.0f s (%d of %d)", dest.name, exc, wait, attempt + 1, retries)
            time.sleep(wait)
    if not part.exists():
        raise FetchError(f"{url}: the server sent nothing")
    if md5:
        actual = md5_file(part)
        if actual != md5.lower():
            part.unlink()
            raise FetchError(
                f"{dest.name}: checksum mismatch: expected MD5 {md5.lower()}, got {actual} "
                f"(downloaded from {url}); the bad file was deleted"
            )
    os.replace(part, dest)
    return dest


def _check_member(archive: Path, member: tarfile.TarInfo, dest: Path) -> None:
    """Refuse a tar member that would write outside ``dest`` or is not a plain file/folder/link."""

    def refuse(why: str):
        raise FetchError(f"{archive}: member {member.name!r} {why}; refusing to unpack (corrupt or malicious archive)")

    name = member.name
    if os.path.isabs(name) or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        refuse("has an absolute path")
    target = (dest / name).resolve()
    if not target.is_relative_to(dest):
        refuse(f"would be written outside {dest}")
    if member.issym():
        link = (target.parent / member.linkname).resolve()
        if os.path.isabs(member.linkname) or not link.is_relative_to(dest):
            refuse(f"is a link pointing outside {dest} ({member.linkname!r})")
    elif member.islnk():
        if not (dest / member.linkname).resolve().is_relative_to(dest):
            refuse(f"is a hard link pointing outside {dest} ({member.linkname!r})")
    elif not (member.isfile() or member.isdir()):
        refuse("is a device, FIFO or other special file")


def safe_extract(archive: str | Path, dest: str | Path, show_progress: bool = True) -> None:
    """Unpack a tar archive into ``dest``, checking every member before writing it."""
    from ..progress import progress

    archive = Path(archive)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    try:
        tar = tarfile.open(archive)
    except (tarfile.TarError, OSError) as exc:
        raise FetchError(f"{archive}: cannot be read as a tar archive ({exc})") from None
    with tar, progress(total=archive.stat().st_size, desc=f"unpack {archive.name}", unit="B",
                       unit_scale=True, unit_divisor=1024, disable=not show_progress) as bar:
        try:
            for member in tar:
                _check_member(archive, member, dest)
                # tarfile's "data" filter also strips modes and owners that a dataset has no need of.
                tar.extract(member, dest, filter="data")
                bar.update(max(0, tar.fileobj.tell() - bar.n))
        except (tarfile.TarError, EOFError) as exc:
            raise FetchError(f"{archive}: corrupt tar archive ({exc})") from None


def missing_files(spec: FetchSpec, root: Path) -> list[str]:
    return [rel for rel in spec.required if not (root / rel).exists()]


def fetch_dataset(
    spec: FetchSpec | str,
    data_root: str | Path,
    mirror: str | None = None,
    keep_archives: bool = False,
    overwrite: bool = False,
    retries: int = DEFAULT_RETRIES,
    timeout: float = DEFAULT_TIMEOUT_S,
    retry_wait: float = 2.0,
    show_progress: bool = True,
) -> FetchResult:
    """Make ``spec`` (a :class:`FetchSpec` or a name in :data:`DATASETS`) present under
    ``data_root``; see the module docstring. ``mirror`` replaces the spec's base URL."""
    if isinstance(spec, str):
        if spec.lower() not in DATASETS:
            raise FetchError(f"unknown dataset {spec!r}; choose one of {', '.join(DATASETS)}")
        spec = DATASETS[spec.lower()]
    data_root = Path(data_root)
    target = data_root.joinpath(*spec.target)
    if target.exists():
        missing = missing_files(spec, target)
        if not missing and not overwrite:
            return FetchResult(target=target, already_present=True)
        if missing and not overwrite:
            raise FetchError(
                f"{target} exists but is incomplete (missing {', '.join(missing)}); "
                "remove it or pass --overwrite to fetch it again"
            )

    downloads = data_root / DOWNLOADS
    base = mirror or spec.base_url
    paths = []
    for archive in spec.archives:
        dest = downloads / archive.filename
        if dest.is_file():
            actual = md5_file(dest)
            if actual == archive.md5.lower():
                log.info("using the verified download %s", dest)
                paths.append(dest)
                continue
            log.warning("%s: checksum %s, expected %s; downloading it again", dest, actual, archive.md5)
            dest.unlink()
        paths.append(download(archive_url(base, archive.filename), dest, archive.md5, retries=retries,
                              timeout=timeout, retry_wait=retry_wait, show_progress=show_progress))

    # Unpack next to the downloads and move the result in one rename: the target is either
    # absent or complete, whatever happens in between.
    staging = downloads / f".{spec.name}.unpack"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        for path in paths:
            safe_extract(path, staging, show_progress=show_progress)
        unpacked = staging.joinpath(*spec.target)
        missing = missing_files(spec, unpacked)
        if missing:
            raise FetchError(
                f"the archives of {spec.name} unpacked without {', '.join(missing)} under "
                f"{'/'.join(spec.target)}; they are not the expected archives"
            )
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(unpacked, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    if not keep_archives:
        for path in paths:
            path.unlink()
        if downloads.is_dir() and not any(downloads.iterdir()):
            downloads.rmdir()
    return FetchResult(target=target, archives=paths if keep_archives else [])
