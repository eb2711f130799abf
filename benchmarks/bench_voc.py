"""The paper's detection table on real photographs: VOC 2007 images of ``../shared/data``.

Rows: SVMs on the SPP vector (no fine-tuning), SVMs on fine-tuned fc7, fc7 + box regression.
Columns (``--columns``): one scale (the pipeline file's, or ``--scale N``; run folders ``spp_1scaleN``, ``spp_1scale``
for 688) and five: the paper's five scaled as its 688 is to the one scale (480-1200 at 688, 240-608 at 352; run
folders ``spp_5scales`` for 688, ``spp_5scalesN`` otherwise; on the one-scale column's proposals when it runs too). With ``--rcnn``, on a
subset of the same splits (``--rcnn-train``, ``--rcnn-test``): SPP at the one-scale column's scale and its five
against R-CNN on the same trunk (R-CNN runs the trunk once per window: hours per 100 images).
Trained on the shared
``train`` split (3,475 images), model selection on ``val_mini`` (200), tested on ``val_rest``
(790), PASCAL VOC 2007 11-point mAP (the shared annotations have no ``difficult`` flags).
Settings: ``pipelines/voc2007_cpu.toml`` (SqueezeNet 1.0 ImageNet trunk, fast selective search).

Long (hours on 2 cores), so not part of ``make bench``: ``make bench-voc``. Resumable: run
folders live under ``--root`` (default ``~/spp-bench-voc``, outside the checkout); every stage
skips or resumes what is done, and each finished step's seconds and peak memory (resident set of
the stage's whole process tree, and its anonymous part, sampled every 0.5 s) are kept in
``ROOT/results.json``. The
figures go into this script's section of ``benchmarks/REPORT.md`` as soon as each row exists,
with a precision-recall plot per class of the main row in ``benchmarks/voc_pr.png``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = Path(os.environ.get("SPP_SHARED", REPO.parent / "shared")).resolve()
PIPELINE = REPO / "pipelines" / "voc2007_cpu.toml"
FIVE = "480,576,688,864,1200"


def five_scales(scale: int) -> str:
    """The paper's five scales (480-1200 around its single 688) scaled as 688 is to ``scale``,
    rounded to multiples of the trunk's stride, 16: 240,288,352,448,608 at 352."""
    return ",".join(str(max(16, round(int(s) * scale / 688 / 16) * 16)) for s in FIVE.split(","))

ROWS = (("pool", "SVM on the SPP vector (no fine-tuning)"), ("fc7", "SVM on fine-tuned fc7"),
        ("fc7_bbox", "fine-tuned fc7 + box regression"),
        ("select_bbox", "fine-tuned fc7, each SVM chosen on val (bootstrap-tested, svm.select_significance), + box regression"),
        ("softmax_bbox", "fine-tuned softmax + box regression (no SVMs; not in the paper)"))
PAPER = {"pool": (43.0, 44.9), "fc7": (54.5, 55.2), "fc7_bbox": (58.0, 59.2)}  # ZF-5, official VOC07 test
SUBSET_NAMES = ("spp", "spp5", "rcnn")
EVAL = ["--metric", "voc07", "--diagnose"]  # every eval step: the AP table, then where the row loses


def subset_methods(scale: int) -> tuple[tuple[str, str, str, list[str]], ...]:
    """The subset comparison's methods as its table shows them: name, run folder, title, what sets
    them apart. SPP runs at the one-scale column's ``scale`` and its five (run folders
    ``subset_spp``/``subset_spp5`` at 688, with the scale appended otherwise); R-CNN has none."""
    suffix = "" if scale == 688 else str(scale)
    return (("spp", f"subset_spp{suffix}", f"SPP, 1 scale ({scale})", ["--set", f"extract.scales=[{scale}]"]),
            ("spp5", f"subset_spp5{suffix}", f"SPP, 5 scales ({five_scales(scale).replace(',', ', ')})",
             ["--set", f"extract.scales=[{five_scales(scale)}]"]),
            ("rcnn", "subset_rcnn", "R-CNN", ["--set", 'extract.cache="warped"']))


# the order they run in by default: R-CNN (hours) right after the one-scale SPP it is compared with
SUBSET_ORDER = "spp,rcnn,spp5"


# ---------------------------------------------------------------------------------------------
# running stages and measuring them


def tree_rss_bytes(pid: int) -> tuple[int, int]:
    """Resident memory of ``pid`` and all its descendants (Linux /proc): ``(all, anonymous)``.

    Proportional (PSS): a page that several processes share counts once in all (summing each
    process's RSS would count a forked worker's pages again). The anonymous part is what the
    processes allocated; the rest is mapped files (a memory-mapped file counts as resident while
    the page cache holds it, and the kernel can drop it any time).
    """
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            children.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(d.name))
        except (OSError, ValueError, IndexError):
            continue
    total = anon = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            rollup = dict(line.split(":", 1) for line in (Path("/proc") / str(p) / "smaps_rollup").read_text().splitlines()
                          if ":" in line)
            total += int(rollup.get("Pss", "0 kB").split()[0]) << 10
            anon += int(rollup.get("Pss_Anon", "0 kB").split()[0]) << 10
        except (OSError, ValueError):
            continue
    return total, anon


class Bench:
    def __init__(self, root: Path):
        self.root = root
        self.after_step = None  # called after each finished step (the report is rewritten)
        self.results_path = root / "results.json"
        self.results = json.loads(self.results_path.read_text()) if self.results_path.is_file() else {"steps": {}}

    def save(self) -> None:
        tmp = self.results_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=1))
        tmp.replace(self.results_path)

    def step(self, key: str, args: list[str]) -> dict:
        """Run ``spp-detect ARGS`` once: a step recorded as finished is not run again."""
        steps = self.results["steps"]
        if steps.get(key, {}).get("done"):
            return steps[key]
        # started before and interrupted: the stage resumes where it stopped. The time of the
        # earlier attempts, recorded while they ran, is added in; their peak memory is kept per
        # attempt (``attempt_peaks_mb``: a fix between attempts shows)
        before = steps.get(key, {})
        resumed = key in steps
        prior_s = float(before.get("partial_seconds", 0.0))
        prior_peaks = [list(p) for p in before.get("attempt_peaks_mb", [])]
        attempts = int(before.get("attempts", 1 if resumed else 0)) + 1
        peak = peak_anon = 0
        steps[key] = {"done": False, "cmd": " ".join(args), "attempts": attempts, "partial_seconds": prior_s,
                      "attempt_peaks_mb": prior_peaks}
        self.save()
        print(f"[{key}] spp-detect {' '.join(args)}", flush=True)
        t0 = last_save = time.perf_counter()

        def record_partial():  # so that a killed or failed attempt's time and peak are kept
            steps[key].update(partial_seconds=prior_s + time.perf_counter() - t0,
                              attempt_peaks_mb=[*prior_peaks, [peak / 2**20, peak_anon / 2**20]])
            self.save()

        proc = subprocess.Popen([str(Path(sys.executable).parent / "spp-detect"), *args], cwd=REPO)
        while proc.poll() is None:
            rss, anon = tree_rss_bytes(proc.pid)
            peak, peak_anon = max(peak, rss), max(peak_anon, anon)
            time.sleep(0.5)
            if time.perf_counter() - last_save > 30:
                record_partial()
                last_save = time.perf_counter()
        if proc.returncode != 0:  # a rerun adds to its time and peaks
            record_partial()
            raise SystemExit(f"[{key}] failed with exit {proc.returncode}")
        peaks = [*prior_peaks, [peak / 2**20, peak_anon / 2**20]]
        steps[key] = {"done": True, "seconds": prior_s + time.perf_counter() - t0,
                      "peak_rss_mb": max(p[0] for p in peaks), "peak_anon_mb": max(p[1] for p in peaks),
                      "resumed": resumed, "attempts": attempts, "memory": "pss", "cmd": " ".join(args)}
        if len(peaks) > 1:
            steps[key]["attempt_peaks_mb"] = peaks
        self.save()
        print(f"[{key}] {steps[key]['seconds']:.0f} s, peak {steps[key]['peak_rss_mb']:.0f} MB", flush=True)
        if self.after_step is not None:
            self.after_step()
        return steps[key]


def link(src: Path, dst: Path) -> None:
    """``dst`` -> ``src`` (a row reuses another row's proposals, features or models)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.is_symlink() and not dst.exists():
        dst.symlink_to(src.resolve(), target_is_directory=True)


# ---------------------------------------------------------------------------------------------
# one column of the table


def run_column(bench: Bench, name: str, scales: str, splits: dict, sets: list[str], share_proposals: Path | None,
               rows: tuple[str, ...] = ("pool", "fc7", "fc7_bbox", "select_bbox", "softmax_bbox")):
    """The ``rows`` of one column (proposals and features first); returns ``{row: run folder}``.

    The SPP-vector row runs first: it needs only proposals and features, not fine-tuning.
    """
    main = bench.root / name
    cfg = ["--config", str(PIPELINE), *sets, "--set", f"extract.scales=[{scales}]"]
    if share_proposals is not None:
        link(share_proposals / "proposals", main / "proposals")
    for role in ("train", "val", "test"):
        bench.step(f"{name}/propose/{role}", ["propose", *cfg, "--run", str(main), "--split", splits[role]])
    for role in ("train", "val", "test"):
        bench.step(f"{name}/extract/{role}", ["extract", *cfg, "--run", str(main), "--split", splits[role]])
    test = ["--split", splits["test"]]
    nobb = [*cfg, "--set", "detect.bbox_regression=false"]
    out = {}
    if "pool" in rows:
        # SVMs on the SPP vector itself, no fine-tuning, no box regression
        pool = bench.root / f"{name}_pool"
        for part in ("proposals", "features"):
            link(main / part, pool / part)
        # the cached hard negatives of the 25,600-d SPP vector take gigabytes: kept in a file the
        # system pages (svm.cache), so the allocated memory stays bounded
        pooled = [*nobb, "--set", 'svm.features="pool"', "--set", 'svm.cache="disk"']
        bench.step(f"{name}/train-svm/pool", ["train-svm", *pooled, "--run", str(pool)])
        bench.step(f"{name}/detect/pool", ["detect", *pooled, "--run", str(pool), *test])
        bench.step(f"{name}/eval/pool", ["eval", *pooled, "--run", str(pool), *test, *EVAL])
        out["pool"] = pool
    if {"fc7", "fc7_bbox", "select_bbox", "softmax_bbox"} & set(rows):
        # --resume: an interrupted fine-tuning goes on from its checkpoint (the step runs only while
        # head.pt is not finished, so nothing finished is replaced)
        bench.step(f"{name}/finetune", ["finetune", *cfg, "--run", str(main), "--resume"])
    if "fc7" in rows or "fc7_bbox" in rows:  # fine-tuned fc7 + box regression (the main row)
        bench.step(f"{name}/train-svm/fc7", ["train-svm", *cfg, "--run", str(main), "--features", "fc7"])
    if {"fc7_bbox", "select_bbox", "softmax_bbox"} & set(rows):
        bench.step(f"{name}/train-bbox", ["train-bbox", *cfg, "--run", str(main)])
    if "fc7_bbox" in rows:
        bench.step(f"{name}/detect/fc7_bbox", ["detect", *cfg, "--run", str(main), *test])
        bench.step(f"{name}/eval/fc7_bbox", ["eval", *cfg, "--run", str(main), *test, *EVAL])
        out["fc7_bbox"] = main
    if "fc7" in rows:
        # fine-tuned fc7 without box regression: the same models
        fc7 = bench.root / f"{name}_fc7"
        for part in ("proposals", "features", "models"):
            link(main / part, fc7 / part)
        bench.step(f"{name}/detect/fc7", ["detect", *nobb, "--run", str(fc7), *test])
        bench.step(f"{name}/eval/fc7", ["eval", *nobb, "--run", str(fc7), *test, *EVAL])
        out["fc7"] = fc7
    if "select_bbox" in rows and splits["val"]:
        # the same head and regressors; mining as the main row's, then each class keeps the model of
        # its retrains with the best AP on the validation split (svm.select = "val")
        sel = bench.root / f"{name}_select_bbox"
        for part in ("proposals", "features", "models/head.pt", "models/bbox.h5"):
            link(main / part, sel / part)
        chosen = [*cfg, "--set", 'svm.select="val"']
        bench.step(f"{name}/train-svm/select", ["train-svm", *chosen, "--run", str(sel), "--features", "fc7"])
        bench.step(f"{name}/detect/select_bbox", ["detect", *chosen, "--run", str(sel), *test])
        bench.step(f"{name}/eval/select_bbox", ["eval", *chosen, "--run", str(sel), *test, *EVAL])
        out["select_bbox"] = sel
    if "softmax_bbox" in rows:
        # the same head and regressors, each class scored by the head's own classifier instead of
        # an SVM (svm.classifier = "softmax": no mining)
        soft = bench.root / f"{name}_softmax_bbox"
        for part in ("proposals", "features", "models/head.pt", "models/bbox.h5"):
            link(main / part, soft / part)
        softmax = [*cfg, "--set", 'svm.classifier="softmax"']
        bench.step(f"{name}/train-svm/softmax", ["train-svm", *softmax, "--run", str(soft)])
        bench.step(f"{name}/detect/softmax_bbox", ["detect", *softmax, "--run", str(soft), *test])
        bench.step(f"{name}/eval/softmax_bbox", ["eval", *softmax, "--run", str(soft), *test, *EVAL])
        out["softmax_bbox"] = soft
    return {row: folder / "eval" / f"{splits['test']}.json" for row, folder in out.items()}


def subset_dataset(root: Path, data_root: Path, splits: dict, n_train: int, n_test: int) -> Path:
    """A VOC-style folder of the first ``n_train`` training and ``n_test`` test images (links to
    the shared images and annotations; only the split lists are new)."""
    voc = data_root / "VOCdevkit" / "VOC2007"
    sub = root / "voc_subset"
    for part in ("Annotations", "JPEGImages"):
        link(voc / part, sub / part)
    lists = sub / "ImageSets" / "Main"
    lists.mkdir(parents=True, exist_ok=True)
    for name, split, n in (("subset_train", splits["train"], n_train), ("subset_test", splits["test"], n_test)):
        ids = (voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split()[:n]
        text = "".join(f"{i}\n" for i in ids)
        if not (lists / f"{name}.txt").is_file() or (lists / f"{name}.txt").read_text() != text:
            (lists / f"{name}.txt").write_text(text)
    return sub


def run_rcnn_comparison(bench: Bench, sub: Path, sets: list[str], proposals: int | None,
                        methods: tuple[str, ...], scale: int) -> dict:
    """SPP at one scale and at five, and R-CNN (warped windows through the trunk), on the same
    subset: SVMs on the pooled vector, without and with box regression; returns
    ``{(method, row): eval path}``. ``proposals``: boxes kept per image (the first in selective
    search's ranking), None for the pipeline's; R-CNN's time grows with it, SPP's hardly.
    ``methods``: which of :func:`subset_methods` to run, in that order (the first one run makes
    the proposals, the others link them); ``scale``: SPP's one scale."""
    out = {}
    common = [*sets, "--set", f'data.dataset="{sub}"', "--set", 'data.train_split="subset_train"',
              "--set", 'data.val_split=""', "--set", 'data.test_split="subset_test"', "--set", 'svm.features="pool"',
              "--set", "extract.flip=false"]
    if proposals:
        common += ["--set", f"propose.max_proposals={proposals}"]
    first = None
    table = {m: (name, extra) for m, name, _, extra in subset_methods(scale)}
    for method in methods:
        name, extra = table[method]
        folder = bench.root / name
        cfg = ["--config", str(PIPELINE), *common, *extra]
        if first is not None:
            link(first / "proposals", folder / "proposals")
        for split in ("subset_train", "subset_test"):
            bench.step(f"{name}/propose/{split}", ["propose", *cfg, "--run", str(folder), "--split", split])
            bench.step(f"{name}/extract/{split}", ["extract", *cfg, "--run", str(folder), "--split", split])
        bench.step(f"{name}/train-svm/pool", ["train-svm", *cfg, "--run", str(folder)])
        bench.step(f"{name}/train-bbox", ["train-bbox", *cfg, "--run", str(folder)])
        test = ["--split", "subset_test"]
        bench.step(f"{name}/detect/pool_bbox", ["detect", *cfg, "--run", str(folder), *test])
        bench.step(f"{name}/eval/pool_bbox", ["eval", *cfg, "--run", str(folder), *test, *EVAL])
        nobb = folder.with_name(folder.name + "_nobbox")
        for part in ("proposals", "features", "models"):
            link(folder / part, nobb / part)
        cfg_nobb = [*cfg, "--set", "detect.bbox_regression=false"]
        bench.step(f"{name}/detect/pool", ["detect", *cfg_nobb, "--run", str(nobb), *test])
        bench.step(f"{name}/eval/pool", ["eval", *cfg_nobb, "--run", str(nobb), *test, *EVAL])
        out[(method, "pool_bbox")] = folder / "eval" / "subset_test.json"
        out[(method, "pool")] = nobb / "eval" / "subset_test.json"
        first = first or folder
    return out


def rcnn_lines(bench: Bench, evals: dict, n_train: int, n_test: int, proposals: int | None, scale: int) -> list[str]:
    lines = [f"### SPP at 1 and 5 scales and R-CNN on the same trunk, {n_train} training and {n_test} test images", ""]
    boxes = (f"the first {proposals} proposals of each image in selective search's ranking (the pipeline keeps "
             "2,000; fewer so that R-CNN fits a session)" if proposals else "the same proposals")
    lines.append(f"The first images of the same splits, {boxes}, the same SVMs and regressors; R-CNN warps each "
                 "window (16 px of context) to 224 x 224 and runs the trunk on it alone, SPP runs the trunk once on "
                 f"the image ({scale}, or each of {five_scales(scale).replace(',', ', ')} with every window pooled at the "
                 "scale where it is closest to 224 x 224) and pools each window's projection; all pool conv5 by the same pyramid (no fine-tuning "
                 "in any). This is also the table's five-scale column, on a training set that fits a session.")
    lines.append("")
    table = subset_methods(scale)
    methods = [m for m, _, _, _ in table]
    lines += ["| features | " + " | ".join(title for _, _, title, _ in table) + " | SPP 1 scale - R-CNN |",
              "|---" * (len(methods) + 2) + "|"]
    for row, title in (("pool", "SVM on the pooled vector"), ("pool_bbox", "+ box regression")):
        got = {m: json.loads(evals[(m, row)].read_text())["mAP"] for m in methods if evals[(m, row)].is_file()}
        cells = [f"{got[m]:.4f}" if m in got else "not yet run" for m in methods]
        diff = f"{got['spp'] - got['rcnn']:+.4f}" if "spp" in got and "rcnn" in got else "-"
        lines.append(f"| {title} | " + " | ".join(cells) + f" | {diff} |")
    lines.append("")
    lines += diagnosis_lines({f"{title}, {row_title}": evals[(m, row)] for m, _, title, _ in table
                              for row, row_title in (("pool", "SVM"), ("pool_bbox", "+ box regression"))},
                             "Where each loses (`spp-detect eval --diagnose`):")
    steps = bench.results["steps"]
    per = {}
    for m, name, _, _ in table:
        ts = [steps.get(f"{name}/extract/{s}", {}) for s in ("subset_train", "subset_test")]
        if all(t.get("done") and (not t.get("resumed") or "attempts" in t) for t in ts):
            per[m] = sum(t["seconds"] for t in ts) / (n_train + n_test)
    if per:
        said = ", ".join(f"{title} {per[m]:.2f}" for m, _, title, _ in table if m in per)
        lines += ["", f"Feature extraction (decode, conv, pooling, writing), seconds per image: {said}."]
        if "rcnn" in per:
            lines[-1] += "".join(f" {title} is **{per['rcnn'] / per[m]:.0f}x** faster than R-CNN"
                                 + (" (target >= 50x)." if m == "spp" else ".")
                                 for m, _, title, _ in table if m in per and m != "rcnn")
    lines.append("")
    return lines


def diagnosis_lines(evals: dict[str, Path], caption: str) -> list[str]:
    """Where each row loses (``eval --diagnose``): mAP by object size, then what each class's top
    detections are; rows whose eval JSON has no diagnosis are left out."""
    docs = {}
    for title, path in evals.items():
        doc = json.loads(path.read_text()) if path.is_file() else {}
        if "diagnosis" in doc:
            docs[title] = doc["diagnosis"]
    if not docs:
        return []
    sizes = next(iter(docs.values()))["sizes"]
    names = [f"[{s['lo']:.0f}, {'inf' if s['hi'] is None else format(s['hi'], '.0f')}) px" for s in sizes]
    kinds = list(next(iter(docs.values()))["top_detections"])
    lines = [caption, "", "| row | " + " | ".join(names) + " | " + " | ".join(kinds) + " |",
             "|---" * (1 + len(names) + len(kinds)) + "|"]
    for title, d in docs.items():
        total = sum(d["top_detections"].values()) or 1
        cells = ["-" if s["mAP"] is None else f"{s['mAP']:.4f}" for s in d["sizes"]]
        cells += [f"{100 * d['top_detections'][k] / total:.1f}%" for k in kinds]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    counts = ", ".join(f"{s['n_objects']}" for s in sizes)
    lines += ["", f"Objects per size range (square root of the box area, pixels of the original image; the test "
              f"split's terciles): {counts}. Top detections: each class's as many as its objects, sorted into hits "
              "and errors (localization: IoU 0.1-0.5 with an object of the class, or a duplicate; confusion: "
              "IoU >= 0.1 with an object of another class; background: the rest).", ""]
    return lines


# ---------------------------------------------------------------------------------------------
# the report


def pr_plot(run: Path, test_split: str, data_root: Path, out: Path) -> None:
    """Precision-recall curve per class of one row's detections."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spp_detect.datasets import open_dataset
    from spp_detect.evaluation.results_io import ClassDetections, read_detections
    from spp_detect.evaluation.voc_ap import class_ground_truth, evaluate_class

    ds = open_dataset("voc2007", test_split, data_root=str(data_root))
    dets = read_detections(run / "detections" / f"{test_split}.json", ds)
    fig, axes = plt.subplots(4, 5, figsize=(16, 13), sharex=True, sharey=True)
    for label, (name, ax) in enumerate(zip(ds.classes, axes.ravel(), strict=False)):
        res = evaluate_class(dets.get(name, ClassDetections.empty()), class_ground_truth(ds, label))
        ax.plot(res.recall, res.precision, lw=1.2)
        ax.set_title(f"{name}  AP {res.ap:.3f}", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("recall")
    for ax in axes[:, 0]:
        ax.set_ylabel("precision")
    fig.suptitle(f"spp-detect, fine-tuned fc7 + box regression, one scale: VOC 2007 images, {test_split} "
                 f"({len(ds)} images), voc07 AP")
    fig.tight_layout()
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=80)
    tmp.replace(out)


def finetune_lines(bench: Bench, run: Path, splits: dict, data_root: Path) -> list[str]:
    """Fine-tuning's speed from head.pt's timing, against drawing the same batches by pooling every
    window from the conv5 maps on every step (measured here, on the same training cache)."""
    head = run / "models" / "head.pt"
    if not head.is_file():
        return []
    import numpy as np

    from spp_detect.datasets import open_dataset
    from spp_detect.features.cache import FeatureCache
    from spp_detect.training.finetune import BatchSampler, build_samples
    from spp_detect.training.head import load_head

    t = load_head(head)[1].get("timing")
    if not t:
        return []
    lines = [f"Fine-tuning (batch 128 from 16 images, 512-wide head): **{t['iterations_per_s']:.1f} iterations/s** "
             f"(target >= 15): a batch drawn in {t['draw_ms']:.1f} ms from {t['windows_from']}, an SGD step "
             f"{t['step_ms']:.1f} ms; the sample pooled once in {t['sample_seconds']:.0f} s."]
    base = bench.results.setdefault("sampler_baseline", {})
    if not base:  # measured once, on the same training cache, then kept with the results
        ds = open_dataset("voc2007", splits["train"], data_root=str(data_root))
        cache = FeatureCache(run / "features" / f"{splits['train']}.h5")
        samples = build_samples(cache, ds, 0.5, 0.1)
        sampler = BatchSampler(cache, samples, 128, 16, 0.25, True, False, 1.0, seed=0, memory_bytes=0)
        sampler.draw()
        t0 = time.perf_counter()
        for _ in range(20):
            sampler.draw()
        base.update(draw_ms=(time.perf_counter() - t0) / 20 * 1e3,
                    windows_per_image=float(np.mean([len(x.fg) + len(x.bg) for x in samples])))
        bench.save()
    lines.append(f"The same draws pooled from the conv5 maps on every step (the path fine-tuning took before "
                 f"when windows did not fit in RAM): {base['draw_ms']:.0f} ms a batch, "
                 f"**{base['draw_ms'] / t['draw_ms']:.0f}x** the sampled path's draw (mean of 20 draws on the same "
                 f"cache; {base['windows_per_image']:.0f} training windows per image)"
                 + (f"; {base['note']}." if base.get("note") else "."))
    return lines + [""]


def images_of_step(key: str, counts: dict, rcnn: tuple | None) -> int:
    """How many images a step of ``results.json`` went through (for its seconds per image)."""
    tested = "/detect/" in key or "/eval/" in key or key.endswith("test")
    if key.startswith("subset_") and rcnn is not None:
        return rcnn[2] if tested else rcnn[1]
    role = key.split("/")[-1]
    return counts[role] if role in counts else counts["test"] if tested else counts["train"]


def proposal_seconds(root: Path, key: str, splits: dict) -> str:
    """Selective search's own time per image and worker, from the proposals file (which keeps
    it per image), so a step found already done still says what the search cost."""
    import h5py
    import numpy as np

    col, _, role = key.split("/")
    path = root / col / "proposals" / f"{splits.get(role, role)}.h5"
    if not path.is_file():
        return ""
    with h5py.File(path, "r") as h5:
        sec = h5["seconds"][()]
    return f"; selective search {np.nanmean(sec):.2f} s per image per worker ({len(sec)} images)"


# the stages of ``spp-detect run`` with the pipeline file as it is (its main row, fc7 + box
# regression): what the target of 2.5 hours on 2 cores is about
PIPELINE_STEPS = ("propose/train", "propose/val", "propose/test", "extract/train", "extract/val", "extract/test",
                  "finetune", "train-svm/fc7", "train-bbox", "detect/fc7_bbox", "eval/fc7_bbox")


def pipeline_lines(bench: Bench, columns: dict) -> list[str]:
    """Per column, the sum of the main row's stage times, once every one of them is done."""
    lines = []
    for col, paths in columns.items():
        name = paths["fc7_bbox"].parent.parent.name
        steps = [bench.results["steps"].get(f"{name}/{s}", {}) for s in PIPELINE_STEPS]
        if not all(s.get("done") for s in steps):
            continue
        total = sum(s["seconds"] for s in steps)
        slowest = sorted(zip(PIPELINE_STEPS, steps, strict=True), key=lambda x: -x[1]["seconds"])[:3]
        lines.append(f"The whole pipeline, {col} (the main row's {len(steps)} stages, as `spp-detect run` runs "
                     f"them): **{total:.0f} s, {total / 3600:.2f} hours** (target 2.5); the longest: "
                     + ", ".join(f"{k} {s['seconds'] / 60:.0f} min" for k, s in slowest) + ".")
    return lines + [""] if lines else []


def _run_peaks(step: dict) -> str:
    return ", ".join(f"{p[0] / 1024:.1f} GB" for p in step.get("attempt_peaks_mb", []))


def seconds_per_image(bench: Bench, key: str, n_images: int) -> str:
    s = bench.results["steps"].get(key, {})
    if not s.get("done"):
        if s.get("note"):
            return f"not finished: {s['note']}"
        if s.get("partial_seconds"):
            peaks = _run_peaks(s)
            return (f"not finished: {s['partial_seconds']:.0f} s so far in {s.get('attempts', 1)} runs"
                    + (f" (peak of each run: {peaks})" if peaks else ""))
        return "-"
    note = ""
    if s.get("resumed"):  # earlier records hold the last attempt's time only
        note = (f" (in {s['attempts']} runs, each going on from the last one's checkpoint: the time is their sum)"
                if "attempts" in s else " (resumed: partial)")
    note += f"; {s['note']}" if s.get("note") else ""
    memory = ""
    if len(s.get("attempt_peaks_mb", [])) > 1:
        note += "; peak of each run: " + _run_peaks(s)
    if s.get("peak_rss_mb") is not None:
        # steps recorded before 2026-12-01 summed RSS over the processes (forked pages counted per process)
        how = "proportional set size" if s.get("memory") == "pss" else "RSS"
        memory = f", peak {s['peak_rss_mb'] / 1024:.1f} GB resident ({how} summed over its processes)"
        if "peak_anon_mb" in s:
            memory += f" ({s['peak_anon_mb'] / 1024:.1f} GB allocated, the rest mapped files)"
    return f"{s['seconds']:.0f} s ({s['seconds'] / n_images:.2f} s/img){memory}{note}"


def _report_helpers():
    """``machine`` and ``split_report`` of benchmarks/run.py (a script beside this one, not a module)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_run", HERE / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.machine, mod.split_report


def write_report(bench: Bench, columns: dict, splits: dict, counts: dict, started: float,
                 rcnn: tuple | None = None, data_root: Path = SHARED / "data") -> None:
    machine, split_report = _report_helpers()

    lines = ["## VOC 2007 real photographs: the paper's table (CPU)", ""]
    lines.append(f"`pipelines/voc2007_cpu.toml` (SqueezeNet 1.0 ImageNet conv5, 512 ch, SPP vector 25,600-d; "
                 f"fast selective search, 2,000 boxes), trained on shared `{splits['train']}` ({counts['train']} "
                 f"images), model selection on `{splits['val']}` ({counts['val']}), tested on `{splits['test']}` "
                 f"({counts['test']}); voc07 11-point mAP. The shared annotations have no `difficult` flags, "
                 "so every object counts (the official protocol ignores difficult ones: expect a little less). "
                 "Paper: ZF-5 with ImageNet fc layers, official VOC 2007 test.")
    lines.append("")
    header = "| features | " + " | ".join(columns) + " | paper 1 scale / 5 scales |"
    lines += [header, "|---" * (len(columns) + 2) + "|"]
    maps: dict = {}
    for row, title in ROWS:
        cells = []
        for col, paths in columns.items():
            p = paths.get(row)
            if p is not None and p.is_file():
                maps[(row, col)] = json.loads(p.read_text())
                cells.append(f"{maps[(row, col)]['mAP']:.4f}")
            else:
                cells.append("not yet run")
        paper = f"{PAPER[row][0] / 100:.3f} / {PAPER[row][1] / 100:.3f}" if row in PAPER else "-"
        lines.append(f"| {title} | " + " | ".join(cells) + f" | {paper} |")
    lines.append("")
    for col in columns:
        have = [r for r, _ in ROWS if (r, col) in maps]
        if not have:
            continue
        lines.append(f"Per-class AP, {col}:")
        lines.append("")
        classes = list(maps[(have[0], col)]["ap"])
        lines.append("| class | " + " | ".join(dict(ROWS)[r] for r in have) + " | n_gt |")
        lines.append("|---" * (len(have) + 2) + "|")
        for c in classes:
            aps = " | ".join(f"{maps[(r, col)]['ap'][c]:.4f}" for r in have)
            lines.append(f"| {c} | {aps} | {maps[(have[0], col)]['n_gt'][c]} |")
        lines.append("")
        checks = []
        m = {r: maps[(r, col)]["mAP"] for r in have}
        if "fc7" in m and "pool" in m:
            checks.append(f"fine-tuned fc7 > SPP vector: {'holds' if m['fc7'] > m['pool'] else 'does not hold'} "
                          f"({m['fc7']:.4f} vs {m['pool']:.4f})")
        if "fc7_bbox" in m and "fc7" in m:
            checks.append(f"fc7 + box regression > fc7: {'holds' if m['fc7_bbox'] > m['fc7'] else 'does not hold'} "
                          f"({m['fc7_bbox']:.4f} vs {m['fc7']:.4f})")
        if checks:
            lines += ["The paper's orderings, " + col + ":", ""] + [f"- {c}" for c in checks] + [""]
    for col, paths in columns.items():
        lines += diagnosis_lines({dict(ROWS)[r]: paths[r] for r, _ in ROWS if r in paths},
                                 f"Where each row loses, {col} (`spp-detect eval --diagnose`):")
    # a word from whoever ran it, kept with the results: ROOT/status.md (editable while the
    # benchmark runs and rewrites results.json), else results.json's "status"
    status_file = bench.root / "status.md"
    status = status_file.read_text().strip() if status_file.is_file() else bench.results.get("status")
    if status:
        lines += [status, ""]
    one_scale = next(iter(columns.values()))["fc7_bbox"].parent.parent  # the main row's run folder
    lines += finetune_lines(bench, one_scale, splits, data_root)
    lines += pipeline_lines(bench, columns)
    if rcnn is not None:
        lines += rcnn_lines(bench, *rcnn)
    lines.append("Stage times (wall clock on this machine) and peak resident memory of the stage's process tree:")
    lines.append("")
    lines.append("| step | time, peak memory |")
    lines.append("|---|---|")
    for key in bench.results["steps"]:
        cell = seconds_per_image(bench, key, images_of_step(key, counts, rcnn))
        if "/propose/" in key:
            cell += proposal_seconds(bench.root, key, splits)
        lines.append(f"| {key} | {cell} |")
    lines.append("")
    if (HERE / "voc_pr.png").is_file():
        lines.append("Precision-recall per class, fine-tuned fc7 + box regression, one scale: `benchmarks/voc_pr.png`.")
        lines.append("")
    lines.append(f"Machine: {machine()}.")
    now = datetime.datetime.now().isoformat(timespec="seconds")
    section = "\n".join(lines) + f"\n\n_(bench_voc.py: {time.perf_counter() - started:.0f} s this call, {now})_\n"
    report = HERE / "REPORT.md"
    header, blocks = split_report(report.read_text()) if report.is_file() else ("# spp-detect benchmark report\n\n", {})
    blocks["bench_voc.py"] = section
    text = header.rstrip("\n") + "\n\n" + "\n".join(blocks[k] for k in sorted(blocks))
    tmp = report.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(report)
    print(f"report -> {report}", flush=True)


def pipeline_scale() -> int:
    """The one scale of ``pipelines/voc2007_cpu.toml``."""
    from spp_detect.config import load_config

    return load_config(str(PIPELINE), []).extract.scales[0]


def names_of(flag: str, text: str, known: list[str]) -> tuple[str, ...]:
    """The comma-separated names of ``text`` in their order; ValueError naming ``flag`` for any not in ``known``."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"{flag}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path.home() / "spp-bench-voc", help="run folders (outside the checkout)")
    ap.add_argument("--columns", default="1", help="columns of the table to run, comma-separated: 1 (one scale), "
                    "5 (five scales, the paper's scaled as 688 is to --scale)")
    ap.add_argument("--five-scales", action="store_true", help="also the five-scale column (--columns 1,5)")
    ap.add_argument("--scale", type=int, default=pipeline_scale(),
                    help="the one-scale column's scale (default: the pipeline file's; each scale gets its own run folders)")
    ap.add_argument("--data-root", type=Path, default=SHARED / "data",
                    help="a VOCdevkit's parent (default: the shared copy), e.g. one with a split of your own")
    ap.add_argument("--train-split", default="train")
    ap.add_argument("--val-split", default="val_mini")
    ap.add_argument("--test-split", default="val_rest")
    ap.add_argument("--rcnn", action="store_true", help="also SPP at 1 and 5 scales against R-CNN on a subset (R-CNN: hours per 100 images)")
    ap.add_argument("--rcnn-train", type=int, default=300, help="subset: first N training images")
    ap.add_argument("--rcnn-test", type=int, default=200, help="subset: first N test images")
    ap.add_argument("--subset-methods", default=SUBSET_ORDER,
                    help=f"subset: methods to run, comma-separated, in this order (default {SUBSET_ORDER})")
    ap.add_argument("--rcnn-proposals", type=int, default=None,
                    help="subset: keep the first N proposals per image (default: the pipeline's 2,000)")
    ap.add_argument("--report-only", action="store_true", help="write the report from what exists; run nothing")
    ap.add_argument("--rows", default="pool,fc7,fc7_bbox,select_bbox,softmax_bbox",
                    help="rows of the table to run, comma-separated (pool, fc7, fc7_bbox, select_bbox, softmax_bbox; the "
                         "SPP-vector row first); "
                         "empty: none (with --rcnn, only the subset comparison)")
    args = ap.parse_args()
    data_root = args.data_root.resolve()
    weights = SHARED / "weights" / "squeezenet1_0-imagenet-caffe.pth"
    if not (data_root / "VOCdevkit" / "VOC2007").is_dir() or not weights.is_file():
        print(f"needs {data_root}/VOCdevkit/VOC2007 and {weights} (set SPP_SHARED)", file=sys.stderr)
        return 2
    try:
        rows = names_of("--rows", args.rows, [r for r, _ in ROWS])
        chosen_methods = names_of("--subset-methods", args.subset_methods, list(SUBSET_NAMES))
        column_names = names_of("--columns", args.columns + (",5" if args.five_scales else ""), ["1", "5"])
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    started = time.perf_counter()
    args.root.mkdir(parents=True, exist_ok=True)
    bench = Bench(args.root)
    splits = {"train": args.train_split, "val": args.val_split, "test": args.test_split}
    sets = ["--set", f'data.data_root="{data_root}"', "--set", f'backbone.weights="{weights}"']
    for role, split in splits.items():
        sets += ["--set", f'data.{role}_split="{split}"']
    counts = {role: len((data_root / "VOCdevkit/VOC2007/ImageSets/Main" / f"{s}.txt").read_text().split())
              for role, s in splits.items()}
    if args.scale <= 0:
        print(f"--scale: {args.scale} is not a positive image size", file=sys.stderr)
        return 2
    suffix = "" if args.scale == 688 else str(args.scale)
    one, five = f"spp_1scale{suffix}", five_scales(args.scale)
    plans = {}
    if "1" in column_names:
        plans[f"1 scale ({args.scale})"] = (one, str(args.scale), None)
    if "5" in column_names:  # on the one-scale column's proposals when it runs too
        plans[f"5 scales ({five.replace(',', ', ')})"] = (f"spp_5scales{suffix}", five,
                                                           args.root / one if "1" in column_names else None)
    columns = {col: {row: args.root / (name if row == "fc7_bbox" else f"{name}_{row}") / "eval" / f"{args.test_split}.json"
                     for row, _ in ROWS} for col, (name, _, _) in plans.items()}
    rcnn = None  # the subset comparison: its evals, sizes and boxes per image (every report shows it)
    if args.rcnn:
        sub = subset_dataset(args.root, data_root, splits, args.rcnn_train, args.rcnn_test)
        evals = {(m, r): args.root / f"{name}{'' if r == 'pool_bbox' else '_nobbox'}" / "eval" / "subset_test.json"
                 for m, name, _, _ in subset_methods(args.scale) for r in ("pool", "pool_bbox")}
        rcnn = (evals, args.rcnn_train, args.rcnn_test, args.rcnn_proposals, args.scale)
    bench.after_step = lambda: write_report(bench, columns, splits, counts, started, rcnn, data_root)
    for name, scales, share in plans.values():
        if not args.report_only and rows:  # --rows "" with --rcnn: the subset comparison alone
            try:
                run_column(bench, name, scales, splits, sets, share, rows)
            finally:
                write_report(bench, columns, splits, counts, started, rcnn, data_root)
        main_eval = args.root / name / "eval" / f"{args.test_split}.json"
        if name == one and main_eval.is_file():
            pr_plot(args.root / name, args.test_split, data_root, HERE / "voc_pr.png")
    if rcnn is not None and not args.report_only:
        try:
            run_rcnn_comparison(bench, sub, sets, args.rcnn_proposals, chosen_methods, args.scale)
        finally:
            write_report(bench, columns, splits, counts, started, rcnn, data_root)
    write_report(bench, columns, splits, counts, started, rcnn, data_root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
