"""Where work runs: the device a stage computes on, and the torch.distributed world.

Every stage asks here, so ``auto`` means the same thing everywhere and a run under torchrun
starts one process group, whatever stage comes first.
"""

from __future__ import annotations

import os

from .errors import ConfigError


def resolve_device(device: str, option: str) -> str:
    """``auto`` -> ``cuda`` when there is one, else ``cpu``; ``cpu``, ``cuda`` and ``cuda:N``
    are taken as they are once checked. ``option`` names the setting in errors
    (e.g. ``"finetune.device"``)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and device != "cuda" and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ConfigError(f"{option}: unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{option}: {device!r} was asked for but no CUDA device is available; use auto or cpu")
        if ":" in device and int(device[5:]) >= torch.cuda.device_count():
            raise ConfigError(f"{option}: {device!r} does not exist; this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def world() -> tuple[int, int]:
    """``(rank, world_size)`` under torchrun (read from its environment), else ``(0, 1)``.
    Starts nothing: see :func:`start_world`."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def start_world() -> tuple[int, int]:
    """Join torchrun's process group if there is more than one process; ``(rank, world_size)``.

    One group serves every stage: gloo for CPU tensors and, on a CUDA machine, nccl for CUDA
    tensors (``cpu:gloo,cuda:nccl``), so proposals (CPU work) and fine-tuning (DDP on GPUs) can
    run in the same ``spp-detect run``.
    """
    rank, world_size = world()
    if world_size > 1:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    return rank, world_size


def barrier() -> None:
    """Wait for every process of the group; nothing to wait for in a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
