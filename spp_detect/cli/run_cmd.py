"""``spp-detect run PIPELINE.toml``: every stage in order, skipping those already complete."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..pipeline import STAGES
from .options import overwrite_option, run_option, set_option, skip_bad_option


@click.command("run")
@click.argument("pipeline", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@run_option
@set_option
@click.option("--until", type=click.Choice(STAGES), default=None, help="Stop after this stage.")
@overwrite_option
@skip_bad_option
def run(pipeline, run_dir, overrides, until, overwrite, skip_bad):
    """Run the whole detector as PIPELINE describes: data, pretrain (when the backbone is
    'pretrained'), propose, extract, finetune, train-svm, train-bbox, detect, eval.

    Stages whose outputs are complete and current are skipped, so an interrupted run resumes.
    --overwrite recomputes every stage and replaces its outputs.
    """
    from ..pipeline import run_pipeline
    from .common import resolve_config, save_run_config

    cfg, run_path = resolve_config(pipeline, overrides, run_dir, skip_bad)
    t0 = time.perf_counter()
    for stage, summary, seconds in run_pipeline(cfg, run_path, overwrite=overwrite, until=until):
        if not summary.get("skipped"):
            save_run_config(cfg, run_path)  # a stage wrote outputs with this config
        state = "up to date" if summary.get("skipped") else f"{seconds:.1f} s"
        click.echo(f"[{stage}] {state}", err=True)
        if stage == "eval" and "table" in summary:
            click.echo(summary["table"])
    click.echo(f"pipeline finished in {time.perf_counter() - t0:.0f} s; run folder: {run_path}", err=True)
