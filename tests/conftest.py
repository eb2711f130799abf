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
def one_thread():
    """Torch on one thread: for thousands of tiny tensors, thread hand-offs cost more than the
    arithmetic (and on a busy 2-core machine they stall)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_voc(tmp_path) -> Path:
    """A 4-image VOC-style tree with 2 classes (see tests.helpers.make_voc_tree)."""
    return make_voc_tree(tmp_path / "tiny")
