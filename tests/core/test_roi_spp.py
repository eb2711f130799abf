"""RoI-SPP pooling against a slow, obvious reference, bin by bin."""

import math

import numpy as np
import pytest
import torch

from spp_detect.core.pyramid import ordered_levels
from spp_detect.core.roi_spp import RoiSppPooler, bin_edges, roi_spp_pool


def reference_pool(fmap: np.ndarray, rect, levels, order="coarse_first"):
    c = fmap.shape[0]
    x1, y1, x2, y2 = rect
    h, w = y2 - y1 + 1, x2 - x1 + 1
    out = []
    for n in ordered_levels(levels, order):
        level = np.zeros((c, n, n), np.float32)
        for i in range(n):
            r0, r1 = math.floor(i * h / n), math.ceil((i + 1) * h / n)
            for j in range(n):
                c0, c1 = math.floor(j * w / n), math.ceil((j + 1) * w / n)
                assert r1 > r0 and c1 > c0  # never empty (a test-side check of the rule itself)
                level[:, i, j] = fmap[:, y1 + r0 : y1 + r1, x1 + c0 : x1 + c1].max(axis=(1, 2))
        out.append(level.reshape(-1))
    return np.concatenate(out)


def random_rects(rng, h, w, n):
    xs = np.sort(rng.integers(0, w, (n, 2)), axis=1)
    ys = np.sort(rng.integers(0, h, (n, 2)), axis=1)
    return np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], 1)


def test_bin_edges_match_floor_ceil():
    for length in range(1, 60):
        for n in (1, 2, 3, 4, 5, 6, 7):
            s, e = bin_edges(torch.tensor([length]), n)
            assert s[0].tolist() == [math.floor(i * length / n) for i in range(n)]
            assert e[0].tolist() == [math.ceil((i + 1) * length / n) for i in range(n)]


@pytest.mark.parametrize("levels", [(6, 3, 2, 1), (4, 2, 1), (5, 3, 1), (1,)])
def test_matches_reference_on_random_windows(levels):
    rng = np.random.default_rng(sum(levels))
    for h, w in [(1, 1), (1, 7), (9, 1), (13, 13), (17, 23), (42, 56)]:
        fmap = rng.standard_normal((5, h, w)).astype(np.float32)
        rects = random_rects(rng, h, w, 40)
        rects[0] = [0, 0, w - 1, h - 1]  # whole map
        rects[1] = [w - 1, h - 1, w - 1, h - 1]  # 1-cell window on the border
        got = roi_spp_pool(torch.from_numpy(fmap), rects, levels).numpy()
        want = np.stack([reference_pool(fmap, r, levels) for r in rects])
        np.testing.assert_array_equal(got, want)


def test_every_window_size_up_to_40():
    rng = np.random.default_rng(1)
    fmap = rng.standard_normal((3, 41, 41)).astype(np.float32)
    rects = np.array([[1, 0, 1 + w - 1, h - 1] for h in range(1, 41) for w in range(1, 41)])
    got = roi_spp_pool(fmap, rects).numpy()
    for k in rng.choice(len(rects), 120, replace=False):
        np.testing.assert_array_equal(got[k], reference_pool(fmap, rects[k], (6, 3, 2, 1)))


def test_reused_pooler_with_duplicate_windows_and_changing_sizes():
    # one pooler across calls keeps its scratch buffers and queries each distinct bin once:
    # results must not depend on what the previous call left behind, nor on duplicates
    rng = np.random.default_rng(7)
    pooler = RoiSppPooler()
    for h, w, n in [(30, 40, 300), (12, 9, 50), (42, 56, 500), (5, 5, 30)]:
        fmap = rng.standard_normal((4, h, w)).astype(np.float32)
        base = random_rects(rng, h, w, n // 3)
        rects = np.concatenate([base, base[::-1], base[: n - 2 * len(base)]])  # every window twice or more
        got = pooler(torch.from_numpy(fmap), rects).numpy()
        want = np.stack([reference_pool(fmap, r, (6, 3, 2, 1)) for r in rects])
        np.testing.assert_array_equal(got, want)


def test_layout_and_errors():
    fmap = torch.arange(2 * 4 * 4, dtype=torch.float32).view(2, 4, 4)
    out = roi_spp_pool(fmap, [[0, 0, 3, 3]], (2, 1))
    # coarse first: 1x1 for both channels, then 2x2 channel-major
    assert out[0, :2].tolist() == [15, 31]
    assert out[0, 2:6].tolist() == [5, 7, 13, 15]
    assert roi_spp_pool(fmap, np.zeros((0, 4), int)).shape == (0, 2 * 50)
    with pytest.raises(ValueError, match="inside the 4x4 map"):
        roi_spp_pool(fmap, [[0, 0, 4, 3]])
