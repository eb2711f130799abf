"""The pyramid's bins and level order, shared by the SPP layer (:mod:`.spp`) and the window
pooler (:mod:`.roi_spp`).

Bin rule (PAPER.md, "Pyramid pooling"): for ``L`` cells and ``n`` bins, bin ``i`` covers
``[floor(i*L/n), ceil((i+1)*L/n))``: bins may overlap and are never empty.
"""

from __future__ import annotations

DEFAULT_LEVELS: tuple[int, ...] = (6, 3, 2, 1)  # the paper's detection pyramid: 50 bins
CONCAT_ORDERS: tuple[str, ...] = ("coarse_first", "as_given")


def ordered_levels(levels, concat_order: str = "coarse_first") -> list[int]:
    """Levels in concatenation order.

    ``coarse_first``: ascending n (1, 2, 3, 6), the order the released network's fc6 weights
    expect. ``as_given``: the order of ``levels`` as configured. Raises ``ValueError`` for an
    unknown order, an empty pyramid or a level below 1.
    """
    levels = [int(n) for n in levels]
    if not levels:
        raise ValueError("the pyramid needs at least one level, got an empty list")
    bad = [n for n in levels if n < 1]
    if bad:
        raise ValueError(f"pyramid levels must be >= 1, got {bad[0]} in {levels}")
    if concat_order == "coarse_first":
        return sorted(levels)
    if concat_order == "as_given":
        return levels
    raise ValueError(f"concat_order must be one of {', '.join(CONCAT_ORDERS)}; got {concat_order!r}")


def spp_output_dim(channels: int, levels=DEFAULT_LEVELS) -> int:
    """Length of the pooled vector: ``channels * sum(n^2)`` (256 x 50 = 12,800 for ZF-5)."""
    return int(channels) * sum(int(n) * int(n) for n in levels)


def bin_bounds(length: int, n: int) -> list[tuple[int, int]]:
    """The ``n`` bins ``[start, end)`` over ``length`` cells: ``floor(i*L/n)``, ``ceil((i+1)*L/n)``.

    Integer arithmetic, exact for any size. Used by the reference implementations in tests and
    by anyone who wants to see which cells a bin covers.
    """
    if length < 1 or n < 1:
        raise ValueError(f"bins need length >= 1 and n >= 1, got length={length}, n={n}")
    return [((i * length) // n, -((-(i + 1) * length) // n)) for i in range(n)]
