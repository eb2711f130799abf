"""``spp-detect extract`` killed part way resumes from its finished parts and gives the same cache."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spp_detect.datasets import open_dataset
from spp_detect.features.cache import FeatureCache
from tests.helpers import make_voc_tree, write_random_proposals

REPO = Path(__file__).resolve().parents[2]
N_IMAGES = 10


def _finished_parts(parts: Path) -> list[Path]:
    return sorted(parts.glob("r0-*.h5"))  # temporary parts are hidden (".r0-....tmp-...")


def test_kill_part_way_then_resume_extracts_only_the_rest(tmp_path):
    root = make_voc_tree(tmp_path / "voc", n_images=N_IMAGES, size=(64, 80),
                         splits={"trainval": list(range(N_IMAGES))})
    ds = open_dataset(str(root), "trainval")
    run, fresh = tmp_path / "run", tmp_path / "fresh"
    for r in (run, fresh):
        write_random_proposals(r, ds)
    args = ["extract", "--dataset", str(root), "--split", "trainval", "--backbone", "zf5", "--weights", "none",
            "--set", "backbone.width=0.25", "--scales", "64,96", "--set", "extract.norm_sample_images=4"]
    index, parts = run / "features" / "trainval.h5", run / "features" / "trainval.parts"

    # one image per part and a pause after each, so the kill lands between finished parts
    cmd = [sys.executable, "-m", "spp_detect", *args, "--run", str(run), "--part-size", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd + ["--delay-per-image", "0.5"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while len(_finished_parts(parts)) < 2:
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "no part file appeared"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert not index.exists(), "an interrupted run must not leave the index"
    n_done = len(_finished_parts(parts))
    assert 2 <= n_done < N_IMAGES

    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"extracted {N_IMAGES - n_done} images" in res.stdout, res.stdout
    assert f"resuming: {n_done} of {N_IMAGES} images already extracted" in res.stderr
    assert len(_finished_parts(parts)) == N_IMAGES

    # a run never interrupted (default part size) gives the same cache; run as the interrupted one
    # was (a process with one thread: a convolution's last bit can depend on the thread count)
    done = subprocess.run([sys.executable, "-m", "spp_detect", *args, "--run", str(fresh)], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"extracted {N_IMAGES} images" in done.stdout
    with FeatureCache(index) as a, FeatureCache(fresh / "features" / "trainval.h5") as b:
        assert a.image_ids == b.image_ids == ds.image_ids
        assert a.stamp == b.stamp
        assert a.pool_norm_mean == pytest.approx(b.pool_norm_mean, rel=1e-6)
        for image_id in ds.image_ids:
            wa, wb = a.windows(image_id), b.windows(image_id)
            np.testing.assert_array_equal(wa.boxes, wb.boxes)
            np.testing.assert_array_equal(wa.rects, wb.rects)
            np.testing.assert_array_equal(a.pool(image_id).numpy(), b.pool(image_id).numpy())
