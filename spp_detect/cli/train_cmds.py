"""``spp-detect finetune``, ``train-svm`` and ``train-bbox``: the models trained on cached features."""

from __future__ import annotations

import click

from .options import dataset_options, overwrite_option, run_option, val_split_option, with_config


def _setup(config_path, overrides, run_dir, skip_bad=None, **section_values):
    from dataclasses import replace

    from ..config import with_values
    from .common import resolve_config

    cfg, run = resolve_config(config_path, overrides, run_dir, skip_bad)
    for section, values in section_values.items():
        cfg = replace(cfg, **{section: with_values(getattr(cfg, section), **values)})
    return cfg, run


def _trained(run_stage, cfg, run, train, overwrite):
    """Run a training stage; None (said so) when its output is complete and current, else its
    summary, with the config saved next to the output it wrote."""
    from .common import save_run_config

    summary = run_stage(cfg, run, train, overwrite=overwrite)
    if summary.get("skipped"):
        click.echo(f"{summary['path']} is complete and current; nothing to do")
        return None
    save_run_config(cfg, run)
    return summary


@click.command("finetune")
@dataset_options()
@val_split_option
@run_option
@click.option("--iterations", type=click.IntRange(min=1), default=None, help="SGD iterations.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Base learning rate.")
@click.option("--resume", is_flag=True, help="Continue from RUN/models/finetune.ckpt (a finished head.pt is kept).")
@with_config
@overwrite_option
def finetune(dataset, split, data_root, image_dir, skip_bad, val_split, run_dir, iterations, lr, resume, config_path, overrides,
             overwrite):
    """Fine-tune fc6, fc7 and the classifier on the training split's cached SPP features.

    Model selection on the validation split (--val-split, else data.val_split) when its
    features exist.
    """
    from ..datasets.stage import open_split
    from ..training.stage import run_finetune
    from .common import save_run_config

    cfg, run = _setup(config_path, overrides, run_dir, skip_bad, finetune={"iterations": iterations, "lr": lr},
                      data={"val_split": val_split})
    train = open_split(cfg, dataset, split or cfg.data.train_split, data_root, image_dir, skip_bad)
    val = open_split(cfg, dataset, cfg.data.val_split, data_root, image_dir, skip_bad) if cfg.data.val_split else None
    # --resume goes on from the checkpoint while head.pt is not written; a finished, current head.pt is kept
    summary = run_finetune(cfg, run, train, val, overwrite=overwrite, resume=resume)
    if summary.get("skipped"):
        click.echo(f"{summary['path']} is complete and current; nothing to do")
        return
    save_run_config(cfg, run)
    for h in summary["history"]:
        click.echo("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in h.items()))
    t = summary["timing"]
    click.echo(f"{t['iterations_per_s']:.1f} iterations/s (drawing a batch {t['draw_ms']:.1f} ms from "
               f"{t['windows_from']}, an SGD step {t['step_ms']:.1f} ms)")
    click.echo(f"selected iteration {summary['selected_iteration']} -> {summary['path']}")


# a final objective at this fraction of the trivial model's or more is reported as a weak fit
WEAK_FIT = 0.97


@click.command("train-svm")
@dataset_options()
@val_split_option
@run_option
@click.option("--features", type=click.Choice(["fc7", "pool"]), default=None,
              help="fc7 of the fine-tuned head (default) or the SPP vector (no fine-tuning).")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Processes for retraining (0 = all cores).")
@with_config
@overwrite_option
def train_svm(dataset, split, data_root, image_dir, skip_bad, val_split, run_dir, features, workers, config_path,
              overrides, overwrite):
    """One linear SVM per class with hard-negative mining -> RUN/models/svm.h5.

    With svm.classifier = "softmax", no mining: svm.h5 gets the fine-tuned head's own classifier
    (each class's logit minus background's), which detect applies the same way.

    Mining saves its state every svm.checkpoint_minutes (RUN/models/svm.ckpt.h5): run the same
    command again after an interruption and it goes on from there (--overwrite starts over).

    With svm.select = "val", each class keeps the model of its retrains with the best AP on the
    validation split (--val-split, else data.val_split; its features must exist).
    """
    from functools import partial

    from ..datasets.stage import open_split
    from ..training.stage import run_train_svm

    cfg, run = _setup(config_path, overrides, run_dir, skip_bad, svm={"features": features, "workers": workers},
                      data={"val_split": val_split})
    train = open_split(cfg, dataset, split or cfg.data.train_split, data_root, image_dir, skip_bad)
    val = None
    if cfg.svm.select == "val" and cfg.data.val_split:
        val = open_split(cfg, dataset, cfg.data.val_split, data_root, image_dir, skip_bad)
    summary = _trained(partial(run_train_svm, val_ds=val), cfg, run, train, overwrite)
    if summary is None:
        return
    if summary.get("classifier") == "softmax":
        click.echo(f"svm.classifier = softmax: {len(train.classes)} classes scored by the fine-tuned head's "
                   f"classifier (log-odds against background), no mining -> {summary['path']}")
        return
    from ..training.svm import trivial_objective

    collapsed, weak = [], []
    for name, last in zip(train.classes, summary["final"], strict=True):
        if not last:
            click.echo(f"{name:>14}: no positives, no SVM")
            continue
        trivial = trivial_objective(cfg.svm.C, cfg.svm.positive_weight, last["positives"])
        line = (f"{name:>14}: {last['positives']} positives, {last['kept_negatives']} hard negatives, "
                f"objective {last['objective']:.4f} ({last['objective'] / trivial:.1%} of the trivial model's)")
        if last.get("collapsed"):
            collapsed.append(name)
            line += f"; retrain {last['retrain']} collapsed: keeps retrain {last['retrain'] - 1}'s model"
        elif last["objective"] >= WEAK_FIT * trivial:
            weak.append(name)
        click.echo(line)
    if collapsed or weak:
        # the SVMs of these classes barely beat scoring every window -1: their AP suffers
        click.echo(f"{len(collapsed)} collapsed ({', '.join(collapsed) or '-'}), {len(weak)} within "
                   f"{1 - WEAK_FIT:.0%} of the trivial model's objective ({', '.join(weak) or '-'}): their "
                   f"features hardly separate positives from hard negatives at svm.C = {cfg.svm.C:g} "
                   "(svm.classifier = \"softmax\" does without SVMs)")
    if summary.get("selection"):
        _echo_selection(summary["selection"], train.classes)
    click.echo(f"-> {summary['path']}")


def _echo_selection(selection: dict, classes) -> None:
    """What svm.select = "val" chose: per class, the retrain kept and its validation AP against the
    last's, and the bootstrap p-value of the best candidate's gain where it was tested."""
    def ap(x):
        return "-" if x is None else f"{x:.4f}"

    changed = chance = 0
    level = selection.get("significance", 1.0)
    click.echo(f"chosen on {selection['split']} (AP of each class's retrain models, no box regression"
               + (f"; an earlier model only at p <= {level:g}):" if level < 1 else "):"))
    for name, rec in zip(classes, selection["classes"], strict=True):
        if rec is None:
            continue
        aps = dict(zip(rec["retrains"], rec["val_ap"], strict=True))
        best, p = rec.get("best", rec["chosen"]), rec.get("p")
        pv = "" if p is None else f", p = {p:.3f}"
        line = f"{name:>14}: retrain {rec['chosen']} of {rec['last']}, AP {ap(aps[rec['chosen']])}"
        if rec["chosen"] != rec["last"]:
            changed += 1
            line += f" (the last model's {ap(aps[rec['last']])}{pv})"
        elif best != rec["last"]:
            chance += 1
            line += f" (retrain {best}'s {ap(aps[best])} is within chance{pv})"
        click.echo(line)
    click.echo(f"{changed} of {sum(r is not None for r in selection['classes'])} classes keep an earlier model "
               "than their last" + (f"; {chance} more did better on validation by a margin chance gives" if chance else ""))


@click.command("train-bbox")
@dataset_options()
@run_option
@click.option("--min-iou", type=click.FloatRange(0, 1), default=None, help="Training windows: IoU >= this.")
@click.option("--ridge-lambda", type=click.FloatRange(min=0), default=None, help="Ridge regularisation.")
@with_config
@overwrite_option
def train_bbox(dataset, split, data_root, image_dir, skip_bad, run_dir, min_iou, ridge_lambda, config_path, overrides,
               overwrite):
    """Per-class ridge regressors from the SPP vector to box offsets -> RUN/models/bbox.h5."""
    from ..datasets.stage import open_split
    from ..training.stage import run_train_bbox

    cfg, run = _setup(config_path, overrides, run_dir, skip_bad, bbox={"min_iou": min_iou, "ridge_lambda": ridge_lambda})
    train = open_split(cfg, dataset, split or cfg.data.train_split, data_root, image_dir, skip_bad)
    summary = _trained(run_train_bbox, cfg, run, train, overwrite)
    if summary is None:
        return
    click.echo(f"training windows per class: {summary['windows_per_class']} -> {summary['path']}")
