import numpy as np
import pytest

from spp_detect.core import boxes as B


def slow_iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = ix * iy
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_iou_matches_slow_reference():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 50, (20, 2))
    a = np.concatenate([a, a + rng.uniform(0, 30, (20, 2))], axis=1)
    b = rng.uniform(0, 50, (15, 2))
    b = np.concatenate([b, b + rng.uniform(0, 30, (15, 2))], axis=1)
    got = B.iou_matrix(a, b)
    want = np.array([[slow_iou(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_iou_inclusive_pixels():
    # two 10x10 boxes sharing one column of 10 pixels: 10 / (100 + 100 - 10)
    assert B.iou_matrix([[0, 0, 9, 9]], [[9, 0, 18, 9]])[0, 0] == pytest.approx(10 / 190)
    assert B.iou_matrix([[0, 0, 0, 0]], [[0, 0, 0, 0]])[0, 0] == 1.0
    assert B.iou_matrix(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)


def test_conversions_round_trip():
    boxes = np.array([[0, 0, 9, 19], [5.5, 3, 7, 8]], np.float32)
    np.testing.assert_allclose(B.from_voc(B.to_voc(boxes)), boxes)
    np.testing.assert_allclose(B.from_coco_xywh(B.to_coco_xywh(boxes)), boxes)
    assert B.to_coco_xywh(boxes)[0].tolist() == [0, 0, 10, 20]
    assert B.to_voc(boxes)[0].tolist() == [1, 1, 10, 20]


def test_clip_and_flip():
    clipped = B.clip_boxes([[-5, -1, 200, 50]], height=40, width=100)
    assert clipped[0].tolist() == [0, 0, 99, 39]
    flipped = B.flip_horizontal([[0, 0, 9, 9]], width=100)
    assert flipped[0].tolist() == [90, 0, 99, 9]
    np.testing.assert_allclose(B.flip_horizontal(flipped, 100), [[0, 0, 9, 9]])


def test_bad_shape_raises():
    with pytest.raises(ValueError, match="shape"):
        B.as_boxes([[1, 2, 3]])
