"""``spp-detect extract``: conv5 maps per image and scale, windows projected, cached in HDF5."""

from __future__ import annotations

import logging

import click

from .options import dataset_options, int_list, overwrite_option, run_option, with_config

log = logging.getLogger(__name__)


@click.command("extract")
@dataset_options()
@run_option
@click.option("--backbone", default=None, help="zf5 | alexnet | vgg16 | squeezenet1_0 | resnet50.")
@click.option("--weights", default=None, help="none | imagenet | a state_dict file | a run folder.")
@click.option("--scales", callback=int_list, default=None, help="Shorter sides, e.g. 480,576,688,864,1200 (688 = single scale).")
@click.option("--max-size", type=click.IntRange(min=0), default=None, help="Cap on the longer side (0 = none).")
@click.option("--flip/--no-flip", default=None, help="Also extract mirrored images (training splits).")
@click.option("--cache", type=click.Choice(["conv5", "pooled", "warped"]), default=None,
              help="conv5: maps, pooled on demand (default); pooled: SPP vectors at each window's best scale "
              "(R-CNN's storage); warped: R-CNN's features, each window warped to extract.warp_size and run "
              "through the trunk alone (the baseline; slow).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.option("--part-size", type=click.IntRange(min=1), default=None, hidden=True,
              help="Images per part file (testing).")
@click.option("--delay-per-image", type=click.FloatRange(min=0), default=0.0, hidden=True,
              help="Sleep this long after each image (testing interruption and resume).")
@with_config
@overwrite_option
def extract(dataset, split, data_root, image_dir, skip_bad, run_dir, backbone, weights, scales, max_size, flip,
            cache, device, part_size, delay_per_image, config_path, overrides, overwrite):
    """Extract SPP features for a split into RUN/features/<split>.h5.

    Needs RUN/proposals/<split>.h5 (spp-detect propose). Resumable: rerun the same command.
    """
    from dataclasses import replace

    from ..config import with_values
    from ..datasets.stage import open_split
    from ..features.stage import run_extract
    from .common import resolve_config, save_run_config

    cfg, run = resolve_config(config_path, overrides, run_dir, skip_bad)
    cfg = replace(
        cfg,
        backbone=with_values(cfg.backbone, name=backbone, weights=weights),
        extract=with_values(cfg.extract, scales=scales, max_size=max_size, flip=flip, cache=cache, device=device),
    )
    ds = open_split(cfg, dataset, split or cfg.data.train_split, data_root, image_dir, skip_bad)
    summary = run_extract(cfg, run, ds, overwrite=overwrite, images_per_part=part_size, delay=delay_per_image)
    if summary.get("skipped"):
        click.echo(f"{summary['path']} is complete and current; nothing to do")
    else:
        save_run_config(cfg, run)
        click.echo(
            f"extracted {summary['images']} images in {summary['seconds']:.1f} s "
            f"({summary['images'] / max(summary['seconds'], 1e-9):.2f} img/s); "
            f"cache {summary['bytes_per_image'] / 1e6:.2f} MB per image -> {summary['path']}"
        )
