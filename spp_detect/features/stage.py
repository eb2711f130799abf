"""The ``extract`` stage: conv5 maps (or pooled vectors) of a split into ``RUN/features/<split>.h5``.

Turns the ``[extract]``, ``[spp]`` and ``[backbone]`` sections into plain arguments for
:mod:`.extract` (STYLE.md: the config stops at the edge), and opens the caches later stages read.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path

from ..artifacts.layout import features_path, proposals_path
from ..config import PipelineConfig, config_hash
from ..datasets.base import DetectionDataset
from ..errors import ConfigError
from ..runtime import barrier, resolve_device, start_world

log = logging.getLogger(__name__)

NORM_TARGET_DEFAULT = 20.0


def weights_source(cfg: PipelineConfig, run: Path) -> str:
    """``pretrained`` means the backbone this run's ``pretrain`` stage wrote."""
    return str(run) if cfg.backbone.weights == "pretrained" else cfg.backbone.weights


def load_backbone(cfg: PipelineConfig, run: Path):
    from ..backbones import backbone_from_config

    return backbone_from_config(cfg.backbone, weights_source(cfg, run))


def backbone_fingerprint(backbone) -> str:
    """Hash of the backbone's weights: caches are keyed on content, not on a file name."""
    h = hashlib.sha256()
    for k, v in sorted(backbone.trunk.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(repr(backbone.input_convention).encode())
    return h.hexdigest()[:16]


def load_proposals(run: Path, ds: DetectionDataset) -> tuple[dict, str]:
    """Proposals of a split as ``{image_id: float32 (N, 4)}`` plus a hash of the file's stamp."""
    from ..proposals.store import ProposalStore

    with ProposalStore(proposals_path(run, ds.split), ds) as store:
        return store.load_all(), config_hash(store.stamp)


def flips_split(cfg: PipelineConfig, split: str | None) -> bool:
    """Whether ``split``'s cache gets mirrored images: ``extract.flip`` applies to the training
    split only (fine-tuning reads mirrors; detection and evaluation never do)."""
    return cfg.extract.flip and split == cfg.data.train_split


def extract_settings(cfg: PipelineConfig, images_per_part: int | None = None, split: str | None = None):
    """``split``: the split extracted (mirrors for the training split only, :func:`flips_split`).
    ``images_per_part``: override the part size (tests make one part per image to kill a run
    between parts); it changes where images are stored, not the features, so it is not stamped."""
    from .extract import ExtractSettings

    e = replace(cfg.extract, flip=flips_split(cfg, split))
    extra = {} if images_per_part is None else {"images_per_part": images_per_part}
    return ExtractSettings(
        scales=e.scales, max_size=e.max_size, target_size=e.target_size, projection=e.projection, cache=e.cache,
        flip=e.flip, levels=cfg.spp.levels, concat_order=cfg.spp.concat_order,
        norm_sample_images=e.norm_sample_images, norm_sample_windows=e.norm_sample_windows, seed=e.seed,
        warp_size=e.warp_size, workers=e.workers, precision=e.precision, **extra,
    )


def features_stamp(cfg: PipelineConfig, ds: DetectionDataset, proposals_hash: str, backbone) -> dict:
    """What a feature cache is keyed on; each option separately so a mismatch names it."""
    e = replace(cfg.extract, flip=flips_split(cfg, ds.split))
    return {
        "dataset": ds.name, "split": ds.split, "data_fingerprint": ds.fingerprint(),
        "image_files": ds.files_fingerprint(), "proposals": proposals_hash,
        "backbone": backbone.name, "backbone_weights": backbone_fingerprint(backbone),
        "scales": list(e.scales), "max_size": e.max_size, "target_size": e.target_size, "projection": e.projection,
        "cache": e.cache, "flip": e.flip, "levels": list(cfg.spp.levels), "concat_order": cfg.spp.concat_order,
        **({"warp_size": e.warp_size} if e.cache == "warped" else {}),
        **({"precision": e.precision} if e.precision != "float32" else {}),  # absent: float32, as before
    }


def run_extract(cfg: PipelineConfig, run: Path, ds: DetectionDataset, overwrite: bool = False,
                images_per_part: int | None = None, delay: float = 0.0) -> dict:
    """``images_per_part`` and ``delay`` (seconds slept after each image) are for tests that
    interrupt a run part way; see :func:`extract_settings` and :func:`extract_split`."""
    from .extract import cache_meta, extract_split, finalize_index

    rank, world_size = start_world()
    if cfg.backbone.weights == "none":
        log.warning("backbone.weights = none: features of an UNTRAINED %s trunk (random weights); detections "
                    "will be poor. Use backbone.weights = imagenet, a weights file, or 'pretrained' with "
                    "'spp-detect pretrain' (see the pipeline file's header)", cfg.backbone.name)
    backbone = load_backbone(cfg, run)
    proposals, proposals_hash = load_proposals(run, ds)
    settings = extract_settings(cfg, images_per_part, ds.split)
    stamp = features_stamp(cfg, ds, proposals_hash, backbone)
    out = features_path(run, ds.split)
    device = resolve_device(cfg.extract.device, "extract.device")
    if cfg.extract.precision == "float16" and not device.startswith("cuda"):
        raise ConfigError("extract.precision: float16 autocast needs a CUDA device (extract.device resolves to "
                          f"{device!r}); use bfloat16 on a CPU")
    if device == "cuda" and world_size > 1:
        import torch

        torch.cuda.set_device(rank % torch.cuda.device_count())
    summary = extract_split(
        ds, proposals, backbone, settings, out, stamp, device=device, overwrite=overwrite,
        rank=rank, world_size=world_size, skip_bad=cfg.data.skip_bad, delay=delay,
    )
    summary["path"] = str(out)
    if summary.get("skipped"):
        return summary
    barrier()
    if rank == 0:
        index = finalize_index(out, ds.image_ids, stamp, cache_meta(backbone, settings), settings)
        # 'images' stays what this call extracted (a resumed run does only the rest); the
        # index's count includes the images of earlier, interrupted runs
        summary.update(pool_norm_mean=index["pool_norm_mean"], indexed_images=index["images"])
    barrier()
    return summary


def open_features(run: Path, ds: DetectionDataset, memory_mb: int = 0):
    from .cache import FeatureCache

    expect = {"split": ds.split, "data_fingerprint": ds.fingerprint(), "image_files": ds.files_fingerprint()}
    return FeatureCache(features_path(run, ds.split), expect=expect, memory_bytes=memory_mb << 20)


def features_hash(cache) -> str:
    """Identity of a feature cache (its stamp), what trained models are keyed on."""
    return config_hash(cache.stamp)


def scaling_stamp(cfg: PipelineConfig) -> dict:
    """The feature scaling every model trained or applied on a cache depends on
    (``extract.norm_target``, PAPER.md: mean L2 norm 20). Stamped only when it is not the
    default, so run folders made before it was stamped (always at 20) still match."""
    t = cfg.extract.norm_target
    return {} if t == NORM_TARGET_DEFAULT else {"norm_target": t}
