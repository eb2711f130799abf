"""Pure proposal filtering steps, each against an obvious reference on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest

from spp_detect.core.boxes import iou_matrix
from spp_detect.proposals.filtering import (
    filter_min_size,
    finalize,
    interleave_ranked,
    rects_to_boxes,
    snap_to_pixels,
    suppress_near_duplicates,
    unique_boxes,
    whole_image_box,
)


def test_rects_to_boxes_full_size_is_inclusive():
    # OpenCV (x, y, w, h) = (2, 3, 10, 5) covers columns 2..11 and rows 3..7
    out = rects_to_boxes(np.array([[2, 3, 10, 5]]))
    np.testing.assert_array_equal(out, [[2, 3, 11, 7]])


def test_rects_to_boxes_maps_half_size_back_to_original_extent():
    # on a half-size image, columns 1..4 (x=1, w=4) are original columns 2..9
    out = rects_to_boxes(np.array([[1, 0, 4, 2]]), scale_x=0.5, scale_y=0.5)
    np.testing.assert_allclose(out, [[2, 0, 9, 3]])


def test_min_size_keeps_exact_size_and_drops_one_less():
    boxes = np.array([[0, 0, 19, 19], [0, 0, 18, 30], [5, 5, 40, 23], [0, 0, 30, 18]], np.float32)
    out = filter_min_size(boxes, 20)
    # widths/heights are inclusive: 0..19 is 20 pixels
    np.testing.assert_array_equal(out, boxes[[0]])
    assert filter_min_size(np.zeros((0, 4)), 20).shape == (0, 4)


def test_unique_keeps_first_occurrence_in_rank_order():
    boxes = np.array([[5, 5, 9, 9], [0, 0, 3, 3], [5, 5, 9, 9], [1, 1, 4, 4], [0, 0, 3, 3]], np.float32)
    out = unique_boxes(boxes)
    np.testing.assert_array_equal(out, boxes[[0, 1, 3]])


def _suppress_reference(boxes, thr):
    iou = iou_matrix(boxes, boxes)
    kept = []
    for i in range(len(boxes)):
        if all(iou[i, k] <= thr for k in kept):
            kept.append(i)
    return boxes[kept]


@pytest.mark.parametrize("thr", [0.3, 0.7, 0.9])
def test_near_duplicate_suppression_matches_slow_reference(thr):
    rng = np.random.default_rng(0)
    xy = rng.integers(0, 60, (300, 2))
    wh = rng.integers(5, 40, (300, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)  # > one 256-box block
    np.testing.assert_array_equal(suppress_near_duplicates(boxes, thr), _suppress_reference(boxes, thr))
    limited = suppress_near_duplicates(boxes, thr, limit=7)
    np.testing.assert_array_equal(limited, _suppress_reference(boxes, thr)[:7])


def test_near_duplicate_off_at_one():
    boxes = np.array([[0, 0, 9, 9], [0, 0, 9, 10]], np.float32)
    assert len(suppress_near_duplicates(boxes, 1.0)) == 2
    assert len(suppress_near_duplicates(boxes, 0.85)) == 1


def test_interleave_by_rank_position():
    a = np.array([[0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 3, 3]], np.float32)
    b = np.array([[1, 1, 5, 5]], np.float32)
    out = interleave_ranked([a, b])
    np.testing.assert_array_equal(out, [a[0], b[0], a[1], a[2]])
    assert interleave_ranked([]).shape == (0, 4)


def test_finalize_clips_snaps_filters_and_caps():
    raw = np.array(
        [
            [-5.4, -3, 50.2, 40],  # clipped to the image
            [-5.4, -3, 50.2, 40],  # exact duplicate after snapping
            [10, 10, 15, 50],  # 6 px wide: dropped
            [0, 0, 200, 200],  # whole image after clipping
            [20, 20, 60, 60],
        ],
        np.float32,
    )
    out, fallback = finalize(raw, height=48, width=64, min_size=20, max_proposals=2)
    assert not fallback
    np.testing.assert_array_equal(out, [[0, 0, 50, 40], [0, 0, 63, 47]])
    assert out.dtype == np.float32
    assert (out[:, 2] <= 63).all() and (out[:, 3] <= 47).all()


def test_finalize_falls_back_to_whole_image():
    out, fallback = finalize(np.array([[0, 0, 5, 5]], np.float32), height=30, width=40, min_size=20, max_proposals=10)
    assert fallback
    np.testing.assert_array_equal(out, whole_image_box(30, 40))
    np.testing.assert_array_equal(out, [[0, 0, 39, 29]])
    out, fallback = finalize(np.zeros((0, 4)), 30, 40, 20, 10)
    assert fallback and out.shape == (1, 4)


def test_snap_rounds_to_pixels():
    np.testing.assert_array_equal(snap_to_pixels(np.array([[0.4, 0.6, 9.5, 10.49]])), [[0, 1, 10, 10]])
