"""VOC AP against a slow, obvious transcription of the devkit's VOCevaldet loop."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from spp_detect.datasets import DetectionDataset, ImageRecord
from spp_detect.errors import DataError
from spp_detect.evaluation import ClassDetections, evaluate, evaluate_class, evaluate_voc, voc_ap

# ---------------------------------------------------------------------------------------------
# the reference: one detection at a time, plain Python, as VOCevaldet.m reads


def ref_iou(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    ua = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - iw * ih
    return iw * ih / ua


def ref_evaluate(rows, gt, thr=0.5):
    """rows: [(image_id, score, box)]; gt: {image_id: [(box, difficult)]}. Returns tp, fp, npos."""
    order = sorted(range(len(rows)), key=lambda k: -rows[k][1])  # sorted() is stable
    matched = {i: [False] * len(g) for i, g in gt.items()}
    npos = sum(1 for g in gt.values() for _, d in g if not d)
    tp, fp = [], []
    for k in order:
        image_id, _, box = rows[k]
        best, jbest = -math.inf, None
        for j, (g, _) in enumerate(gt[image_id]):
            ov = ref_iou(box, g)
            if ov > best:
                best, jbest = ov, j
        t = f = 0
        if best >= thr:
            if not gt[image_id][jbest][1]:
                if not matched[image_id][jbest]:
                    t = 1
                    matched[image_id][jbest] = True
                else:
                    f = 1
        else:
            f = 1
        tp.append(t)
        fp.append(f)
    return tp, fp, npos


def ref_ap(tp, fp, npos, use_07):
    if npos == 0:
        return math.nan
    ctp = cfp = 0
    rec, prec = [], []
    for t, f in zip(tp, fp, strict=True):
        ctp += t
        cfp += f
        rec.append(ctp / npos)
        prec.append(ctp / max(ctp + cfp, 1e-300))
    if use_07:
        total = 0.0
        for i in range(11):
            t = i * 0.1
            ps = [p for r, p in zip(rec, prec, strict=True) if r >= t]
            total += max(ps) if ps else 0.0
        return total / 11
    # Area: each recall step times the best precision at that recall or beyond.
    area, last = 0.0, 0.0
    for i, r in enumerate(rec):
        if r != last:
            area += (r - last) * max(prec[i:])
            last = r
    return area


def to_inputs(rows, gt):
    dets = ClassDetections.from_rows(rows)
    truth = {
        i: (np.array([b for b, _ in g], float).reshape(-1, 4), np.array([d for _, d in g], bool))
        for i, g in gt.items()
    }
    return dets, truth


def check_against_reference(rows, gt):
    dets, truth = to_inputs(rows, gt)
    ref_tp, ref_fp, npos = ref_evaluate(rows, gt)
    for use_07 in (True, False):
        res = evaluate_class(dets, truth, use_07_metric=use_07)
        assert res.npos == npos
        assert res.tp.astype(int).tolist() == ref_tp
        assert res.fp.astype(int).tolist() == ref_fp
        expected = ref_ap(ref_tp, ref_fp, npos, use_07)
        if math.isnan(expected):
            assert math.isnan(res.ap)
        else:
            assert res.ap == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# voc_ap on curves


def test_voc_ap_perfect_and_empty_curves():
    assert voc_ap([1.0], [1.0], True) == 1.0
    assert voc_ap([1.0], [1.0], False) == 1.0
    assert voc_ap([], [], True) == 0.0
    assert voc_ap([], [], False) == 0.0


def test_voc_ap_known_curve():
    # 2 GT: TP, duplicate FP, TP -> recall .5 .5 1, precision 1 .5 2/3.
    rec, prec = [0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3]
    assert voc_ap(rec, prec, True) == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11)
    assert voc_ap(rec, prec, False) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


def test_voc07_thresholds_are_the_devkit_ports():
    # np.arange(0, 1.1, 0.1)[3] is 0.30000000000000004, so a recall of exactly 3/10 does not
    # reach t = 0.3 in the devkit's Python port; we reproduce that, not the rounder number.
    assert voc_ap([3 / 10], [1.0], True) == pytest.approx(3 / 11)
    assert voc_ap([3 / 10], [1.0], False) == pytest.approx(0.3)


# ---------------------------------------------------------------------------------------------
# hand-made cases

GT_A = (10.0, 10.0, 49.0, 49.0)
GT_B = (60.0, 10.0, 99.0, 49.0)


def test_ground_truth_as_detections_scores_one():
    gt = {"a": [(GT_A, False), (GT_B, False)], "b": [(GT_A, False)]}
    rows = [("a", 0.9, GT_A), ("a", 0.8, GT_B), ("b", 0.7, GT_A)]
    dets, truth = to_inputs(rows, gt)
    for use_07 in (True, False):
        assert evaluate_class(dets, truth, use_07_metric=use_07).ap == pytest.approx(1.0)


def test_duplicates_are_false_positives():
    gt = {"a": [(GT_A, False), (GT_B, False)]}
    rows = [("a", 0.9, GT_A), ("a", 0.8, GT_A), ("a", 0.7, GT_B)]
    dets, truth = to_inputs(rows, gt)
    res = evaluate_class(dets, truth, use_07_metric=False)
    assert res.tp.tolist() == [True, False, True]
    assert res.fp.tolist() == [False, True, False]
    assert res.ap == pytest.approx(0.5 + 0.5 * 2 / 3)
    check_against_reference(rows, gt)


def test_difficult_is_neither_true_nor_false_positive():
    gt = {"a": [(GT_A, False), (GT_B, True)]}
    rows = [("a", 0.95, GT_B), ("a", 0.9, GT_A), ("a", 0.8, GT_B)]
    dets, truth = to_inputs(rows, gt)
    res = evaluate_class(dets, truth)
    assert res.npos == 1
    assert res.tp.tolist() == [False, True, False]
    assert res.fp.tolist() == [False, False, False]
    assert res.ap == pytest.approx(1.0)


def test_best_overlap_rule_follows_the_devkit():
    # The detection overlaps a normal box enough, but a difficult box more: ignored, not TP.
    normal, difficult = (0.0, 0.0, 99.0, 99.0), (0.0, 0.0, 89.0, 99.0)
    det = (0.0, 0.0, 91.0, 99.0)
    gt = {"a": [(normal, False), (difficult, True)]}
    dets, truth = to_inputs([("a", 1.0, det)], gt)
    res = evaluate_class(dets, truth)
    assert not res.tp[0] and not res.fp[0] and res.ap == 0.0
    # Its best box is already taken by a better detection: FP, although another box fits.
    gt = {"a": [(normal, False), (difficult, False)]}
    rows = [("a", 1.0, difficult), ("a", 0.5, det)]
    res = evaluate_class(*to_inputs(rows, gt))
    assert res.tp.tolist() == [True, False] and res.fp.tolist() == [False, True]
    check_against_reference(rows, gt)


def test_iou_of_exactly_half_counts_inclusive_pixels():
    gt = {"a": [((0.0, 0.0, 9.0, 9.0), False)]}
    half = (0.0, 0.0, 9.0, 4.0)  # 10x5 of a 10x10 box with +1 widths: IoU 0.5 exactly
    res = evaluate_class(*to_inputs([("a", 1.0, half)], gt))
    assert res.tp.tolist() == [True]
    below = (0.0, 0.0, 9.0, 3.0)  # 0.4 with +1 widths; 3/9 = 0.33 without
    res = evaluate_class(*to_inputs([("a", 1.0, below)], gt))
    assert res.fp.tolist() == [True]


def test_equal_scores_keep_input_order():
    gt = {"a": [(GT_A, False)]}
    miss = (200.0, 200.0, 220.0, 220.0)
    first_miss = evaluate_class(*to_inputs([("a", 0.5, miss), ("a", 0.5, GT_A)], gt))
    first_hit = evaluate_class(*to_inputs([("a", 0.5, GT_A), ("a", 0.5, miss)], gt))
    assert first_miss.ap == pytest.approx(0.5)
    assert first_hit.ap == pytest.approx(1.0)


def test_no_detections_scores_zero():
    gt = {"a": [(GT_A, False)], "b": []}
    res = evaluate_class(ClassDetections.empty(), to_inputs([], gt)[1])
    assert res.ap == 0.0 and res.npos == 1 and res.n_detections == 0


def test_no_ground_truth_is_nan():
    gt = {"a": [], "b": [(GT_A, True)]}
    rows = [("a", 0.9, GT_A), ("b", 0.8, GT_A)]
    res = evaluate_class(*to_inputs(rows, gt))
    assert res.npos == 0 and math.isnan(res.ap)
    assert res.fp.tolist() == [True, False]


def test_detection_on_unknown_image_is_an_error():
    gt = {"a": [(GT_A, False)]}
    with pytest.raises(DataError, match="'zzz'"):
        evaluate_class(*to_inputs([("zzz", 0.9, GT_A)], gt))


# ---------------------------------------------------------------------------------------------
# random cases against the reference


def random_case(rng):
    gt, rows = {}, []
    for i in range(int(rng.integers(1, 6))):
        image_id = f"im{i}"
        boxes = []
        for _ in range(int(rng.integers(0, 5))):
            x1, y1 = rng.integers(0, 80, 2)
            w, h = rng.integers(5, 40, 2)
            boxes.append(((float(x1), float(y1), float(x1 + w), float(y1 + h)), bool(rng.random() < 0.2)))
        gt[image_id] = boxes
        for box, _ in boxes:
            for _ in range(int(rng.integers(0, 3))):  # jittered hits, sometimes duplicates
                jitter = rng.normal(0, 4, 4)
                b = np.array(box) + jitter
                rows.append((image_id, round(float(rng.random()), 1), tuple(np.minimum(b[:2], b[2:])) + tuple(np.maximum(b[:2], b[2:]))))
        for _ in range(int(rng.integers(0, 3))):  # background
            x1, y1 = rng.integers(0, 100, 2)
            rows.append((image_id, round(float(rng.random()), 1), (float(x1), float(y1), float(x1 + 10), float(y1 + 10))))
    return rows, gt


def test_random_cases_match_reference():
    rng = np.random.default_rng(7)
    n_nonzero = 0
    for _ in range(150):
        rows, gt = random_case(rng)
        check_against_reference(rows, gt)
        dets, truth = to_inputs(rows, gt)
        ap = evaluate_class(dets, truth).ap
        n_nonzero += (not math.isnan(ap)) and 0 < ap < 1
    assert n_nonzero > 50  # the cases are not all trivial


# ---------------------------------------------------------------------------------------------
# whole datasets


def make_dataset():
    def rec(image_id, boxes, labels, difficult=None, ignore=None):
        n = len(labels)
        return ImageRecord(
            image_id=image_id,
            path=Path(f"/nonexistent/{image_id}.jpg"),
            width=128,
            height=128,
            boxes=np.array(boxes, np.float32).reshape(-1, 4),
            labels=np.array(labels, np.int64),
            difficult=np.array(difficult or [False] * n, bool),
            truncated=np.zeros(n, bool),
            ignore=np.array(ignore or [False] * n, bool),
        )

    records = [
        rec("a", [GT_A, GT_B], [0, 1]),
        rec("b", [GT_A, GT_B], [0, 0], difficult=[False, True]),
        rec("c", [GT_B], [1], ignore=[True]),
    ]
    return DetectionDataset(name="hand", split="test", classes=("cat", "dog", "emu"), records=records)


def test_evaluate_voc_excludes_classes_without_ground_truth():
    ds = make_dataset()
    dets = {
        "cat": ClassDetections.from_rows([("a", 0.9, GT_A), ("b", 0.8, GT_A), ("b", 0.7, GT_B)]),
        "dog": ClassDetections.from_rows([("c", 0.9, GT_B), ("a", 0.5, GT_A)]),  # crowd hit ignored, one FP
        "emu": ClassDetections.from_rows([("a", 0.9, GT_A)]),
    }
    for metric in ("voc07", "voc10"):
        res = evaluate_voc(ds, dets, metric)
        assert res.n_gt == {"cat": 2, "dog": 1, "emu": 0}
        assert res.ap["cat"] == pytest.approx(1.0)
        assert res.ap["dog"] == 0.0
        assert math.isnan(res.ap["emu"])
        assert res.mAP == pytest.approx(0.5)  # emu left out
        assert res.n_images == 3
    assert evaluate(ds, dets, "voc10").mAP == pytest.approx(0.5)


def test_evaluate_voc_rejects_unknown_class_and_metric():
    ds = make_dataset()
    with pytest.raises(DataError, match="'horse'"):
        evaluate_voc(ds, {"horse": ClassDetections.empty()})
    with pytest.raises(ValueError, match="voc07"):
        evaluate(ds, {}, "voc12")
