"""The coco metric agrees with pycocotools run directly on the original files."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from spp_detect.datasets import open_dataset
from spp_detect.evaluation import ClassDetections, evaluate, read_coco_results
from spp_detect.evaluation.coco_eval import coco_evaluate, dataset_to_coco_gt

CATS = [{"id": 2, "name": "cat"}, {"id": 5, "name": "dog"}, {"id": 11, "name": "emu"}]  # emu: no GT


def make_coco(tmp_path, rng, n_images=8, size=300):
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    images, anns = [], []
    for k in range(n_images):
        img_id = 100 + 3 * k
        (images_dir / f"{img_id}.jpg").write_bytes(b"x")
        images.append({"id": img_id, "file_name": f"{img_id}.jpg", "width": size, "height": size})
        for _ in range(int(rng.integers(1, 5))):
            side = float(rng.choice([12, 20, 50, 80, 120, 160]))  # small, medium and large
            x, y = (float(v) for v in rng.integers(0, int(size - side - 1), 2))
            w, h = side, float(round(side * rng.uniform(0.6, 1.4)))
            h = min(h, size - y - 1)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": int(rng.choice([2, 5])),
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": int(rng.random() < 0.1),
                }
            )
    ann_file = tmp_path / "instances_val.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATS}))
    results = []
    for a in anns:
        for _ in range(int(rng.integers(0, 3))):
            x, y, w, h = a["bbox"]
            j = rng.normal(0, 0.12 * w, 4)
            results.append(
                {
                    "image_id": a["image_id"],
                    "category_id": a["category_id"] if rng.random() < 0.8 else 11,
                    "bbox": [x + j[0], y + j[1], max(2.0, w + j[2]), max(2.0, h + j[3])],
                    "score": float(rng.random()),
                }
            )
    for img in images:  # background
        for _ in range(2):
            results.append({"image_id": img["id"], "category_id": 2, "bbox": [1.0, 1.0, 30.0, 30.0], "score": float(rng.random())})
    res_file = tmp_path / "results.json"
    res_file.write_text(json.dumps(results))
    return ann_file, images_dir, res_file


def direct_cocoeval(ann_file, res_file, cat_ids=None):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        dt = gt.loadRes(str(res_file))
        ev = COCOeval(gt, dt, "bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("seed", [0, 1])
def test_coco_metric_matches_pycocotools_on_original_files(tmp_path, seed):
    ann_file, images_dir, res_file = make_coco(tmp_path, np.random.default_rng(seed))
    ds = open_dataset(str(ann_file), "val", image_dir=images_dir)
    ours = coco_evaluate(ds, read_coco_results(res_file, ds))
    expected = direct_cocoeval(ann_file, res_file)
    got = [ours.extra["coco_stats"][k] for k in ours.extra["coco_stats"]]
    np.testing.assert_allclose(got, [math.nan if v < 0 else v for v in expected], atol=1e-9)
    assert ours.mAP == pytest.approx(expected[0])
    assert 0.05 < ours.mAP < 0.95  # a case where agreement means something
    # Per-class AP equals pycocotools restricted to that one category.
    for cid, name in ((2, "cat"), (5, "dog")):
        assert ours.ap[name] == pytest.approx(direct_cocoeval(ann_file, res_file, [cid])[0], abs=1e-9)
    assert math.isnan(ours.ap["emu"])
    crowd = sum(a["iscrowd"] for a in json.loads(ann_file.read_text())["annotations"])
    assert sum(ours.n_gt.values()) == len(json.loads(ann_file.read_text())["annotations"]) - crowd


def test_voc_difficult_becomes_crowd_and_ground_truth_scores_one(tiny_voc):
    ds = open_dataset(str(tiny_voc), "trainval")
    gt = dataset_to_coco_gt(ds)
    assert [c["id"] for c in gt["categories"]] == [1, 2]
    assert [i["id"] for i in gt["images"]] == [1, 2, 3, 4]
    n_difficult = sum(int(r.difficult.sum()) for r in ds.records)
    assert n_difficult > 0
    assert sum(a["iscrowd"] for a in gt["annotations"]) == n_difficult
    r = ds.records[0]
    x1, y1, x2, y2 = (float(v) for v in r.boxes[0])
    assert gt["annotations"][0]["bbox"] == pytest.approx([x1, y1, x2 - x1 + 1, y2 - y1 + 1])

    dets = {}
    for label, name in enumerate(ds.classes):
        rows = [(r.image_id, 1.0, b) for r in ds.records for b, lab in zip(r.boxes, r.labels, strict=True) if lab == label]
        dets[name] = ClassDetections.from_rows(rows)
    res = evaluate(ds, dets, "coco")
    assert res.mAP == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in res.ap.values())


def test_no_detections_gives_zero(tiny_voc):
    ds = open_dataset(str(tiny_voc), "trainval")
    res = evaluate(ds, {}, "coco")
    assert res.mAP == 0.0 and set(res.ap.values()) == {0.0}
