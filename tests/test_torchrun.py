"""torchrun: two CPU ranks (gloo) shard the images; the merged output equals a one-process run."""

import os
import subprocess
import sys

import numpy as np
import pytest

from spp_detect.datasets import open_dataset
from spp_detect.features.cache import FeatureCache
from tests.helpers import make_voc_tree, write_random_proposals


def _run_cli(args, env):
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
        proc = _run_cli(launcher + common + ["--run-dir", str(run)], env)
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
        proc = _run_cli(launcher + common + ["--run-dir", str(tmp_path / name)], env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    with ProposalStore(tmp_path / "single" / "proposals" / "trainval.h5", ds) as a, \
            ProposalStore(tmp_path / "ranks" / "proposals" / "trainval.h5", ds) as b:
        assert a.image_ids == b.image_ids == ds.image_ids
        for image_id in ds.image_ids:
            np.testing.assert_array_equal(a.boxes(image_id), b.boxes(image_id))


@pytest.mark.slow
def test_finetune_two_ranks(tmp_path):
    """Fine-tuning under torchrun: the process group is set up, each rank draws half the batch,
    rank 0 writes a head that loads, and the run ends cleanly on both ranks."""
    from spp_detect.training.head import load_head
    from tests.helpers import jittered_proposals, write_run_proposals

    root = make_voc_tree(tmp_path / "voc", n_images=6, splits={"train": [0, 1, 2, 3], "val": [4, 5]})
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cli = [sys.executable, "-m", "spp_detect"]
    for split in ("train", "val"):
        ds = open_dataset(str(root), split)
        write_run_proposals(run, ds, jittered_proposals(ds))
        proc = _run_cli(cli + ["extract", "--dataset", str(root), "--split", split, "--backbone", "zf5",
                               "--weights", "none", "--set", "backbone.width=0.25", "--scales", "96,128",
                               "--run-dir", str(run)], env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
                "spp_detect"]
    proc = _run_cli(launcher + ["finetune", "--dataset", str(root), "--split", "train", "--run-dir", str(run),
                                "--set", "finetune.init=random", "--set", "data.val_split=val", "--set", "finetune.fc_dim=32",
                                "--set", "finetune.batch_size=32", "--set", "finetune.images_per_batch=4",
                                "--set", "finetune.iterations=6", "--set", "finetune.val_every=3",
                                "--set", "finetune.lr_steps=[4]"], env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "DistributedDataParallel over 2 processes: 16 windows from 2 images" in out
    head, meta = load_head(run / "models" / "head.pt")
    assert [h["iteration"] for h in meta["history"]] == [3, 6]
    assert all("val_loss" in h for h in meta["history"])
    assert meta["selected_iteration"] in (3, 6)


def test_batch_split_over_ranks():
    from spp_detect.errors import ConfigError
    from spp_detect.training.finetune import split_batch

    assert split_batch(128, 2, 1) == (128, 2)
    assert split_batch(128, 2, 2) == (64, 1)
    assert split_batch(128, 2, 4) == (32, 1)  # never fewer than one image per rank
    with pytest.raises(ConfigError, match="finetune.batch_size: 33 .* 2 processes"):
        split_batch(33, 2, 2)
