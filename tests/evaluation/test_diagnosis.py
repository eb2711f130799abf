"""Where a detector loses (spp_detect.evaluation.diagnosis): AP by object size against the
obvious reference (the out-of-range objects marked difficult, then the plain VOC evaluation),
the kinds of top false positives on a hand-made split, and ``eval --diagnose``."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from spp_detect.cli.main import cli
from spp_detect.datasets import DetectionDataset, ImageRecord
from spp_detect.evaluation import ClassDetections, evaluate_voc, write_comp4
from spp_detect.evaluation.diagnosis import (
    ap_by_size,
    diagnose,
    size_terciles,
    top_detection_kinds,
)

CLASSES = ("cat", "dog", "emu")


def record(image_id, boxes, labels, difficult=None):
    n = len(labels)
    return ImageRecord(
        image_id=image_id, path=Path(f"/nonexistent/{image_id}.jpg"), width=400, height=400,
        boxes=np.array(boxes, np.float32).reshape(-1, 4), labels=np.array(labels, np.int64),
        difficult=np.array(difficult or [False] * n, bool), truncated=np.zeros(n, bool), ignore=np.zeros(n, bool),
    )


def random_split(rng, n_images=12):
    """Objects of sides 10 to 200 px, and detections near them (some moved off, some on nothing)."""
    records, rows = [], {c: [] for c in CLASSES}
    for i in range(n_images):
        n = int(rng.integers(1, 5))
        side = rng.uniform(10, 200, n)
        x1, y1 = rng.uniform(0, 190, n), rng.uniform(0, 190, n)
        boxes = np.stack([x1, y1, x1 + side - 1, y1 + side * rng.uniform(0.6, 1.4, n) - 1], 1).round()
        labels = rng.integers(0, len(CLASSES), n)
        records.append(record(f"im{i}", boxes, labels, difficult=list(rng.random(n) < 0.1)))
        for box, label in zip(boxes, labels, strict=True):
            for _ in range(int(rng.integers(0, 3))):
                moved = box + rng.normal(0, 0.15 * (box[2] - box[0] + 1), 4)
                rows[CLASSES[int(rng.integers(0, 3)) if rng.random() < 0.2 else label]].append(
                    (f"im{i}", float(rng.random()), moved))
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(0, 300, 2)
            rows[CLASSES[int(rng.integers(0, 3))]].append((f"im{i}", float(rng.random()), np.array([x, y, x + 40, y + 40])))
    ds = DetectionDataset(name="rand", split="test", classes=CLASSES, records=records)
    return ds, {c: ClassDetections.from_rows(r) if r else ClassDetections.empty() for c, r in rows.items()}


def reference_ap_by_size(ds, dets, lo, hi, metric):
    """The slow, obvious way: mark every object outside [lo, hi) difficult, evaluate as VOC."""
    records = []
    for r in ds.records:
        b = r.boxes.astype(np.float64)
        side = np.sqrt((b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1))
        records.append(replace(r, difficult=r.difficult | (side < lo) | (side >= hi)))
    res = evaluate_voc(replace(ds, records=records), dets, metric)
    return res.mAP, sum(res.n_gt.values())


@pytest.mark.parametrize("metric", ["voc07", "voc10"])
def test_ap_by_size_equals_marking_the_other_sizes_difficult(metric):
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(20):
        ds, dets = random_split(rng)
        edges = [0, 40, 90, math.inf]
        for rng_ in ap_by_size(ds, dets, edges, use_07_metric=metric == "voc07"):
            want, n = reference_ap_by_size(ds, dets, rng_.lo, rng_.hi, metric)
            assert rng_.n_objects == n
            if n:
                assert rng_.mAP == pytest.approx(want, abs=1e-12)
                checked += 0 < want < 1
            else:
                assert math.isnan(rng_.mAP)
    assert checked > 10  # not all trivial


def test_terciles_split_the_objects_in_three():
    ds, dets = random_split(np.random.default_rng(1), n_images=40)
    edges = size_terciles(ds)
    assert edges[0] == 0 and math.isinf(edges[-1]) and len(edges) == 4
    counted = sum(int((~r.difficult).sum()) for r in ds.records)
    sizes = ap_by_size(ds, dets, edges)
    assert sum(s.n_objects for s in sizes) == counted
    assert all(abs(s.n_objects - counted / 3) <= 1 for s in sizes)


def test_bad_edges_are_refused():
    ds, dets = random_split(np.random.default_rng(2))
    for edges in ([0], [0, 50, 50], [-1, 50], [0, math.nan, 80]):
        with pytest.raises(ValueError, match="edges"):
            ap_by_size(ds, dets, edges)


def test_top_detections_sorted_into_kinds():
    cat = [100, 100, 199, 199]
    dog = [250, 250, 349, 349]
    ds = DetectionDataset(name="hand", split="test", classes=CLASSES, records=[
        record("a", [cat], [0]),
        record("b", [cat], [0]),
        record("c", [cat, dog], [0, 1]),
        record("d", [cat], [0]),
        record("e", [cat, [10, 10, 59, 59]], [0, 0], difficult=[False, True]),
    ])
    rows = [
        ("a", 0.9, cat),  # hit
        ("a", 0.85, cat),  # a duplicate: localization
        ("b", 0.8, [160, 100, 259, 199]),  # IoU 40/160 = 0.25 with its cat: localization
        ("c", 0.7, dog),  # on the dog: confusion
        ("e", 0.65, [10, 10, 59, 59]),  # finds a difficult cat: neither hit nor error
        ("d", 0.6, [300, 0, 349, 49]),  # on nothing: background
        ("d", 0.1, cat),  # a hit, but below the top 5 (5 counted cats)
    ]
    dets = {"cat": ClassDetections.from_rows(rows)}
    assert top_detection_kinds(ds, dets) == {"hit": 1, "localization": 2, "confusion": 1, "background": 1}
    found = diagnose(ds, dets, "voc07", edges=[0, 80, math.inf])
    assert [s.n_objects for s in found.sizes] == [0, 6]  # the five cats and the dog
    with pytest.raises(ValueError, match="coco"):
        diagnose(ds, dets, "coco")


# ---------------------------------------------------------------------------------------------
# the command, on the shared VOC2007 val_mini split


@pytest.fixture(scope="module")
def val_mini(shared_voc):
    from spp_detect.datasets import open_dataset

    return open_dataset("voc2007", "val_mini", data_root=shared_voc.parents[1])


def eval_args(shared_voc, detections, *extra):
    return ["eval", "--dataset", "voc2007", "--data-root", str(shared_voc.parents[1]), "--split", "val_mini",
            "--detections", str(detections), *extra]


def test_eval_diagnose_prints_and_writes_it(tmp_path, shared_voc, val_mini):
    # every counted object found once, plus a second box on each moved far off: each range's mAP is 1
    # and the top detections (as many as the objects) are all hits
    rows = {c: [] for c in val_mini.classes}
    for r in val_mini.records:
        for box, label in zip(r.boxes, r.labels, strict=True):
            rows[val_mini.classes[int(label)]].append((r.image_id, 1.0, box))
            rows[val_mini.classes[int(label)]].append((r.image_id, 0.5, box + np.array([400, 400, 400, 400])))
    write_comp4(tmp_path / "dets", {c: ClassDetections.from_rows(v) for c, v in rows.items()}, val_mini.classes,
                "val_mini")
    out = tmp_path / "eval.json"
    res = CliRunner().invoke(cli, eval_args(shared_voc, tmp_path / "dets", "--diagnose", "--json-out", str(out)))
    assert res.exit_code == 0, res.output
    assert "mAP by object size" in res.output and "hit " in res.output
    doc = json.loads(out.read_text())["diagnosis"]
    assert [s["mAP"] for s in doc["sizes"]] == [1.0, 1.0, 1.0]
    assert doc["sizes"][-1]["hi"] is None
    assert sum(s["n_objects"] for s in doc["sizes"]) == sum(json.loads(out.read_text())["n_gt"].values())
    assert doc["top_detections"]["hit"] == sum(s["n_objects"] for s in doc["sizes"])
    assert doc["top_detections"]["localization"] == doc["top_detections"]["background"] == 0

    res = CliRunner().invoke(cli, eval_args(shared_voc, tmp_path / "dets", "--diagnose", "--size-edges", "0,32,96,inf"))
    assert res.exit_code == 0, res.output
    assert "[0, 32)" in res.output and "[96, inf)" in res.output


@pytest.mark.parametrize("extra,message", [
    (["--diagnose", "--size-edges", "0,big"], "--size-edges"),
    (["--diagnose", "--size-edges", "50,20"], "--size-edges"),
    (["--size-edges", "0,32,inf"], "--diagnose"),
    (["--diagnose", "--metric", "coco"], "voc07"),
])
def test_eval_diagnose_bad_options(tmp_path, shared_voc, extra, message):
    res = CliRunner().invoke(cli, eval_args(shared_voc, tmp_path, *extra))
    assert res.exit_code == 2
    assert message in res.output
