"""The ``spp-detect`` command group.

Commands are registered by name -> ``module:function`` and imported only when run, so
``spp-detect --help`` stays instant (torch and OpenCV load inside the commands). Errors the
user can fix (:class:`spp_detect.errors.SppError`) print as one ``Error:`` line with exit 1.
"""

from __future__ import annotations

import importlib
import logging

import click

from .. import __version__
from ..errors import SppError

# name -> (module under spp_detect.cli, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "data": ("data_cmd", "data", "Make the synthetic dataset or fetch VOC2007."),
    "eval": ("eval_cmd", "eval_cmd", "Evaluate detections: per-class AP table and mAP (VOC07/VOC10/COCO)."),
    "extract": ("extract_cmd", "extract", "Conv5 once per image and scale; windows projected; HDF5 feature cache."),
    "pretrain": ("pretrain_cmd", "pretrain", "Pretrain a backbone as an SPP classifier of crops (multi-size training)."),
    "finetune": ("train_cmds", "finetune", "Fine-tune fc6/fc7/classifier on cached SPP features."),
    "train-svm": ("train_cmds", "train_svm", "Linear SVM per class with hard-negative mining."),
    "train-bbox": ("train_cmds", "train_bbox", "Ridge bounding-box regressors per class."),
    "run": ("run_cmd", "run", "Run a whole pipeline file (pipelines/*.toml), skipping finished stages."),
    "detect": ("detect_cmd", "detect", "Detect on a split (VOC comp4 + COCO JSON) or on loose image files."),
    "propose": ("propose_cmd", "propose", "Selective-search proposals for a split (or --import R-CNN .mat / JSON)."),
    "proposals-recall": ("recall_cmd", "proposals_recall", "Recall and average recall of a split's proposals."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _help = COMMANDS[name]
        mod = importlib.import_module(f"spp_detect.cli.{module}")
        return getattr(mod, attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SppError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spp-detect")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """SPP-net object detection: proposals, one conv pass per scale, spatial pyramid pooling,
    SVMs with hard-negative mining, box regression and VOC/COCO evaluation."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbose == 0:
        logging.getLogger("spp_detect").setLevel(logging.INFO)
