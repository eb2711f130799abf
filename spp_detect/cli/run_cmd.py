"""``spp-detect run PIPELINE.toml``: every stage in order, skipping those already complete."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .options import run_option

STAGES = ("data", "pretrain", "propose", "extract", "finetune", "train-svm", "train-bbox", "detect", "eval")


@click.command("run")
@click.argument("pipeline", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@run_option
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a config value.")
@click.option("--until", type=click.Choice(STAGES), default=None, help="Stop after this stage.")
@click.option("--overwrite", is_flag=True, help="Recompute every stage and replace its outputs.")
@click.option("--skip-bad", is_flag=True, default=None,
              help="Turn per-image errors into warnings, with a count at the end (data.skip_bad).")
def run(pipeline, run_dir, overrides, until, overwrite, skip_bad):
    """Run the whole detector as PIPELINE describes: data, pretrain (when the backbone is
    'pretrained'), propose, extract, finetune, train-svm, train-bbox, detect, eval.

    Stages whose outputs are complete and current are skipped, so an interrupted run resumes.
    """
    from dataclasses import replace

    from ..config import load_config
    from ..pipeline import run_pipeline
    from .common import save_run_config

    cfg = load_config(pipeline, overrides)
    if run_dir is not None:
        cfg = replace(cfg, run=str(run_dir))
    if skip_bad:
        cfg = replace(cfg, data=replace(cfg.data, skip_bad=True))
    run_path = Path(cfg.run)
    t0 = time.perf_counter()
    for stage, summary, seconds in run_pipeline(cfg, run_path, overwrite=overwrite, until=until):
        if not summary.get("skipped"):
            save_run_config(cfg, run_path)  # a stage wrote outputs with this config
        state = "up to date" if summary.get("skipped") else f"{seconds:.1f} s"
        click.echo(f"[{stage}] {state}", err=True)
        if stage == "eval" and "table" in summary:
            click.echo(summary["table"])
    click.echo(f"pipeline finished in {time.perf_counter() - t0:.0f} s; run folder: {run_path}", err=True)
