"""torchrun: two CPU ranks (gloo) shard the images; the merged output equals a one-process run."""

import os
import subprocess
import sys

import numpy as np
import pytest

from spp_detect.datasets import open_dataset
from spp_detect.features.cache import FeatureCache
from tests.helpers import make_voc_tree, write_random_proposals


def _extract(args, env):
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_two_ranks_equal_one_process(tmp_path):
    root = make_voc_tree(tmp_path / "voc", n_images=6, splits={"trainval": list(range(6))})
    ds = open_dataset(str(root), "trainval")
    common = ["extract", "--dataset", str(root), "--split", "trainval", "--backbone", "zf5", "--weights", "none",
              "--set", "backbone.width=0.25", "--scales", "96,128", "--set", "extract.norm_sample_images=6"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    runs = {}
    for name, launcher in [
        ("single", [sys.executable, "-m", "spp_detect"]),
        ("ranks", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                   "-m", "spp_detect"]),
    ]:
        run = tmp_path / name
        write_random_proposals(run, ds)
        proc = _extract(launcher + common + ["--run-dir", str(run)], env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        runs[name] = run / "features" / "trainval.h5"
    parts = sorted(p.name for p in (tmp_path / "ranks" / "features" / "trainval.parts").glob("*.h5"))
    assert any(p.startswith("r0-") for p in parts) and any(p.startswith("r1-") for p in parts)
    with FeatureCache(runs["single"]) as a, FeatureCache(runs["ranks"]) as b:
        assert a.image_ids == b.image_ids == ds.image_ids
        assert a.pool_norm_mean == pytest.approx(b.pool_norm_mean, rel=1e-6)
        for image_id in ds.image_ids:
            wa, wb = a.windows(image_id), b.windows(image_id)
            np.testing.assert_array_equal(wa.rects, wb.rects)
            np.testing.assert_array_equal(a.pool(image_id).numpy(), b.pool(image_id).numpy())


@pytest.mark.slow
def test_propose_two_ranks_equal_one_process(tmp_path):
    from spp_detect.proposals.store import ProposalStore

    root = make_voc_tree(tmp_path / "voc", n_images=5, splits={"trainval": list(range(5))})
    ds = open_dataset(str(root), "trainval")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    common = ["propose", "--dataset", str(root), "--split", "trainval", "--mode", "lite", "--max-proposals", "100",
              "--workers", "1"]
    for name, launcher in [
        ("single", [sys.executable, "-m", "spp_detect"]),
        ("ranks", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                   "-m", "spp_detect"]),
    ]:
        proc = _extract(launcher + common + ["--run-dir", str(tmp_path / name)], env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    with ProposalStore(tmp_path / "single" / "proposals" / "trainval.h5", ds) as a, \
            ProposalStore(tmp_path / "ranks" / "proposals" / "trainval.h5", ds) as b:
        assert a.image_ids == b.image_ids == ds.image_ids
        for image_id in ds.image_ids:
            np.testing.assert_array_equal(a.boxes(image_id), b.boxes(image_id))
