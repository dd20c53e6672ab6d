"""``select``: a scores file + its input -> the chosen records, unchanged, in input order.

Ranking is by one score column (or ``perplexity``, ``length``, ``random``, derived from
the row); ties go to the earlier record, so the result depends on nothing but the scores.
Records whose status is not ``ok`` or whose score is missing or not finite are never
selected. Optionally: exact duplicates dropped first, and the budget split into quotas per
group (a field of the input records), per response-length bin, or across clusters of
what the records are about (``coverage.py``).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from pathlib import Path
from typing import Any

from .config import SelectConfig, parse_quota, resolve_coverage, validate_select
from .errors import InputError
from .formats import resolve_format, sample_turns, to_sample
from .ids import IdRegistry
from .io import detect_file_kind, read_records, write_subset
from .records import OK
from .table import ScoresTable


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


def choose_grouped(
    values: list[tuple[int, float]], group_of: list, quotas: dict, order: str
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


def select(
    config: SelectConfig | None = None, /, table: ScoresTable | None = None, **fields: Any
) -> dict[str, Any]:
    """Write the records chosen by ``config`` to ``config.output``; returns a summary.
    ``table``: the scores already read (``fastscore run`` reads them once)."""
    cfg = dataclasses.replace(config, **fields) if config else SelectConfig(**fields)
    validate_select(cfg)
    table = table or ScoresTable.read(cfg.scores)
    p = plan(cfg, table)
    n_written = write_subset(cfg.input, cfg.output, p.chosen, table.ids)
    return {
        "score": cfg.score,
        "order": cfg.order,
        "method": p.method,
        "rule": {
            k: getattr(cfg, k)
            for k in ("top_k", "fraction", "threshold")
            if getattr(cfg, k) is not None
        },
        "records": len(table),
        "eligible": len(p.eligible),
        "selected": n_written,
        # fewer eligible records than asked for: said, not hidden
        "short_by": 0 if p.target is None else p.target - n_written,
        "output": str(Path(cfg.output).resolve()),
        **p.extra,
        "length_spearman": table.length_correlations(),
    }


@dataclasses.dataclass
class Plan:
    """What a selection rule picks, before anything is written."""

    eligible: list[tuple[int, float]]  # (index, score) of the records that may be chosen
    chosen: list[int]  # indices, in input order
    target: int | None  # the budget asked for (None for a threshold)
    extra: dict[str, Any]  # dedup and group reports
    method: str = ""  # what ran, in words (the summary line, the manifest, the report)


def plan(cfg: SelectConfig, table: ScoresTable | None = None) -> Plan:
    """The records ``cfg`` chooses from its scores (``cfg.input`` is read only for quotas,
    dedup and lexical coverage features, in the record format the scores were made with)."""
    cfg = resolve_coverage(cfg)
    table = table or ScoresTable.read(cfg.scores)
    eligible = table.eligible(cfg.score, cfg.seed)
    n_rows = len(table)
    target = budget(cfg, n_rows)
    extra: dict[str, Any] = {}
    field_name, shares = parse_quota(cfg.quota, cfg.group_field) if cfg.quota else (None, None)
    if cfg.dedup or field_name:
        facts = input_facts(cfg.input, field_name, cfg.dedup, n_rows, table.fmt)
    if cfg.dedup:
        before = len(eligible)
        eligible = [(i, v) for i, v in eligible if i not in facts["duplicates"]]
        extra["dedup"] = {
            "duplicate_records": len(facts["duplicates"]),
            "removed_from_eligible": before - len(eligible),
        }
    if field_name:
        groups = facts["groups"]
        if shares is None:  # proportional to the input's records
            counts = Counter(groups)
            shares = {g: c / n_rows for g, c in counts.items()}
        quotas = allocate(target, shares)
        target = sum(quotas.values())  # shares may add up to less than the whole budget
        chosen = choose_grouped(eligible, groups, quotas, cfg.order)
        extra["groups"] = group_report(groups, eligible, chosen, quotas, field_name)
    elif cfg.coverage != "none":
        from .coverage import choose_covered

        chosen, extra["coverage"] = choose_covered(cfg, table, eligible, target)
    elif cfg.length_bins:
        groups, edges = length_bin_of(table.length, eligible, cfg.length_bins)
        counts = Counter(groups[i] for i, _ in eligible)
        quotas = allocate(target, {g: c / max(1, len(eligible)) for g, c in counts.items()})
        chosen = choose_grouped(eligible, groups, quotas, cfg.order)
        extra["groups"] = group_report(groups, eligible, chosen, quotas, "length_bin")
        extra["length_bin_edges"] = edges
    else:
        chosen = choose(eligible, n_rows, cfg)
    return Plan(eligible, chosen, target, extra, describe(cfg, extra))


def describe(cfg: SelectConfig, extra: dict[str, Any]) -> str:
    """What a (resolved) selection ran, in words: ``top 10% by lobass within 24 clusters
    of engine features (proportional), varied responses``."""
    dropped = ", duplicates dropped" if cfg.dedup else ""
    if cfg.threshold is not None:
        return f"{cfg.score} {'>=' if cfg.order == 'desc' else '<='} {cfg.threshold:g}{dropped}"
    size = f"{100 * cfg.fraction:g}%" if cfg.top_k is None else f"{cfg.top_k}"
    rule = f"top {size} by {cfg.score}" + (" (ascending)" if cfg.order == "asc" else "") + dropped
    c = extra.get("coverage")
    if c and c["method"] == "diverse":
        return (
            f"{rule}, diverse (cosine distance >= {c['min_distance']:g}, "
            f"{c['topped_up']} topped up; {c['features']} features)"
        )
    if c:
        text = f"{rule} within {c['clusters']} clusters of {c['features']} features ({c['spread']})"
        return text + (", varied responses" if c.get("within") == "responses" else "")
    if "groups" in extra:
        return f"{rule} within quotas per {extra['groups']['field']}"
    return f"{rule}, plain ranking (coverage none: the paper's top-k)"


def input_facts(
    path, field_name: str | None, dedup: bool, n_rows: int, fmt: str | None = None
) -> dict[str, Any]:
    """One pass over the input: each record's group (the value of ``field_name`` as text,
    ``"(missing)"`` without one) and the records that repeat an earlier one's text, read
    in ``fmt`` (the format the scores were made with; detected when not known)."""
    kind = detect_file_kind(path)
    if dedup and fmt is None:
        fmt = resolve_format(path, kind, "auto")
    groups: list[str] = []
    duplicates: set[int] = set()
    seen = IdRegistry()
    for raw in read_records(path, kind):
        if field_name:
            v = raw.data.get(field_name) if isinstance(raw.data, dict) else None
            groups.append("(missing)" if v is None else v if isinstance(v, str) else str(v))
        if dedup and fmt != "auto":
            sample = to_sample(raw, fmt)
            if sample.status == OK:
                text = "\n".join(
                    f"{role}: {' '.join(t.lower().split())}" for role, t in sample_turns(sample)
                )
                if seen.first(text, raw.index) is not None:
                    duplicates.add(raw.index)
    if field_name and len(groups) != n_rows:
        raise InputError(
            f"{path} has {len(groups)} records but the scores file has {n_rows}; the scores "
            "were computed on another input"
        )
    return {"groups": groups, "duplicates": duplicates}


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


def group_report(groups, eligible, chosen, quotas, field_name) -> dict[str, Any]:
    records = Counter(groups)
    elig = Counter(groups[i] for i, _ in eligible)
    sel = Counter(groups[i] for i in chosen)
    names = sorted(set(records) | set(quotas), key=str)
    return {
        "field": field_name,
        "by_group": {
            str(g): {
                "records": records.get(g, 0),
                "eligible": elig.get(g, 0),
                "quota": quotas.get(g, 0),
                "selected": sel.get(g, 0),
                "short_by": max(0, quotas.get(g, 0) - sel.get(g, 0)),
            }
            for g in names
        },
    }
