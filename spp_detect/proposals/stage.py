"""Proposals for a whole split: worker processes, progress, resumable partial work.

:func:`propose_images` computes any list of records (a whole split, or one rank's shard under
torchrun) and yields results as they finish; :func:`propose_split` is the stage: it skips a
split whose file is up to date, resumes an interrupted run from ``<split>.parts/``, and writes
``<split>.h5`` only once every image is done (see :mod:`.store`). :func:`run_propose` is the
same with the pipeline config turned into arguments (``spp-detect run`` calls it).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..runtime import barrier, start_world
from .proposer import Proposer, proposer_from_config
from .store import PartialRun, check_existing, dataset_stamp, write_proposals

log = logging.getLogger(__name__)

FLUSH_EVERY_IMAGES = 64  # a part file per this many finished images...
FLUSH_EVERY_SECONDS = 30.0  # ...or this often, so an interrupt loses at most ~30 s of work
MAX_LOGGED_WARNINGS = 5  # per kind; the rest are counted in one summary line


@dataclass(frozen=True)
class ImageResult:
    """One image's outcome. ``boxes``: float32 (N, 4) internal convention, rank order; None
    when the image could not be read (``error`` says why)."""

    image_id: str
    boxes: np.ndarray | None
    seconds: float
    fallback: bool = False
    error: str | None = None


def _init_worker() -> None:
    import signal

    import cv2

    # one OpenCV thread per process: the parallelism is across images
    cv2.setNumThreads(1)
    # Ctrl-C goes to the whole process group; the parent handles it (flushes finished images,
    # stops the pool), so workers must not die mid-result with tracebacks of their own
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _propose_one(task) -> ImageResult:
    from ..datasets.base import load_image

    image_id, path, height, width, proposer, delay = task
    start = time.perf_counter()
    try:
        image = load_image(path)
        if image.shape[:2] != (height, width):
            raise DataError(
                path, f"image is {image.shape[1]}x{image.shape[0]} pixels but its annotation says {width}x{height}", "size"
            )
        boxes, fallback = proposer.propose(image, image_id, source=path)
    except DataError as exc:
        # a bad image is a result like any other (its text names the file): the caller stops
        # or, with skip_bad, counts it and goes on
        return ImageResult(image_id, None, time.perf_counter() - start, error=str(exc))
    seconds = time.perf_counter() - start
    if delay:
        time.sleep(delay)
    return ImageResult(image_id, boxes, seconds, fallback)


def resolve_workers(workers: int) -> int:
    """``0`` = every core this process may use."""
    if workers > 0:
        return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def propose_images(records: Sequence, proposer: Proposer, workers: int = 0, delay: float = 0.0) -> Iterator[ImageResult]:
    """Proposals for ``records`` (ImageRecord-like: image_id, path, height, width), yielded in
    the order they finish.

    ``workers``: processes (0 = all cores); 1 computes here, without a pool. Each worker runs
    OpenCV single-threaded. ``delay``: seconds to sleep after each image (tests use it to
    interrupt a run part way). Closing the generator early stops the workers.
    """
    tasks = [(r.image_id, str(r.path), int(r.height), int(r.width), proposer, float(delay)) for r in records]
    if not tasks:
        return
    workers = min(resolve_workers(workers), len(tasks))
    if workers == 1:
        import cv2

        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            for task in tasks:
                yield _propose_one(task)
        finally:
            cv2.setNumThreads(threads)
        return
    import multiprocessing as mp

    # spawn: the parent may hold threads (progress bar, HDF5) that fork would copy mid-state
    pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker)
    try:
        yield from pool.imap_unordered(_propose_one, tasks, chunksize=1)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


@dataclass
class ProposeSummary:
    path: Path
    computed: int = 0  # images computed by this call
    reused: int = 0  # images taken from an interrupted run's parts
    skipped_bad: int = 0
    fallback: int = 0
    up_to_date: bool = False


def run_propose(cfg, run: str | Path, dataset, overwrite: bool = False, show_progress: bool = True) -> dict:
    """The stage as ``spp-detect run`` calls it: ``RUN/proposals/<split>.h5`` from the config."""
    from dataclasses import asdict

    from ..artifacts.layout import proposals_path

    summary = propose_split(
        dataset, proposals_path(run, dataset.split), proposer_from_config(cfg.propose, cfg.seed),
        workers=cfg.propose.workers, overwrite=overwrite, skip_bad=cfg.data.skip_bad, show_progress=show_progress,
    )
    out = asdict(summary)
    out["path"] = str(summary.path)
    out["skipped"] = summary.up_to_date
    return out


def propose_split(dataset, out_path: str | Path, proposer: Proposer, **kwargs) -> ProposeSummary:
    """The ``propose`` stage for one dataset split (:func:`_propose_split`), holding the lock on
    ``out_path`` for this process's share: a second run on the same file is refused at once."""
    from ..artifacts.lock import output_lock

    with output_lock(out_path, start_world()[0]):
        return _propose_split(dataset, out_path, proposer, **kwargs)


def _propose_split(
    dataset,
    out_path: str | Path,
    proposer: Proposer,
    workers: int = 0,
    overwrite: bool = False,
    skip_bad: bool = False,
    delay: float = 0.0,
    flush_every: int = FLUSH_EVERY_IMAGES,
    show_progress: bool = True,
) -> ProposeSummary:
    """The ``propose`` stage for one dataset split; returns what it did.

    An existing file with the same stamp means there is nothing to do; one made differently is
    refused unless ``overwrite``. Unreadable images stop the run with a :class:`DataError`
    (finished images stay in the parts, so a rerun resumes) or, with ``skip_bad``, are left
    out with a warning and listed in the file's ``skipped_ids``.
    """
    from ..progress import progress

    out_path = Path(out_path)
    stamp = {**dataset_stamp(dataset), "params": proposer.to_stamp()}
    summary = ProposeSummary(out_path)
    if check_existing(out_path, stamp, overwrite):
        log.info("%s is up to date (same dataset split and settings); nothing to do", out_path)
        summary.up_to_date = True
        return summary
    # under torchrun each rank takes images rank::world_size and writes its own parts; rank 0
    # assembles the file once every rank has finished
    rank, world_size = start_world()
    if world_size > 1 and rank != 0:
        barrier()  # rank 0 may be clearing the parts folder (--overwrite)
    partial = PartialRun(out_path, stamp, overwrite=overwrite and rank == 0, remove_temporaries=rank == 0)
    if world_size > 1 and rank == 0:
        barrier()
    split_ids = {r.image_id for r in dataset.records}
    summary.reused = len(partial.done & split_ids)
    todo = [r for i, r in enumerate(dataset.records) if i % world_size == rank and r.image_id not in partial.done]
    log.info(
        "proposals for %s/%s: %d images, %d already done in %s, computing %d with %d worker(s)",
        dataset.name, dataset.split, len(dataset), summary.reused, partial.folder, len(todo),
        min(resolve_workers(workers), max(1, len(todo))),
    )
    bar = progress(total=len(dataset), initial=summary.reused, desc=f"propose {dataset.split}", unit="img",
                   disable=not show_progress)
    results = propose_images(todo, proposer, workers, delay)
    try:
        for res in results:
            if res.error is not None:
                if not skip_bad:
                    raise DataError(
                        None,
                        f"{res.error} (pass --skip-bad to leave such images out; the {len(partial.results)} "
                        "finished images are kept and a rerun resumes)",
                    )
                summary.skipped_bad += 1
                if summary.skipped_bad <= MAX_LOGGED_WARNINGS:
                    log.warning("skipping image %s: %s", res.image_id, res.error)
                partial.add_skipped(res.image_id, res.error)
            else:
                if res.fallback:
                    summary.fallback += 1
                    if summary.fallback <= MAX_LOGGED_WARNINGS:
                        log.warning("image %s: no proposal survived the filters; using the whole image", res.image_id)
                partial.add(res.image_id, res.boxes, res.seconds, res.fallback)
            summary.computed += 1
            bar.update(1)
            partial.maybe_flush(flush_every, FLUSH_EVERY_SECONDS)
    finally:
        # whatever happened (error, Ctrl-C), stop the workers now (not when the traceback is
        # collected) and keep what finished for the rerun
        results.close()
        partial.flush()
        bar.close()
    if summary.skipped_bad > MAX_LOGGED_WARNINGS:
        log.warning("skipped %d unreadable image(s) in total", summary.skipped_bad)
    if summary.fallback > MAX_LOGGED_WARNINGS:
        log.warning("%d image(s) in total got the whole image as their only proposal", summary.fallback)
    if world_size > 1:
        barrier()
        if rank == 0:
            finish_from_parts(dataset, out_path, PartialRun(out_path, stamp))  # every rank's parts
        barrier()
        return summary
    finish_from_parts(dataset, out_path, partial)
    return summary


def finish_from_parts(dataset, out_path: Path, partial: PartialRun) -> Path:
    """Write the final file from complete partial work (dataset order), then drop the parts."""
    ids, boxes, seconds, fallback, skipped = [], [], [], [], []
    for r in dataset.records:
        if r.image_id in partial.results:
            b, s, f = partial.results[r.image_id]
            ids.append(r.image_id)
            boxes.append(b)
            seconds.append(s)
            fallback.append(f)
        elif r.image_id in partial.skipped:
            skipped.append(r.image_id)
        else:  # pragma: no cover - guarded by the caller's loop
            raise DataError(None, f"internal: image {r.image_id} has no result")
    write_proposals(out_path, ids, boxes, partial.stamp, seconds, fallback, skipped)
    partial.remove()
    log.info("wrote %s (%d images, %d boxes)", out_path, len(ids), sum(len(b) for b in boxes))
    return out_path
