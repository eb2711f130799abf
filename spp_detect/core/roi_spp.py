"""Fast spatial-pyramid pooling of many windows on one conv5 map (the per-window SPP of SPP-net).

Bins follow PAPER.md: for a window of ``h x w`` cells and level ``n``, bin ``i`` covers rows
``[floor(i*h/n), ceil((i+1)*h/n))`` of the window (columns likewise); bins may overlap, are
never empty, and every window gives ``n x n`` outputs, including 1-cell windows.

Why this is fast: a max over a rectangle equals the max of four overlapping power-of-two
blocks, so after building a 2-D sparse table of the map (block maxima for sizes 2^a x 2^b) every
bin costs four row gathers of C contiguous floats, whatever its area. Only the finest level is
computed this way: when ``n`` divides the finest level ``N``, each coarse bin is exactly the
union of ``N/n x N/n`` finest bins (``floor`` and ``ceil`` of ``i*h/n`` equal those of
``(i*N/n)*h/N``), so coarse levels are maxima over finest-level bins. Levels that do not
divide the finest one are computed with their own sparse-table queries.

Windows are given as conv-cell rectangles ``(x1, y1, x2, y2)``, 0-based **inclusive** cell
indices in the map's frame, already clamped into the map (see :mod:`spp_detect.core.geometry`).
"""

from __future__ import annotations

import numpy as np
import torch

from .pyramid import DEFAULT_LEVELS, ordered_levels, spp_output_dim


def bin_edges(length: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Start (inclusive) and end (exclusive) offsets of ``n`` bins over windows of ``length`` cells.

    ``length``: int64 (R,). Returns two int64 (R, n) tensors relative to the window start,
    computed in integer arithmetic so they match ``floor(i*h/n)`` and ``ceil((i+1)*h/n)`` exactly.
    """
    i = torch.arange(n, device=length.device)
    start = (i[None, :] * length[:, None]) // n
    end = -((-(i[None, :] + 1) * length[:, None]) // n)
    return start, end


class SparseTable:
    """Block maxima of a (C, H, W) map for block sizes 2^a x 2^b, a <= max_log_h, b <= max_log_w.

    All tables live in one preallocated (cells, C) buffer, filled in place, so that a query
    gathers contiguous channel vectors and no large temporary is allocated (fresh allocations,
    not arithmetic, dominate the cost on CPU).
    """

    def __init__(self, fmap: torch.Tensor, max_log_h: int, max_log_w: int, workspace: Workspace | None = None):
        workspace = workspace or Workspace()
        self.workspace = workspace
        c, h, w = fmap.shape
        self.channels = c
        shapes = {(a, b): (h - (1 << a) + 1, w - (1 << b) + 1) for a in range(max_log_h + 1) for b in range(max_log_w + 1)}
        offsets, offset = {}, 0
        for key, (th, tw) in shapes.items():
            offsets[key] = offset
            offset += th * tw
        self.buffer = workspace.get("table", (offset, c), fmap.dtype, fmap.device)

        def view(a, b):
            th, tw = shapes[(a, b)]
            return self.buffer[offsets[(a, b)] : offsets[(a, b)] + th * tw].view(th, tw, c)

        view(0, 0).copy_(fmap.permute(1, 2, 0))
        for a in range(max_log_h + 1):
            if a > 0:
                prev, half = view(a - 1, 0), 1 << (a - 1)
                torch.maximum(prev[:-half], prev[half:], out=view(a, 0))
            for b in range(1, max_log_w + 1):
                prev, half = view(a, b - 1), 1 << (b - 1)
                torch.maximum(prev[:, :-half], prev[:, half:], out=view(a, b))
        n_a, n_b = max_log_h + 1, max_log_w + 1
        self.offset = torch.tensor([[offsets[(a, b)] for b in range(n_b)] for a in range(n_a)], device=fmap.device)
        self.width = torch.tensor([[shapes[(a, b)][1] for b in range(n_b)] for a in range(n_a)], device=fmap.device)

    def indices(self, y0: torch.Tensor, y1: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """Buffer rows of the four blocks covering rows [y0, y1) x columns [x0, x1), shape (Q, 4)."""
        y0, y1, x0, x1 = (t.reshape(-1) for t in (y0, y1, x0, x1))
        a = _floor_log2(y1 - y0)
        b = _floor_log2(x1 - x0)
        base = self.offset[a, b]
        stride = self.width[a, b]
        ys = torch.stack([y0, y1 - (1 << a)], 1)  # (Q, 2)
        xs = torch.stack([x0, x1 - (1 << b)], 1)
        return (base[:, None, None] + ys[:, :, None] * stride[:, None, None] + xs[:, None, :]).view(-1, 4)

    def query_into(self, idx: torch.Tensor, out: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Max over the four blocks of each query row of ``idx`` (Q, 4) into ``out`` (Q, C)."""
        c = self.channels
        q = min(chunk, len(idx))
        work = self.workspace.get("gather", (q * 4, c), self.buffer.dtype, self.buffer.device)
        pair = self.workspace.get("pair", (q, c), self.buffer.dtype, self.buffer.device)
        for s in range(0, len(idx), chunk):
            e = min(s + chunk, len(idx))
            g = torch.index_select(self.buffer, 0, idx[s:e].reshape(-1), out=work[: (e - s) * 4]).view(e - s, 4, c)
            # pairwise maxima: torch's amax over a length-4 middle axis is several times slower
            torch.maximum(g[:, 0], g[:, 1], out=out[s:e])
            torch.maximum(g[:, 2], g[:, 3], out=pair[: e - s])
            torch.maximum(out[s:e], pair[: e - s], out=out[s:e])
        return out


class Workspace:
    """Scratch tensors reused from call to call.

    On CPU, filling freshly allocated memory (page faults) cost as much as the pooling itself;
    a pooler that keeps its scratch space between images avoids it. Buffers grow as needed.
    """

    def __init__(self):
        self._store: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype, device) -> torch.Tensor:
        numel = int(np.prod(shape))
        buf = self._store.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != torch.device(device):
            buf = torch.empty(max(numel, 1), dtype=dtype, device=device)
            self._store[name] = buf
        return buf[:numel].view(shape)


def _merge_bins(level: torch.Tensor, n: int, k: int, out: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """(R, n*k, n*k, C) bins -> ``out`` (R, n, n, C): each output bin is the max of a k x k block.

    Separable: columns within each block first, into ``half`` (R, n*k, n, C), then rows
    (2(k-1) maxima instead of k^2 - 1). Both buffers come from the pooler's workspace, so
    repeated calls do not pay for fresh memory. ``k`` >= 2.
    """
    r, _, _, c = level.shape
    cols = level.view(r, n * k, n, k, c)
    torch.maximum(cols[:, :, :, 0], cols[:, :, :, 1], out=half)
    for j in range(2, k):
        torch.maximum(half, cols[:, :, :, j], out=half)
    rows = half.view(r, n, k, n, c)
    torch.maximum(rows[:, :, 0], rows[:, :, 1], out=out)
    for i in range(2, k):
        torch.maximum(out, rows[:, :, i], out=out)
    return out


def _floor_log2(x: torch.Tensor) -> torch.Tensor:
    # exact for the small positive ints used here (bin sizes are < 2^24)
    return torch.floor(torch.log2(x.to(torch.float64))).to(torch.int64)


class RoiSppPooler:
    """SPP-pools windows of conv maps, keeping its scratch space between calls (one per worker).

    ``levels``/``concat_order``: the pyramid and its layout (see :func:`roi_spp_pool`).
    """

    def __init__(self, levels: tuple[int, ...] = DEFAULT_LEVELS, concat_order: str = "coarse_first", few: int = 24):
        self.levels = tuple(int(n) for n in levels)
        self.order = ordered_levels(self.levels, concat_order)
        self.workspace = Workspace()
        self.few = few  # up to this many windows, pooling each crop beats building a sparse table

    def output_dim(self, channels: int) -> int:
        """Length of one pooled vector for a map of ``channels`` channels."""
        return spp_output_dim(channels, self.levels)

    def _pool_each(self, fmap: torch.Tensor, rects: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        c = fmap.shape[0]
        for i, (x1, y1, x2, y2) in enumerate(rects.tolist()):
            crop = fmap[:, y1 : y2 + 1, x1 : x2 + 1]
            col = 0
            for n in self.order:
                # adaptive max pooling's bins are exactly floor(i*h/n) .. ceil((i+1)*h/n)
                out[i, col : col + c * n * n] = F.adaptive_max_pool2d(crop, n).reshape(-1)
                col += c * n * n
        return out

    def __call__(self, fmap: torch.Tensor | np.ndarray, rects: torch.Tensor | np.ndarray,
                 out: torch.Tensor | None = None) -> torch.Tensor:
        """Pool ``rects`` (R, 4) of ``fmap`` (C, H, W) into ``out`` (R, D) or a new tensor."""
        levels = self.levels
        fmap = torch.as_tensor(fmap)
        if fmap.dtype != torch.float32:
            fmap = fmap.float()
        rects = torch.as_tensor(np.asarray(rects) if not torch.is_tensor(rects) else rects, device=fmap.device).long()
        c, h, w = fmap.shape
        r = rects.shape[0]
        dim = c * sum(n * n for n in levels)
        if out is None:
            out = torch.empty((r, dim), dtype=torch.float32, device=fmap.device)
        if r == 0:
            return out
        if (rects[:, 0] < 0).any() or (rects[:, 1] < 0).any() or (rects[:, 2] >= w).any() or (rects[:, 3] >= h).any() or (
            rects[:, 2] < rects[:, 0]
        ).any() or (rects[:, 3] < rects[:, 1]).any():
            raise ValueError(f"rects must be inclusive cell rectangles inside the {h}x{w} map")
        if r <= self.few:
            return self._pool_each(fmap, rects, out)
        x0, y0 = rects[:, 0], rects[:, 1]
        ww, hh = rects[:, 2] - x0 + 1, rects[:, 3] - y0 + 1

        finest = max(levels)
        direct = [n for n in levels if finest % n != 0 or n == finest]
        # a bin of level n spans at most ceil(h/n) + 1 cells
        max_len_h = int(((h + min(direct) - 1) // min(direct)) + 1)
        max_len_w = int(((w + min(direct) - 1) // min(direct)) + 1)
        table = SparseTable(fmap, int(np.log2(min(max_len_h, h))), int(np.log2(min(max_len_w, w))), self.workspace)

        pooled: dict[int, torch.Tensor] = {}  # n -> (R, n, n, C)
        for n in direct:
            ys, ye = bin_edges(hh, n)
            xs, xe = bin_edges(ww, n)
            # Windows projected onto a coarse grid share most of their bins (2,000 selective-search
            # windows of a VOC image: 72,000 bins at 6x6, 19,000 distinct), so each distinct bin
            # rectangle is queried once and the results copied out.
            key = (((y0[:, None] + ys) * (h + 1) + (y0[:, None] + ye))[:, :, None] * (w + 1)
                   + (x0[:, None] + xs)[:, None, :]) * (w + 1) + (x0[:, None] + xe)[:, None, :]
            distinct, inverse = torch.unique(key.view(-1), return_inverse=True)
            bx1 = distinct % (w + 1)
            rest = distinct // (w + 1)
            bx0 = rest % (w + 1)
            rest = rest // (w + 1)
            idx = table.indices(rest // (h + 1), rest % (h + 1), bx0, bx1)
            found = table.query_into(idx, self.workspace.get(f"distinct{n}", (len(distinct), c), torch.float32, fmap.device))
            level = self.workspace.get(f"level{n}", (r * n * n, c), torch.float32, fmap.device)
            pooled[n] = torch.index_select(found, 0, inverse, out=level).view(r, n, n, c)
        for n in sorted(levels, reverse=True):
            if n not in pooled:
                # derive from the coarsest already-pooled level that n divides: fewer maxima
                src = min(m for m in pooled if m % n == 0)
                target = self.workspace.get(f"level{n}", (r, n, n, c), torch.float32, fmap.device)
                half = self.workspace.get("merge", (r, src, n, c), torch.float32, fmap.device)
                pooled[n] = _merge_bins(pooled[src], n, src // n, target, half)
        col = 0
        for n in self.order:
            out[:, col : col + c * n * n].view(r, c, n, n).copy_(pooled[n].permute(0, 3, 1, 2))
            col += c * n * n
        return out


def roi_spp_pool(
    fmap: torch.Tensor | np.ndarray,
    rects: torch.Tensor | np.ndarray,
    levels: tuple[int, ...] = DEFAULT_LEVELS,
    concat_order: str = "coarse_first",
) -> torch.Tensor:
    """SPP-pool every window of one conv map (a one-off :class:`RoiSppPooler` call).

    ``fmap``: (C, H, W) float. ``rects``: (R, 4) int, ``(x1, y1, x2, y2)`` 0-based inclusive
    conv-cell indices inside the map. Returns (R, C * sum(n^2)) float32: levels concatenated in
    the order of :func:`spp_detect.core.pyramid.ordered_levels` (``coarse_first``: 1x1, 2x2, 3x3, 6x6 as
    the released network), each level flattened channel-major (C, n, n).
    """
    return RoiSppPooler(levels, concat_order)(fmap, rects)
