"""``spp-detect data``: make the synthetic dataset (``synth``) or fetch VOC2007 (``fetch``)."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import click

from .options import overwrite_option, resolve_data_root

data_root_option = click.option(
    "--data-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder holding VOCdevkit/ and synth/ (default: $SPP_DATA or data/).",
)


@click.group("data")
def data() -> None:
    """Make the synthetic dataset or fetch VOC2007."""


@data.command("synth", short_help="Write the synthetic VOC-format dataset.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Dataset folder to write (default: <data-root>/synth).")
@data_root_option
@click.option("--train", type=click.IntRange(min=0), default=300, show_default=True, help="Training images.")
@click.option("--val", type=click.IntRange(min=0), default=60, show_default=True, help="Validation images.")
@click.option("--test", type=click.IntRange(min=0), default=150, show_default=True, help="Test images.")
@click.option("--pretrain", type=click.IntRange(min=0), default=0, show_default=True,
              help="Extra images for pretraining only; split 'pretrain' holds them and the training images. "
                   "Added to a finished dataset that differs only in this number.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed; the same seed gives the same dataset.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes drawing images in parallel (the output does not depend on it).")
@overwrite_option
def synth(out, data_root, train, val, test, pretrain, seed, workers, overwrite) -> None:
    """Write the synthetic VOC-format dataset: six shape-and-texture classes on cluttered
    backgrounds, with occlusion, truncation and difficult objects.

    An interrupted run is resumed by running the same command again.
    """
    from ..datasets.synth import generate_synth

    if train + val + test == 0:
        raise click.BadParameter("the dataset would have no images", param_hint="'--train/--val/--test'")
    out = out if out is not None else resolve_data_root(data_root) / "synth"
    summary = generate_synth(out, train=train, val=val, test=test, seed=seed, overwrite=overwrite, workers=workers,
                             pretrain=pretrain)
    stats = summary["stats"]
    rate = summary["images_per_second"]
    click.echo(
        f"wrote {stats['images']} images ({train} train, {val} val, {test} test"
        + (f", {pretrain} pretraining only" if pretrain else "") + "; "
        f"{summary['reused']} kept from an earlier run) to {out}"
        + (f" at {rate:.0f} images/s" if rate else "")
    )
    per_class = ", ".join(f"{k} {v}" for k, v in stats["per_class"].items())
    size = stats["box_size_px"]
    click.echo(
        f"{stats['objects']} objects ({stats['difficult']} difficult): {per_class}; "
        f"box sizes {size['min']}..{size['max']} px (median {size['median']})"
    )


def _check_url(ctx, param, value):
    if value is None:
        return None
    parts = urllib.parse.urlparse(value)
    if parts.scheme not in ("http", "https", "ftp", "file") or not (parts.netloc or parts.scheme == "file"):
        raise click.BadParameter(f"expected a base URL such as https://pjreddie.com/media/files/, got {value!r}")
    return value


@data.command("fetch", short_help="Download, verify and unpack VOC2007.")
# The names of spp_detect.datasets.fetch.DATASETS, spelled out so --help needs no import.
@click.argument("name", type=click.Choice(["voc2007"], case_sensitive=False))
@data_root_option
@click.option("--mirror", callback=_check_url, default=None, metavar="URL",
              help="Base URL holding the same archives (e.g. https://pjreddie.com/media/files/).")
@click.option("--keep-archives", is_flag=True, help="Keep the downloaded archives in <data-root>/downloads.")
@click.option("--retries", type=click.IntRange(min=0), default=3, show_default=True,
              help="Times a dropped download is resumed before giving up.")
@overwrite_option
def fetch(name, data_root, mirror, keep_archives, retries, overwrite) -> None:
    """Download, verify (MD5) and unpack a public dataset into <data-root>/VOCdevkit.

    A broken download is resumed where it stopped by running the command again.
    """
    from ..datasets.fetch import DATASETS, fetch_dataset

    root = resolve_data_root(data_root)
    spec = DATASETS[name.lower()]
    result = fetch_dataset(spec, root, mirror=mirror, keep_archives=keep_archives, overwrite=overwrite,
                           retries=retries)
    if result.already_present:
        click.echo(f"{name} is already present at {result.target}; nothing to do")
        return
    click.echo(f"{name} is ready at {result.target}")
    for path in result.archives:
        click.echo(f"kept {path}")
