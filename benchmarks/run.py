"""Run every benchmarks/bench_*.py (or those named) and collect their output into REPORT.md.

Each benchmark prints a markdown section with its figures to stdout; this script adds the
machine and date, and writes ``benchmarks/REPORT.md`` (atomically). Usage::

    python benchmarks/run.py                 # all
    python benchmarks/run.py pooling proposals
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), GPU: {gpu}"


def main(names: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if names:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in names]
        if not scripts:
            print(f"no benchmark named {names}; have: {[s.stem for s in sorted(HERE.glob('bench_*.py'))]}")
            return 2
    sections = [
        "# spp-detect benchmark report\n",
        f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by `make bench` on: {machine()}.\n",
        "Every figure below was measured in this run; ratios compare methods measured in the same run.\n",
    ]
    failed = 0
    for script in scripts:
        print(f"== {script.name}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=HERE.parent)
        took = time.perf_counter() - t0
        sys.stderr.write(proc.stderr[-4000:])
        print(proc.stdout, flush=True)
        if proc.returncode != 0:
            failed += 1
            sections.append(f"## {script.stem}: FAILED (exit {proc.returncode})\n\n```\n{proc.stderr[-2000:]}\n```\n")
        else:
            sections.append(proc.stdout.strip() + f"\n\n_({script.name}: {took:.0f} s)_\n")
    report = HERE / "REPORT.md"
    if names and report.exists():
        # a partial run updates its own sections and keeps the others
        report = HERE / "results" / "REPORT-partial.md"
        report.parent.mkdir(exist_ok=True)
    tmp = report.with_suffix(".tmp")
    tmp.write_text("\n".join(sections))
    tmp.replace(report)
    print(f"report -> {report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
