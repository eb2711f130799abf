"""The fully-connected head on SPP vectors: fc6 -> fc7 -> classifier (classes + background).

PAPER.md, "Fine-tuning": fc6 and fc7 of 4096 units with ReLU and dropout 0.5, then a softmax
over the classes plus background (label 0 is background, class ``c`` is label ``c + 1``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..artifacts.files import atomic_path
from ..artifacts.stamps import describe_difference, stamp_differences
from ..errors import ArtifactError

HEAD_FORMAT = "spp-detect/head"
HEAD_VERSION = 1


class SppHead(nn.Module):
    def __init__(self, in_dim: int, fc_dim: int, n_classes: int, dropout: float = 0.5):
        super().__init__()
        self.fc6 = nn.Linear(in_dim, fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim)
        self.cls = nn.Linear(fc_dim, n_classes + 1)
        self.drop = nn.Dropout(dropout)
        self.in_dim, self.fc_dim, self.n_classes = in_dim, fc_dim, n_classes
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.zeros_(self.cls.bias)

    def fc7_features(self, x: torch.Tensor) -> torch.Tensor:
        """fc7 after ReLU (dropout only in training mode)."""
        x = self.drop(torch.relu(self.fc6(x)))
        return torch.relu(self.fc7(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(self.drop(self.fc7_features(x)))

    def log_odds(self, fc7_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """The classifier as one linear model per class on fc7 scaled by ``fc7_scale``: class
        ``c``'s logit minus background's (float32 weights (K, fc_dim), bias (K,)). Its ranking of a
        class's windows is the softmax's ratio p(c) / p(background)."""
        w = self.cls.weight.detach().double().cpu().numpy()
        b = self.cls.bias.detach().double().cpu().numpy()
        return ((w[1:] - w[0]) / fc7_scale).astype(np.float32), (b[1:] - b[0]).astype(np.float32)


def save_head(path: Path, head: SppHead, meta: dict) -> Path:
    meta = dict(meta, format=HEAD_FORMAT, format_version=HEAD_VERSION, in_dim=head.in_dim, fc_dim=head.fc_dim,
                n_classes=head.n_classes)
    with atomic_path(path) as tmp:
        torch.save({"meta": json.dumps(meta), "state_dict": head.state_dict()}, tmp)
    return Path(path)


def load_head(path: Path, expect: dict | None = None) -> tuple[SppHead, dict]:
    """Load a fine-tuned head; ``expect`` values must match its stamp (e.g. the feature cache's)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: not found; run 'spp-detect finetune' first")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        meta = json.loads(obj["meta"])
        state = obj["state_dict"]
        if not isinstance(meta, dict):
            raise ValueError("meta is not an object")
    except Exception as exc:  # noqa: BLE001 - truncated, foreign or crafted files all get this message
        raise ArtifactError(f"{path}: not a fine-tuned head this version can read ({exc}); "
                            "rerun 'spp-detect finetune --overwrite'") from None
    if meta.get("format") != HEAD_FORMAT or meta.get("format_version") != HEAD_VERSION:
        raise ArtifactError(f"{path}: not a version-{HEAD_VERSION} fine-tuned head; rerun 'spp-detect finetune'")
    differences = stamp_differences(meta.get("stamp", {}), expect or {})
    if differences:
        raise ArtifactError(f"{path}: {describe_difference(*differences[0])}; rerun 'spp-detect finetune --overwrite'")
    head = SppHead(meta["in_dim"], meta["fc_dim"], meta["n_classes"], dropout=meta.get("dropout", 0.5))
    try:
        head.load_state_dict(state)
    except (RuntimeError, KeyError) as exc:
        raise ArtifactError(f"{path}: weights do not fit the head its metadata describes ({exc})") from None
    return head.eval(), meta
