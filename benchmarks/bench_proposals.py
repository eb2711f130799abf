"""Proposal benchmark: speed per image per worker, 1 -> 2 worker speed-up, recall on VOC2007.

Runs on ``$SPP_SHARED/data/VOCdevkit/VOC2007`` split ``val_mini`` (200 images) with the default
settings (fast mode, at most 2,000 boxes, 20 px minimum size) and prints a markdown section.
Targets: recall >= 0.96 at IoU 0.5 and >= 0.78 at IoU 0.7 with 2,000 boxes, at most 1.5 s per
image per core, two workers at least 1.8x faster than one. OpenCV's stock fast mode is measured
too, as the baseline. Usage::

    .venv/bin/python benchmarks/bench_proposals.py [--images N] [--no-baseline] [--split val_mini]

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

REPO = Path(__file__).resolve().parents[1]

TARGETS = {"recall_0.5": 0.96, "recall_0.7": 0.78, "seconds_per_image": 1.5, "speedup_2": 1.8}


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
    boxes, _ = finalize(rects_to_boxes(ss.process()), record.height, record.width, 20, 2000)
    return record.image_id, boxes, time.perf_counter() - start


def _run(records, params, workers):
    from spp_detect.proposals.stage import propose_images

    start = time.perf_counter()
    out, secs = {}, []
    for res in propose_images(records, params, workers=workers):
        if res.error:
            raise SystemExit(f"benchmark image failed: {res.error}")
        out[res.image_id] = res.boxes
        secs.append(res.seconds)
    return out, float(np.mean(secs)), time.perf_counter() - start


def _recall_row(name, report, extra=""):
    r, ar = report["recall"], report["average_recall"]
    return (f"| {name} | {report['boxes_per_image']:.0f} | {r['0.5']['2000']:.3f} | {r['0.7']['2000']:.3f} | "
            f"{ar['2000']:.3f} | {r['0.5']['1000']:.3f} | {r['0.7']['1000']:.3f} | {r['0.5']['300']:.3f} | "
            f"{r['0.5']['100']:.3f} | {report['seconds_per_image']:.2f} |{extra}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="val_mini")
    ap.add_argument("--images", type=int, default=0, help="use only the first N images (0 = all)")
    ap.add_argument("--no-baseline", action="store_true", help="skip OpenCV's stock fast mode")
    ap.add_argument("--mode", default="fast")
    args = ap.parse_args()

    from spp_detect.datasets import open_dataset
    from spp_detect.proposals.recall import proposal_recall
    from spp_detect.proposals.selective_search import SearchParams

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
    params = SearchParams(mode=args.mode)

    one, s1, wall1 = _run(ds.records, params, 1)
    two, s2, wall2 = _run(ds.records, params, 2)
    same = all(np.array_equal(one[k], two[k]) for k in one)
    rep = proposal_recall(ds, one, seconds=[s1])
    rows = [_recall_row(f"spp-detect {args.mode} (this recipe)", rep)]
    if not args.no_baseline:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(2) as pool:
            res = pool.map(_stock_fast, ds.records, chunksize=1)
        stock = {iid: b for iid, b, _ in res}
        rows.append(_recall_row("OpenCV stock fast (baseline)", proposal_recall(ds, stock, seconds=[t for *_, t in res])))

    print(f"VOC2007 `{args.split}`: {len(ds)} images, {rep['gt_boxes']} ground-truth boxes (difficult excluded); "
          f"default settings (at most 2,000 boxes, 20 px minimum size). Machine: {ncpu} cores, "
          f"{platform.processor() or platform.machine()}, load average {load:.2f} at the start.\n")
    print("| proposals | boxes/img | R@0.5 (2000) | R@0.7 (2000) | AR (2000) | R@0.5 (1000) | R@0.7 (1000) "
          "| R@0.5 (300) | R@0.5 (100) | s/img/worker |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    speedup = wall1 / wall2
    print()
    print("| speed | value | target |")
    print("|---|---|---|")
    print(f"| seconds per image per worker (1 worker) | {s1:.3f} | <= {TARGETS['seconds_per_image']} |")
    print(f"| seconds per image per worker (2 workers) | {s2:.3f} | |")
    print(f"| wall clock, 1 worker / 2 workers | {wall1:.1f} s / {wall2:.1f} s | |")
    print(f"| speed-up 1 -> 2 workers | {speedup:.2f}x | >= {TARGETS['speedup_2']}x |")
    print(f"| 2-worker boxes identical to 1-worker | {'yes' if same else 'NO'} | yes |")
    r5, r7 = rep["recall"]["0.5"]["2000"], rep["recall"]["0.7"]["2000"]
    print()
    print("Targets: " + ", ".join([
        f"recall@0.5 {r5:.3f} {'meets' if r5 >= TARGETS['recall_0.5'] else 'MISSES'} >= {TARGETS['recall_0.5']}",
        f"recall@0.7 {r7:.3f} {'meets' if r7 >= TARGETS['recall_0.7'] else 'MISSES'} >= {TARGETS['recall_0.7']}",
        f"{s1:.2f} s/img {'meets' if s1 <= TARGETS['seconds_per_image'] else 'MISSES'} <= {TARGETS['seconds_per_image']}",
        f"speed-up {speedup:.2f}x {'meets' if speedup >= TARGETS['speedup_2'] else 'MISSES'} >= {TARGETS['speedup_2']}x",
    ]) + ".\n")


if __name__ == "__main__":
    main()
