"""What every stage command does at its edge: resolve the config, the run folder, the dataset.

Order of precedence, lowest first: built-in defaults, the pipeline file (``--config``, or the
run folder's saved ``config.toml`` when no file is given), ``--set section.key=value``, then the
command's own options. The resolved config is saved to ``RUN/config.toml`` so the run can be
repeated, and stages stamp their artifacts with the hash of the sections they used.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from ..config import PipelineConfig, load_config, save_config

log = logging.getLogger(__name__)


def resolve_config(
    config_path: Path | None,
    overrides: tuple[str, ...] = (),
    run_dir: Path | None = None,
) -> tuple[PipelineConfig, Path]:
    """Load the config and decide the run folder (``--run`` wins over the file's ``run``)."""
    if config_path is None and run_dir is not None and (run_dir / "config.toml").is_file():
        config_path = run_dir / "config.toml"
    cfg = load_config(config_path, overrides)
    if run_dir is not None:
        cfg = replace(cfg, run=str(run_dir))
    return cfg, Path(cfg.run)


def save_run_config(cfg: PipelineConfig, run_dir: Path) -> Path:
    """Save the resolved config as ``RUN/config.toml``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return save_config(cfg, run_dir / "config.toml")


def open_split(cfg: PipelineConfig, dataset=None, split=None, data_root=None, image_dir=None, skip_bad=None):
    """Open a split, command-line values first, then the config's ``[data]`` section."""
    from ..datasets import open_dataset

    d = cfg.data
    return open_dataset(
        dataset or d.dataset,
        split or d.test_split,
        data_root=data_root or (d.data_root or None),
        skip_bad=d.skip_bad if skip_bad is None else skip_bad,
        image_dir=image_dir or (d.image_dir or None),
    )
