"""``spp-detect propose`` and ``proposals-recall`` end to end on tiny synthetic VOC trees."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from spp_detect.cli.main import cli
from spp_detect.datasets import open_dataset
from spp_detect.errors import ArtifactError
from spp_detect.proposals.store import ProposalStore
from tests.helpers import make_voc_tree

REPO = Path(__file__).resolve().parents[2]


def _propose(root, run, *extra, split="trainval"):
    return CliRunner().invoke(cli, ["propose", "--dataset", str(root), "--split", split, "--run", str(run), *extra])


def test_propose_writes_clipped_filtered_stamped_file(tmp_path, tiny_voc):
    run = tmp_path / "run"
    res = _propose(tiny_voc, run, "--workers", "1", "--max-proposals", "50")
    assert res.exit_code == 0, res.output
    assert "computed 4 images" in res.output
    ds = open_dataset(str(tiny_voc), "trainval")
    with ProposalStore(run / "proposals" / "trainval.h5", ds) as store:
        assert store.params["mode"] == "fast" and store.params["min_size"] == 20
        assert store.params["passes"], "the recipe is stored with the file"
        for r in ds.records:
            b = store.boxes(r.image_id)
            assert 1 <= len(b) <= 50
            assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
            assert (b[:, 2] <= r.width - 1).all() and (b[:, 3] <= r.height - 1).all()
            assert ((b[:, 2] - b[:, 0] + 1 >= 20) & (b[:, 3] - b[:, 1] + 1 >= 20)).all()
            assert len(np.unique(b, axis=0)) == len(b)
        assert (store.seconds > 0).all()
    assert (run / "config.toml").is_file()
    assert not (run / "proposals" / "trainval.parts").exists()

    # same settings: nothing to do; other settings: refused without --overwrite
    res = _propose(tiny_voc, run)
    assert res.exit_code == 0 and "up to date" in res.output
    res = _propose(tiny_voc, run, "--min-size", "10")
    assert res.exit_code == 1
    assert "params.min_size=20 (this run: 10)" in res.output and "--overwrite" in res.output
    res = _propose(tiny_voc, run, "--min-size", "10", "--overwrite")
    assert res.exit_code == 0, res.output


def test_parallel_equals_serial(tmp_path, tiny_voc):
    assert _propose(tiny_voc, tmp_path / "a", "--workers", "1").exit_code == 0
    assert _propose(tiny_voc, tmp_path / "b", "--workers", "2").exit_code == 0
    ds = open_dataset(str(tiny_voc), "trainval")
    with ProposalStore(tmp_path / "a/proposals/trainval.h5", ds) as a, ProposalStore(tmp_path / "b/proposals/trainval.h5", ds) as b:
        for iid in ds.image_ids:
            np.testing.assert_array_equal(a.boxes(iid), b.boxes(iid))


def test_whole_image_fallback_with_warning(tmp_path, tiny_voc):
    res = _propose(tiny_voc, tmp_path / "run", "--workers", "1", "--min-size", "500")
    assert res.exit_code == 0, res.output
    assert "whole image" in res.output
    ds = open_dataset(str(tiny_voc), "trainval")
    with ProposalStore(tmp_path / "run/proposals/trainval.h5", ds) as store:
        assert store.fallback.all()
        np.testing.assert_array_equal(store.boxes(ds.image_ids[0]), [[0, 0, 127, 95]])


def test_corrupt_image_is_a_clear_error_or_skipped(tmp_path, tiny_voc):
    bad = tiny_voc / "JPEGImages" / "000002.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    run = tmp_path / "run"
    res = _propose(tiny_voc, run, "--workers", "1")
    assert res.exit_code == 1
    assert "000002.jpg" in res.output and "cannot be decoded" in res.output and "--skip-bad" in res.output
    assert not (run / "proposals" / "trainval.h5").exists()
    res = _propose(tiny_voc, run, "--workers", "1", "--skip-bad")
    assert res.exit_code == 0, res.output
    assert "1 unreadable skipped" in res.output
    ds = open_dataset(str(tiny_voc), "trainval")
    with ProposalStore(run / "proposals" / "trainval.h5", ds) as store:
        assert store.skipped_ids == ["000002"] and "000002" not in store and len(store) == 3


def test_later_stage_refuses_mismatched_split(tmp_path, tiny_voc):
    assert _propose(tiny_voc, tmp_path / "run", "--split", "train").exit_code == 0
    with pytest.raises(ArtifactError, match=r"train.h5: made with split='train', but this run has split='test'"):
        ProposalStore(tmp_path / "run/proposals/train.h5", open_dataset(str(tiny_voc), "test"))


def test_recall_report_json_and_table(tmp_path, tiny_voc):
    run = tmp_path / "run"
    assert _propose(tiny_voc, run, "--workers", "1").exit_code == 0
    out = tmp_path / "recall.json"
    res = CliRunner().invoke(cli, ["proposals-recall", "--dataset", str(tiny_voc), "--split", "trainval", "--run", str(run),
                                   "--json-out", str(out)])
    assert res.exit_code == 0, res.output
    assert "recall@IoU0.5" in res.output and "AR@0.5:0.95" in res.output
    rep = json.loads(out.read_text())
    assert set(rep["recall"]) == {"0.5", "0.7"}
    assert set(rep["recall"]["0.5"]) == set(rep["average_recall"]) == {"100", "300", "1000", "2000"}
    assert rep["boxes_per_image"] > 1 and rep["seconds_per_image"] > 0
    # recall never falls as more proposals are allowed, and 0.7 never beats 0.5
    r5 = [rep["recall"]["0.5"][n] for n in ("100", "300", "1000", "2000")]
    assert r5 == sorted(r5)
    # an existing --json-out file is kept unless --overwrite
    again = ["proposals-recall", "--dataset", str(tiny_voc), "--split", "trainval", "--run", str(run), "--json-out", str(out)]
    out.write_text("mine")
    refused = CliRunner().invoke(cli, again)
    assert refused.exit_code != 0 and "--overwrite" in refused.output and out.read_text() == "mine"
    assert CliRunner().invoke(cli, [*again, "--overwrite"]).exit_code == 0 and "recall" in json.loads(out.read_text())
    assert all(rep["recall"]["0.7"][n] <= rep["recall"]["0.5"][n] for n in rep["average_recall"])
    res = CliRunner().invoke(cli, ["proposals-recall", "--dataset", str(tiny_voc), "--split", "test", "--run", str(run)])
    assert res.exit_code == 1 and "test.h5: not found" in res.output


def test_kill_part_way_then_resume_computes_only_the_rest(tmp_path):
    root = make_voc_tree(tmp_path / "voc", n_images=12, size=(64, 80))
    run = tmp_path / "run"
    parts = run / "proposals" / "trainval.parts"
    cmd = [sys.executable, "-m", "spp_detect", "propose", "--dataset", str(root), "--split", "trainval",
           "--run", str(run), "--workers", "2", "--part-size", "2", "--delay-per-image", "0.4"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while len(list(parts.glob("part-*.npz"))) < 2:
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "no partial results appeared"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the parent and its workers, mid-run
    proc.wait()
    assert not (run / "proposals" / "trainval.h5").exists(), "an interrupted run must not leave the final file"
    n_parts = len(list(parts.glob("part-*.npz")))

    res = subprocess.run(cmd[:-2], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    reused = int(res.stdout.split("(")[1].split(" reused")[0])
    computed = int(res.stdout.split("computed ")[1].split(" images")[0])
    assert reused >= 2 * n_parts and computed == 12 - reused and computed < 12
    ds = open_dataset(str(root), "trainval")
    with ProposalStore(run / "proposals" / "trainval.h5", ds) as store:
        assert len(store) == 12
        resumed = store.load_all()
    assert not parts.exists()
    # a run never interrupted gives the same boxes
    fresh = subprocess.run(cmd[:-2] + ["--run", str(tmp_path / "fresh")], env=env, capture_output=True, text=True, timeout=120)
    assert fresh.returncode == 0, fresh.stderr
    with ProposalStore(tmp_path / "fresh" / "proposals" / "trainval.h5", ds) as store:
        for iid, boxes in store:
            np.testing.assert_array_equal(boxes, resumed[iid])


def test_split_is_required_and_bad_options_are_named(tmp_path, tiny_voc):
    res = CliRunner().invoke(cli, ["propose", "--dataset", str(tiny_voc), "--run", str(tmp_path)])
    assert res.exit_code == 2 and "--split" in res.output
    res = _propose(tiny_voc, tmp_path, "--max-proposals", "0")
    assert res.exit_code == 2 and "--max-proposals" in res.output
    res = _propose(tiny_voc, tmp_path, "--mode", "slow")
    assert res.exit_code == 2 and "--mode" in res.output and "fast" in res.output


@pytest.mark.parametrize("resize_to", [0, 48, 150])
def test_boxes_map_back_to_the_original_frame(tiny_voc, resize_to):
    from spp_detect.datasets import load_image
    from spp_detect.proposals.selective_search import SearchParams, selective_search

    image = load_image(tiny_voc / "JPEGImages" / "000000.jpg")  # 96 x 128
    boxes, fallback = selective_search(image, SearchParams(resize_to=resize_to, min_size=10), "000000")
    assert not fallback and boxes.dtype == np.float32
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 127).all() and (boxes[:, 3] <= 95).all()
    # the last merge of every hierarchy is the whole image, whatever size it was searched at
    assert (boxes == [0, 0, 127, 95]).all(axis=1).any()
