"""Shared fixtures: paths to ../shared, small synthetic VOC trees written on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import make_voc_tree

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    return Path(os.environ.get("SPP_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_voc() -> Path:
    """The real VOC2007 tree in ../shared/data (CI has it)."""
    root = shared_dir() / "data" / "VOCdevkit" / "VOC2007"
    if not root.is_dir():
        pytest.skip(f"shared VOC data not found at {root}")
    return root


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    path = shared_dir() / "weights" / "squeezenet1_0-imagenet-caffe.pth"
    if not path.is_file():
        pytest.skip(f"shared weights not found at {path}")
    return path


@pytest.fixture
def tiny_voc(tmp_path) -> Path:
    """A 4-image VOC-style tree with 2 classes (see tests.helpers.make_voc_tree)."""
    return make_voc_tree(tmp_path / "tiny")
