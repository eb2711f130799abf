"""Recall and average recall against hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from spp_detect.datasets.base import DetectionDataset, ImageRecord
from spp_detect.proposals.recall import AR_IOUS, best_overlaps, format_recall_table, proposal_recall


def _record(image_id, boxes, difficult=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    return ImageRecord(image_id, path=None, width=100, height=100, boxes=boxes, labels=np.zeros(n, np.int64),
                       difficult=np.zeros(n, bool) if difficult is None else np.asarray(difficult),
                       truncated=np.zeros(n, bool), ignore=np.zeros(n, bool))


def test_best_overlaps_by_number_of_proposals():
    gt = np.array([[0, 0, 9, 9]], np.float32)
    props = np.array([[50, 50, 60, 60], [0, 0, 9, 19], [0, 0, 9, 9]], np.float32)
    out = best_overlaps(gt, props, counts=(1, 2, 3, 100))
    np.testing.assert_allclose(out[:, 0], [0.0, 0.5, 1.0, 1.0])


def test_recall_counts_gt_boxes_and_skips_difficult():
    ds = DetectionDataset("d", "s", ("a",), [
        # three ground-truth boxes; the difficult one is not counted
        _record("a", [[0, 0, 9, 9], [20, 20, 39, 39], [60, 60, 69, 69]], difficult=[False, False, True]),
        _record("b", []),  # no ground truth: counts for boxes per image only
    ])
    props = {
        # IoU 1.0 with the first box (rank 2); IoU 0.64 with the second (rank 1, 16x16 inside 20x20)
        "a": np.array([[22, 22, 37, 37], [0, 0, 9, 9]], np.float32),
        "b": np.array([[0, 0, 5, 5]] * 4, np.float32),
    }
    rep = proposal_recall(ds, props, counts=(1, 2), seconds=[1.0, np.nan, 3.0])
    assert rep["gt_boxes"] == 2 and rep["boxes_per_image"] == 3.0 and rep["seconds_per_image"] == 2.0
    assert rep["recall"]["0.5"] == {"1": 0.5, "2": 1.0}
    assert rep["recall"]["0.7"] == {"1": 0.0, "2": 0.5}
    # AR at 2: box 1 (IoU 1) passes all 10 thresholds, box 2 (0.64) passes 0.50..0.60 (3)
    expected = np.mean([(1.0 + (0.64 >= t)) / 2 for t in AR_IOUS])
    assert rep["average_recall"]["2"] == pytest.approx(expected, abs=1e-4)
    table = format_recall_table(rep)
    assert "recall@IoU0.5" in table and "1.000" in table


def test_missing_proposals_count_as_misses_and_no_times_give_none():
    ds = DetectionDataset("d", "s", ("a",), [_record("a", [[0, 0, 9, 9]])])
    rep = proposal_recall(ds, {}, counts=(100,))
    assert rep["recall"]["0.5"]["100"] == 0.0 and rep["seconds_per_image"] is None
