"""Opening a split as the config names it, and the ``data`` stage (the built-in synthetic dataset)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import PipelineConfig

log = logging.getLogger(__name__)


def ensure_synth(cfg: PipelineConfig) -> bool:
    """Write the built-in synthetic dataset if the pipeline uses it and a split it reads is missing.

    A dataset already there is used as it is (whatever its counts); one that lacks only the
    pretraining split gets ``data.synth_pretrain`` pretraining images added to it, and one
    written with older annotations has them rewritten (its pixels do not change). Returns
    whether it wrote anything, so ``run`` can report the data stage as up to date.
    """
    from .registry import default_data_root

    d = cfg.data
    if d.dataset != "synth":
        return False
    import os

    from .synth import ANNOTATIONS_VERSION, generate_synth, read_recipe

    root = (Path(d.data_root) if d.data_root else default_data_root()) / "synth"
    splits = {d.train_split, d.val_split, d.test_split, d.pretrain_split} - {""}
    made = read_recipe(root)
    stale = bool(made.get("complete")) and made.get("annotations", 1) < ANNOTATIONS_VERSION
    if not stale and all((root / "ImageSets" / "Main" / f"{s}.txt").is_file() for s in splits):
        return False
    counts = {"train": d.synth_train, "val": d.synth_val, "test": d.synth_test, "seed": d.synth_seed}
    if made.get("complete"):
        if not stale and made.get("pretrain", 0) == d.synth_pretrain:
            return False  # nothing to add: the stage that reads the missing split names it
        # keep the dataset that is there: add the pretraining images, bring its annotations up to date
        counts = {k: made[k] for k in counts}
    log.info("writing the synthetic dataset to %s", root)
    generate_synth(root, **counts, pretrain=d.synth_pretrain, workers=min(4, os.cpu_count() or 1))
    return True


def open_split(cfg: PipelineConfig, dataset=None, split=None, data_root=None, image_dir=None, skip_bad=None):
    """Open a split, command-line values first, then the config's ``[data]`` section."""
    from .registry import open_dataset

    d = cfg.data
    return open_dataset(
        dataset or d.dataset,
        split or d.test_split,
        data_root=data_root or (d.data_root or None),
        skip_bad=d.skip_bad if skip_bad is None else skip_bad,
        image_dir=image_dir or (d.image_dir or None),
    )
