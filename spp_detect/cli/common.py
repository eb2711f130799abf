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

from ..artifacts import layout
from ..config import PipelineConfig, load_config, save_config

log = logging.getLogger(__name__)


def resolve_config(
    config_path: Path | None,
    overrides: tuple[str, ...] = (),
    run_dir: Path | None = None,
    skip_bad: bool | None = None,
) -> tuple[PipelineConfig, Path]:
    """Load the config and decide the run folder (``--run`` wins over the file's ``run``).

    ``skip_bad``: the shared ``--skip-bad`` flag; given, it sets ``data.skip_bad`` for every
    stage the command runs (reading the dataset and each stage's per-image work alike).
    """
    if config_path is None and run_dir is not None and layout.config_path(run_dir).is_file():
        config_path = layout.config_path(run_dir)
    cfg = load_config(config_path, overrides)
    if run_dir is not None:
        cfg = replace(cfg, run=str(run_dir))
    if skip_bad:
        cfg = replace(cfg, data=replace(cfg.data, skip_bad=True))
    return cfg, Path(cfg.run)


def save_run_config(cfg: PipelineConfig, run_dir: Path) -> Path:
    """Save the resolved config as ``RUN/config.toml``.

    Commands call it only once their stage has written outputs: a command that was refused, or
    found nothing to do, leaves the saved config describing what the run folder holds.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    return save_config(cfg, layout.config_path(run_dir))


