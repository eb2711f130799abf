"""The SPP layer against a slow, obvious reference: every map size from 1x1 to 40x40."""

import math

import numpy as np
import pytest
import torch

from spp_detect.core.pyramid import bin_bounds, ordered_levels, spp_output_dim
from spp_detect.core.spp import SpatialPyramidPooling, roi_spp_pool, sliding_window_params, spp_pool

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_spp(fmap: np.ndarray, levels, order="coarse_first") -> np.ndarray:
    """One (C, H, W) map -> vector, bin by bin with math.floor/math.ceil, levels in ``order``."""
    c, h, w = fmap.shape
    levels_in_order = sorted(levels) if order == "coarse_first" else list(levels)
    parts = []
    for n in levels_in_order:
        level = np.empty((c, n, n), fmap.dtype)
        for i in range(n):
            r0, r1 = math.floor(i * h / n), math.ceil((i + 1) * h / n)
            for j in range(n):
                c0, c1 = math.floor(j * w / n), math.ceil((j + 1) * w / n)
                level[:, i, j] = fmap[:, r0:r1, c0:c1].max(axis=(1, 2))
        parts.append(level.reshape(-1))  # channel-major (C, n, n)
    return np.concatenate(parts)


def test_every_size_from_1_to_40_matches_reference():
    rng = np.random.default_rng(0)
    levels = (6, 3, 2, 1)
    for h in range(1, 41):
        for w in range(1, 41):
            fmap = rng.standard_normal((2, 2, h, w)).astype(np.float32)
            got = spp_pool(torch.from_numpy(fmap), levels).numpy()
            assert got.shape == (2, spp_output_dim(2, levels)) == (2, 100)
            for k in range(2):
                np.testing.assert_array_equal(got[k], reference_spp(fmap[k], levels), err_msg=f"{h}x{w}")


@pytest.mark.parametrize("levels,order", [((4, 2, 1), "as_given"), ((5, 3), "coarse_first"), ((1, 7), "as_given"), ((3,), "as_given")])
def test_other_pyramids_and_orders(levels, order):
    rng = np.random.default_rng(sum(levels))
    for h, w in [(1, 1), (2, 9), (7, 7), (13, 13), (10, 3), (25, 31)]:
        fmap = rng.standard_normal((3, h, w)).astype(np.float32)
        got = spp_pool(torch.from_numpy(fmap)[None], levels, order)[0].numpy()
        np.testing.assert_array_equal(got, reference_spp(fmap, levels, order))


def test_bins_are_never_empty_and_cover_the_map():
    for length in range(1, 60):
        for n in range(1, 8):
            bins = bin_bounds(length, n)
            assert len(bins) == n
            assert bins[0][0] == 0 and bins[-1][1] == length
            assert all(e > s for s, e in bins)
            assert all(bins[i + 1][0] <= bins[i][1] for i in range(n - 1))  # no gap between bins


def test_coarse_bins_are_unions_of_6x6_bins():
    # PAPER.md: 3x3 bin i = 6x6 bins 2i, 2i+1 (and likewise for 2x2 and 1x1)
    for length in range(1, 60):
        fine = bin_bounds(length, 6)
        for n in (3, 2, 1):
            k = 6 // n
            for i, (s, e) in enumerate(bin_bounds(length, n)):
                assert (s, e) == (fine[i * k][0], fine[i * k + k - 1][1])


def test_paper_check_vector_13x13():
    # PAPER.md: a = 13 gives (window, stride) = (5, 4) for 3x3, (7, 6) for 2x2, (13, 13) for 1x1
    assert sliding_window_params(13, 3) == (5, 4)
    assert sliding_window_params(13, 2) == (7, 6)
    assert sliding_window_params(13, 1) == (13, 13)
    # and for 13x13 the fixed-size sliding-window layers equal the bin form level by level
    fmap = torch.randn(1, 4, 13, 13)
    for n in (6, 3, 2, 1):
        win, stride = sliding_window_params(13, n)
        sliding = torch.nn.functional.max_pool2d(fmap, win, stride)
        assert sliding.shape[-2:] == (n, n)
        assert torch.equal(sliding.flatten(1), spp_pool(fmap, (n,)))


def test_sliding_form_breaks_where_the_bin_form_does_not():
    # PAPER.md: a = 10, n = 6 gives window 2, stride 1: 9 outputs, not 6
    win, stride = sliding_window_params(10, 6)
    assert (win, stride) == (2, 1)
    fmap = torch.randn(1, 1, 10, 10)
    assert torch.nn.functional.max_pool2d(fmap, win, stride).shape[-1] == 9
    assert spp_pool(fmap, (6,)).shape == (1, 36)


def test_layout_coarse_first_channel_major():
    fmap = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    out = spp_pool(fmap, (2, 1))[0]
    assert out[:2].tolist() == [15, 31]  # 1x1 of channel 0, channel 1
    assert out[2:6].tolist() == [5, 7, 13, 15]  # 2x2 of channel 0, row-major
    assert out[6:].tolist() == [21, 23, 29, 31]
    as_given = spp_pool(fmap, (2, 1), "as_given")[0]
    assert as_given[:4].tolist() == [5, 7, 13, 15] and as_given[-2:].tolist() == [15, 31]


def test_module_and_errors():
    layer = SpatialPyramidPooling((6, 3, 2, 1))
    assert layer.output_dim(256) == 12800
    assert layer(torch.zeros(3, 256, 1, 1)).shape == (3, 12800)
    with pytest.raises(ValueError, match="concat_order"):
        ordered_levels((6, 3), "fine_first")
    with pytest.raises(ValueError, match=">= 1"):
        ordered_levels((6, 0))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        spp_pool(torch.zeros(3, 4, 4))


def test_channels_last_input_gives_the_same_vector():
    fmap = torch.randn(2, 5, 9, 11)
    nhwc = fmap.contiguous(memory_format=torch.channels_last)
    assert torch.equal(spp_pool(nhwc), spp_pool(fmap))


def test_gradients_flow_to_the_max():
    fmap = torch.zeros(1, 1, 3, 3, requires_grad=True)
    with torch.no_grad():
        fmap[0, 0, 1, 2] = 5.0
    spp_pool(fmap, (1,)).sum().backward()
    assert fmap.grad[0, 0, 1, 2] == 1 and fmap.grad.sum() == 1


def test_roi_pool_agrees_with_whole_map_pool_and_reference():
    rng = np.random.default_rng(3)
    fmap = rng.standard_normal((3, 17, 23)).astype(np.float32)
    whole = roi_spp_pool(fmap, [[0, 0, 22, 16]])
    np.testing.assert_array_equal(whole.numpy(), spp_pool(torch.from_numpy(fmap)[None]).numpy())
    rects = [[4, 2, 4, 2], [0, 0, 9, 3], [5, 6, 22, 16], [20, 1, 22, 15]]
    got = roi_spp_pool(fmap, rects).numpy()
    for k, (x1, y1, x2, y2) in enumerate(rects):
        np.testing.assert_array_equal(got[k], reference_spp(fmap[:, y1 : y2 + 1, x1 : x2 + 1], (6, 3, 2, 1)))
    with pytest.raises(ValueError, match="concat_order"):
        roi_spp_pool(fmap, rects, concat_order="nope")
