"""Window geometry on hand-computed cases, and exhaustively against literal transcriptions."""

import math

import numpy as np
import pytest

from spp_detect.core.geometry import (
    boxes_to_resized,
    cell_centers,
    choose_scales,
    effective_scales,
    project_boxes,
    resize_image,
    resize_shape,
)

PAPER_SCALES = (480, 576, 688, 864, 1200)


# ---------------------------------------------------------------------------------------------
# resizing


def test_resize_shape_hand_cases():
    # VOC-like 375x500: shorter side -> 688, 500 * 688/375 = 917.33 -> 917
    h, w, f = resize_shape(375, 500, 688)
    assert (h, w) == (688, 917) and f == pytest.approx(688 / 375)
    # portrait: the width is the shorter side
    assert resize_shape(500, 375, 480)[:2] == (640, 480)
    # the cap on the longer side wins: 1000 * 6 = 6000 > 1000, so the factor is 1
    assert resize_shape(100, 1000, 600, max_size=1000) == (100, 1000, 1.0)
    # no cap when under it
    assert resize_shape(100, 200, 300, max_size=1000)[:2] == (300, 600)
    # upscaling a 1-pixel image
    assert resize_shape(1, 1, 5) == (5, 5, 5.0)
    # never below one pixel
    assert resize_shape(1, 1000, 1, max_size=10)[:2] == (1, 10)


def test_resize_shape_errors():
    with pytest.raises(ValueError, match="scale"):
        resize_shape(10, 10, 0)
    with pytest.raises(ValueError, match="1x1"):
        resize_shape(0, 10, 5)
    with pytest.raises(ValueError, match="max_size"):
        resize_shape(10, 10, 5, max_size=-1)


def test_resize_image_matches_shape():
    img = np.random.default_rng(0).integers(0, 255, (37, 50, 3), dtype=np.uint8)
    out, f = resize_image(img, 74)
    assert out.shape == (74, 100, 3) and out.dtype == np.uint8 and f == 2.0
    small, _ = resize_image(img, 10)
    assert small.shape[:2] == resize_shape(37, 50, 10)[:2]


# ---------------------------------------------------------------------------------------------
# scale choice


def test_choose_scales_hand_case_both_rules():
    # 100x100 box in a 375x500 image. paper: area 10000 * (s/375)^2 closest to 224^2 = 50176:
    # 688 -> 33,660 (16,516 away), 864 -> 53,084 (2,908 away): 864.
    # released: s* = round(208 * 375 / 100) = 780; |688-780| = 92, |864-780| = 84: 864.
    box = [[0, 0, 99, 99]]
    assert choose_scales(box, 375, 500, PAPER_SCALES, 224).tolist() == [3]
    assert choose_scales(box, 375, 500, PAPER_SCALES, 208, rule="released").tolist() == [3]
    # a huge box takes the smallest scale, a tiny one the largest
    assert choose_scales([[0, 0, 499, 374], [10, 10, 14, 14]], 375, 500, PAPER_SCALES).tolist() == [0, 4]


def test_paper_and_released_rules_differ_between_area_and_side_midpoints():
    # ideal shorter side 505 (224x224 box, min side 505, target 224), scales 400 and 600:
    # by area |400^2 - 505^2| = 95,025 < |600^2 - 505^2| = 104,975 -> 400;
    # by side |400 - 505| = 105 > |600 - 505| = 95 -> 600.
    box = [[0, 0, 223, 223]]
    assert choose_scales(box, 505, 600, (400, 600), 224, rule="paper").tolist() == [0]
    assert choose_scales(box, 505, 600, (400, 600), 224, rule="released").tolist() == [1]


def test_ties_go_to_the_smaller_scale_whatever_the_order():
    # released: s* = round(224 * 500 / 224) = 500, equally far from 400 and 600
    box = [[0, 0, 223, 223]]
    assert choose_scales(box, 500, 700, (600, 400), 224, rule="released").tolist() == [1]
    # paper: 4x5 box (area 20) at scales 100 / 300 of a 100-px image: areas 20 and 180, both 80
    # away from 10^2
    assert choose_scales([[0, 0, 3, 4]], 100, 120, (300, 100), 10, rule="paper").tolist() == [1]


def test_choose_scales_uses_the_capped_size():
    # 100x1000 image, cap 2000: scale 400 would make it 4000 wide, so it is really 200 as well
    assert effective_scales(100, 1000, (200, 400), max_size=2000).tolist() == [200.0, 200.0]
    assert choose_scales([[0, 0, 9, 9]], 100, 1000, (200, 400), 224, max_size=2000).tolist() == [0]
    assert choose_scales([[0, 0, 9, 9]], 100, 1000, (200, 400), 224).tolist() == [1]


def test_choose_scales_matches_brute_force():
    rng = np.random.default_rng(0)
    h, w = 333, 500
    x1 = rng.integers(0, w - 1, 500)
    y1 = rng.integers(0, h - 1, 500)
    boxes = np.stack([x1, y1, rng.integers(x1, w), rng.integers(y1, h)], 1)
    for rule, target in (("paper", 224), ("released", 208)):
        got = choose_scales(boxes, h, w, PAPER_SCALES, target, rule=rule)
        for b, k in zip(boxes, got, strict=True):
            area = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
            if rule == "paper":
                d = [abs(area * (s / h) ** 2 - target**2) for s in PAPER_SCALES]
            else:
                want = math.floor(target * h / math.sqrt(area) + 0.5)
                d = [abs(s - want) for s in PAPER_SCALES]
            assert k == int(np.argmin(d))


def test_choose_scales_edge_cases():
    assert choose_scales(np.zeros((0, 4)), 10, 10, (5,)).shape == (0,)
    with pytest.raises(ValueError, match="box 1"):
        choose_scales([[0, 0, 5, 5], [5, 0, 2, 5]], 10, 10, (5,))
    with pytest.raises(ValueError, match="rule"):
        choose_scales([[0, 0, 5, 5]], 10, 10, (5,), rule="fast")


# ---------------------------------------------------------------------------------------------
# original -> resized


def test_boxes_to_resized_hand_cases():
    # doubling a 100x200 image: pixel 0 becomes pixels 0..1 (centre 0.5), pixel 99 becomes 198..199
    got = boxes_to_resized([[0, 0, 99, 49]], 100, 200, 200, 400, rule="paper")
    np.testing.assert_allclose(got, [[0.5, 0.5, 198.5, 98.5]])
    # released: first and last pixels map onto first and last: x * (200 - 1) / (100 - 1)
    got = boxes_to_resized([[0, 0, 199, 99]], 100, 200, 200, 400, rule="released")
    np.testing.assert_allclose(got, [[0, 0, 199 * 199 / 99, 99 * 199 / 99]])
    # identity size is the identity, both rules
    b = [[3.0, 4.0, 10.0, 20.0]]
    for rule in ("paper", "released"):
        np.testing.assert_allclose(boxes_to_resized(b, 30, 40, 30, 40, rule=rule), b)


def test_released_box_scaling_matches_the_1_based_formula():
    rng = np.random.default_rng(1)
    boxes = rng.uniform(0, 300, (50, 4))
    s, m = 688, 333
    got = boxes_to_resized(boxes, m, 500, s, 1033, rule="released")
    want = ((boxes + 1) - 1) * (s - 1) / (m - 1) + 1 - 1  # PAPER.md on 1-based boxes, back to 0-based
    np.testing.assert_allclose(got, want)


# ---------------------------------------------------------------------------------------------
# resized -> conv cells


def released_reference_1based(boxes_1b, offset0_1b, inset, step, map_h, map_w):
    """The released mex code, line by line: 1-based pixels in, 1-based cells out."""
    out = []
    for x0, y0, x1, y1 in boxes_1b:
        x0n = int(math.floor((x0 - offset0_1b + inset) / step + 0.5) + 1)
        y0n = int(math.floor((y0 - offset0_1b + inset) / step + 0.5) + 1)
        x1n = int(math.ceil((x1 - offset0_1b - inset) / step - 0.5) + 1)
        y1n = int(math.ceil((y1 - offset0_1b - inset) / step - 0.5) + 1)
        if x0n > x1n:
            x0n = x1n = int((x0n + x1n) / 2)  # C integer division truncates
        if y0n > y1n:
            y0n = y1n = int((y0n + y1n) / 2)
        out.append(
            [min(map_w, max(1, x0n)), min(map_h, max(1, y0n)), min(map_w, max(1, x1n)), min(map_h, max(1, y1n))]
        )
    return np.array(out)


def paper_reference(boxes, stride, offset, map_h, map_w):
    """Cells whose centres lie strictly inside the window, found by looking at every cell."""
    out = []
    for x1, y1, x2, y2 in boxes:
        rect = []
        for lo_px, hi_px, size in ((x1, x2, map_w), (y1, y2, map_h)):
            js = range(-100, size + 100)
            inside = [j for j in js if lo_px < offset + stride * j < hi_px]
            left = min(j for j in js if offset + stride * j > lo_px)
            right = max(j for j in js if offset + stride * j < hi_px)
            assert not inside or (left, right) == (inside[0], inside[-1])
            if left > right:
                left = right = (left + right) // 2
            rect.append((min(size - 1, max(0, left)), min(size - 1, max(0, right))))
        (left, right), (top, bottom) = rect
        out.append([left, top, right, bottom])
    return np.array(out)


def test_released_projection_hand_cases():
    # ZF-5: stride 16, cell 0 centred on 0-based pixel 20 (1-based "16*(i-1) + 21"), inset 6.5.
    # x1 = 100: floor((100 - 20 + 6.5)/16 + 0.5) = floor(5.906) = 5
    # x2 = 300: ceil((300 - 20 - 6.5)/16 - 0.5) = ceil(16.59) = 17
    got = project_boxes([[100, 100, 300, 300]], 16, 20.0, "released", 50, 50)
    assert got.tolist() == [[5, 5, 17, 17]]
    # collapse: x1 = 108 -> 6, x2 = 110 -> ceil(5.219 - 0.5) = 5; midpoint floor(11/2) = 5
    assert project_boxes([[108, 108, 110, 110]], 16, 20.0, "released", 50, 50).tolist() == [[5, 5, 5, 5]]
    # left edge of the image: floor((0 - 13.5)/16 + 0.5) = -1, clamped to 0
    assert project_boxes([[0, 0, 300, 300]], 16, 20.0, "released", 50, 50).tolist()[0][:2] == [0, 0]


def test_paper_projection_hand_cases():
    # offset 0 (standard padding): x1 = 100 -> floor(100/16) + 1 = 7 (centre 112; cell 6 is at 96),
    # x2 = 300 -> ceil(300/16) - 1 = 18 (centre 288; cell 19 is at 304)
    assert project_boxes([[100, 100, 300, 300]], 16, 0.0, "paper", 50, 50).tolist() == [[7, 7, 18, 18]]
    # with ZF-5's offset 20: u1 = 80/16 = 5 -> 6 (a centre ON the edge is not inside), u2 = 17.5 -> 17
    assert project_boxes([[100, 100, 300, 300]], 16, 20.0, "paper", 50, 50).tolist() == [[6, 6, 17, 17]]
    # a 2-px window between centres collapses: left 6 > right 5 -> both floor(11/2) = 5
    assert project_boxes([[100, 100, 101, 101]], 16, 20.0, "paper", 50, 50).tolist() == [[5, 5, 5, 5]]
    # far outside the map: clamped onto the last cell, never dropped (map 10 rows x 12 columns)
    assert project_boxes([[1000, 1000, 2000, 2000]], 16, 0.0, "paper", 10, 12).tolist() == [[11, 9, 11, 9]]
    assert project_boxes([[-50, -50, -10, -10]], 16, 0.0, "paper", 10, 12).tolist() == [[0, 0, 0, 0]]


def _grid_boxes(step=3, limit=260, max_len=200):
    xs = np.arange(0, limit, step)
    lens = np.arange(0, max_len, step)
    x1, ln = np.meshgrid(xs, lens)
    x1, x2 = x1.ravel().astype(float), (x1 + ln).ravel().astype(float)
    # rows vary independently of columns: reverse the order
    return np.stack([x1, x1[::-1], x2, x2[::-1]], 1)


@pytest.mark.parametrize("stride,offset", [(16, 20.0), (16, 15.0), (16, 7.5), (16, 0.0), (8, 3.0)])
def test_released_projection_matches_the_released_code(stride, offset):
    boxes = _grid_boxes()
    map_h, map_w = 14, 17
    inset = 6.5 * stride / 16
    got = project_boxes(boxes, stride, offset, "released", map_h, map_w)
    want = released_reference_1based(boxes + 1, offset + 1, inset, stride, map_h, map_w) - 1
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("stride,offset", [(16, 20.0), (16, 7.5), (16, 0.0), (8, 3.0)])
def test_paper_projection_matches_cells_strictly_inside(stride, offset):
    boxes = _grid_boxes(step=7, limit=250, max_len=150)
    got = project_boxes(boxes, stride, offset, "paper", 12, 15)
    np.testing.assert_array_equal(got, paper_reference(boxes, stride, offset, 12, 15))


@pytest.mark.parametrize("rule", ["paper", "released"])
def test_projection_invariants(rule):
    rng = np.random.default_rng(2)
    x1 = rng.uniform(-40, 400, 3000)
    y1 = rng.uniform(-40, 300, 3000)
    boxes = np.stack([x1, y1, x1 + rng.uniform(0, 300, 3000), y1 + rng.uniform(0, 200, 3000)], 1)
    for map_h, map_w in ((1, 1), (1, 9), (13, 13), (20, 27)):
        r = project_boxes(boxes, 16, 20.0, rule, map_h, map_w)
        assert r.shape == (3000, 4) and r.dtype == np.int64  # nothing dropped
        assert (r[:, 0] <= r[:, 2]).all() and (r[:, 1] <= r[:, 3]).all()
        assert (r >= 0).all() and (r[:, [0, 2]] < map_w).all() and (r[:, [1, 3]] < map_h).all()
    # a 1-pixel window still gets a cell
    assert project_boxes([[50, 50, 50, 50]], 16, 20.0, rule, 13, 13).shape == (1, 4)


def test_projection_errors_and_empty():
    assert project_boxes(np.zeros((0, 4)), 16, 0, "paper", 3, 3).shape == (0, 4)
    with pytest.raises(ValueError, match="projection rule"):
        project_boxes([[0, 0, 1, 1]], 16, 0, "exact", 3, 3)
    with pytest.raises(ValueError, match="1x1"):
        project_boxes([[0, 0, 1, 1]], 16, 0, "paper", 0, 3)
    with pytest.raises(ValueError, match="non-finite"):
        project_boxes([[0, 0, np.nan, 1]], 16, 0, "paper", 3, 3)


def test_cell_centers():
    assert cell_centers(3, 16, 20.0).tolist() == [20.0, 36.0, 52.0]
