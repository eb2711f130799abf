"""The feature cache: ``RUN/features/<split>.h5`` (the index) and its part files.

Layout, chosen so that nothing a later stage trusts can be half-written:

- ``<split>.parts/<rank>-<n>.h5``: each part holds a few images, is written under a temporary
  name and renamed when complete, so a killed run loses at most the part in progress and a
  rerun (or another rank) resumes from the parts on disk. Per image, a group ``/<image_id>``:

  - ``boxes`` float32 (N, 4): the windows, internal convention (0-based inclusive image
    pixels); the first ``n_gt`` (attribute) are the image's ground-truth boxes, the rest its
    proposals in rank order.
  - ``best_scale`` int8 (N,): index of the scale chosen for each window (closest area to the
    target size, ties to the smaller scale).
  - ``rects`` int16 (N, S, 4): each window projected on each scale's conv5 map, ``(x1, y1, x2,
    y2)`` inclusive 0-based cell indices, clamped into the map.
  - ``conv5_<k>`` float16 (C, h, w) per scale ``k`` (``cache = "conv5"``), compressed and
    chunked whole-map (it is always read whole), or ``pooled`` float16 (N, D): the SPP vector at
    the best scale (``cache = "pooled"``, R-CNN's storage), or of each window's own warped crop
    (``cache = "warped"``, R-CNN's features: :mod:`.rcnn`).
  - ``flip/``: the same for the horizontally mirrored image, when extracted with ``flip``.

- ``<split>.h5``, the index, written last: the stamp (config and input hashes), per-image part
  file names, shapes, and the mean L2 norm of the pooled features (PAPER.md, feature
  post-processing). Its presence means the cache is complete.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts.parts import parts_dir
from ..artifacts.stamps import check_stamp
from ..errors import ArtifactError

FEATURES_FORMAT = "spp-detect/features"
FEATURES_VERSION = 1
PART_FORMAT = "spp-detect/features-part"


@dataclass(frozen=True)
class Windows:
    """The windows of one image (or its mirror) in the cache.

    ``boxes``: float32 (N, 4) internal convention in the frame of the image they were extracted
    from (mirrored boxes for ``flip``). ``n_gt``: leading ground-truth boxes. ``best_scale``:
    int (N,). ``rects``: int (N, S, 4) inclusive conv5 cell rectangles per scale.
    """

    boxes: np.ndarray
    n_gt: int
    best_scale: np.ndarray
    rects: np.ndarray

    @property
    def proposals(self) -> np.ndarray:
        return self.boxes[self.n_gt :]


def rect_keys(rects: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """One int64 key per window from its conv5 rectangle (N, 4) and scale index (N,)."""
    r = np.asarray(rects, np.int64)
    s = np.asarray(scale, np.int64)
    return (((s * 4096 + r[:, 0]) * 4096 + r[:, 1]) * 4096 + r[:, 2]) * 4096 + r[:, 3]


def feature_keys(mode: str, boxes: np.ndarray, best_scale: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """Keys (int64 (N,)) that are equal exactly when two windows of an image have the same features.

    Pooled from conv5 maps (``conv5``, ``pooled``), a window's vector depends only on the cells it
    projects onto at its scale, so windows sharing them share features. R-CNN's ``warped`` windows
    are each cropped from the image and have no cells (their ``rects`` are all zero): two share
    features only when their boxes (internal convention) are equal.
    """
    if mode == "warped":
        return np.unique(boxes, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)
    return rect_keys(rects[np.arange(len(best_scale)), best_scale], best_scale)


class FeatureCache:
    """Reads pooled SPP features from a finished cache.

    ``expect``: stamp values the caller requires (e.g. ``{"split": "test"}``); a mismatch is an
    :class:`ArtifactError` naming the file and the key. Part files are opened lazily and kept
    open (a few at a time).
    """

    def __init__(self, path: str | Path, expect: dict | None = None, max_open: int = 8, parts: Path | None = None,
                 memory_bytes: int = 0):
        import h5py

        self.path = Path(path)
        self.parts = Path(parts) if parts is not None else parts_dir(self.path)
        if not self.path.is_file():
            raise ArtifactError(f"{self.path}: feature cache not found; run 'spp-detect extract' first")
        with h5py.File(self.path, "r") as h5:
            self.stamp = check_stamp(
                self.path, h5, FEATURES_FORMAT, FEATURES_VERSION, expect,
                remedy="rerun 'spp-detect extract' for this split (with --overwrite)",
            )
            ids = [x.decode() if isinstance(x, bytes) else str(x) for x in h5["image_ids"][()]]
            part_names = [x.decode() if isinstance(x, bytes) else str(x) for x in h5["part_names"][()]]
            part_of = h5["part"][()]
            self.meta = json.loads(h5.attrs["meta"])
            self.pool_norm_mean = float(h5.attrs["pool_norm_mean"])
        self.image_ids: list[str] = ids
        self._part = {i: part_names[p] for i, p in zip(ids, part_of, strict=True)}
        self._open: OrderedDict[str, object] = OrderedDict()
        self._max_open = max_open
        # decoded conv5 maps kept in memory (LRU, bounded in bytes): fine-tuning reads the
        # same images' maps again and again, and decompressing them dominated its step time
        self._memo: OrderedDict[tuple, object] = OrderedDict()
        self._sizes: dict[tuple, int] = {}
        self._memo_bytes = 0
        self._memory_bytes = int(memory_bytes)
        self.scales: tuple[int, ...] = tuple(self.meta["scales"])
        self.levels: tuple[int, ...] = tuple(self.meta["levels"])
        self.concat_order: str = self.meta["concat_order"]
        self.channels: int = int(self.meta["channels"])
        self.mode: str = self.meta["cache"]
        self.has_flip: bool = bool(self.meta["flip"])
        self.dim = self.channels * sum(n * n for n in self.levels)
        from ..core.roi_spp import RoiSppPooler

        self._pooler = RoiSppPooler(self.levels, self.concat_order)

    # ------------------------------------------------------------------ access
    def __contains__(self, image_id: str) -> bool:
        return image_id in self._part

    def __len__(self) -> int:
        return len(self.image_ids)

    def norm_scale(self, target: float = 20.0) -> float:
        """Multiplier that brings the mean L2 norm of pooled features to ``target``."""
        return target / max(self.pool_norm_mean, 1e-12)

    def _group(self, image_id: str, flip: bool):
        import h5py

        try:
            part = self._part[image_id]
        except KeyError:
            raise ArtifactError(f"{self.path}: image '{image_id}' is not in this cache") from None
        h5 = self._open.get(part)
        if h5 is None:
            try:
                h5 = h5py.File(self.parts / part, "r")
            except OSError as exc:
                raise ArtifactError(
                    f"{self.parts / part}: part file unreadable ({exc}); rerun 'spp-detect extract' with --overwrite"
                ) from None
            self._open[part] = h5
            if len(self._open) > self._max_open:
                self._open.popitem(last=False)[1].close()
        else:
            self._open.move_to_end(part)
        g = h5[image_id]
        if flip:
            if "flip" not in g:
                raise ArtifactError(f"{self.path}: no mirrored features; extract with --flip")
            g = g["flip"]
        return g

    def windows(self, image_id: str, flip: bool = False) -> Windows:
        key = ("windows", image_id, flip)
        if key in self._memo:
            return self._memo[key]
        g = self._group(image_id, flip)
        win = Windows(
            boxes=g["boxes"][()],
            n_gt=int(g.attrs["n_gt"]),
            best_scale=g["best_scale"][()].astype(np.int64),
            rects=g["rects"][()].astype(np.int64),
        )
        if self._memory_bytes:
            self._remember(key, win, win.boxes.nbytes + win.rects.nbytes + win.best_scale.nbytes)
        return win

    def window_keys(self, win: Windows) -> np.ndarray:
        """int64 (N,) keys of ``win``'s windows, equal exactly when their features are (:func:`feature_keys`)."""
        return feature_keys(self.mode, win.boxes, win.best_scale, win.rects)

    def keep_maps(self, memory_bytes: int) -> None:
        """Keep up to ``memory_bytes`` of decoded conv5 maps (and window tables) in RAM from now on."""
        self._memory_bytes = int(memory_bytes)

    def _remember(self, key: tuple, value, nbytes: int) -> None:
        self._memo[key] = value
        self._sizes[key] = nbytes
        self._memo_bytes += nbytes
        while self._memo_bytes > self._memory_bytes and len(self._memo) > 1:
            old, _ = self._memo.popitem(last=False)
            self._memo_bytes -= self._sizes.pop(old)

    def conv5(self, image_id: str, scale_index: int, flip: bool = False) -> np.ndarray:
        """The (C, h, w) float16 conv5 map of an image at one scale."""
        if self.mode != "conv5":
            raise ArtifactError(f"{self.path}: cache holds pooled vectors, not conv5 maps")
        return self._group(image_id, flip)[f"conv5_{scale_index}"][()]

    def pool(
        self,
        image_id: str,
        index: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        flip: bool = False,
        windows: Windows | None = None,
        device: str = "cpu",
    ):
        """Pooled SPP vectors (float32 torch tensor, (R, D), not norm-scaled) of some windows.

        ``index``: which windows (default all). ``scale``: a scale index per selected window
        (default each window's best scale); a pooled cache only has the best scale.
        """
        import torch

        win = windows if windows is not None else self.windows(image_id, flip)
        n = len(win.boxes)
        index = np.arange(n) if index is None else np.asarray(index, dtype=np.int64)
        best = win.best_scale[index]
        scale = best if scale is None else np.asarray(scale, dtype=np.int64)
        if self.mode in ("pooled", "warped"):
            if not np.array_equal(scale, best):
                raise ArtifactError(f"{self.path}: a pooled cache has only each window's best scale")
            # a pooled cache is the wasteful R-CNN layout anyway; read the image's rows whole
            rows = self._group(image_id, flip)["pooled"][()][index]
            return torch.from_numpy(rows.astype(np.float32)).to(device)
        out = torch.empty((len(index), self.dim), dtype=torch.float32, device=device)
        for k in np.unique(scale):
            sel = np.nonzero(scale == k)[0]
            fmap = self._decoded_map(image_id, int(k), flip).to(device)
            if len(sel) == len(index):
                self._pooler(fmap, win.rects[index, int(k)], out=out)  # one scale: pool in place
            else:
                out[torch.as_tensor(sel, device=device)] = self._pooler(fmap, win.rects[index[sel], int(k)])
        return out

    def _decoded_map(self, image_id: str, k: int, flip: bool):
        import torch

        key = ("conv5", image_id, k, flip)
        fmap = self._memo.get(key)
        if fmap is not None:
            self._memo.move_to_end(key)
            return fmap
        fmap = torch.from_numpy(self._group(image_id, flip)[f"conv5_{k}"][()])  # float16, as stored
        if self._memory_bytes:
            self._remember(key, fmap, fmap.numel() * fmap.element_size())
        return fmap

    def close(self) -> None:
        for h5 in self._open.values():
            h5.close()
        self._open.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def mean_window_norm(cache: FeatureCache, seed: int, images: int = 200, windows: int = 200, device: str = "cpu",
                     transform=None) -> float:
    """Mean L2 norm of window features on a fixed random sample (PAPER.md: every layer is
    scaled to mean norm 20): ``images`` images of the cache, ``windows`` windows of each.

    The raw SPP vectors, or ``transform`` of them (fine-tuning passes the head's fc7): the same
    sampler for both. 1.0 when the sample is empty.
    """
    rng = np.random.default_rng(seed)
    ids = list(cache.image_ids)
    norms = []
    for i in sorted(rng.choice(len(ids), min(images, len(ids)), replace=False)):
        win = cache.windows(ids[i])
        n = len(win.boxes)
        if n == 0:
            continue
        idx = np.sort(rng.choice(n, min(windows, n), replace=False))
        feats = cache.pool(ids[i], idx, windows=win, device=device)
        if transform is not None:
            feats = transform(feats)
        norms.append(feats.norm(dim=1).cpu().numpy())
    return float(np.concatenate(norms).mean()) if norms else 1.0
