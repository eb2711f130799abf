"""Hierarchical grouping (Uijlings et al., IJCV 2013, algorithm 1): merge the two most similar
neighbouring regions, again and again, until one region is left.

The pairs wait in a heap keyed by similarity. A merge makes region ``t`` (the next index) out
of ``i`` and ``j``: its histograms are the size-weighted means of theirs, its size the sum, its
box the union; ``t`` takes over every neighbour of ``i`` and ``j``, and its similarity to each
of them is computed in one vectorised call. Pairs that name a merged region stay in the heap
and are skipped when they come up (cheaper than finding and deleting them). Ties go to the
pair with the smaller indices, so the hierarchy is a pure function of the regions.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from .regions import Regions
from .similarity import similarity


@dataclass
class Hierarchy:
    """Every region of one grouping in creation order: the ``n`` initial regions, then one per
    merge. ``boxes``: float64 (R, 4) inclusive pixels. ``merges``: int64 (R - n, 2), the two
    regions each merged one was made of."""

    boxes: np.ndarray
    merges: np.ndarray
    n_initial: int


def group(regions: Regions, strategy: str) -> Hierarchy:
    """The hierarchy that grouping ``regions`` under similarity ``strategy`` (letters of
    ``ctsf``, see :mod:`.similarity`) builds."""
    n = len(regions)
    total = 2 * n - 1
    use_color, use_texture = "c" in strategy, "t" in strategy
    # features of every region the grouping can create; unused histograms stay 1-wide
    color = np.zeros((total, regions.color.shape[1] if use_color else 1), np.float32)
    texture = np.zeros((total, regions.texture.shape[1] if use_texture else 1), np.float32)
    if use_color:
        color[:n] = regions.color
    if use_texture:
        texture[:n] = regions.texture
    size = np.zeros(total)
    size[:n] = regions.size
    boxes = np.zeros((total, 4))
    boxes[:n] = regions.boxes
    alive = np.zeros(total, bool)
    alive[:n] = True
    neighbours: list[set[int]] = [set() for _ in range(n)]
    pairs = regions.pairs
    for i, j in pairs.tolist():
        neighbours[i].add(j)
        neighbours[j].add(i)
    sims = similarity(strategy, color, texture, size, boxes, pairs[:, 0], pairs[:, 1], regions.image_size) if len(pairs) else []
    heap = [(-s, i, j) for s, (i, j) in zip(np.asarray(sims).tolist(), pairs.tolist(), strict=True)]
    heapq.heapify(heap)
    merges = []
    t = n
    while heap:
        _, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue
        wi, wj = size[i], size[j]
        size[t] = wi + wj
        if use_color:
            color[t] = (wi * color[i] + wj * color[j]) / size[t]
        if use_texture:
            texture[t] = (wi * texture[i] + wj * texture[j]) / size[t]
        boxes[t, :2] = np.minimum(boxes[i, :2], boxes[j, :2])
        boxes[t, 2:] = np.maximum(boxes[i, 2:], boxes[j, 2:])
        alive[i] = alive[j] = False
        alive[t] = True
        around = (neighbours[i] | neighbours[j]) - {i, j}
        for k in around:
            nk = neighbours[k]
            nk.discard(i)
            nk.discard(j)
            nk.add(t)
        neighbours.append(around)
        neighbours[i] = neighbours[j] = set()
        merges.append((i, j))
        if around:
            ks = np.fromiter(sorted(around), np.int64, len(around))
            s = similarity(strategy, color, texture, size, boxes, ks, t, regions.image_size)
            for sk, k in zip(s.tolist(), ks.tolist(), strict=True):
                heapq.heappush(heap, (-sk, k, t))
        t += 1
    return Hierarchy(boxes[:t].copy(), np.asarray(merges, np.int64).reshape(-1, 2), n)
