"""Where the time goes on whatever device this machine has (a GPU when there is one, else the CPU).

A few real VOC2007 images of ../shared/data (split val_mini; generated images when that is not
there), 2,000 windows each (random, log-uniform sizes: timing depends on how many windows there
are, not on where they come from), random weights (timing does not depend on them):

- trunk: conv5 of whole images at 1 scale (688) and 5 scales (480..1200), ZF-5 (the paper's
  width) and SqueezeNet 1.0, forward passes only;
- extraction end to end: `extract_split` (decode, resize, trunk, projection, float16, gzip,
  HDF5), 1 scale, with loader workers on a GPU;
- R-CNN with the same trunk: windows warped to 224 x 224 and run in batches of 64 on the device
  (from a sample of windows, scaled to 2,000 an image), against SPP's trunk plus pooling;
- pooling: windows per second of the RoI-SPP pooler on the device;
- fine-tuning: iterations per second of the paper's head (fc 4,096, batch 128) on the device;
- detection: images per second from conv5 maps on the device: pooling, fc7, 20 SVMs, NMS;
- precision: what bfloat16 (and on a GPU float16) autocast changes in conv5 and in the pooled
  vectors, and what it saves.

Prints one markdown section. Runs in about a minute on a GPU, a few on 2 CPU cores.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(os.environ.get("SPP_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FIVE = (480, 576, 688, 864, 1200)
WINDOWS = 2000


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def images_and_windows(n: int, rng):
    """(dataset or None, images, windows per image)."""
    from spp_detect.datasets import load_image, open_dataset

    ds = None
    try:
        ds = open_dataset("voc2007", "val_mini", data_root=SHARED / "data")
        ds.records = ds.records[:n]
        images = [load_image(r.path) for r in ds.records]
    except Exception:  # noqa: BLE001 - no shared data: generated images of VOC's size
        images = [rng.integers(0, 255, (375, 500, 3), dtype=np.uint8) for _ in range(n)]
    windows = []
    for im in images:
        h, w = im.shape[:2]
        side = np.exp(rng.uniform(np.log(16), np.log(min(h, w)), (WINDOWS, 2)))
        xy = rng.uniform(0, 1, (WINDOWS, 2)) * ([w, h] - side)
        windows.append(np.concatenate([xy, xy + side - 1], 1).astype(np.float32))
    return ds, images, windows


def trunk_seconds(backbone, images, scales, device) -> float:
    from spp_detect.core.geometry import resize_image

    resized = [[resize_image(im, s)[0] for s in scales] for im in images]
    with torch.inference_mode():
        backbone(backbone.preprocess(resized[0][0]).to(device))  # warm-up (cuDNN picks its kernels)
        sync(device)
        t0 = time.perf_counter()
        for per_image in resized:
            for r in per_image:
                backbone(backbone.preprocess(r).to(device))
        sync(device)
    return (time.perf_counter() - t0) / len(images)


def spp_seconds(backbone, images, windows, scales, device) -> float:
    """Trunk plus pooling of every window at its best scale, per image."""
    from spp_detect.core.roi_spp import RoiSppPooler
    from spp_detect.features.extract import Extractor, ExtractSettings, pool_at_best_scales

    ex = Extractor(backbone, ExtractSettings(scales=scales), str(device))
    pooler = RoiSppPooler()
    pool_at_best_scales(ex.run(images[0], windows[0]), pooler)  # warm-up
    t0 = time.perf_counter()
    for im, b in zip(images, windows, strict=True):
        pool_at_best_scales(ex.run(im, b), pooler)
    sync(device)
    return (time.perf_counter() - t0) / len(images)


def rcnn_seconds_per_window(backbone, images, windows, device, sample: int) -> float:
    from spp_detect.core.spp import spp_pool
    from spp_detect.features.rcnn import rcnn_warp

    rng = np.random.default_rng(1)
    pick = [(i, int(j)) for i in range(len(images)) for j in rng.choice(WINDOWS, sample // len(images), replace=False)]
    batch = 64
    with torch.inference_mode():
        spp_pool(backbone(backbone.preprocess([rcnn_warp(images[0], windows[0][0])]).to(device)))
        sync(device)
        t0 = time.perf_counter()
        for s in range(0, len(pick), batch):
            crops = [rcnn_warp(images[i], windows[i][j]) for i, j in pick[s : s + batch]]
            spp_pool(backbone(backbone.preprocess(crops).to(device)))
        sync(device)
    return (time.perf_counter() - t0) / len(pick)


def extraction_images_per_s(ds, backbone, windows, device, workers: int) -> float | None:
    if ds is None:
        return None
    from spp_detect.features.extract import ExtractSettings, extract_split

    props = {r.image_id: w for r, w in zip(ds.records, windows, strict=True)}
    folder = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    try:
        settings = ExtractSettings(scales=(688,), workers=workers)
        t0 = time.perf_counter()
        extract_split(ds, props, backbone, settings, folder / "f.h5", {"bench": 1}, device=str(device))
        return len(ds.records) / (time.perf_counter() - t0)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def pooling_and_detection(backbone, images, windows, device, n_classes=20):
    """(pooled windows per s, detection images per s) from conv5 maps already on the device."""
    from spp_detect.core.roi_spp import RoiSppPooler
    from spp_detect.detection.scoring import DetectParams, detect_image
    from spp_detect.features.extract import Extractor, ExtractSettings
    from spp_detect.training.head import SppHead

    ex = Extractor(backbone, ExtractSettings(scales=(688,)), str(device))
    results = [ex.run(im, b) for im, b in zip(images, windows, strict=True)]
    maps = [r["maps"][0].to(device) for r in results]
    rects = [torch.from_numpy(r["rects"][:, 0].astype(np.int64)).to(device) for r in results]
    pooler = RoiSppPooler()
    pooler(maps[0], rects[0])
    sync(device)
    t0 = time.perf_counter()
    for m, r in zip(maps, rects, strict=True):
        pooler(m, r)
    sync(device)
    pool_rate = sum(len(r) for r in rects) / (time.perf_counter() - t0)

    head = SppHead(backbone.out_channels * 50, 4096, n_classes).to(device).eval()
    w = np.random.default_rng(0).normal(size=(n_classes, 4096)).astype(np.float32) * 0.01
    b = np.full(n_classes, -1.0, np.float32)
    params = DetectParams(score_floor=-1.0, bbox_regression=False)
    t0 = time.perf_counter()
    for m, r, boxes, im in zip(maps, rects, windows, images, strict=True):
        with torch.no_grad():
            feats = head.fc7_features(pooler(m, r)).cpu().numpy()
        detect_image(feats, feats, boxes, w, b, None, im.shape[0], im.shape[1], params)
    sync(device)
    return pool_rate, len(images) / (time.perf_counter() - t0)


def precision_rows(backbone, images, windows, device) -> list[tuple[str, float, float, float]]:
    """For each lower precision the device offers: trunk s/image at 688, the relative L2 error of
    conv5 maps and the mean cosine of pooled window vectors, both against float32."""
    from spp_detect.core.roi_spp import RoiSppPooler
    from spp_detect.features.extract import Extractor, ExtractSettings, pool_at_best_scales

    pooler = RoiSppPooler()
    reference = Extractor(backbone, ExtractSettings(scales=(688,)), str(device))
    base = [reference.run(im, b) for im, b in zip(images, windows, strict=True)]
    rows = []
    for precision in ("bfloat16", "float16") if device.type == "cuda" else ("bfloat16",):
        ex = Extractor(backbone, ExtractSettings(scales=(688,), precision=precision), str(device))
        ex.run(images[0], windows[0])  # warm-up
        sync(device)
        t0 = time.perf_counter()
        got = [ex.run(im, b) for im, b in zip(images, windows, strict=True)]
        sync(device)
        seconds = (time.perf_counter() - t0) / len(images)
        err = np.mean([float((g["maps"][0] - r["maps"][0]).norm() / r["maps"][0].norm()) for g, r in zip(got, base, strict=True)])
        cos = np.mean([float(torch.nn.functional.cosine_similarity(pool_at_best_scales(g, pooler),
                                                                   pool_at_best_scales(r, pooler), dim=1).mean())
                       for g, r in zip(got, base, strict=True)])
        rows.append((precision, seconds, err, cos))
    return rows


def finetune_iterations_per_s(dim: int, device, steps: int) -> float:
    from spp_detect.training.head import SppHead

    head = SppHead(dim, 4096, 21).to(device)
    opt = torch.optim.SGD(head.parameters(), lr=0.001, momentum=0.9)
    x = torch.randn(128, dim, device=device)
    y = torch.randint(0, 21, (128,), device=device)
    for it in range(steps + 2):
        if it == 2:  # two warm-up steps
            sync(device)
            t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync(device)
    return steps / (time.perf_counter() - t0)


def main():
    import logging

    from spp_detect.backbones import build_backbone

    logging.getLogger("spp_detect").setLevel(logging.WARNING)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name(0) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    n_images = 16 if cuda else 4
    rng = np.random.default_rng(0)
    ds, images, windows = images_and_windows(n_images, rng)
    torch.manual_seed(0)
    zf5 = build_backbone("zf5", "none").to(device).eval()
    squeeze = build_backbone("squeezenet1_0", "none").to(device).eval()

    rows = []
    for label, bb in (("ZF-5", zf5), ("SqueezeNet 1.0", squeeze)):
        rows.append((label, trunk_seconds(bb, images, (688,), device), trunk_seconds(bb, images, FIVE, device)))
    spp1 = spp_seconds(zf5, images, windows, (688,), device)
    spp5 = spp_seconds(zf5, images, windows, FIVE, device)
    per_window = rcnn_seconds_per_window(zf5, images, windows, device, 512 if cuda else 32)
    rcnn = per_window * WINDOWS
    workers = min(4, max(0, (os.cpu_count() or 1) - 1)) if cuda else 0
    extract_rate = extraction_images_per_s(ds, zf5, windows, device, workers)
    pool_rate, detect_rate = pooling_and_detection(zf5, images, windows, device)
    ft_rate = finetune_iterations_per_s(zf5.out_channels * 50, device, 50 if cuda else 5)
    precisions = precision_rows(zf5, images[:2], windows[:2], device)

    load = os.getloadavg()[0]
    print(f"## The device path: {name}\n")
    print(f"{len(images)} {'VOC2007 images (val_mini)' if ds is not None else 'generated 500x375 images'}, "
          f"{WINDOWS} windows each, random weights. Targets on a GPU in brackets (the paper's 2014 GPU: ZF-5 "
          f"0.053 s at 1 scale, 0.293 s at 5). Load average when it started: {load:.1f} "
          f"(on {os.cpu_count()} cores; above their number, other work shared them).\n")
    print("| trunk (conv5 of whole images) | s/image at 1 scale (688) | s/image at 5 scales |")
    print("|---|---|---|")
    for label, t1, t5 in rows:
        target = " [<= 0.01 / <= 0.05]" if label == "ZF-5" else ""
        print(f"| {label}{target} | {t1:.4f} | {t5:.4f} |")
    print()
    print("| measure | figure |")
    print("|---|---|")
    if extract_rate is not None:
        print(f"| extraction end to end, 1 scale, ZF-5 ({workers} loader workers) [>= 30 img/s] | {extract_rate:.1f} images/s |")
    print(f"| SPP (ZF-5 trunk + pooling of {WINDOWS} windows), 1 scale | {spp1:.3f} s/image |")
    print(f"| SPP, 5 scales | {spp5:.3f} s/image |")
    print(f"| R-CNN, same trunk, warped windows in batches of 64 ({per_window * 1e3:.2f} ms a window) | {rcnn:.1f} s/image |")
    print(f"| SPP vs R-CNN, 1 scale [>= 100x] | **{rcnn / spp1:.0f}x** |")
    print(f"| SPP vs R-CNN, 5 scales [>= 38x] | **{rcnn / spp5:.0f}x** |")
    print(f"| RoI-SPP pooling on the device | {pool_rate:,.0f} windows/s |")
    print(f"| fine-tuning, fc 4096, batch 128, 12,800-d input | {ft_rate:.1f} iterations/s |")
    print(f"| detection from conv5 maps (pooling, fc7, 20 SVMs, NMS) | {detect_rate:.2f} images/s |")
    print()
    print("| extract.precision (autocast), ZF-5 at 688 | trunk + projection s/image | conv5 relative L2 error "
          "vs float32 | mean cosine of pooled windows vs float32 |")
    print("|---|---|---|---|")
    for precision, seconds, err, cos in precisions:
        print(f"| {precision} | {seconds:.3f} | {err:.2e} | {cos:.6f} |")


if __name__ == "__main__":
    main()
