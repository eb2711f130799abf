"""Where everything lives in a run folder: every ``RUN/...`` path is spelled here once.

Run folder layout (DESIGN.md)::

    RUN/config.toml                 the resolved config
    RUN/pretrain/backbone.pt        (pretrain) the backbone trained here
    RUN/proposals/<split>.h5        (propose) + <split>.parts/ while running
    RUN/features/<split>.h5         (extract) + <split>.parts/ while running
    RUN/models/head.pt              (finetune) + finetune.ckpt to resume
    RUN/models/svm.h5               (train-svm) + svm.ckpt.h5 to resume
    RUN/models/bbox.h5              (train-bbox)
    RUN/detections/<split>.json     (detect) + <split>/comp4_det_<split>_<class>.txt, <split>.stamp.json
    RUN/eval/<split>.json           (eval)
    RUN/examples/<image>.png        (run) test detections drawn
"""

from __future__ import annotations

from pathlib import Path


def config_path(run: str | Path) -> Path:
    return Path(run) / "config.toml"


def pretrain_dir(run: str | Path) -> Path:
    return Path(run) / "pretrain"


def proposals_path(run: str | Path, split: str) -> Path:
    return Path(run) / "proposals" / f"{split}.h5"


def features_path(run: str | Path, split: str) -> Path:
    return Path(run) / "features" / f"{split}.h5"


def models_dir(run: str | Path) -> Path:
    return Path(run) / "models"


def head_path(run: str | Path) -> Path:
    return models_dir(run) / "head.pt"


def svm_path(run: str | Path) -> Path:
    return models_dir(run) / "svm.h5"


def svm_checkpoint_path(run: str | Path) -> Path:
    return models_dir(run) / "svm.ckpt.h5"


def bbox_path(run: str | Path) -> Path:
    return models_dir(run) / "bbox.h5"


def detections_path(run: str | Path, split: str) -> Path:
    """The COCO-style results JSON of a split (the comp4 folder is :func:`comp4_dir`)."""
    return Path(run) / "detections" / f"{split}.json"


def comp4_dir(run: str | Path, split: str) -> Path:
    return Path(run) / "detections" / split


def detections_stamp_path(run: str | Path, split: str) -> Path:
    return Path(run) / "detections" / f"{split}.stamp.json"


def eval_path(run: str | Path, split: str) -> Path:
    return Path(run) / "eval" / f"{split}.json"


def examples_dir(run: str | Path) -> Path:
    return Path(run) / "examples"
