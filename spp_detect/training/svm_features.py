"""Window features as the SVMs and box regressors take them: the SPP vector or the fine-tuned
fc7, each norm-scaled (PAPER.md: mean L2 norm 20). Training, mining and detection all read them
through :class:`FeatureProvider` (a feature cache) or :class:`FeatureScaler` (vectors pooled
elsewhere, e.g. images outside any dataset)."""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch

from ..features.cache import FeatureCache, Windows
from .head import SppHead

FC7_PRECISIONS = ("float32", "bfloat16")


def native_bfloat16(device: str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware (a CUDA GPU; a CPU with
    AVX512-BF16 or AMX). Elsewhere torch emulates them, slower than float32."""
    if torch.device(device).type == "cuda":
        return True
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(p() for p in probes if p is not None)


def resolve_fc7_precision(setting: str, device: str) -> str:
    """``svm.fc7_precision`` as it runs on ``device``: ``auto`` is bfloat16 where the device
    multiplies it in hardware (:func:`native_bfloat16`), float32 elsewhere."""
    if setting == "auto":
        return "bfloat16" if native_bfloat16(device) else "float32"
    if setting not in FC7_PRECISIONS:
        raise ValueError(f"fc7 precision must be auto or one of {FC7_PRECISIONS}, got {setting!r}")
    return setting


class FeatureScaler:
    """What turns raw SPP vectors into what the SVMs score: the SPP vector itself (``pool``) or
    the fine-tuned fc7 (``fc7``), each scaled so its mean L2 norm is ``target`` (20).

    ``pool_scale``: ``target`` over the training cache's measured mean norm of pooled vectors;
    fc7 is scaled with the mean the fine-tuning stage measured (``head_meta``). The head runs
    on ``device`` ("cpu" or "cuda"); what :meth:`from_pooled` returns is on the CPU.

    ``precision``: the arithmetic of fc6 and fc7 (``svm.fc7_precision``). ``bfloat16`` rounds
    the SPP vector and the head's weights to bfloat16 and accumulates in float32: fc6's
    25,600-d product, most of the time an image's windows take, runs about twice as fast where
    the hardware has bfloat16 dot products (fc7 differs from float32's by about 0.2% of its
    norm; ``benchmarks/bench_window_scoring.py``). fc7 is float32 either way, as the SVMs take it.
    """

    def __init__(self, kind: str, pool_scale: float, head: SppHead | None = None, head_meta: dict | None = None,
                 target: float = 20.0, device: str = "cpu", precision: str = "float32"):
        if kind not in ("pool", "fc7"):
            raise ValueError(f"features must be pool or fc7, got {kind!r}")
        if kind == "fc7" and head is None:
            raise ValueError("fc7 features need a fine-tuned head")
        if precision not in FC7_PRECISIONS:
            raise ValueError(f"fc7 precision must be one of {FC7_PRECISIONS}, got {precision!r}")
        self.kind, self.device, self.precision = kind, device, precision
        self.dtype = torch.bfloat16 if precision == "bfloat16" and kind == "fc7" else torch.float32
        if self.dtype == torch.bfloat16 and not native_bfloat16(device):
            logging.getLogger(__name__).warning(
                "svm.fc7_precision = bfloat16: this %s has no bfloat16 dot products (AVX512-BF16 or AMX), "
                "so torch emulates them, slower than float32", device)
        if head is not None and self.dtype != torch.float32:
            head = copy.deepcopy(head)  # the caller's head stays float32
        self.head = head.to(device=device, dtype=self.dtype) if head is not None else None
        self.pool_scale = pool_scale
        self.fc7_scale = target / head_meta["fc7_norm_mean"] if head_meta else 1.0

    def scale_pooled(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw SPP vectors (R, D) norm-scaled, as :meth:`from_pooled` and the regressors take them."""
        return raw * self.pool_scale

    def scores(self, pooled: torch.Tensor, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """Every class's SVM score (float32 numpy, (R, K)) of norm-scaled SPP vectors, computed
        where the provider runs (``device``): the features never leave it."""
        if torch.device(self.device).type == "cpu":  # numpy's float32 product, as detect_image computes it
            return self.from_pooled(pooled) @ np.asarray(weights, np.float32).T + np.asarray(bias, np.float32)
        return self.device_scores(pooled, weights, bias)

    def device_scores(self, pooled: torch.Tensor, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """:meth:`scores` as torch computes them on ``device`` (what a GPU runs)."""
        with torch.no_grad():
            x = self._fc7(pooled) if self.kind == "fc7" else pooled.to(self.device)
            w = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
            b = torch.as_tensor(bias, dtype=x.dtype, device=x.device)
            return (x @ w.T + b).cpu().numpy()

    def from_pooled(self, pooled: torch.Tensor) -> np.ndarray:
        """The features (float32 numpy, (R, dim)) of norm-scaled SPP vectors."""
        if self.kind == "pool":
            return pooled.cpu().numpy()
        with torch.no_grad():
            return self._fc7(pooled).cpu().numpy()

    def _fc7(self, pooled: torch.Tensor) -> torch.Tensor:
        """Scaled float32 fc7 on ``device``, computed in the head's precision."""
        x = pooled.to(device=self.device, dtype=self.dtype)
        return self.head.fc7_features(x).float() * self.fc7_scale


class FeatureProvider(FeatureScaler):
    """:class:`FeatureScaler` over the windows of a feature cache (pooling runs on ``device``)."""

    def __init__(self, kind: str, cache: FeatureCache, head: SppHead | None = None, head_meta: dict | None = None,
                 target: float = 20.0, device: str = "cpu", precision: str = "float32"):
        super().__init__(kind, cache.norm_scale(target), head, head_meta, target, device, precision)
        self.cache = cache
        self.dim = cache.dim if kind == "pool" else head.fc_dim

    def pooled(self, image_id: str, index=None, windows: Windows | None = None, flip: bool = False) -> torch.Tensor:
        """Norm-scaled SPP vectors (R, D), on the provider's device."""
        return self.scale_pooled(self.cache.pool(image_id, index, windows=windows, flip=flip, device=self.device))
