"""``spp-detect propose``: selective-search proposals for a split -> ``RUN/proposals/<split>.h5``.

Also ``--import FILE`` to convert published proposals (R-CNN ``.mat``, or JSON) into the same
file. Resumable: an interrupted run keeps its finished images and a rerun computes the rest.
"""

from __future__ import annotations

from pathlib import Path

import click

from .options import dataset_options, overwrite_option, run_option, with_config


@click.command("propose")
@dataset_options()
@click.option("--method", type=click.Choice(["opencv", "uijlings"]), default=None,
              help="opencv: OpenCV's selective search run as tuned recipes; uijlings: the paper's selective "
              "search (Uijlings et al.). Default: the pipeline's propose.method.")
@click.option("--mode", type=click.Choice(["lite", "fast", "quality"]), default=None,
              help="fast (the paper's mode), quality (slower, more boxes) or lite (opencv: the recipe's first 4 "
              "passes; uijlings: one strategy). Default: the pipeline's propose.mode.")
@click.option("--max-proposals", type=click.IntRange(min=1), default=None,
              help="Boxes kept per image, best-ranked first (default 2000).")
@click.option("--min-size", type=click.IntRange(min=1), default=None,
              help="Drop boxes narrower or shorter than this many pixels (default 20).")
@click.option("--resize-to", type=click.IntRange(min=0), default=None,
              help="Search an image resized to this shorter side; boxes are mapped back (0 = original size).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Worker processes, one image each at a time (0 = all cores).")
@click.option("--import", "import_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Convert precomputed proposals instead: an R-CNN/Fast R-CNN selective-search .mat "
              "(boxes as [y1 x1 y2 x2], 1-based) or a JSON {\"<image_id>\": [[x1, y1, x2, y2], ...]} "
              "in 0-based inclusive pixels.")
@click.option("--part-size", type=click.IntRange(min=1), default=None, hidden=True,
              help="Finished images per partial-results file (testing).")
@click.option("--delay-per-image", type=click.FloatRange(min=0), default=0.0, hidden=True,
              help="Sleep this long after each image (testing interruption and resume).")
@run_option
@with_config
@overwrite_option
def propose(dataset, split, data_root, image_dir, skip_bad, method, mode, max_proposals, min_size, resize_to, workers,
            import_file, part_size, delay_per_image, run_dir, config_path, overrides, overwrite):
    """Compute region proposals for one split of a dataset.

    Writes RUN/proposals/<split>.h5, stamped with the dataset, split and every setting used;
    later stages refuse a file made for another dataset or split. An up-to-date file is left
    alone; one made with other settings needs --overwrite.
    """
    from dataclasses import replace

    from ..artifacts.layout import proposals_path
    from ..config import with_values
    from ..datasets.stage import open_split
    from ..proposals.proposer import proposer_from_config
    from ..proposals.stage import FLUSH_EVERY_IMAGES, propose_split
    from .common import resolve_config, save_run_config

    if not split:
        raise click.BadParameter("give the split to make proposals for, e.g. --split trainval", param_hint="'--split'")
    cfg, run = resolve_config(config_path, overrides, run_dir)
    cfg = replace(
        cfg,
        data=with_values(cfg.data, dataset=dataset, data_root=None if data_root is None else str(data_root),
                         image_dir=None if image_dir is None else str(image_dir), skip_bad=skip_bad),
        propose=with_values(cfg.propose, method=method, mode=mode, max_proposals=max_proposals, min_size=min_size,
                            resize_to=resize_to, workers=workers),
    )
    ds = open_split(cfg, split=split)
    out = proposals_path(run, ds.split)
    p = cfg.propose
    if import_file is not None:
        from ..proposals.importers import import_proposals

        summary = import_proposals(ds, import_file, out, p.min_size, p.max_proposals, overwrite=overwrite)
        state = "up to date" if summary["up_to_date"] else f"imported {summary['images']} images"
        if not summary["up_to_date"]:
            save_run_config(cfg, run)
        click.echo(f"{out}: {state}")
        return
    proposer = proposer_from_config(p, cfg.seed)
    summary = propose_split(
        ds, out, proposer, workers=p.workers, overwrite=overwrite, skip_bad=cfg.data.skip_bad,
        delay=delay_per_image, flush_every=part_size or FLUSH_EVERY_IMAGES,
    )
    if summary.up_to_date:
        click.echo(f"{out}: up to date")
        return
    save_run_config(cfg, run)
    extra = []
    if summary.reused:
        extra.append(f"{summary.reused} reused from an interrupted run")
    if summary.skipped_bad:
        extra.append(f"{summary.skipped_bad} unreadable skipped")
    if summary.fallback:
        extra.append(f"{summary.fallback} with the whole image as fallback")
    click.echo(f"{out}: computed {summary.computed} images" + (f" ({'; '.join(extra)})" if extra else ""))
