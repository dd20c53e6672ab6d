"""``select``: a scores file + its input -> the chosen records, unchanged, in input order.

Ranking is by one score column (or ``perplexity``, ``length``, ``random``, derived from
the row); ties go to the earlier record, so the result depends on nothing but the scores.
Records whose status is not ``ok`` or whose score is missing or not finite are never
selected. By default (``coverage="auto"``) a top-k or fraction budget is spread across
clusters of what the records are about, with varied responses within each (``coverage``);
``coverage="none"`` is the plain ranking. Optionally: exact duplicates dropped first, and
the budget split into quotas per group (a field of the input records) or per
response-length bin instead.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from fastscore.config import (
    SelectConfig,
    api_config,
    parse_quota,
    resolve_coverage,
    validate_select,
)
from fastscore.data.writers import write_subset
from fastscore.errors import ConfigError, InputError
from fastscore.runs.claims import Claims
from fastscore.runs.outputs import OutputPaths, partial_of
from fastscore.runs.problems import located, summary_lines
from fastscore.selection.budget import (
    allocate,
    budget,
    choose,
    choose_grouped,
    length_bin_of,
    spread_quotas,
)
from fastscore.selection.inputs import input_facts
from fastscore.selection.table import ScoresTable


def select(
    config: SelectConfig | None = None, /, table: ScoresTable | None = None, **fields: Any
) -> dict[str, Any]:
    """Write the records chosen by ``config`` to ``config.output``; returns a summary.
    ``table``: the scores already read (``fastscore run`` reads them once)."""
    cfg = api_config(SelectConfig, config, fields)
    validate_select(cfg)
    for name in ("scores", "input"):
        where = getattr(cfg, name)
        if not where.exists():
            raise ConfigError(f"select: {name} {where.shown!r} does not exist")
    with select_claims(cfg).settled():
        table = table or ScoresTable.read(cfg.scores)
        p = plan(cfg, table)
        if not p.chosen and not cfg.allow_empty:
            raise nothing_selected(cfg, table, p)
        n_written = write_subset(
            cfg.input,
            cfg.output,
            chosen=p.chosen,
            ids=table.ids,
            kind=table.input_kind(cfg.input),
        )
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
        "output": cfg.output.shown,
        **p.extra,
        "length_spearman": table.length_correlations(),
    }


def select_claims(cfg: SelectConfig, command: str = "select") -> Claims:
    """What ``select`` reads (the scores, their manifest and features, the input) and
    writes (the subset, held for the run's life)."""
    scores = OutputPaths.of(cfg.scores)
    return (
        Claims(command)
        .read("scores file", cfg.scores)
        .read("scores manifest", OutputPaths.find_manifest(cfg.scores))
        .read("coverage features", scores.url(scores.features))
        .read("input", cfg.input)
        .write("subset output", cfg.output, lock=True)
        .write("subset partial", partial_of(cfg.output))
    )


def nothing_selected(cfg: SelectConfig, table: ScoresTable, p: Plan) -> InputError:
    """Why a selection chose nothing (no eligible record, a budget of 0, a threshold above
    every score), with the first records that could not be chosen and their lines."""
    n = len(table)
    if not n:
        why = f"the scores file {cfg.scores.shown} has no rows"
    elif not p.eligible:
        by = ", ".join(f"{k}={v:,}" for k, v in sorted(Counter(table.status).items()))
        why = (
            f"none of the {n:,} records is eligible (status ok with a finite {cfg.score!r}; "
            f"by status: {by})"
        )
    elif cfg.threshold is not None:
        best = (max if cfg.order == "desc" else min)(v for _, v in p.eligible)
        sign = ">=" if cfg.order == "desc" else "<="
        why = f"no record's {cfg.score} is {sign} {cfg.threshold:g} (the best is {best:.4g})"
    elif not p.target:
        asked = f"--top-k {cfg.top_k}" if cfg.top_k is not None else (
            f"--fraction {cfg.fraction:g} of {n:,} records, rounded down")  # fmt: skip
        why = f"the budget is 0 records ({asked})"
    else:  # quotas for groups with no eligible record
        why = f"{p.method} chose none of the {len(p.eligible):,} eligible records"
    lines = [f"nothing to select: {why}"]
    if table.problems and not p.eligible:
        kind = table.input_kind(cfg.input)
        not_ok = sum(1 for s in table.status if s != "ok")
        lines += summary_lines(located(cfg.input, kind, table.problems), not_ok)
    lines.append("No subset was written; --allow-empty writes an empty one (exit 0).")
    return InputError("\n".join(lines))


@dataclasses.dataclass
class Plan:
    """What a selection rule picks, before anything is written."""

    eligible: list[tuple[int, float]]  # (index, score) of the records that may be chosen
    chosen: list[int]  # indices, in input order
    target: int | None  # the budget asked for (None for a threshold)
    extra: dict[str, Any]  # dedup and group reports
    method: str = ""  # what ran, in words (the summary line, the manifest, the report)
    # coverage: each record's cluster, named as extra["coverage"]["by_cluster"] names it
    clusters: list[str] | None = None


def plan(cfg: SelectConfig, table: ScoresTable | None = None) -> Plan:
    """The records ``cfg`` chooses from its scores (``cfg.input`` is read only for quotas,
    dedup and lexical coverage features, in the record format the scores were made with)."""
    cfg = resolve_coverage(cfg)
    table = table or ScoresTable.read(cfg.scores)
    eligible = table.eligible(cfg.score, cfg.seed)
    n_rows = len(table)
    target = budget(cfg, n_rows)
    extra: dict[str, Any] = {}
    clusters = None
    field_name, shares = parse_quota(cfg.quota, cfg.group_field) if cfg.quota else (None, None)
    if cfg.dedup or field_name:
        facts = input_facts(
            cfg.input,
            n_rows=n_rows,
            fmt=table.input_format(cfg.input),
            group_field=field_name,
            dedup=cfg.dedup,
            kind=table.input_kind(cfg.input),
        )
    if cfg.dedup:
        before = len(eligible)
        eligible = [(i, v) for i, v in eligible if i not in facts.duplicates]
        extra["dedup"] = {
            "duplicate_records": len(facts.duplicates),
            "removed_from_eligible": before - len(eligible),
        }
    if field_name:
        groups = facts.groups
        if shares is None:
            # proportional to each group's eligible records: a group with none (all too
            # long, say) gets nothing, and no quota exceeds what its group can fill
            quotas = spread_quotas(target, Counter(groups[i] for i, _ in eligible))
        else:  # the mix asked for, kept: a group that cannot fill its share is short
            quotas = allocate(target, shares)
            target = sum(quotas.values())  # shares may add up to less than the whole budget
        chosen = choose_grouped(eligible, groups, quotas, order=cfg.order)
        extra["groups"] = group_report(
            groups, eligible, chosen, quotas=quotas, field_name=field_name
        )
    elif cfg.coverage != "none":
        from fastscore.selection.coverage import choose_covered

        chosen, extra["coverage"], clusters = choose_covered(cfg, table, eligible, target=target)
    elif cfg.length_bins:
        groups, edges = length_bin_of(table.length, eligible, cfg.length_bins)
        counts = Counter(groups[i] for i, _ in eligible)
        quotas = allocate(target, {g: c / max(1, len(eligible)) for g, c in counts.items()})
        chosen = choose_grouped(eligible, groups, quotas, order=cfg.order)
        extra["groups"] = group_report(
            groups, eligible, chosen, quotas=quotas, field_name="length_bin"
        )
        extra["length_bin_edges"] = edges
    else:
        chosen = choose(eligible, n_rows, cfg)
    return Plan(eligible, chosen, target, extra, describe(cfg, extra), clusters)


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


def group_report(groups, eligible, chosen, *, quotas, field_name) -> dict[str, Any]:
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
