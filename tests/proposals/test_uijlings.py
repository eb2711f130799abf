"""The paper's selective search (``propose.method = "uijlings"``) against slow obvious references
on tiny images: region features, the four similarities, the hierarchy, the ranking and the
deduplication, and determinism with a seed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from click.testing import CliRunner

from spp_detect.cli.main import cli
from spp_detect.config import load_config
from spp_detect.datasets import open_dataset
from spp_detect.errors import ConfigError, DataError
from spp_detect.proposals.grouping import Hierarchy, group
from spp_detect.proposals.proposer import proposer_from_config
from spp_detect.proposals.regions import (
    COLOR_BINS,
    ORIENTATIONS,
    TEXTURE_BINS,
    adjacent_pairs,
    color_bins,
    initial_regions,
    region_boxes,
    texture_bins,
    to_color_space,
)
from spp_detect.proposals.similarity import similarity
from spp_detect.proposals.store import ProposalStore
from spp_detect.proposals.uijlings import UijlingsSearch, hierarchies, rank_hierarchies

# ---------------------------------------------------------------------------------------------
# slow references: everything recomputed from pixel masks


def _random_labels(rng, shape, n):
    """A label image of ``n`` connected-ish blobs: each pixel takes the nearest of n seeds."""
    h, w = shape
    seeds = np.stack([rng.integers(0, h, n), rng.integers(0, w, n)], 1)
    yy, xx = np.mgrid[:h, :w]
    d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2 + rng.random((h, w, n)) * 0.1
    labels = d.argmin(axis=2)
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(shape)


def _ref_hist(bins: np.ndarray, mask: np.ndarray, n_bins: int) -> np.ndarray:
    """Concatenated per-layer histograms of the masked pixels, L1-normalised (float64)."""
    parts = [np.bincount(layer[mask], minlength=n_bins) for layer in bins]
    h = np.concatenate(parts).astype(np.float64)
    return h / h.sum()


def _ref_box(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float64)


def _ref_touch(a, b):
    """Two masks touch when a pixel of one has a 4-neighbour in the other."""
    grown = a.copy()
    grown[1:] |= a[:-1]
    grown[:-1] |= a[1:]
    grown[:, 1:] |= a[:, :-1]
    grown[:, :-1] |= a[:, 1:]
    return bool((grown & b).any())


def _ref_similarity(strategy, a, b, colors, textures):
    n_pix = a.size
    sa, sb = float(a.sum()), float(b.sum())
    out = 0.0
    if "c" in strategy:
        out += np.minimum(_ref_hist(colors, a, COLOR_BINS), _ref_hist(colors, b, COLOR_BINS)).sum()
    if "t" in strategy:
        out += np.minimum(_ref_hist(textures, a, TEXTURE_BINS), _ref_hist(textures, b, TEXTURE_BINS)).sum()
    if "s" in strategy:
        out += 1.0 - (sa + sb) / n_pix
    if "f" in strategy:
        box = _ref_box(a | b)
        out += 1.0 - ((box[2] - box[0] + 1) * (box[3] - box[1] + 1) - sa - sb) / n_pix
    return out


def _ref_group(labels, colors, textures, strategy):
    """Greedy grouping recomputing every neighbouring pair's similarity from the masks at every
    step; the most similar pair merges, ties to the smallest (i, j)."""
    masks = {i: labels == i for i in range(int(labels.max()) + 1)}
    boxes = [_ref_box(masks[i]) for i in range(len(masks))]
    merges = []
    nxt = len(masks)
    while len(masks) > 1:
        best = None
        for i, j in itertools.combinations(sorted(masks), 2):
            if not _ref_touch(masks[i], masks[j]):
                continue
            s = _ref_similarity(strategy, masks[i], masks[j], colors, textures)
            if best is None or s > best[0] + 1e-9:
                best = (s, i, j)
        _, i, j = best
        masks[nxt] = masks.pop(i) | masks.pop(j)
        boxes.append(_ref_box(masks[nxt]))
        merges.append((i, j))
        nxt += 1
    return np.array(merges), np.array(boxes)


# ---------------------------------------------------------------------------------------------
# region features


@pytest.mark.parametrize("space,channels", [("hsv", 3), ("lab", 3), ("rgi", 3), ("h", 1), ("i", 1)])
def test_color_spaces_are_in_unit_range(space, channels):
    rgb = (np.random.default_rng(0).random((9, 11, 3)) * 255).astype(np.uint8)
    rgb[0, 0] = 0  # black: rgI's chromaticity must not divide by zero
    img = to_color_space(rgb, space)
    assert img.shape == (9, 11, channels) and img.dtype == np.float32
    assert img.min() >= 0.0 and img.max() <= 1.0
    with pytest.raises(ConfigError, match="colour space 'xyz'"):
        to_color_space(rgb, "xyz")


def test_texture_bins_match_a_direct_gaussian_derivative():
    rng = np.random.default_rng(1)
    img = rng.random((10, 12, 2)).astype(np.float32)
    got = texture_bins(img)
    assert got.shape == (2 * ORIENTATIONS, 10, 12) and got.max() < TEXTURE_BINS
    # reference: derivative-of-Gaussian kernels (sigma 1, radius 3) by explicit sums over a
    # mirrored border
    x = np.arange(-3, 4)
    g = np.exp(-(x**2) / 2.0)
    g /= g.sum()
    dg = x * g
    for c in range(2):
        pad = np.pad(img[:, :, c].astype(np.float64), 3, mode="symmetric")
        dx = np.zeros((10, 12))
        dy = np.zeros((10, 12))
        for y in range(10):
            for xx in range(12):
                win = pad[y : y + 7, xx : xx + 7]
                dx[y, xx] = (g[:, None] * dg[None, :] * win).sum()
                dy[y, xx] = (dg[:, None] * g[None, :] * win).sum()
        resp = [np.maximum(np.cos(a) * dx + np.sin(a) * dy, 0) for a in np.arange(8) * np.pi / 4]
        top = max(r.max() for r in resp)
        for o, r in enumerate(resp):
            want = np.minimum(np.floor(r / top * TEXTURE_BINS), TEXTURE_BINS - 1)
            # float32 vs float64 may move a value sitting on a bin edge by one bin
            diff = np.abs(got[c * ORIENTATIONS + o].astype(int) - want)
            assert diff.max() <= 1 and (diff == 0).mean() > 0.97


def test_texture_orientations_see_the_direction_of_an_edge():
    img = np.zeros((12, 12, 1), np.float32)
    img[:, 6:] = 1.0  # brightness rises to the right
    bins = texture_bins(img)
    right, left, down = bins[0], bins[4], bins[2]  # 0, 180 and 90 degrees
    assert right[:, 5:7].min() == TEXTURE_BINS - 1  # the strongest response bin
    assert left.max() == 0 and down.max() == 0


def test_initial_regions_match_masks():
    rng = np.random.default_rng(2)
    labels = _random_labels(rng, (14, 17), 7)
    img = rng.random((14, 17, 3)).astype(np.float32)
    colors, textures = color_bins(img), texture_bins(img)
    regions = initial_regions(labels, colors, textures)
    assert len(regions) == 7 and regions.image_size == 14 * 17
    for i in range(7):
        mask = labels == i
        assert regions.size[i] == mask.sum()
        np.testing.assert_allclose(regions.color[i], _ref_hist(colors, mask, COLOR_BINS), rtol=1e-6)
        np.testing.assert_allclose(regions.texture[i], _ref_hist(textures, mask, TEXTURE_BINS), rtol=1e-6)
        np.testing.assert_array_equal(regions.boxes[i], _ref_box(mask))
        assert abs(regions.color[i].sum() - 1) < 1e-5 and abs(regions.texture[i].sum() - 1) < 1e-5
    want_pairs = [(i, j) for i, j in itertools.combinations(range(7), 2) if _ref_touch(labels == i, labels == j)]
    assert adjacent_pairs(labels).tolist() == [list(p) for p in want_pairs]


def test_colour_bins_are_the_value_times_25():
    img = np.array([[[0.0, 0.5, 1.0], [0.039, 0.041, 0.999]]], np.float32)
    np.testing.assert_array_equal(color_bins(img)[:, 0, :].T, [[0, 12, 24], [0, 1, 24]])


def test_region_boxes_of_a_hand_made_image():
    labels = np.array([[0, 0, 1],
                       [2, 0, 1],
                       [2, 2, 1]])
    np.testing.assert_array_equal(region_boxes(labels, 3), [[0, 0, 1, 1], [2, 0, 2, 2], [0, 1, 1, 2]])


# ---------------------------------------------------------------------------------------------
# similarities and the hierarchy


@pytest.mark.parametrize("strategy", ["c", "t", "s", "f", "ctsf", "tsf"])
def test_each_similarity_matches_the_masks(strategy):
    rng = np.random.default_rng(3)
    labels = _random_labels(rng, (16, 13), 6)
    img = rng.random((16, 13, 3)).astype(np.float32)
    colors, textures = color_bins(img), texture_bins(img)
    r = initial_regions(labels, colors, textures)
    a, b = np.array([0, 1, 2, 4]), np.array([5, 3, 2, 1])
    got = similarity(strategy, r.color, r.texture, r.size, r.boxes, a, b, r.image_size)
    want = [_ref_similarity(strategy, labels == i, labels == j, colors, textures) for i, j in zip(a, b, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_merged_features_are_those_of_the_union():
    """The weighted-mean merge gives the histograms of the union's pixels: checked through the
    similarity of a merged region to a third one."""
    rng = np.random.default_rng(4)
    labels = _random_labels(rng, (12, 12), 3)
    img = rng.random((12, 12, 3)).astype(np.float32)
    colors, textures = color_bins(img), texture_bins(img)
    r = initial_regions(labels, colors, textures)
    size = r.size[0] + r.size[1]
    color = (r.size[0] * r.color[0] + r.size[1] * r.color[1]) / size
    np.testing.assert_allclose(color, _ref_hist(colors, (labels == 0) | (labels == 1), COLOR_BINS), rtol=1e-5)


@pytest.mark.parametrize("strategy", ["ctsf", "tsf", "c", "t", "s", "f"])
@pytest.mark.parametrize("seed", [5, 6])
def test_hierarchy_matches_the_slow_greedy_grouping(strategy, seed):
    rng = np.random.default_rng(seed)
    labels = _random_labels(rng, (15, 18), 9)
    img = rng.random((15, 18, 3)).astype(np.float32)
    colors, textures = color_bins(img), texture_bins(img)
    h = group(initial_regions(labels, colors, textures), strategy)
    want_merges, want_boxes = _ref_group(labels, colors, textures, strategy)
    assert h.n_initial == 9 and len(h.boxes) == 17
    np.testing.assert_array_equal(h.merges, want_merges)
    np.testing.assert_array_equal(h.boxes, want_boxes)
    np.testing.assert_array_equal(h.boxes[-1], [0, 0, 17, 14])  # the last region is the image


def test_a_single_region_is_its_own_hierarchy():
    labels = np.zeros((5, 6), int)
    img = np.zeros((5, 6, 3), np.float32)
    h = group(initial_regions(labels, color_bins(img), texture_bins(img)), "ctsf")
    assert h.merges.shape == (0, 2)
    np.testing.assert_array_equal(h.boxes, [[0, 0, 5, 4]])


# ---------------------------------------------------------------------------------------------
# ranking, deduplication, determinism


class _Ones:
    """A generator whose every draw is 1: ranking by position alone."""

    def random(self, n):
        return np.ones(n)


def _hierarchy(boxes):
    boxes = np.asarray(boxes, np.float64)
    return Hierarchy(boxes, np.zeros((0, 2), np.int64), len(boxes))


def test_ranking_puts_each_hierarchys_last_regions_first():
    a = _hierarchy([[0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 3, 3]])  # creation order: [0,0,3,3] last
    b = _hierarchy([[5, 5, 6, 6], [5, 5, 9, 9]])
    got = rank_hierarchies([a, b], _Ones())
    # positions: a -> 3, 2, 1; b -> 2, 1; ties keep hierarchy order
    np.testing.assert_array_equal(got, [[0, 0, 3, 3], [5, 5, 9, 9], [0, 0, 2, 2], [5, 5, 6, 6], [0, 0, 1, 1]])


def test_ranking_is_position_times_a_random_draw():
    a = _hierarchy(np.arange(20).reshape(5, 4))
    b = _hierarchy(np.arange(100, 112).reshape(3, 4))
    got = rank_hierarchies([a, b], np.random.default_rng(7))
    draws = np.random.default_rng(7).random(8)
    keys = np.concatenate([np.arange(5, 0, -1) * draws[:5], np.arange(3, 0, -1) * draws[5:]])
    want = np.concatenate([a.boxes, b.boxes])[np.argsort(keys, kind="stable")]
    np.testing.assert_array_equal(got, want)


def _image(seed=0, shape=(60, 80)):
    """A few flat rectangles on a noisy background: something to segment."""
    rng = np.random.default_rng(seed)
    img = (rng.random((*shape, 3)) * 40 + 100).astype(np.uint8)
    img[10:40, 8:35] = (200, 30, 30)
    img[25:55, 45:75] = (20, 160, 40)
    img[5:20, 50:70] = (30, 40, 220)
    return img


def _first_occurrences(boxes):
    seen, out = set(), []
    for b in map(tuple, boxes):
        if b not in seen:
            seen.add(b)
            out.append(b)
    return np.array(out, np.float32).reshape(-1, 4)


def test_proposals_are_the_ranked_regions_filtered_and_deduplicated():
    img = _image()
    search = UijlingsSearch(mode="fast", min_size=8, seed=1)
    got, fallback = search.propose(img, "img")
    assert not fallback
    ranked = rank_hierarchies(hierarchies(img, search.strategies), np.random.default_rng(_seed("img", 1)))
    w, h = ranked[:, 2] - ranked[:, 0] + 1, ranked[:, 3] - ranked[:, 1] + 1
    want = _first_occurrences(ranked[(w >= 8) & (h >= 8)])
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(got, axis=0)) == len(got)
    # the cap keeps the best-ranked
    capped, _ = UijlingsSearch(mode="fast", min_size=8, seed=1, max_proposals=5).propose(img, "img")
    np.testing.assert_array_equal(capped, want[:5])
    # each colored rectangle is found exactly (inclusive pixels)
    for box in ([8, 10, 34, 39], [45, 25, 74, 54], [50, 5, 69, 19]):
        assert (got == box).all(axis=1).any(), box


def _seed(image_id, seed):
    from spp_detect.proposals.proposer import image_seed

    return image_seed(image_id, seed, 0)


def test_same_image_id_and_seed_give_the_same_boxes():
    img = _image()
    a, _ = UijlingsSearch(seed=3).propose(img, "x")
    b, _ = UijlingsSearch(seed=3).propose(img.copy(), "x")
    c, _ = UijlingsSearch(seed=4).propose(img, "x")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)  # another ranking...
    assert {tuple(r) for r in a} == {tuple(r) for r in c}  # ...of the same regions (no cap binds)


def test_resized_search_returns_boxes_of_the_original_image():
    img = _image(shape=(60, 80))
    boxes, _ = UijlingsSearch(mode="lite", resize_to=30, min_size=4).propose(img, "x")
    assert boxes[:, [0, 2]].max() <= 79 and boxes[:, [1, 3]].max() <= 59
    assert ((boxes[:, 2] - boxes[:, 0] + 1) >= 4).all()
    # the whole image is a region of every hierarchy
    assert (boxes == [0, 0, 79, 59]).all(axis=1).any()


def test_bad_settings_and_images_are_refused():
    with pytest.raises(ConfigError, match="propose.mode"):
        UijlingsSearch(mode="best")
    with pytest.raises(ConfigError, match="max_proposals"):
        UijlingsSearch(max_proposals=0)
    with pytest.raises(DataError, match="strip.jpg.*aspect ratio"):
        UijlingsSearch().propose(np.zeros((10, 400, 3), np.uint8), "strip", source="strip.jpg")


# ---------------------------------------------------------------------------------------------
# through the config, the stage and the CLI


def test_the_config_builds_the_method():
    cfg = load_config(None, ["propose.method=uijlings", "propose.mode=quality", "propose.near_duplicate_iou=1.0"])
    search = proposer_from_config(cfg.propose, seed=9)
    assert isinstance(search, UijlingsSearch)
    assert (search.mode, search.seed, search.near_duplicate_iou) == ("quality", 9, 1.0)
    assert list(search.to_stamp()["strategies"]["ks"]) == [50, 100, 150, 300]


def test_propose_command_runs_the_method_with_one_or_two_workers(tmp_path, tiny_voc):
    runs = []
    for workers in ("1", "2"):
        run = tmp_path / f"w{workers}"
        res = CliRunner().invoke(cli, ["propose", "--dataset", str(tiny_voc), "--split", "trainval", "--run", str(run),
                                       "--workers", workers, "--method", "uijlings", "--mode", "fast"])
        assert res.exit_code == 0, res.output
        runs.append(run)
    ds = open_dataset(str(tiny_voc), "trainval")
    with ProposalStore(runs[0] / "proposals/trainval.h5", ds) as a, ProposalStore(runs[1] / "proposals/trainval.h5", ds) as b:
        assert a.stamp["params"]["method"] == "selective_search/uijlings"
        for iid in ds.image_ids:
            assert len(a.boxes(iid)) > 1
            np.testing.assert_array_equal(a.boxes(iid), b.boxes(iid))
