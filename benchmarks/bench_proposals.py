"""Proposal benchmark: the paper's selective search, the tuned OpenCV recipe and OpenCV's stock fast
mode on real VOC2007 images: recall, average recall, seconds per image per worker, speed-up.

Runs on ``$SPP_SHARED/data/VOCdevkit/VOC2007`` split ``val_mini`` (200 images; the annotations
carry no "difficult" flags, so every object counts, tiny ones included) with each method's
"fast" settings, at most 2,000 boxes, 20 px minimum size. Prints a markdown section: recall at
IoU 0.5 / 0.7 and AR at 100, 300, 1,000 and 2,000 boxes; where the misses are, by object size,
beside the geometric ceiling that the 20 px minimum box size leaves; and writes a recall-vs-boxes
plot, ``benchmarks/proposals_recall.png``. Targets (issue 21): at <= 2,000 boxes recall >= 0.95
at IoU 0.5, >= 0.80 at IoU 0.7, AR >= 0.64; <= 1.5 s per image per worker; two workers >= 1.8x
one. Usage::

    .venv/bin/python benchmarks/bench_proposals.py [--images N] [--split val_mini] [--quality]

Timings depend on the machine and on what else runs on it; the section says how many cores
there were and the load average at the start.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

TARGETS = {"recall_0.5": 0.95, "recall_0.7": 0.80, "ar": 0.64, "seconds_per_image": 1.5, "speedup_2": 1.8}
CURVE = (10, 20, 50, 100, 200, 300, 500, 700, 1000, 1500, 2000)
SIZES = (("shorter side < 20 px", 0, 20), ("20-32 px", 20, 32), ("32-96 px", 32, 96), (">= 96 px", 96, 10**9))
MIN_BOX = 20


def _stock_fast(record):
    """OpenCV's own switchToSelectiveSearchFast, 20 px filter, first 2,000: the baseline."""
    import cv2

    from spp_detect.datasets import load_image
    from spp_detect.proposals.filtering import finalize, rects_to_boxes

    cv2.setNumThreads(1)
    start = time.perf_counter()
    bgr = cv2.cvtColor(load_image(record.path), cv2.COLOR_RGB2BGR)
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(bgr)
    ss.switchToSelectiveSearchFast()
    boxes, _ = finalize(rects_to_boxes(ss.process()), record.height, record.width, MIN_BOX, 2000)
    return record.image_id, boxes, time.perf_counter() - start


def _run(records, proposer, workers):
    """Every image's boxes, the mean compute seconds per image inside the workers, wall seconds."""
    from spp_detect.proposals.stage import propose_images

    start = time.perf_counter()
    out, secs = {}, []
    for res in propose_images(records, proposer, workers=workers):
        if res.error:
            raise SystemExit(f"benchmark image failed: {res.error}")
        out[res.image_id] = res.boxes
        secs.append(res.seconds)
    return out, float(np.mean(secs)), time.perf_counter() - start


def _gt(ds):
    for r in ds.records:
        keep = ~(r.difficult | r.ignore) if len(r.boxes) else np.zeros(0, bool)
        yield r, r.boxes[keep]


def size_breakdown(ds, proposals, n=2000) -> dict:
    """Per object-size bucket (shorter side, inclusive pixels): objects, recall at 0.5 and 0.7
    with the first ``n`` boxes."""
    from spp_detect.proposals.recall import best_overlaps

    sides, best = [], []
    for r, gt in _gt(ds):
        if len(gt):
            sides.append(np.minimum(gt[:, 2] - gt[:, 0] + 1, gt[:, 3] - gt[:, 1] + 1))
            best.append(best_overlaps(gt, proposals.get(r.image_id, np.zeros((0, 4), np.float32)), (n,))[0])
    sides, best = np.concatenate(sides), np.concatenate(best)
    out = {}
    for name, lo, hi in SIZES:
        m = (sides >= lo) & (sides < hi)
        out[name] = (int(m.sum()), float((best[m] >= 0.5).mean()) if m.any() else float("nan"),
                     float((best[m] >= 0.7).mean()) if m.any() else float("nan"))
    return out


def ceiling(ds) -> dict:
    """Recall at 0.5 / 0.7 that boxes of at least MIN_BOX pixels a side could reach at best: each
    object's IoU with the smallest allowed box around it (grown inside the image)."""
    ious = []
    for r, gt in _gt(ds):
        for x1, y1, x2, y2 in gt:
            w, h = x2 - x1 + 1, y2 - y1 + 1
            bw, bh = min(max(w, MIN_BOX), r.width), min(max(h, MIN_BOX), r.height)
            ious.append(w * h / (bw * bh))
    ious = np.asarray(ious)
    return {"0.5": float((ious >= 0.5).mean()), "0.7": float((ious >= 0.7).mean())}


def plot(curves: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for name, rep in curves.items():
        counts = [int(c) for c in rep["recall"]["0.5"]]
        for ax, (label, values) in zip(axes, (("recall at IoU 0.5", rep["recall"]["0.5"]),
                                               ("recall at IoU 0.7", rep["recall"]["0.7"]),
                                               ("average recall (IoU 0.5:0.95)", rep["average_recall"])), strict=True):
            ax.plot(counts, [values[str(c)] for c in counts], marker=".", label=name)
            ax.set_title(label)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("proposals per image")
        ax.grid(True, alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle("Proposals on VOC2007 val_mini (200 images; every object counts)")
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="val_mini")
    ap.add_argument("--images", type=int, default=0, help="use only the first N images (0 = all)")
    ap.add_argument("--quality", action="store_true", help="also the paper's quality mode (about 10x slower)")
    ap.add_argument("--plot", type=Path, default=HERE / "proposals_recall.png")
    args = ap.parse_args()

    from spp_detect.datasets import open_dataset
    from spp_detect.proposals.recall import proposal_recall
    from spp_detect.proposals.selective_search import SearchParams
    from spp_detect.proposals.uijlings import UijlingsSearch

    shared = Path(os.environ.get("SPP_SHARED", REPO.parent / "shared"))
    root = shared / "data" / "VOCdevkit" / "VOC2007"
    print("## Proposals (selective search)\n")
    if not root.is_dir():
        print(f"skipped: {root} not found (set SPP_SHARED)\n")
        return
    ds = open_dataset(str(root), args.split)
    if args.images:
        ds.records = ds.records[: args.images]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    methods = {
        "paper's selective search, fast (`uijlings`)": UijlingsSearch(mode="fast"),
        "OpenCV recipe, fast (`opencv`)": SearchParams(mode="fast"),
    }
    if args.quality:
        methods["paper's selective search, quality (`uijlings`)"] = UijlingsSearch(mode="quality")
    boxes, speed = {}, {}
    for name, proposer in methods.items():
        one, s1, wall1 = _run(ds.records, proposer, 1)
        two, s2, wall2 = _run(ds.records, proposer, 2)
        boxes[name] = one
        speed[name] = (s1, s2, wall1 / wall2, all(np.array_equal(one[k], two[k]) for k in one))
    # the published figures count every region of the hierarchies: the same, for comparison
    every = "paper's fast, every region (no 20 px filter, no cap)"
    boxes[every], s2, _ = _run(ds.records, UijlingsSearch(mode="fast", min_size=1, max_proposals=10**6), 2)
    speed[every] = (s2, None, None, None)
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(2) as pool:
        res = pool.map(_stock_fast, ds.records, chunksize=1)
    stock = "OpenCV stock fast (baseline)"
    boxes[stock] = {iid: b for iid, b, _ in res}
    speed[stock] = (float(np.mean([t for *_, t in res])), None, None, None)

    reports = {name: proposal_recall(ds, b, counts=CURVE) for name, b in boxes.items()}
    everything = proposal_recall(ds, boxes.pop(every), counts=(10**6,))
    reports.pop(every)
    plot(reports, args.plot)
    first = next(iter(reports.values()))
    print(f"VOC2007 `{args.split}`: {len(ds)} images, {first['gt_boxes']} ground-truth boxes (no difficult flags: "
          f"every object counts); at most 2,000 boxes, {MIN_BOX} px minimum size. Machine: {ncpu} cores, "
          f"{platform.processor() or platform.machine()}, load average {load:.2f} at the start.\n")
    print("| proposals | boxes/img | R@0.5 (2000) | R@0.7 (2000) | AR (2000) | AR (1000) | AR (300) | AR (100) "
          "| R@0.5 (1000) | R@0.5 (300) | R@0.5 (100) | s/img/worker |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, rep in reports.items():
        r, ar = rep["recall"], rep["average_recall"]
        print(f"| {name} | {rep['boxes_per_image']:.0f} | {r['0.5']['2000']:.3f} | {r['0.7']['2000']:.3f} | "
              f"{ar['2000']:.3f} | {ar['1000']:.3f} | {ar['300']:.3f} | {ar['100']:.3f} | {r['0.5']['1000']:.3f} | "
              f"{r['0.5']['300']:.3f} | {r['0.5']['100']:.3f} | {speed[name][0]:.2f} |")

    print("\nRecall at 2,000 boxes by object size (shorter side of the ground-truth box), IoU 0.5 / 0.7:\n")
    sizes = {name: size_breakdown(ds, b) for name, b in boxes.items()}
    names = list(sizes)
    print("| objects | count | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for bucket, *_ in SIZES:
        count = sizes[names[0]][bucket][0]
        cells = [f"{sizes[n][bucket][1]:.3f} / {sizes[n][bucket][2]:.3f}" for n in names]
        print(f"| {bucket} | {count} | " + " | ".join(cells) + " |")
    top = ceiling(ds)
    print(f"\nCeiling that the {MIN_BOX} px minimum box leaves (each object's IoU with the smallest allowed box "
          f"around it): recall {top['0.5']:.3f} at IoU 0.5, {top['0.7']:.3f} at IoU 0.7.\n")

    r_all = everything["recall"]
    print(f"Every region of the paper's fast mode, no size filter, no cap ({everything['boxes_per_image']:.0f} distinct "
          f"boxes per image; the published figures count these, with VOC's difficult objects excluded): recall "
          f"{r_all['0.5'][str(10**6)]:.3f} at IoU 0.5, {r_all['0.7'][str(10**6)]:.3f} at IoU 0.7, AR "
          f"{everything['average_recall'][str(10**6)]:.3f}.\n")

    print("| speed | " + " | ".join(n for n in methods) + " | target |")
    print("|---|" + "---|" * len(methods) + "---|")
    print("| seconds per image per worker (1 worker) | " + " | ".join(f"{speed[n][0]:.3f}" for n in methods)
          + f" | <= {TARGETS['seconds_per_image']} |")
    print("| seconds per image per worker (2 workers) | " + " | ".join(f"{speed[n][1]:.3f}" for n in methods) + " | |")
    print("| speed-up 1 -> 2 workers | " + " | ".join(f"{speed[n][2]:.2f}x" for n in methods)
          + f" | >= {TARGETS['speedup_2']}x |")
    print("| 2-worker boxes identical to 1-worker | " + " | ".join("yes" if speed[n][3] else "NO" for n in methods)
          + " | yes |")
    print(f"\nOpenCV stock fast: {speed[stock][0]:.2f} s per image per worker (2 workers).\n")

    name = next(iter(methods))
    rep = reports[name]
    r5, r7, ar = rep["recall"]["0.5"]["2000"], rep["recall"]["0.7"]["2000"], rep["average_recall"]["2000"]
    s1, _, speedup, _ = speed[name]

    def verdict(value, target, higher=True):
        ok = value >= target if higher else value <= target
        return "meets" if ok else "MISSES"

    print(f"Targets for the {name}: " + ", ".join([
        f"recall@0.5 {r5:.3f} {verdict(r5, TARGETS['recall_0.5'])} >= {TARGETS['recall_0.5']}",
        f"recall@0.7 {r7:.3f} {verdict(r7, TARGETS['recall_0.7'])} >= {TARGETS['recall_0.7']}",
        f"AR {ar:.3f} {verdict(ar, TARGETS['ar'])} >= {TARGETS['ar']}",
        f"{s1:.2f} s/img {verdict(s1, TARGETS['seconds_per_image'], False)} <= {TARGETS['seconds_per_image']}",
        f"speed-up {speedup:.2f}x {verdict(speedup, TARGETS['speedup_2'])} >= {TARGETS['speedup_2']}x",
    ]) + ".\n")
    print(f"![recall against the number of proposals per image]({args.plot.name})\n")


if __name__ == "__main__":
    main()
