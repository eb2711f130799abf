import numpy as np

from spp_detect.core.boxes import iou_matrix
from spp_detect.core.nms import best_after_nms, nms


def slow_nms(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(iou_matrix(boxes[[i]], boxes[[k]])[0, 0] <= thr for k in keep):
            keep.append(i)
    return keep


def _random_boxes(rng, most):
    n = int(rng.integers(1, most))
    xy = rng.uniform(0, 50, (n, 2))
    return n, np.concatenate([xy, xy + rng.uniform(0, 30, (n, 2))], 1).round()


def test_matches_slow_reference_on_random_boxes():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n, boxes = _random_boxes(rng, 60)
        scores = rng.permutation(n).astype(float)  # distinct scores: a unique greedy answer
        for thr in (0.0, 0.3, 0.5, 0.7):
            assert nms(boxes, scores, thr).tolist() == slow_nms(boxes, scores, thr)


def test_inclusive_pixels_decide_suppression():
    # 1-pixel-wide boxes: exclusive coordinates would give zero area and never suppress
    boxes = np.array([[5, 0, 5, 9], [5, 0, 5, 9], [6, 0, 6, 9]], float)
    assert nms(boxes, np.array([3.0, 2.0, 1.0]), 0.3).tolist() == [0, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.3).tolist() == []


def test_best_after_nms_keeps_windows_above_the_floor_best_first_at_most_max():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n, boxes = _random_boxes(rng, 50)
        scores = rng.permutation(n).astype(float) - n / 2
        above = [i for i in range(n) if scores[i] > 0.0]
        # the slow way: NMS over the windows above the floor, in their own numbering, then the first 3
        ref = [above[i] for i in slow_nms(boxes[above], scores[above], 0.3)][:3] if above else []
        assert best_after_nms(boxes, scores, 0.0, 0.3, 3).tolist() == ref
