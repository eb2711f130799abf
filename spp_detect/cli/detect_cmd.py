"""``spp-detect detect``: SVM scores, NMS and box regression on a split, or on loose image files."""

from __future__ import annotations

from pathlib import Path

import click

from .options import dataset_options, overwrite_option, run_option, with_config


@click.command("detect")
@click.argument("images", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@dataset_options()
@run_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Loose images: folder for <name>.json and <name>.png (default: RUN/detect-images).")
@click.option("--score-threshold", type=float, default=None,
              help="Loose images: keep boxes scoring above this (SVM score; default detect.score_threshold).")
@click.option("--no-bbox-regression", is_flag=True, default=False, help="Skip box regression.")
@with_config
@overwrite_option
def detect(images, dataset, split, data_root, image_dir, skip_bad, run_dir, out_dir, score_threshold,
           no_bbox_regression, config_path, overrides, overwrite):
    """Detect objects on a split (default: data.test_split) or on IMAGES.

    On a split: writes RUN/detections/<split>.json (COCO results) and VOC comp4 files in
    RUN/detections/<split>/, both readable by 'spp-detect eval'. On IMAGES: writes <name>.json
    (boxes, class names, scores) and <name>.png (boxes drawn) for each file.
    """
    from dataclasses import replace

    from ..config import with_values
    from ..datasets.stage import open_split
    from .common import resolve_config, save_run_config

    cfg, run = resolve_config(config_path, overrides, run_dir, skip_bad)
    cfg = replace(cfg, detect=with_values(cfg.detect, score_threshold=score_threshold,
                                          bbox_regression=False if no_bbox_regression else None))
    if images:
        from ..detection.loose_images import detect_files

        written = detect_files(cfg, run, list(images), out_dir or run / "detect-images", overwrite=overwrite)
        for path, n in written:
            click.echo(f"{path}: {n} boxes")
        return
    from ..detection.stage import run_detect

    ds = open_split(cfg, dataset, split or cfg.data.test_split, data_root, image_dir, skip_bad)
    summary = run_detect(cfg, run, ds, overwrite=overwrite)
    save_run_config(cfg, run)
    click.echo(f"{summary['detections']} detections -> {summary['path']} and {summary['comp4']}/")
