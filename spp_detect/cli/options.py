"""Options shared by several commands, defined once.

Index:
- ``dataset_options``: ``--dataset``, ``--split``, ``--data-root``, ``--image-dir``, ``--skip-bad``
- ``val_split_option``: ``--val-split`` (the commands that select models: pretrain, finetune, train-svm)
- ``run_option``: ``--run`` / ``--run-dir`` (the run folder; torchrun needs the long name)
- ``config_options``: ``--config`` (a pipeline file) and repeatable ``--set section.key=value``
- ``set_option``: ``--set`` alone (``spp-detect run`` takes the pipeline file as its argument)
- ``overwrite_option``: ``--overwrite``; ``skip_bad_option``: ``--skip-bad``
- ``int_list`` / ``float_list``: callbacks for comma-separated lists (``--scales 480,576``)
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import click


def int_list(ctx, param, value):
    """Parse ``480,576,688`` into a tuple of positive ints; BadParameter names the option."""
    if value is None:
        return None
    try:
        items = tuple(int(v) for v in str(value).split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not items or any(v <= 0 for v in items):
        raise click.BadParameter(f"expected positive integers, got {value!r}")
    return items


def float_list(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(float(v) for v in str(value).split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


skip_bad_option = click.option(
    "--skip-bad", is_flag=True, default=None,
    help="Turn per-image errors into warnings, with a count at the end (data.skip_bad).",
)


val_split_option = click.option(
    "--val-split", default=None,
    help="Model-selection split (default: the pipeline's data.val_split; never the test split).",
)


def dataset_options(default_split: str | None = None):
    """``--dataset/--split/--data-root/--image-dir/--skip-bad`` for a command."""

    def decorator(f):
        @click.option(
            "--dataset",
            default=None,
            help="voc2007, voc2012, synth, a VOC-style folder or a COCO instances .json. "
            "Default: the pipeline's data.dataset.",
        )
        @click.option("--split", default=default_split, help="Split name (ImageSets/Main/<split>.txt).")
        @click.option(
            "--data-root",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Folder holding VOCdevkit/ and synth/ (default: $SPP_DATA or data/).",
        )
        @click.option("--image-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                      help="COCO only: folder of the images.")
        @skip_bad_option
        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            return f(*args, **kwargs)

        return wrapper

    return decorator


def resolve_data_root(data_root: Path | None, cfg_value: str = "") -> Path:
    if data_root is not None:
        return data_root
    if cfg_value:
        return Path(cfg_value)
    return Path(os.environ.get("SPP_DATA", "data"))


run_option = click.option(
    "--run",
    "--run-dir",  # under torchrun, '--run' is an ambiguous prefix of torchrun's own --run-path
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder every stage reads from and writes into (default: the pipeline's run).",
)

config_options = [
    click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Pipeline file (pipelines/*.toml). Default: the run folder's config.toml if any.",
    ),
    click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="SECTION.KEY=VALUE",
        help="Override one config value, e.g. --set extract.scales=688 (repeatable).",
    ),
]
set_option = config_options[1]


def with_config(f):
    for opt in reversed(config_options):
        f = opt(f)
    return f


overwrite_option = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
