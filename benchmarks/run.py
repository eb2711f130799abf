"""Run every benchmarks/bench_*.py (or those named) and collect their output into REPORT.md.

Each benchmark prints a markdown section with its figures to stdout; this script adds the
machine and date, and writes ``benchmarks/REPORT.md`` (atomically). Benchmarks named on the
command line replace their own sections of an existing report and keep the others; every
section ends with the line naming its script, how long it took and when it ran. Usage::

    python benchmarks/run.py                 # all
    python benchmarks/run.py pooling proposals
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), GPU: {gpu}"


LONG = {"bench_voc.py"}  # run on their own (make bench-voc), not by make bench
END_MARK = re.compile(r"^_\(((?:bench|notes)_\w+\.(?:py|md)): .*\)_$")


def split_report(text: str) -> tuple[str, dict[str, str]]:
    """A report's header and its sections by script, each ending with its ``_(bench_x.py: ...)_`` line."""
    lines = text.splitlines(keepends=True)
    first = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    header, blocks, current = "".join(lines[:first]), {}, []
    for line in lines[first:]:
        current.append(line)
        m = END_MARK.match(line.strip())
        if m:
            blocks[m.group(1)] = "".join(current).strip("\n") + "\n"
            current = []
    return header, blocks


def main(names: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if not names:  # hours long, resumable, and writes its own section: make bench-voc
        scripts = [s for s in scripts if s.name not in LONG]
    if names:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in names]
        if not scripts:
            print(f"no benchmark named {names}; have: {[s.stem for s in sorted(HERE.glob('bench_*.py'))]}")
            return 2
    now = datetime.datetime.now().isoformat(timespec="seconds")
    header = (
        "# spp-detect benchmark report\n\n"
        f"Generated {now} by `make bench` on: {machine()}.\n\n"
        "Ratios compare methods measured in the same run of the same script; each section's last line names "
        "its script, how long it took and when it ran (`benchmarks/run.py NAME` reruns one section).\n\n"
    )
    report = HERE / "REPORT.md"
    blocks: dict[str, str] = {}
    if names and report.exists():
        # a partial run replaces its own sections and keeps the others (each says when it ran)
        header, blocks = split_report(report.read_text())
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
            body = f"## {script.stem}: FAILED (exit {proc.returncode})\n\n```\n{proc.stderr[-2000:]}\n```"
        else:
            body = proc.stdout.strip()
        blocks[script.name] = f"{body}\n\n_({script.name}: {took:.0f} s, {now})_\n"
    # hand-written sections (measurement history) are kept in benchmarks/notes_*.md, always included
    for note in sorted(HERE.glob("notes_*.md")):
        blocks[note.name] = note.read_text().strip("\n") + "\n"
    text = header.rstrip("\n") + "\n\n" + "\n".join(blocks[k] for k in sorted(blocks))
    tmp = report.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(report)
    print(f"report -> {report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
