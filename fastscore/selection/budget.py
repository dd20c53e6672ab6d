"""The budget primitives of every selection: rank (ties to the earlier record), the
size of a top-k or fraction budget, largest-remainder shares, the best of each group, and
response-length bins. Pure functions of (index, score) pairs; no file is read.
"""

from __future__ import annotations

import math

from fastscore.config import SPREADS, SelectConfig
from fastscore.errors import ConfigError


def rank(values: list[tuple[int, float]], order: str) -> list[tuple[int, float]]:
    """(index, score) pairs best first by ``order``; ties to the earlier record."""
    sign = -1.0 if order == "desc" else 1.0
    return sorted(values, key=lambda iv: (sign * iv[1], iv[0]))


def choose(values: list[tuple[int, float]], n_records: int, cfg: SelectConfig) -> list[int]:
    """Indices chosen from (index, score) pairs of the eligible records, in input order.

    ``n_records`` counts every input record: a fraction is of the whole input, and
    ``k = floor(fraction * n_records)``.
    """
    if cfg.threshold is not None:
        desc = cfg.order == "desc"
        keep = [i for i, v in values if (v >= cfg.threshold if desc else v <= cfg.threshold)]
        return sorted(keep)
    return sorted(i for i, _ in rank(values, cfg.order)[: budget(cfg, n_records)])


def budget(cfg: SelectConfig, n_records: int) -> int | None:
    """How many records a top-k or fraction rule asks for (None for a threshold)."""
    if cfg.threshold is not None:
        return None
    return cfg.top_k if cfg.top_k is not None else math.floor(cfg.fraction * n_records + 1e-9)


def allocate(k: int, shares: dict[str, float]) -> dict[str, int]:
    """Split ``k`` by ``shares`` (largest remainder): each group gets floor(k x share),
    and what rounding left of round(k x sum of shares) goes to the largest remainders
    (ties to the group named first)."""
    want = {g: k * s for g, s in shares.items()}
    got = {g: math.floor(w + 1e-9) for g, w in want.items()}
    left = round(k * sum(shares.values())) - sum(got.values())
    for g in sorted(want, key=lambda g: -(want[g] - got[g]))[: max(0, left)]:
        got[g] += 1
    return got


def spread_quotas(k: int, sizes: dict, how: str = "proportional") -> dict:
    """Split a budget of ``k`` across clusters of ``sizes`` eligible records.

    proportional: largest remainder on size / total, so the subset keeps the data's mix;
    balanced: equal shares, a cluster too small for its share keeping all it has and the
    rest shared evenly among the others (water-filling). No quota exceeds its cluster."""
    total = sum(sizes.values())
    k = min(k, total)
    if k <= 0 or total == 0:
        return {c: 0 for c in sizes}
    if how == "proportional":
        got = allocate(k, {c: n / total for c, n in sizes.items()})
        return {c: min(q, sizes[c]) for c, q in got.items()}
    if how != "balanced":
        raise ConfigError(f"spread must be one of {SPREADS}, got {how!r}")
    quotas = {c: 0 for c in sizes}
    open_ = [c for c in sizes if sizes[c] > 0]
    left = k
    while left > 0 and open_:
        share = allocate(left, {c: 1 / len(open_) for c in open_})
        for c in open_:
            quotas[c] += min(share[c], sizes[c] - quotas[c])
        left = k - sum(quotas.values())
        open_ = [c for c in open_ if quotas[c] < sizes[c]]
    return quotas


def choose_grouped(
    values: list[tuple[int, float]], group_of: list, quotas: dict, *, order: str
) -> list[int]:
    """Indices chosen from (index, score) pairs, the top ``quotas[g]`` of each group ``g``
    (``group_of[index]``), in input order."""
    taken: dict = {}
    chosen = []
    for i, _ in rank(values, order):
        g = group_of[i]
        if taken.get(g, 0) < quotas.get(g, 0):
            taken[g] = taken.get(g, 0) + 1
            chosen.append(i)
    return sorted(chosen)


def length_bin_of(length, eligible, n_bins: int) -> tuple[list, list[float]]:
    """Each record's response-length bin (quantile bins of the eligible records' lengths;
    None for records without a length) and the bin edges. ``length``: per record, NaN
    where none."""
    import numpy as np

    lengths = np.array([length[i] for i, _ in eligible], dtype=np.float64)
    if lengths.size == 0:
        return [None] * len(length), []
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, n_bins + 1)))
    groups = [
        None if not np.isfinite(x) else f"bin{int(np.searchsorted(edges[1:-1], x, side='right'))}"
        for x in length
    ]
    return groups, [float(e) for e in edges]
