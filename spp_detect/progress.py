"""Progress bars: counts, rate and ETA on a terminal, quiet lines in logs and CI."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress(iterable=None, total: int | None = None, desc: str = "", unit: str = "img", initial: int = 0, **kw):
    """A tqdm bar with counts and rate; refreshes rarely when stderr is not a terminal."""
    interactive = sys.stderr.isatty()
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        dynamic_ncols=True,
        mininterval=0.2 if interactive else 10.0,
        smoothing=0.1,
        leave=True,
        **kw,
    )
