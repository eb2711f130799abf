"""Where one image's windows' time goes when `train-svm` mines and `detect` scores on fc7, and
what ``svm.fc7_precision = "bfloat16"`` changes.

Setting of the VOC CPU pipeline (pipelines/voc2007_cpu.toml): a real VOC image of ``val_mini``,
its fast selective-search windows (the distinct conv5 rectangles, as mining and detection take
them), SqueezeNet 1.0 conv5 at a shorter side of 352 (ImageNet weights from ../shared/weights
when present), the SPP pyramid 6/3/2/1 (25,600-d), a 512-wide fc head. The head is freshly
initialised unless ``--head RUN/models/head.pt`` names a fine-tuned one: the timings do not depend
on its weights; the fc7 difference between the two precisions does a little.

Printed: seconds per image (best and median of repeated runs) of pooling, fc6 + fc7 in float32
and in bfloat16 (the conversion of the pooled vectors included), the ratio of the two, and how far
bfloat16's fc7 is from float32's (relative L2 per window; the rank agreement of one linear
scorer's scores on it, as an SVM would use them).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(os.environ.get("SPP_SHARED", Path(__file__).resolve().parents[2] / "shared"))
WEIGHTS = SHARED / "weights" / "squeezenet1_0-imagenet-caffe.pth"


def timed(f, repeat: int):
    f()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return out, min(times), float(np.median(times))


def real_image_windows(scale: int):
    """conv5 of one val_mini image at ``scale`` and its distinct windows' rectangles."""
    from spp_detect.backbones import build_backbone
    from spp_detect.datasets import load_image, open_dataset
    from spp_detect.features.extract import Extractor, ExtractSettings
    from spp_detect.proposals.selective_search import SearchParams, selective_search

    ds = open_dataset("voc2007", "val_mini", data_root=SHARED / "data")
    backbone = build_backbone("squeezenet1_0", WEIGHTS if WEIGHTS.is_file() else "none")
    extractor = Extractor(backbone, ExtractSettings(scales=(scale,)), "cpu")
    for r in ds.records:
        image = load_image(r.path)
        boxes, _ = selective_search(image, SearchParams(), r.image_id)
        if len(boxes) >= 1500:
            result = extractor.run(image, boxes, source=r.path)
            rects = np.unique(result["rects"][:, 0], axis=0)  # windows with the same cells are scored once
            return r.image_id, len(boxes), result["maps"][0].half(), rects
    raise SystemExit("no val_mini image with 1,500 proposals")


def main() -> None:
    from spp_detect.core.roi_spp import RoiSppPooler
    from spp_detect.training.head import SppHead, load_head
    from spp_detect.training.svm_features import FeatureScaler, native_bfloat16

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, default=352)
    ap.add_argument("--head", type=Path, help="a fine-tuned head.pt (default: a fresh 512-wide head)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    image_id, n_boxes, fmap, rects = real_image_windows(args.scale)
    pooler = RoiSppPooler((6, 3, 2, 1))
    dim = pooler.output_dim(fmap.shape[0])
    if args.head:
        head, meta = load_head(args.head)
        origin = f"fine-tuned ({args.head})"
    else:
        torch.manual_seed(0)
        head, meta = SppHead(dim, 512, 21, dropout=0.5).eval(), {"fc7_norm_mean": 1.0}
        origin = "freshly initialised"
    out = torch.empty((len(rects), dim))
    pooled, pool_best, pool_med = timed(lambda: pooler(fmap, rects, out=out), args.repeat)
    pooled = pooled * (20.0 / pooled.norm(dim=1).mean())  # norm-scaled, as the provider hands them on
    scalers = {p: FeatureScaler("fc7", 1.0, head, meta, precision=p) for p in ("float32", "bfloat16")}
    runs = {p: timed(lambda s=s: s.from_pooled(pooled), args.repeat) for p, s in scalers.items()}
    f32, bf16 = runs["float32"][0], runs["bfloat16"][0]
    rel = np.linalg.norm(f32 - bf16, axis=1) / np.maximum(np.linalg.norm(f32, axis=1), 1e-12)
    w = np.random.default_rng(0).normal(size=f32.shape[1]).astype(np.float32)
    s32, s16 = f32 @ w, bf16 @ w
    top = max(1, len(s32) // 20)
    overlap = len(np.intersect1d(np.argsort(-s32)[:top], np.argsort(-s16)[:top])) / top

    print("## Scoring an image's windows on fc7 (CPU): float32 against bfloat16\n")
    print(f"VOC image {image_id} (`val_mini`), {n_boxes} selective-search windows, {len(rects)} distinct conv5 "
          f"rectangles at scale {args.scale}; SqueezeNet 1.0 conv5 {tuple(fmap.shape)} "
          f"({'ImageNet' if WEIGHTS.is_file() else 'random'} weights); SPP 6/3/2/1, {dim}-d; "
          f"head 512-wide, {origin}. This CPU multiplies bfloat16 in hardware: "
          f"{'yes' if native_bfloat16('cpu') else 'no (emulated)'}.\n")
    print("| step | best (s) | median (s) |\n|---|---|---|")
    print(f"| pooling (RoI-SPP, the distinct rectangles) | {pool_best:.3f} | {pool_med:.3f} |")
    for p in ("float32", "bfloat16"):
        print(f"| fc6 + fc7, {p} | {runs[p][1]:.3f} | {runs[p][2]:.3f} |")
    ratio = runs["float32"][1] / runs["bfloat16"][1]
    per_image = (pool_best + runs["float32"][1]) / (pool_best + runs["bfloat16"][1])
    print(f"\nbfloat16's fc6 + fc7: **{ratio:.2f}x** float32's (best of {args.repeat}); with pooling, an image's "
          f"windows **{per_image:.2f}x**. fc7 relative L2 difference per window: median {np.median(rel):.2e}, "
          f"largest {rel.max():.2e}; a linear scorer's top 5% of windows agree on {overlap:.1%}.\n")


if __name__ == "__main__":
    main()
