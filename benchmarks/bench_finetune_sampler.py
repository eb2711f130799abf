"""Fine-tuning's batch drawing: windows pooled from the conv5 maps on every step vs kept in RAM.

A batch is 128 windows from 16 images (the demo's and the paper's numbers). The per-step path
pools each drawn window from its image's conv5 map (decoded maps cached, as fine-tuning did
before); the kept path pools all of an image's training windows once, on first use, and indexes
into them (:class:`spp_detect.training.finetune.WindowMemory`). Both draw the same batches, checked
before timing. Data: the synthetic dataset's first 48 training images, with the demo's
proposals, scales and training-window labels, on a randomly initialised quarter-width ZF-5
(the timing does not depend on the weights).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DRAWS = 60


def timed_draws(sampler, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        sampler.draw()
    return (time.perf_counter() - t) / n


def main():
    import logging

    from spp_detect.artifacts.layout import features_path
    from spp_detect.config import load_config
    from spp_detect.datasets.stage import open_split
    from spp_detect.features.cache import FeatureCache
    from spp_detect.pipeline import run_pipeline
    from spp_detect.training.finetune import BatchSampler, WindowMemory, build_samples

    logging.getLogger("spp_detect").setLevel(logging.WARNING)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = load_config(REPO / "pipelines" / "demo.toml", [
            f'data.data_root="{tmp / "data"}"', "data.synth_train=48", "data.synth_val=4", "data.synth_test=4",
            "data.synth_pretrain=0", 'data.pretrain_split=""', 'backbone.weights="none"',
        ])
        cfg = replace(cfg, run=str(tmp / "run"))
        for _ in run_pipeline(cfg, tmp / "run", until="extract"):
            pass
        f = cfg.finetune
        train = open_split(cfg, None, cfg.data.train_split)
        print("## Fine-tuning batch drawing (CPU)\n")
        print(f"{f.batch_size} windows from {f.images_per_batch} images per draw, {len(train.image_ids)} training "
              f"images, scales {list(cfg.extract.scales)}, background from IoU {f.bg_iou_low}; mean of {DRAWS} "
              "draws after 30 warm-up draws.\n")
        print("| scale per window | pooled every step (ms/draw) | kept in RAM (ms/draw) | speed-up | "
              "kept path: pooling them all, once (s) | kept (MB) |")
        print("|---|---|---|---|---|---|")
        for random_scale in (False, True):
            rows = {}
            for kept in (False, True):
                cache = FeatureCache(features_path(tmp / "run", train.split), memory_bytes=4096 << 20)
                samples = build_samples(cache, train, f.fg_iou, f.bg_iou_low)
                need = WindowMemory.bytes_needed(cache, samples, random_scale, flip=False)
                sampler = BatchSampler(cache, samples, f.batch_size, f.images_per_batch, f.fg_fraction, False,
                                       random_scale, 1.0, seed=0, memory_bytes=need if kept else 0)
                t = time.perf_counter()
                if kept:  # pool every (image, scale) entry the draws can ask for
                    for sample in samples:
                        for k in (range(len(cache.scales)) if random_scale else (-1,)):
                            sampler.memory.rows(sample, k, False)
                fill = time.perf_counter() - t
                for _ in range(30):  # the per-step path's maps decoded and cached (480 image picks of 48)
                    sampler.draw()
                sampler.rng = np.random.default_rng(1)
                rows[kept] = (timed_draws(sampler, DRAWS), fill, need)
            check = [BatchSampler(FeatureCache(features_path(tmp / "run", train.split)), samples, f.batch_size,
                                  f.images_per_batch, f.fg_fraction, False, random_scale, 1.0, seed=5,
                                  memory_bytes=m).draw() for m in (0, need)]
            if not (torch.equal(check[0][0], check[1][0]) and torch.equal(check[0][1], check[1][1])):
                raise SystemExit("the two paths drew different batches")
            (each, _, _), (kept_t, fill, need) = rows[False], rows[True]
            print(f"| {'random' if random_scale else 'best'} | {each * 1e3:.1f} | {kept_t * 1e3:.2f} | "
                  f"**{each / kept_t:.0f}x** | {fill:.1f} | {need >> 20} |")
    print(f"\nThe demo's fine-tuning ({f.iterations} iterations) draws {f.iterations} batches: the per-step path's "
          "cost per draw times that is what keeping the windows saves, less one fill.")
    sgd_step_section()
    print(f"\n{time.perf_counter() - t0:.0f} s on {torch.get_num_threads()} threads.")


def sgd_step_section(steps: int = 40, rounds: int = 3) -> None:
    """One SGD step of the VOC CPU head (25,600-d SPP vector -> 512 -> 512 -> 21, batch 128):
    fine-tuning's optimizer (fused) against torch's default, the same steps alternated."""
    from spp_detect.training.finetune import _optimizer

    def head():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(25600, 512), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                                   torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                                   torch.nn.Linear(512, 21))

    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(128, 25600, generator=gen).relu(), torch.randint(0, 21, (128,), generator=gen)
    models = {"fused (fine-tuning's)": head(), "torch default": head()}
    opts = {"fused (fine-tuning's)": _optimizer(models["fused (fine-tuning's)"], 0.01, [], 0.9, 5e-4)[0],
            "torch default": torch.optim.SGD(models["torch default"].parameters(), lr=0.01, momentum=0.9,
                                             weight_decay=5e-4)}
    times = {k: [] for k in models}
    for _ in range(rounds):
        for name, m in models.items():
            opt = opts[name]
            for i in range(steps + 5):
                if i == 5:
                    t = time.perf_counter()
                opt.zero_grad()
                torch.nn.functional.cross_entropy(m(x), y).backward()
                opt.step()
            times[name].append((time.perf_counter() - t) / steps)
    fused, plain = min(times["fused (fine-tuning's)"]), min(times["torch default"])
    print("\n### SGD step of the VOC CPU head (batch 128, 25,600 -> 512 -> 512 -> 21)\n")
    print("| optimizer | ms per step (forward, backward, update) |")
    print("|---|---|")
    print(f"| fused (fine-tuning's) | {fused * 1e3:.1f} |")
    print(f"| torch default (for-loop SGD) | {plain * 1e3:.1f} |")
    print(f"\nFused step {plain / fused:.2f}x faster (best of {rounds} rounds of {steps} steps each, alternated).")


if __name__ == "__main__":
    main()
