"""The detector as an ordered list of stages, and :func:`run_pipeline` that runs them.

Each stage lives in its package's ``stage.py`` (``proposals``, ``features``, ``training``,
``detection``, ``evaluation``; ``pretrain`` and ``datasets`` for the optional first ones): a
``run_<stage>`` that turns its config sections into plain arguments, reads the artifacts of the
stages before it and writes its own (paths: :mod:`spp_detect.artifacts.layout`). The commands
call those functions; ``spp-detect run`` calls this module. Nothing here imports the CLI.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .config import PipelineConfig

# the order stages run in; `spp-detect run --until` takes one of these names
STAGES = ("data", "pretrain", "propose", "extract", "finetune", "train-svm", "train-bbox", "detect", "eval")


def _stage_functions(cfg: PipelineConfig, run: Path, overwrite: bool) -> dict[str, Callable[[], dict]]:
    """Each stage as a call with no arguments, over the splits the config names."""
    from .datasets.stage import ensure_synth, open_split
    from .detection.stage import annotate_examples, detections_current, run_detect
    from .evaluation.stage import run_eval
    from .features.stage import run_extract
    from .pretrain.stage import run_pretrain
    from .proposals.stage import run_propose
    from .training.stage import run_finetune, run_train_bbox, run_train_svm

    d = cfg.data

    def split(name):
        return open_split(cfg, split=name)

    def val():
        return split(d.val_split) if d.val_split else None

    splits = [d.train_split] + ([d.val_split] if d.val_split else []) + [d.test_split]

    def detect():
        test = split(d.test_split)
        if not overwrite and detections_current(cfg, run, test):
            return {"skipped": True}
        return run_detect(cfg, run, test, overwrite=overwrite)

    def evaluate_and_draw():
        test = split(d.test_split)
        summary = run_eval(cfg, run, test, overwrite=overwrite)
        summary["examples"] = [str(p) for p in annotate_examples(cfg, run, test)]
        return summary

    stages = {
        "data": lambda: {"skipped": not ensure_synth(cfg)},
        "pretrain": lambda: run_pretrain(cfg, run, split(d.pretraining_split), val(), overwrite=overwrite),
        "propose": lambda: [run_propose(cfg, run, split(s), overwrite=overwrite) for s in splits][-1],
        "extract": lambda: [run_extract(cfg, run, split(s), overwrite=overwrite) for s in splits][-1],
        "finetune": lambda: run_finetune(cfg, run, split(d.train_split), val(), overwrite=overwrite),
        "train-svm": lambda: run_train_svm(cfg, run, split(d.train_split), overwrite=overwrite, val_ds=val()),
        "train-bbox": lambda: run_train_bbox(cfg, run, split(d.train_split), overwrite=overwrite),
        "detect": detect,
        "eval": evaluate_and_draw,
    }
    if cfg.backbone.weights != "pretrained":
        del stages["pretrain"]  # the trunk comes from elsewhere: nothing to pretrain
    return stages


def check_splits(cfg: PipelineConfig) -> None:
    """Refuse a pipeline that would test on the images it trained or selected models on."""
    from .datasets.registry import split_source
    from .errors import ConfigError

    d = cfg.data
    test = split_source(d.dataset, d.test_split)
    if test == split_source(d.dataset, d.train_split):
        raise ConfigError(f"data.test_split = {d.test_split!r} is the training split (data.train_split = "
                          f"{d.train_split!r}): a detector must be tested on images it was not trained on")
    if d.val_split and test == split_source(d.dataset, d.val_split):
        raise ConfigError(f"data.test_split = {d.test_split!r} is the model-selection split (data.val_split = "
                          f"{d.val_split!r}): select models on other images than the test images")


def run_pipeline(cfg: PipelineConfig, run: Path, overwrite: bool = False,
                 until: str | None = None) -> Iterator[tuple[str, dict, float]]:
    """Run every stage in order; yields ``(stage, summary, seconds)`` after each.

    A stage whose outputs are complete and current reports ``skipped``; one whose outputs exist
    but were made from other inputs is refused with the file to remove, unless ``overwrite``.
    ``until``: stop after this stage (one of :data:`STAGES`).
    """
    check_splits(cfg)
    for stage, call in _stage_functions(cfg, Path(run), overwrite).items():
        t = time.perf_counter()
        summary = call()
        yield stage, summary, time.perf_counter() - t
        if stage == until:
            return
