"""SVM training on the SPP vector of real VOC images: liblinear against the warm-started solver.

``train-svm`` with ``svm.features = "pool"`` (the 25,600-d SPP vector of ImageNet SqueezeNet,
the paper's "no fine-tuning" row, ``pipelines/voc2007_cpu.toml``) on the first ``--train``
images of the shared ``train`` split, once with ``svm.solver = "liblinear"`` (liblinear itself,
from zero every fit: the solver of record) and once with ``"dcd"`` (the same algorithm and
stopping rule, started from each class's last fit), then detection and VOC07 mAP on the first
``--test`` images of ``val_rest`` with each. Both mine the same features with the same rules.

Prints a markdown section: wall time of each ``train-svm`` and of its fits, its peak memory (PSS of the
process tree), retrains, the final fits' objectives and the mAP. Run folders under ``--root``
(outside the checkout); proposals and features are made once and kept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench_voc import SHARED, link, tree_rss_bytes

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PIPELINE = REPO / "pipelines" / "voc2007_cpu.toml"
SOLVERS = ("liblinear", "dcd")


def spp_detect(args: list[str]) -> tuple[float, int]:
    """Run ``spp-detect ARGS``; returns ``(wall s, peak PSS bytes of the process tree)``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "spp-detect"), *args], cwd=REPO,
                            stdout=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_bytes(proc.pid)[0])
        time.sleep(0.5)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"spp-detect {' '.join(args)} failed with exit {proc.returncode}")
    return wall, peak


def subset(root: Path, voc: Path, n_train: int, n_test: int) -> Path:
    """A VOC folder of links to the shared images and annotations with two new split lists."""
    sub = root / "voc_subset"
    for part in ("Annotations", "JPEGImages"):
        link(voc / part, sub / part)
    lists = sub / "ImageSets" / "Main"
    lists.mkdir(parents=True, exist_ok=True)
    for name, split, n in (("svm_train", "train", n_train), ("svm_test", "val_rest", n_test)):
        text = "".join(f"{i}\n" for i in (voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split()[:n])
        if not (lists / f"{name}.txt").is_file() or (lists / f"{name}.txt").read_text() != text:
            (lists / f"{name}.txt").write_text(text)
    return sub


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path.home() / "spp-bench-svm", help="run folders (outside the checkout)")
    ap.add_argument("--train", type=int, default=120, help="first N images of the shared train split")
    ap.add_argument("--test", type=int, default=60, help="first N images of val_rest")
    args = ap.parse_args()
    voc = SHARED / "data" / "VOCdevkit" / "VOC2007"
    weights = SHARED / "weights" / "squeezenet1_0-imagenet-caffe.pth"
    if not voc.is_dir() or not weights.is_file():
        print(f"needs {voc} and {weights} (set SPP_SHARED)", file=sys.stderr)
        return 2
    args.root.mkdir(parents=True, exist_ok=True)
    sub = subset(args.root, voc, args.train, args.test)
    cfg = ["--config", str(PIPELINE), "--set", f'data.dataset="{sub}"', "--set", 'data.train_split="svm_train"',
           "--set", 'data.val_split=""', "--set", 'data.test_split="svm_test"', "--set", f'backbone.weights="{weights}"',
           "--set", "extract.flip=false", "--set", 'svm.features="pool"', "--set", "detect.bbox_regression=false"]
    base = args.root / "base"
    for split in ("svm_train", "svm_test"):
        spp_detect(["propose", *cfg, "--run", str(base), "--split", split])
        spp_detect(["extract", *cfg, "--run", str(base), "--split", split])
    rows = {}
    for solver in SOLVERS:
        run = args.root / solver
        for part in ("proposals", "features"):
            link(base / part, run / part)
        sets = [*cfg, "--set", f'svm.solver="{solver}"', "--run", str(run)]
        wall, peak = spp_detect(["train-svm", *sets, "--overwrite"])
        spp_detect(["detect", *sets, "--split", "svm_test", "--overwrite"])
        spp_detect(["eval", *sets, "--split", "svm_test", "--metric", "voc07", "--overwrite"])
        import h5py

        with h5py.File(run / "models" / "svm.h5", "r") as h5:
            logs = json.loads(h5.attrs["logs"])
        rows[solver] = {
            "wall": wall, "peak": peak, "retrains": sum(len(x) for x in logs),
            "objectives": [x[-1]["objective"] for x in logs if x],
            "fit_s": sum(e.get("seconds", 0.0) for x in logs for e in x),
            "mAP": json.loads((run / "eval" / "svm_test.json").read_text())["mAP"],
        }
    lib, dcd = rows["liblinear"], rows["dcd"]
    ratios = [d / max(a, 1e-12) for a, d in zip(lib["objectives"], dcd["objectives"], strict=True)]
    print("## SVM training on the SPP vector: liblinear vs the warm-started solver (VOC, CPU)\n")
    print(f"`train-svm`, `svm.features = \"pool\"` (25,600-d SPP vector, ImageNet SqueezeNet, one scale 688, fast "
          f"proposals, `pipelines/voc2007_cpu.toml`) on the first {args.train} images of the shared `train` split; "
          f"detection (no box regression) and VOC07 mAP on the first {args.test} of `val_rest` (a small test: "
          f"for agreement, not accuracy). {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end.\n")
    print("| solver | train-svm wall (s) | the fits themselves (s, summed) | s per fit | peak memory (GB, PSS) | "
          "retrains | mAP |")
    print("|---|---|---|---|---|---|---|")
    for solver in SOLVERS:
        r = rows[solver]
        print(f"| {solver} | {r['wall']:.0f} | {r['fit_s']:.0f} | {r['fit_s'] / max(r['retrains'], 1):.2f} | "
              f"{r['peak'] / 2**30:.2f} | {r['retrains']} | {r['mAP']:.4f} |")
    print(f"\nWarm-started solver: `train-svm` **{lib['wall'] / dcd['wall']:.1f}x** faster in wall time; the fits "
          f"alone (each timed where it ran, liblinear's including its float64 matrix) "
          f"{lib['fit_s'] / max(dcd['fit_s'], 1e-9):.1f}x less time. The rest of a mining step (pooling each "
          f"image's windows, storing and gathering rows) is the same in both. Final fit of each class: objective of dcd / liblinear "
          f"{min(ratios):.3f} to {max(ratios):.3f} (median {sorted(ratios)[len(ratios) // 2]:.3f}; both stop at "
          f"liblinear's tolerance, `svm.tol` = 0.1, so neither is exactly optimal).\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
