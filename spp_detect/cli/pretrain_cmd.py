"""``spp-detect pretrain``: train a backbone as an SPP classifier of object crops, multi-size.

Writes ``RUN/pretrain/backbone.pt`` and ``RUN/pretrain/metrics.json`` and prints validation
top-1 at every evaluation size. Afterwards the run's ``config.toml`` says
``backbone.weights = "pretrained"``, so later stages in the same run folder use this backbone.
"""

from __future__ import annotations

from pathlib import Path

import click

from .options import (
    dataset_options,
    int_list,
    overwrite_option,
    run_option,
    val_split_option,
    with_config,
)

BACKBONE_HELP = "zf5 | alexnet | vgg16 | squeezenet1_0 | resnet50 (default: the pipeline's backbone.name)."


def _backbone_name(ctx, param, value):
    if value is None:
        return None
    from ..backbones import BACKBONES  # torch loads here, when the command runs, not for --help

    if value not in BACKBONES:
        raise click.BadParameter(f"unknown backbone {value!r}; valid: {', '.join(BACKBONES)}")
    return value


def backbone_options(f):
    """``--backbone``, ``--weights``, ``--width`` (shared by every command that builds a backbone)."""
    f = click.option(
        "--width", type=click.FloatRange(min=0, min_open=True, max=4), default=None,
        help="ZF-5 channel multiplier (0.25: 24..64 channels, CPU-sized); 1 is the paper's ZF-5.",
    )(f)
    f = click.option(
        "--weights", default=None,
        help="none | imagenet (torchvision download) | a state_dict file | a run folder with "
        "pretrain/backbone.pt. Default: the pipeline's backbone.weights.",
    )(f)
    f = click.option("--backbone", default=None, callback=_backbone_name, help=BACKBONE_HELP)(f)
    return f


@click.command("pretrain")
@dataset_options()
@val_split_option
@backbone_options
@click.option("--mode", type=click.Choice(["crops", "windows"]), default=None,
              help="crops (the paper's classification pretraining) or windows (windows of whole images at the "
              "extraction scales, pooled from their conv5 map as the detector sees them).")
@click.option("--sizes", callback=int_list, default=None,
              help="Training input sizes, one epoch each in turn (224,180: multi-size; 224: single-size).")
@click.option("--eval-sizes", callback=int_list, default=None, help="Sizes validation top-1 is reported at.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Crops per batch (about).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Peak learning rate.")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default=None,
              help="sgd (momentum, the paper's) or adamw (much faster from scratch on a CPU; use --lr 1e-3).")
@click.option("--fc-dim", type=click.IntRange(min=1), default=None, help="Width of fc6 and fc7 (paper: 4096).")
@click.option("--device", default=None, help="auto | cpu | cuda.")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Data-loading worker processes.")
@run_option
@with_config
@overwrite_option
def pretrain(dataset, split, data_root, image_dir, skip_bad, val_split, backbone, weights, width, mode, sizes, eval_sizes,
             epochs, batch_size, lr, optimizer, fc_dim, device, workers, run_dir, config_path, overrides, overwrite):
    """Pretrain a backbone + SPP + fc classifier on crops of a dataset's objects.

    Object crops (with random context and mirroring) and background crops (IoU < 0.3 with every
    object, an extra class) are cut from the pretraining split (--split; default data.pretrain_split,
    else data.train_split) and warped to one size per epoch,
    the sizes taking turns (multi-size training). Also takes an image-folder dataset (one
    folder per class). Validation top-1 is printed at every evaluation size.

    With --mode windows the examples are windows of whole training images instead (objects,
    windows partly on them and background), each pooled from the conv5 map of its image at the
    scale extraction would use (extract.scales, extract.target_size); top-1 is printed per scale.
    """
    from dataclasses import replace

    from ..config import with_values
    from ..datasets.stage import open_split
    from ..pretrain.stage import run_pretrain
    from ..pretrain.train import is_image_folder, open_image_folder
    from .common import resolve_config, save_run_config

    cfg, run = resolve_config(config_path, overrides, run_dir)
    cfg = replace(
        cfg,
        data=with_values(cfg.data, dataset=dataset, data_root=None if data_root is None else str(data_root),
                         image_dir=None if image_dir is None else str(image_dir), skip_bad=skip_bad,
                         pretrain_split=split, val_split=val_split),
        backbone=with_values(cfg.backbone, name=backbone, weights=weights, width=width),
        pretrain=with_values(cfg.pretrain, mode=mode, sizes=sizes, eval_sizes=eval_sizes, epochs=epochs, batch_size=batch_size,
                             lr=lr, optimizer=optimizer, fc_dim=fc_dim, device=device, workers=workers),
    )
    d = cfg.data
    train_split = d.pretraining_split
    if is_image_folder(d.dataset):
        train = open_image_folder(d.dataset, train_split, train_split)
        val = open_image_folder(d.dataset, d.val_split, train_split) if d.val_split else None
    else:
        train = open_split(cfg, split=train_split)
        val = open_split(cfg, split=d.val_split) if d.val_split else None
    summary = run_pretrain(cfg, run, train, val, overwrite=overwrite)
    if not summary["skipped"]:
        # later stages of this run folder use what was just trained
        save_run_config(replace(cfg, backbone=replace(cfg.backbone, weights="pretrained")), run)
    state = "up to date" if summary["skipped"] else f"trained in {summary['seconds']:.0f} s"
    click.echo(f"{summary['backbone']}: {state}")
    click.echo("size  val top-1")
    for size, top1 in summary.get("val_top1", {}).items():
        click.echo(f"{int(size):>4}  {top1:.3f}")
    if "chance_top1" in summary:
        click.echo(f"chance {summary['chance_top1']:.3f}, majority class {summary['majority_top1']:.3f}")
    click.echo(f"{Path(run) / 'config.toml'}: backbone.weights = \"pretrained\" (later stages use this backbone)")
