"""``spp-detect proposals-recall``: how well a split's proposals cover its ground truth."""

from __future__ import annotations

from pathlib import Path

import click

from .options import dataset_options, overwrite_option, run_option, with_config


@click.command("proposals-recall")
@dataset_options()
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the figures as JSON here (default: RUN/proposals/<split>.recall.json).")
@run_option
@with_config
@overwrite_option
def proposals_recall(dataset, split, data_root, image_dir, skip_bad, json_out, run_dir, config_path, overrides,
                     overwrite):
    """Recall of RUN/proposals/<split>.h5 against the split's ground truth.

    Prints mean boxes per image, recall at IoU 0.5 and 0.7 and average recall over IoU
    0.5:0.95, each with the first 100, 300, 1000 and 2000 proposals, and seconds per image.
    Difficult (VOC) and crowd (COCO) boxes are left out, as in evaluation. An existing
    --json-out file is only replaced with --overwrite (the default file beside the proposals is
    a report of them and is rewritten).
    """
    from dataclasses import replace

    from ..artifacts.files import atomic_write_json, check_overwrite
    from ..artifacts.layout import proposals_path
    from ..config import with_values
    from ..datasets.stage import open_split
    from ..proposals.recall import format_recall_table, proposal_recall
    from ..proposals.store import ProposalStore
    from .common import resolve_config

    if not split:
        raise click.BadParameter("give the split whose proposals to measure, e.g. --split test", param_hint="'--split'")
    cfg, run = resolve_config(config_path, overrides, run_dir)
    cfg = replace(cfg, data=with_values(cfg.data, dataset=dataset,
                                        data_root=None if data_root is None else str(data_root),
                                        image_dir=None if image_dir is None else str(image_dir), skip_bad=skip_bad))
    if json_out is not None:
        check_overwrite(json_out, overwrite)  # before the work, not after it
    ds = open_split(cfg, split=split)
    path = proposals_path(run, ds.split)
    with ProposalStore(path, ds) as store:
        report = proposal_recall(ds, store, seconds=store.seconds)
        report["proposals_file"] = str(path)
        report["params"] = store.params
    click.echo(format_recall_table(report))
    out = json_out or path.with_name(f"{ds.split}.recall.json")
    atomic_write_json(out, report)
    click.echo(f"wrote {out}")
