"""``spp-detect eval`` on the real VOC2007 val_mini split (200 images)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from spp_detect.cli.main import cli
from spp_detect.datasets import open_dataset
from spp_detect.evaluation import DetectionCollector, write_coco_results, write_comp4

SPLIT = "val_mini"


@pytest.fixture(scope="module")
def val_mini(shared_voc):
    return open_dataset("voc2007", SPLIT, data_root=shared_voc.parents[1])


def gt_detections(ds, shift=0.0):
    """Every ground-truth box (difficult ones included) as a detection, moved right by
    ``shift`` times its width; scores decrease so the order is fixed."""
    collector = DetectionCollector(ds.classes)
    score = 1.0
    for r in ds.records:
        for label in np.unique(r.labels):
            boxes = r.boxes[r.labels == label].astype(np.float64)
            widths = boxes[:, 2] - boxes[:, 0] + 1
            boxes[:, [0, 2]] += shift * widths[:, None]
            scores = score - 1e-4 * np.arange(len(boxes))
            score -= 1e-3
            collector.add(r.image_id, int(label), boxes, scores)
    return collector.finish()


def run_eval(shared_voc, detections, *extra):
    args = ["eval", "--dataset", "voc2007", "--data-root", str(shared_voc.parents[1]), "--split", SPLIT]
    return CliRunner().invoke(cli, args + ["--detections", str(detections), *extra])


def parse_map(output: str) -> float:
    line = next(line for line in output.splitlines() if line.startswith("mAP"))
    return float(line.split()[1])


def test_ground_truth_as_comp4_scores_one(tmp_path, shared_voc, val_mini):
    write_comp4(tmp_path / "comp4", gt_detections(val_mini), val_mini.classes, SPLIT)
    for metric in ("voc07", "voc10"):
        res = run_eval(shared_voc, tmp_path / "comp4", "--metric", metric)
        assert res.exit_code == 0, res.output
        assert parse_map(res.output) == 1.0
        assert "aeroplane" in res.output and "tvmonitor" in res.output


def test_shifted_boxes_score_lower(tmp_path, shared_voc, val_mini):
    # A shift of 30% of the width leaves IoU 0.7/1.3 = 0.54 >= 0.5: mostly still hits under
    # VOC's single threshold, but a poor fit under COCO's 0.5:0.95. 40% gives IoU 0.43: misses.
    write_comp4(tmp_path / "s30", gt_detections(val_mini, 0.3), val_mini.classes, SPLIT)
    write_comp4(tmp_path / "s40", gt_detections(val_mini, 0.4), val_mini.classes, SPLIT)
    voc30 = parse_map(run_eval(shared_voc, tmp_path / "s30", "--metric", "voc07").output)
    coco30 = parse_map(run_eval(shared_voc, tmp_path / "s30", "--metric", "coco").output)
    voc40 = parse_map(run_eval(shared_voc, tmp_path / "s40", "--metric", "voc07").output)
    assert 0.9 < voc30 < 1.0
    assert coco30 < 0.6
    assert voc40 < 0.6


def test_json_out_and_refusing_to_overwrite(tmp_path, shared_voc, val_mini):
    dets = tmp_path / "dets.json"
    write_coco_results(dets, gt_detections(val_mini), val_mini)
    out = tmp_path / "eval.json"
    res = run_eval(shared_voc, dets, "--metric", "voc10", "--json-out", str(out))
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["metric"] == "voc10" and doc["mAP"] == 1.0 and doc["n_images"] == 200
    assert set(doc["ap"]) == set(val_mini.classes) and all(v == 1.0 for v in doc["ap"].values())
    assert doc["n_gt"]["person"] > 0

    res = run_eval(shared_voc, dets, "--json-out", str(out))
    assert res.exit_code == 1
    assert "--overwrite" in res.output and str(out) in res.output
    res = run_eval(shared_voc, dets, "--metric", "coco", "--json-out", str(out), "--overwrite")
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["metric"] == "coco" and doc["coco_stats"]["AP50"] == pytest.approx(1.0)


def test_run_folder_defaults(tmp_path, shared_voc, val_mini):
    run = tmp_path / "run"
    write_coco_results(run / "detections" / f"{SPLIT}.json", gt_detections(val_mini), val_mini)
    args = ["eval", "--dataset", "voc2007", "--data-root", str(shared_voc.parents[1]), "--split", SPLIT, "--run", str(run)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert json.loads((run / "eval" / f"{SPLIT}.json").read_text())["mAP"] == 1.0
    res = CliRunner().invoke(cli, args[:-1] + [str(tmp_path / "empty_run")])
    assert res.exit_code == 1 and "spp-detect detect" in res.output


def test_bad_metric_names_the_option(tmp_path, shared_voc):
    res = run_eval(shared_voc, tmp_path, "--metric", "voc12")
    assert res.exit_code == 2
    assert "--metric" in res.output and "voc07" in res.output and "coco" in res.output


def test_malformed_comp4_exits_1_naming_the_file(tmp_path, shared_voc, val_mini):
    write_comp4(tmp_path, gt_detections(val_mini), val_mini.classes, SPLIT)
    bad = tmp_path / f"comp4_det_{SPLIT}_dog.txt"
    bad.write_text(bad.read_text() + f"{val_mini.image_ids[0]} 0.3 1 2 three 4\n")
    res = run_eval(shared_voc, tmp_path)
    assert res.exit_code == 1
    assert res.output.startswith("Error:")
    assert f"{bad.name}:" in res.output and "xmax" in res.output and "'three'" in res.output
