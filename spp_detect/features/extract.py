"""Feature extraction: one conv pass per image and scale, every window projected and cached.

For each image (PAPER.md, "Pipeline" steps 2-5):

1. resize so the shorter side is ``s`` for each scale (longer side capped at ``max_size``);
2. run the conv trunk once per scale, keep conv5 (after ReLU);
3. for each window (the image's ground-truth boxes, then its proposals) choose one scale,
   the one whose resized window area is closest to ``target_size^2``;
4. project each window on every scale's map (the rectangles at the other scales serve the
   fine-tuning's random scale per window) and store maps and rectangles; pooling happens on
   demand in :class:`spp_detect.features.cache.FeatureCache`.

Work is written in part files renamed into place when complete; the index comes last (see
:mod:`.cache`), so a killed run resumes from the finished parts.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts.files import atomic_path
from ..artifacts.parts import PartsFolder, parts_dir
from ..artifacts.stamps import check_stamp, write_stamp
from ..core.boxes import flip_horizontal
from ..core.geometry import WindowGeometry
from ..core.pyramid import DEFAULT_LEVELS
from ..datasets.base import DetectionDataset, ImageRecord, load_image
from ..errors import ArtifactError, DataError, SppError
from ..progress import progress
from ..runtime import barrier
from .cache import FEATURES_FORMAT, FEATURES_VERSION, PART_FORMAT, FeatureCache, mean_window_norm

log = logging.getLogger(__name__)

# an image of extreme aspect ratio resized without a cap on its longer side (max_size 0) can
# reach hundreds of millions of pixels and exhaust memory in the trunk: refused past this
MAX_RESIZED_PIXELS = 40_000_000


@dataclass(frozen=True)
class ExtractSettings:
    """What extraction needs beyond the backbone (plain values, from ``[extract]`` and ``[spp]``)."""

    scales: tuple[int, ...]
    max_size: int = 0
    target_size: int = 224
    projection: str = "paper"
    cache: str = "conv5"
    flip: bool = False
    levels: tuple[int, ...] = DEFAULT_LEVELS
    concat_order: str = "coarse_first"
    norm_sample_images: int = 200
    norm_sample_windows: int = 200
    seed: int = 0
    images_per_part: int = 16
    compression: str = "gzip"  # gzip (small, portable) | lzf (faster, h5py-only)
    warp_size: int = 224  # cache "warped" (R-CNN): the trunk's input size windows are warped to
    # processes decoding and resizing images ahead of the trunk (0 = this process). They are
    # spawned: a script calling extract_split with workers > 0 needs `if __name__ == "__main__":`
    workers: int = 0
    precision: str = "float32"  # the trunk's arithmetic: float32 | bfloat16 | float16 (CUDA) autocast

    @property
    def geometry(self) -> WindowGeometry:
        """Scale choice, box scaling and projection, all under ``projection``'s rule."""
        return WindowGeometry(tuple(self.scales), self.target_size, self.max_size, self.projection)


# ---------------------------------------------------------------------------------------------
# per-image work


def image_windows(record: ImageRecord, proposals: np.ndarray) -> tuple[np.ndarray, int]:
    """The windows of an image: its usable ground-truth boxes first, then its proposals.

    Both in the internal convention (0-based inclusive image pixels). Crowd (``ignore``) boxes
    are left out. Returns ``(boxes float32 (N, 4), n_gt)``.
    """
    gt = record.boxes[~record.ignore] if len(record.boxes) else np.zeros((0, 4), np.float32)
    boxes = np.concatenate([gt.astype(np.float32), np.asarray(proposals, np.float32).reshape(-1, 4)], 0)
    return boxes, len(gt)


class Extractor:
    """Runs a backbone on images at several scales and projects windows on the maps."""

    def __init__(self, backbone, settings: ExtractSettings, device: str = "cpu"):
        import torch

        self.settings = settings
        self.device = torch.device(device)
        self.backbone = backbone.eval().to(self.device)
        self._cpu_backbone = None

    def _autocast(self, device_type: str):
        """The trunk's arithmetic (``precision``): float32, or bfloat16 / float16 autocast. The
        cache keeps float16 either way; what the lower precisions change is measured in
        benchmarks/REPORT.md (bench_extraction)."""
        import contextlib

        import torch

        p = self.settings.precision
        if p == "float32":
            return contextlib.nullcontext()
        if p == "float16" and device_type != "cuda":
            raise SppError("extract.precision = float16 needs a CUDA device; use bfloat16 on a CPU")
        return torch.autocast(device_type, dtype=getattr(torch, p))

    def _forward(self, image: np.ndarray):
        """conv5 of one resized image: (C, h, w) float32 on the CPU."""
        import torch

        x = self.backbone.preprocess(image).to(self.device)
        try:
            with torch.inference_mode(), self._autocast(self.device.type):
                return self.backbone(x)[0].float().cpu()
        except torch.cuda.OutOfMemoryError:
            # a large scale can exceed GPU memory: finish this one on the CPU
            torch.cuda.empty_cache()
            log.warning("GPU out of memory at %dx%d; running this scale on the CPU", *image.shape[:2])
            if self._cpu_backbone is None:
                import copy

                self._cpu_backbone = copy.deepcopy(self.backbone).cpu()
            with torch.inference_mode(), self._autocast("cpu"):
                return self._cpu_backbone(x.cpu())[0].float()

    def run(self, image: np.ndarray, boxes: np.ndarray, source=None) -> dict:
        """Maps at every scale, each window's best scale and its rectangles at every scale.

        An image too small (or too thin) for the trunk at some scale is a :class:`DataError`
        naming ``source`` (its file), its size and the scale.

        With ``cache = "warped"`` (R-CNN): each window's own SPP vector (``pooled``) instead,
        from its warped crop (:mod:`.rcnn`); one "scale", rectangles left empty.
        """
        if self.settings.cache == "warped":
            from .rcnn import warped_features

            s = self.settings
            pooled = warped_features(self.backbone, image, boxes, s.warp_size, s.levels, s.concat_order, self.device)
            return {"pooled": pooled, "rects": np.zeros((len(boxes), 1, 4), np.int16),
                    "best_scale": np.zeros(len(boxes), np.int8)}
        return self.run_prepared(prepare_view(image, boxes, self.settings, source))

    def run_prepared(self, view: PreparedView) -> dict:
        """:meth:`run` on an image already resized (:func:`prepare_view`, e.g. in a loader
        worker): the trunk at every scale, then the windows projected onto each map."""
        maps, rects = [], np.zeros((len(view.boxes), len(view.resized), 4), np.int16)
        geometry = self.settings.geometry
        for k, (resized, in_resized) in enumerate(zip(view.resized, view.boxes_resized, strict=True)):
            if min(self.backbone.output_size(*resized.shape[:2])) < 1:
                raise DataError(view.source, f"too small or too thin for {self.backbone.name}: resized to "
                                f"{resized.shape[1]}x{resized.shape[0]} at scale {self.settings.scales[k]} (max_size "
                                f"{self.settings.max_size}) it gives no conv5 cell; each side needs at least "
                                f"{self.backbone.min_input_size()} px", "size", f"{view.width}x{view.height}")
            fmap = self._forward(resized)
            maps.append(fmap)
            rects[:, k] = geometry.project(in_resized, self.backbone.stride, self.backbone.offset,
                                           fmap.shape[1], fmap.shape[2])
        return {"maps": maps, "rects": rects, "best_scale": view.best_scale}


@dataclass
class PreparedView:
    """One image (or its mirror) ready for the trunk: resized to every scale, its windows in
    each resized frame and their best scale. All of it CPU work, done ahead of the trunk."""

    boxes: np.ndarray  # (N, 4) original frame, internal convention
    resized: list  # uint8 (h_k, w_k, 3) per scale
    boxes_resized: list  # float (N, 4) per scale, in that scale's resized frame
    best_scale: np.ndarray  # int8 (N,)
    height: int
    width: int
    source: object = None


def prepare_view(image: np.ndarray, boxes: np.ndarray, settings: ExtractSettings, source=None) -> PreparedView:
    """Everything of :meth:`Extractor.run` before the trunk (see :class:`PreparedView`).
    An image that would be resized past :data:`MAX_RESIZED_PIXELS` is a :class:`DataError`."""
    from ..core.geometry import resize_shape

    geometry = settings.geometry
    h, w = image.shape[:2]
    resized_all, boxes_all = [], []
    for k, scale in enumerate(settings.scales):
        nh, nw, _ = resize_shape(h, w, scale, settings.max_size)
        if nh * nw > MAX_RESIZED_PIXELS:
            raise DataError(source, f"resized to {nw}x{nh} at scale {scale} it would hold over "
                            f"{MAX_RESIZED_PIXELS // 10**6} million pixels (extract.max_size = {settings.max_size}: "
                            "0 is no cap); set extract.max_size, e.g. 2000", "size", f"{w}x{h}")
        resized = geometry.resize(image, k)
        resized_all.append(resized)
        boxes_all.append(geometry.to_resized(boxes, h, w, resized.shape[0], resized.shape[1]))
    best = geometry.best_scales(boxes, h, w).astype(np.int8)
    return PreparedView(boxes, resized_all, boxes_all, best, h, w, source)


# ---------------------------------------------------------------------------------------------
# the part files


def pool_at_best_scales(result: dict, pooler):
    """Each window's SPP vector from the map of its own best scale (one scale per window),
    from an :meth:`Extractor.run` result: float32 (N, C * bins), raw (not norm-scaled)."""
    import torch

    rects, best = result["rects"], result["best_scale"]
    pooled = torch.empty((len(rects), pooler.output_dim(result["maps"][0].shape[0])))
    for k in np.unique(best):
        sel = np.nonzero(best == k)[0]
        pooled[torch.from_numpy(sel)] = pooler(result["maps"][int(k)], rects[sel, int(k)])
    return pooled


def _to_stored(result: dict, settings: ExtractSettings, pooler) -> dict:
    """What the cache keeps of one image: float16 maps, or pooled float16 vectors (pooled mode).

    Done as soon as an image is extracted, so a part's images wait in memory at half size.
    """
    stored = {"rects": result["rects"], "best_scale": result["best_scale"]}
    if "pooled" in result:  # R-CNN's warped windows: pooled already
        stored["pooled"] = result["pooled"].numpy().astype(np.float16)
    elif settings.cache == "conv5":
        stored["maps"] = [fmap.numpy().astype(np.float16) for fmap in result["maps"]]
    else:
        stored["pooled"] = pool_at_best_scales(result, pooler).numpy().astype(np.float16)
    return stored


def _write_image(g, boxes: np.ndarray, n_gt: int, stored: dict, compression) -> int:
    """Write one image (or its mirror) into an open h5py group; returns bytes of feature data."""
    g.attrs["n_gt"] = n_gt
    g.create_dataset("boxes", data=boxes.astype(np.float32))
    g.create_dataset("best_scale", data=stored["best_scale"])
    g.create_dataset("rects", data=stored["rects"])
    nbytes = 0
    for k, arr in enumerate(stored.get("maps", [])):
        c, mh, mw = arr.shape
        # whole-map chunks (always read whole), split along channels to stay under ~1 MiB
        chunk_c = max(1, min(c, (1 << 20) // max(1, 2 * mh * mw)))
        ds = g.create_dataset(f"conv5_{k}", data=arr, chunks=(chunk_c, mh, mw), **compression)
        nbytes += ds.id.get_storage_size()
    if "pooled" in stored:
        arr = stored["pooled"]
        chunk_rows = max(1, min(len(arr), (1 << 20) // max(1, 2 * arr.shape[1]))) if len(arr) else None
        ds = g.create_dataset("pooled", data=arr, chunks=(chunk_rows, arr.shape[1]) if chunk_rows else None, **compression)
        nbytes += ds.id.get_storage_size()
    return nbytes


def _compression(name: str) -> dict:
    if name == "gzip":
        return {"compression": "gzip", "compression_opts": 1, "shuffle": True}
    if name == "lzf":
        return {"compression": "lzf", "shuffle": True}
    if name == "none":
        return {}
    raise SppError(f"unknown compression {name!r}; use gzip, lzf or none")


def finished_parts(parts: PartsFolder, stamp: dict) -> dict[str, str]:
    """image_id -> part file name for every finished part whose stamp matches ``stamp``.

    A part made with other settings means the cache is stale: an :class:`ArtifactError` names
    the part and the key that differs.
    """
    import h5py

    done: dict[str, str] = {}
    for path in parts.finished("*.h5"):
        try:
            h5 = h5py.File(path, "r")
        except OSError:
            log.warning("ignoring unreadable part %s", path)
            continue
        with h5:
            check_stamp(path, h5, PART_FORMAT, FEATURES_VERSION, stamp, remedy="pass --overwrite to start this cache again")
            for image_id in h5.keys():
                done[image_id] = path.name
    return done


def extract_split(dataset: DetectionDataset, proposals: dict, backbone, settings: ExtractSettings, out_path: Path,
                  stamp: dict, **kwargs) -> dict:
    """:func:`_extract_split`, holding the lock on ``out_path`` for this rank's share: a second
    run on the same cache is refused at once instead of racing the first."""
    from ..artifacts.lock import output_lock

    with output_lock(out_path, kwargs.get("rank", 0)):
        return _extract_split(dataset, proposals, backbone, settings, out_path, stamp, **kwargs)


def _extract_split(
    dataset: DetectionDataset,
    proposals: dict[str, np.ndarray],
    backbone,
    settings: ExtractSettings,
    out_path: Path,
    stamp: dict,
    device: str = "cpu",
    overwrite: bool = False,
    rank: int = 0,
    world_size: int = 1,
    skip_bad: bool = False,
    delay: float = 0.0,
) -> dict:
    """Extract features for a split into ``out_path`` (the index) and its parts folder.

    ``proposals``: image_id -> float32 (N, 4) internal-convention boxes. ``stamp``: the config
    and input hashes the cache is keyed on. With ``world_size > 1`` this rank takes images
    ``rank::world_size``; rank 0 writes the index once every rank has finished (the caller
    synchronises ranks before :func:`finalize_index`). ``delay``: seconds to sleep after each
    image (tests use it to interrupt a run part way). Returns a summary dict.
    """
    out_path = Path(out_path)
    parts = PartsFolder(out_path)
    if _up_to_date(out_path, parts, stamp, overwrite, rank):
        return {"skipped": True}

    done = finished_parts(parts, stamp)
    mine = [r for i, r in enumerate(dataset.records) if i % world_size == rank]
    todo = [r for r in mine if r.image_id not in done]
    if len(todo) < len(mine):
        log.info("resuming: %d of %d images already extracted", len(mine) - len(todo), len(mine))
    check_disk(todo, backbone, settings, parts.folder)

    from ..core.roi_spp import RoiSppPooler

    extractor = Extractor(backbone, settings, device)
    pooler = RoiSppPooler(settings.levels, settings.concat_order)
    parts_out = _FeatureParts(parts, rank, stamp, _compression(settings.compression))
    n_images, n_bad = 0, 0
    t0 = time.perf_counter()
    bar = progress(total=len(mine), initial=len(mine) - len(todo), desc=f"extract {dataset.split}", unit="img")

    writer = _PartWriter(parts_out.write)
    batch: list = []
    try:
        for i, views, error in _load_ahead(todo, proposals, settings, extractor, workers=settings.workers):
            record = todo[i]
            if error is not None:
                if isinstance(error, str):  # no proposals for this image
                    if not skip_bad:
                        raise ArtifactError(f"no proposals for image '{record.image_id}'; rerun 'spp-detect propose' "
                                            "for this split")
                    error = "it has no proposals (skipped as bad by propose)"
                elif not skip_bad:
                    raise error
                n_bad += 1
                log.warning("skipping %s: %s", record.image_id, error)
                bar.update(1)
                continue
            try:
                views = [(b, n, _to_stored(extractor.run_prepared(v) if isinstance(v, PreparedView)
                                           else extractor.run(v, b, record.path), settings, pooler))
                         for b, n, v in views]
            except DataError as exc:
                if not skip_bad:
                    raise
                n_bad += 1
                log.warning("skipping %s: %s", record.image_id, exc)
                bar.update(1)
                continue
            batch.append((record, views))
            n_images += 1
            bar.update(1)
            if len(batch) >= settings.images_per_part:
                writer.submit(batch)
                batch = []
            if delay:
                time.sleep(delay)
        writer.submit(batch)
    except BaseException:
        writer.close(raise_error=False)  # the parts finished before an error or Ctrl-C are written
        raise
    writer.close()
    bar.close()
    seconds = time.perf_counter() - t0
    if n_bad:
        log.warning("skipped %d bad image(s)", n_bad)
    return {
        "skipped": False,
        "images": n_images,
        "seconds": seconds,
        "bytes": parts_out.bytes,
        "bytes_per_image": parts_out.bytes / max(1, n_images),
        "bad_images": n_bad,
    }


def _up_to_date(out_path: Path, parts, stamp: dict, overwrite: bool, rank: int) -> bool:
    """True when the cache at ``out_path`` is complete and current (else it is refused, naming
    the key, unless ``overwrite``); otherwise the parts folder is made ready for every rank."""
    if out_path.exists():
        if not overwrite:
            from ..artifacts.stamps import open_h5_checked

            open_h5_checked(out_path, FEATURES_FORMAT, FEATURES_VERSION, stamp,
                            remedy="pass --overwrite to extract again").close()
            log.info("%s is complete and current; nothing to do", out_path)
            return True
        if rank == 0:
            out_path.unlink()
    if rank == 0:
        if overwrite:
            parts.remove()
        parts.prepare(remove_temporaries=True)  # before any rank writes: no one's temporaries lost
    barrier()
    parts.prepare(remove_temporaries=False)
    return False


class _FeatureParts:
    """Writes batches of extracted images as this rank's part files ``r<rank>-<n>.h5``."""

    def __init__(self, parts, rank: int, stamp: dict, compression: dict):
        self.parts, self.rank, self.stamp, self.compression = parts, rank, stamp, compression
        self.n_parts = len(parts.finished(f"r{rank}-*.h5"))
        self.bytes = 0

    def write(self, batch: list) -> None:
        import h5py

        if not batch:
            return
        while (self.parts.folder / f"r{self.rank}-{self.n_parts:05d}.h5").exists():
            self.n_parts += 1
        with self.parts.write(f"r{self.rank}-{self.n_parts:05d}.h5") as tmp:
            with h5py.File(tmp, "w") as h5:
                write_stamp(h5, PART_FORMAT, FEATURES_VERSION, self.stamp)
                for record, views in batch:
                    g = h5.create_group(record.image_id)
                    g.attrs["height"], g.attrs["width"] = record.height, record.width
                    for k, (boxes, n_gt, result) in enumerate(views):
                        sub = g if k == 0 else g.create_group("flip")
                        self.bytes += _write_image(sub, boxes, n_gt, result, self.compression)
        self.n_parts += 1


class _LoadedImages:
    """The images of a split decoded and prepared ahead of the trunk (a map-style dataset, run in
    loader worker processes). Item ``i``: ``(i, views, error)``: ``views`` a list of ``(boxes,
    n_gt, PreparedView or, for the warped cache, the image)`` (the mirror second), or ``error``:
    the image's :class:`DataError`, or a string when it has no proposals."""

    def __init__(self, records: list, proposals: dict, settings: ExtractSettings):
        self.records = records
        self.proposals = {r.image_id: proposals.get(r.image_id) for r in records}
        self.settings = settings

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        record = self.records[i]
        props = self.proposals[record.image_id]
        if props is None:
            return i, None, "no proposals"
        boxes, n_gt = image_windows(record, props)
        try:
            image = load_image(record.path)
            if image.shape[:2] != (record.height, record.width):
                raise DataError(record.path, "image size differs from its annotation", "size",
                                f"{image.shape[1]}x{image.shape[0]} vs {record.width}x{record.height}")
            views = [(boxes, n_gt, image)]
            if self.settings.flip:
                views.append((flip_horizontal(boxes, record.width), n_gt, np.ascontiguousarray(image[:, ::-1])))
            if self.settings.cache != "warped":  # R-CNN's windows go through the trunk one by one
                views = [(b, n, prepare_view(im, b, self.settings, record.path)) for b, n, im in views]
        except DataError as exc:
            return i, None, exc
        return i, views, None


def _as_is(item):
    return item


def _load_ahead(records: list, proposals: dict, settings: ExtractSettings, extractor, workers: int = 0):
    """:class:`_LoadedImages` items in order; with ``workers`` processes decoding and resizing
    ahead of the trunk (a DataLoader), or here one by one with ``workers = 0``."""
    import torch

    data = _LoadedImages(records, proposals, settings)
    if workers <= 0:
        yield from (data[i] for i in range(len(data)))
        return
    # spawn: this process holds threads (the part writer, the progress bar) that fork would copy mid-state
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=workers, collate_fn=_as_is,
                                         multiprocessing_context="spawn", prefetch_factor=4)
    yield from loader


class _PartWriter:
    """Writes finished parts in a background thread, so the trunk does not wait on compression
    and HDF5 (the trunk releases the GIL while it runs). At most two batches wait; an error in
    the writer is raised in the caller at the next :meth:`submit` or at :meth:`close`."""

    def __init__(self, write):
        import queue
        import threading

        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="part-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self._error is None:
                try:
                    self._write(batch)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    self._error = exc

    def submit(self, batch: list) -> None:
        if self._error is not None:
            raise self._error
        if batch:
            self._queue.put(batch)

    def close(self, raise_error: bool = True) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and raise_error:
            raise self._error


def estimate_bytes(records: list[ImageRecord], channels: int, stride: int, settings: ExtractSettings) -> int:
    """Upper bound of the cache size: float16 conv5 maps, uncompressed (or pooled vectors)."""
    from ..core.geometry import resize_shape

    views = 2 if settings.flip else 1
    total = 0
    for r in records:
        if settings.cache == "conv5":
            for s in settings.scales:
                nh, nw, _ = resize_shape(r.height, r.width, s, settings.max_size)
                total += channels * (-(-nh // stride)) * (-(-nw // stride)) * 2
        else:
            total += 2000 * channels * sum(n * n for n in settings.levels) * 2
    return total * views


def check_disk(records: list[ImageRecord], backbone, settings: ExtractSettings, folder: Path) -> None:
    """Print the estimated cache size and free disk; refuse if it cannot fit."""
    need = estimate_bytes(records, backbone.out_channels, int(round(backbone.stride)), settings)
    free = shutil.disk_usage(folder).free
    log.info(
        "feature cache for %d images: at most %.2f GB (float16, before compression); %.1f GB free",
        len(records), need / 1e9, free / 1e9,
    )
    if need > free:
        raise SppError(
            f"the feature cache needs up to {need / 1e9:.1f} GB but {folder} has {free / 1e9:.1f} GB free; "
            "free space, use fewer scales (--scales) or a --run folder on a larger disk"
        )


# ---------------------------------------------------------------------------------------------
# the index and the norm statistics


def finalize_index(out_path: Path, image_ids: list[str], stamp: dict, meta: dict, settings: ExtractSettings) -> dict:
    """Write the index once all parts exist: parts per image and the mean feature norm."""
    import h5py

    out_path = Path(out_path)
    done = finished_parts(PartsFolder(out_path), stamp)
    present = [i for i in image_ids if i in done]
    missing = len(image_ids) - len(present)
    if not present:
        raise SppError(f"{out_path}: no image was extracted")
    if missing:
        log.warning("%d image(s) have no features (skipped as bad); they are left out of the index", missing)
    part_names = sorted(set(done[i] for i in present))
    part_index = {p: k for k, p in enumerate(part_names)}
    with atomic_path(out_path) as tmp:
        with h5py.File(tmp, "w") as h5:
            write_stamp(h5, FEATURES_FORMAT, FEATURES_VERSION, stamp)
            h5.attrs["meta"] = json.dumps(meta)
            h5.attrs["pool_norm_mean"] = 1.0
            h5.create_dataset("image_ids", data=np.array(present, dtype=object), dtype=h5py.string_dtype())
            h5.create_dataset("part_names", data=np.array(part_names, dtype=object), dtype=h5py.string_dtype())
            h5.create_dataset("part", data=np.array([part_index[done[i]] for i in present], np.int32))
        # the mean norm needs a readable cache: measure it on the temporary index
        with FeatureCache(tmp, parts=parts_dir(out_path)) as cache:
            norm = mean_window_norm(cache, settings.seed, settings.norm_sample_images, settings.norm_sample_windows)
        with h5py.File(tmp, "a") as h5:
            h5.attrs["pool_norm_mean"] = norm
    return {"pool_norm_mean": norm, "images": len(present)}


def cache_meta(backbone, settings: ExtractSettings) -> dict:
    return {
        # a warped (R-CNN) cache has one "scale": every window at the trunk's input size
        "scales": [settings.warp_size] if settings.cache == "warped" else list(settings.scales),
        "levels": list(settings.levels),
        "concat_order": settings.concat_order,
        "channels": int(backbone.out_channels),
        "stride": float(backbone.stride),
        "offset": float(backbone.offset),
        "cache": settings.cache,
        "flip": bool(settings.flip),
        "projection": settings.projection,
        "target_size": settings.target_size,
        "max_size": settings.max_size,
    }
