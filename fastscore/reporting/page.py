"""``report``: a scores file (+ its input) -> one self-contained HTML page and PNGs.

What a person needs to trust a selection: each score's histogram, each score against
response length with Spearman's rho (the paper's reason for normalising), loss_base
against loss_ref with the chosen samples marked, counts per status (and per group), the
clusters a ``--coverage`` selection spread its budget over (records, selected and mean
score per cluster), and the top and bottom samples with their text. The page embeds its
pictures, so it can be mailed or attached; the PNGs are written beside it too, and
``explorer.html`` (``reporting.explorer``: the plots to hover, a budget to try, ids to
find), linked from the page.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastscore.config import ReportConfig, api_config, validate_report
from fastscore.data.readers import read_records
from fastscore.errors import InputError
from fastscore.records import OK
from fastscore.reporting import explorer
from fastscore.reporting.render import Heading, render
from fastscore.runs.claims import Claims
from fastscore.runs.outputs import OutputPaths
from fastscore.scoring.arithmetic import spearman
from fastscore.selection.selector import plan
from fastscore.selection.table import ScoresTable
from fastscore.storage.staging import store_for

# score columns drawn when the scores file has them, in this order
COLUMNS = ("lobass", "rho", "loss_base", "loss_ref", "ifd", "loss_alone", "margin")


def report(
    config: ReportConfig | None = None, /, table: ScoresTable | None = None, **fields: Any
) -> dict[str, Any]:
    """Write ``report.html`` and its PNGs into ``config.output_dir``; returns a summary.
    ``table``: the scores already read (``fastscore run`` reads them once)."""
    cfg = api_config(ReportConfig, config, fields)
    validate_report(cfg)
    with report_claims(cfg).settled():
        return _write_report(cfg, table)


PAGE, EXPLORER_PAGE = "report.html", "explorer.html"


def report_claims(cfg: ReportConfig, command: str = "report") -> Claims:
    """What ``report`` reads (the scores, their manifest and features, the input) and
    writes (its pages and PNGs in the output directory, the page held for the run's life)."""
    scores = OutputPaths.of(cfg.scores)
    c = (
        Claims(command)
        .read("scores file", cfg.scores)
        .read("scores manifest", OutputPaths.find_manifest(cfg.scores))
        .read("coverage features", scores.url(scores.features))
        .read("input", cfg.input)
    )
    out = cfg.output_dir
    c.write("report page", out / PAGE, lock=True)
    c.write("explorer page", out / EXPLORER_PAGE)
    names = [f"{kind}_{col}" for kind in ("hist", "length") for col in (*COLUMNS, cfg.select.score)]
    for name in (*names, "losses", "clusters", "status"):
        c.write("report figure", out / f"{name}.png")
    return c


@dataclass
class _Selected:
    """What the report draws: the scores, the selection the rule makes of them, the score
    columns, which records are ok and picked, and the seeded sample of points shown."""

    table: ScoresTable
    plan: Any
    columns: dict[str, np.ndarray]
    ok: np.ndarray
    picked: np.ndarray
    shown: np.ndarray

    @property
    def n(self) -> int:
        return len(self.table.ids)

    @property
    def coverage(self) -> dict[str, Any] | None:
        return self.plan.extra.get("coverage")


def _write_report(cfg: ReportConfig, table: ScoresTable | None) -> dict[str, Any]:
    """The report's steps, timed: the selection, the figures, the texts from the input,
    the explorer, the page (a store's directory is written here, then put there)."""
    import matplotlib

    matplotlib.use("Agg")
    seconds: dict[str, float] = {}  # per stage, in the summary
    t0 = time.perf_counter()

    def lap(stage: str) -> None:
        seconds[stage] = round(time.perf_counter() - t0 - sum(seconds.values()), 3)

    store = store_for(cfg.output_dir)
    out = store.local
    out.mkdir(parents=True, exist_ok=True)
    d = _select(cfg, table or ScoresTable.read(cfg.scores))
    lap("selection")
    figures, rhos, status_counts = _figures(out, d)
    lap("figures")
    fmt = d.table.input_format(cfg.input)
    kind = d.table.input_kind(cfg.input)  # (found once: every reader below takes it)
    group_of = _group_of(cfg, d.n, fmt=fmt, kind=kind) if cfg.group_field else None
    samples, clusters, texts, drawn, sel_drawn = _texts(cfg, d, fmt, kind)
    lap("input")  # the groups and every text shown, the explorer's too
    heading = _heading(cfg, d)
    page, explorer_page = out / PAGE, out / EXPLORER_PAGE
    if cfg.explorer:
        context = explorer.explorer_context(
            cfg,
            d.table,
            d.plan,
            columns=d.columns,
            picked=d.picked,
            drawn=drawn,
            selection_drawn=len(sel_drawn),
            sample=len(d.shown),
            texts=texts.points,
            groups=group_of,
        )
        _write(explorer_page, render("explorer.html.j2", heading, context))
        lap("explorer")
    html = render(
        "report.html.j2",
        heading,
        PageContext(
            sampled=len(d.shown) < d.n,
            shown=len(d.shown),
            status=sorted(status_counts.items(), key=lambda kv: -kv[1]),
            groups=_group_counts(group_of, d.picked) if group_of else None,
            group_field=cfg.group_field,
            rhos=[(c, _fmt(r)) for c, r in rhos.items()],
            figures=figures,
            samples=samples,
            clusters=clusters,
            coverage=d.coverage or {},
            explorer=explorer_page.name if cfg.explorer else None,
        ),
    )
    _write(page, html)
    store.push(out)
    lap("page")
    pages = [page, explorer_page] if cfg.explorer else [page]
    return {
        "output": store.url(page).shown,
        **({"explorer": store.url(explorer_page).shown} if cfg.explorer else {}),
        "pngs": [f["png"] for f in figures],
        "written": [store.url(p).shown for p in pages]
        + [store.url(Path(f["png"])).shown for f in figures],
        "records": d.n,
        "selected": int(d.picked.sum()),
        "method": d.plan.method,
        "by_status": dict(status_counts),
        "length_spearman": {c: None if r is None else round(r, 4) for c, r in rhos.items()},
        **({"coverage": d.coverage} if d.coverage else {}),
        "seconds": seconds,
    }


def _select(cfg: ReportConfig, table: ScoresTable) -> _Selected:
    """The selection ``cfg``'s rule makes (as ``select`` would), the columns drawn and the
    seeded sample of points (``--points``)."""
    select_cfg = dataclasses.replace(cfg.select, scores=cfg.scores, input=cfg.input)
    p = plan(select_cfg, table)
    columns = {c: table.columns[c] for c in COLUMNS if c in table.columns}
    columns[cfg.select.score] = table.values(cfg.select.score, cfg.select.seed)
    n = len(table.ids)
    picked = np.zeros(n, dtype=bool)
    picked[p.chosen] = True
    ok = np.array([s == OK for s in table.status], dtype=bool)
    rng = np.random.default_rng(0)
    shown = np.sort(rng.choice(n, cfg.points, replace=False)) if n > cfg.points else np.arange(n)
    return _Selected(table, p, columns, ok, picked, shown)


def _figures(out: Path, d: _Selected) -> tuple[list[dict[str, Any]], dict, Counter]:
    """Every PNG (histograms, scores against length with Spearman's rho, the loss plane,
    the clusters, the statuses), the diagnostics first; the rhos and status counts."""
    table, ok, shown = d.table, d.ok, d.shown
    figures: list[dict[str, Any]] = []
    for c in d.columns:
        v = d.columns[c][ok]
        v = v[np.isfinite(v)]
        figures.append(
            _figure(out, f"hist_{c}", _hist(c, v), caption=f"Histogram of {c} (ok records)")
        )
    rhos = {}
    for c in d.columns:
        v = d.columns[c]
        fin = ok & np.isfinite(v) & np.isfinite(table.length)
        rhos[c] = spearman(v[fin], table.length[fin])
        figures.append(
            _figure(
                out,
                f"length_{c}",
                _scatter_length(c, v, table.length, fin=fin, shown=shown, rho=rhos[c]),
                caption=f"{c} against response length: Spearman's rho = {_fmt(rhos[c])}",
            )
        )
    if "loss_base" in table.columns and "loss_ref" in table.columns:
        figures.append(
            _figure(
                out,
                "losses",
                _scatter_losses(table, ok, d.picked, shown=shown),
                caption=f"loss_base against loss_ref; the {int(d.picked.sum())} selected records "
                "in orange (below the diagonal the reference has the lower loss; lobass is "
                "the share of the base loss it removed)",
            )
        )
    coverage = d.coverage
    if coverage:
        figures.append(
            _figure(
                out,
                "clusters",
                _cluster_bars(coverage),
                caption=f"Share of the eligible records and of the selected ones per cluster "
                f"({coverage['method']}, {coverage['features']} features)",
            )
        )
    status_counts = Counter(table.status)
    figures.append(
        _figure(
            out, "status", _bars(status_counts, "records per status"), caption="Records per status"
        )
    )
    # the diagnostics first: the selection on the two losses, then each score and length
    first = {"losses": 0, "clusters": 1, "length": 2, "hist": 3, "status": 4}
    figures.sort(key=lambda f: first[f["name"].split("_")[0].removesuffix(".png")])
    return figures, rhos, status_counts


def _texts(cfg: ReportConfig, d: _Selected, fmt: str, kind: str):
    """The texts the pages show, read from the input in one pass: the top and bottom
    records by the score, each cluster's example prompt, the explorer's drawn points."""
    top, bottom = _extremes(cfg, d.columns[cfg.select.score], ok=d.ok)
    coverage = d.coverage
    examples = {r["example_index"] for r in coverage["by_cluster"].values()} if coverage else set()
    examples.discard(None)
    if cfg.explorer:
        drawn, sel_drawn = explorer.drawn_records(d.shown, d.plan.chosen, seed=cfg.select.seed)
    else:
        drawn, sel_drawn = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    texts = _read_texts(
        cfg,
        fmt,
        d.n,
        kind=kind,
        turns=set(top) | set(bottom),
        prompts=examples,
        points=drawn,
    )
    samples = {
        "top": [_sample_row(i, d.table, d.columns, texts) for i in top],
        "bottom": [_sample_row(i, d.table, d.columns, texts) for i in bottom],
    }
    clusters = _clusters(coverage, texts.prompts) if coverage else None
    return samples, clusters, texts, drawn, sel_drawn


def _heading(cfg: ReportConfig, d: _Selected) -> Heading:
    rule = next(
        f"{k.replace('_', '-')} {getattr(cfg.select, k)}"
        for k in ("top_k", "fraction", "threshold")
        if getattr(cfg.select, k) is not None
    )
    return Heading(
        name=cfg.scores.name,
        scores=str(cfg.scores),
        input=str(cfg.input),
        n=d.n,
        rule=rule,
        score=cfg.select.score,
        order=cfg.select.order,
        selected=int(d.picked.sum()),
        method=d.plan.method,
    )


def _write(path: Path, text: str) -> None:
    """``text`` into ``path`` whole or not at all (a reader never sees half a page)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _fmt(r: float | None) -> str:
    return "n/a (constant)" if r is None else f"{r:+.3f}"


def _figure(out: Path, name: str, fig, *, caption: str) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    path = out / f"{name}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    data = base64.b64encode(path.read_bytes()).decode()
    return {"png": str(path), "name": path.name, "data": data, "caption": caption}


def _hist(name: str, v: np.ndarray):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    if v.size:
        ax.hist(v, bins=min(60, max(10, int(np.sqrt(v.size)))), color="#4472c4")
    else:
        ax.text(0.5, 0.5, "no finite values", ha="center", transform=ax.transAxes)
    ax.set_xlabel(name)
    ax.set_ylabel("records")
    fig.tight_layout()
    return fig


def _scatter_length(name, v, length, *, fin, shown, rho):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    idx = shown[fin[shown]]
    ax.scatter(length[idx], v[idx], s=6, alpha=0.5, color="#4472c4")
    ax.set_xlabel("response tokens")
    ax.set_ylabel(name)
    ax.set_title(f"Spearman's rho = {_fmt(rho)}", fontsize=10)
    fig.tight_layout()
    return fig


def _scatter_losses(table: ScoresTable, ok, picked, *, shown):
    import matplotlib.pyplot as plt

    base, ref = table.columns["loss_base"], table.columns["loss_ref"]
    fin = ok & np.isfinite(base) & np.isfinite(ref)
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    rest = shown[fin[shown] & ~picked[shown]]
    sel = shown[fin[shown] & picked[shown]]
    ax.scatter(base[rest], ref[rest], s=6, alpha=0.4, color="#8c8c8c", label="not selected")
    ax.scatter(base[sel], ref[sel], s=8, alpha=0.8, color="#ed7d31", label="selected")
    if fin.any():
        hi = float(max(base[fin].max(), ref[fin].max()))
        ax.plot([0, hi], [0, hi], linestyle="--", color="black", linewidth=0.8)
    ax.set_xlabel("loss_base (mean response NLL)")
    ax.set_ylabel("loss_ref")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _bars(counts: Counter, ylabel: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.0))
    names = sorted(counts, key=lambda k: (-counts[k], str(k)))
    ax.bar([str(k) for k in names], [counts[k] for k in names], color="#4472c4")
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    return fig


def _cluster_bars(coverage: dict[str, Any], most: int = 40):
    import matplotlib.pyplot as plt

    by = coverage["by_cluster"]
    names = sorted(by, key=lambda c: -by[c]["eligible"])[:most]
    elig = sum(r["eligible"] for r in by.values()) or 1
    sel = sum(r["selected"] for r in by.values()) or 1
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(5.5 if len(names) <= 16 else 9, 3.4))
    ax.bar(x - 0.2, [by[c]["eligible"] / elig for c in names], 0.4, label="eligible")
    ax.bar(x + 0.2, [by[c]["selected"] / sel for c in names], 0.4, label="selected")
    ax.set_xticks(x, [str(c)[:12] for c in names], rotation=60, fontsize=7)
    ax.set_ylabel("share")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _clusters(coverage: dict[str, Any], prompts: dict[int, str]) -> list[dict]:
    """The clusters' rows for the page, each with its example record's prompt
    (``prompts``: by record, whitespace made single spaces)."""
    out = []
    for name, r in coverage["by_cluster"].items():
        text = prompts.get(r["example_index"]) or ""
        out.append(
            {
                "name": name,
                **r,
                "score_mean": "" if r["score_mean"] is None else f"{r['score_mean']:.4f}",
                "score_mean_selected": ""
                if r["score_mean_selected"] is None
                else f"{r['score_mean_selected']:.4f}",
                "example": text[:120] + ("..." if len(text) > 120 else ""),
            }
        )
    return out


def _group_of(cfg: ReportConfig, n: int, *, fmt: str, kind: str) -> list[str]:
    """Each record's value of ``cfg.group_field``, as text."""
    from fastscore.selection.inputs import input_facts

    return input_facts(cfg.input, n_rows=n, fmt=fmt, group_field=cfg.group_field, kind=kind).groups


def _group_counts(group_of: list[str], picked) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for i, g in enumerate(group_of):
        row = out.setdefault(g, {"records": 0, "selected": 0})
        row["records"] += 1
        row["selected"] += int(picked[i])
    return dict(sorted(out.items()))


def _extremes(cfg: ReportConfig, v: np.ndarray, *, ok) -> tuple[list[int], list[int]]:
    """The top and bottom ``cfg.samples`` ok records by the score ``v``, best first and
    worst first."""
    fin = np.flatnonzero(ok & np.isfinite(v))
    order = fin[np.lexsort((fin, -v[fin] if cfg.select.order == "desc" else v[fin]))]
    return order[: cfg.samples].tolist(), order[::-1][: cfg.samples].tolist()


@dataclass
class _Texts:
    """What the page shows of the input's records, read in one pass (``_read_texts``)."""

    turns: dict[int, list[tuple[str, str]]]  # the top and bottom samples: (role, text)
    prompts: dict[int, str]  # the clusters' examples, whitespace made single spaces
    points: dict[int, tuple[str, str]]  # the explorer's points (explorer.point_texts)


def _read_texts(
    cfg: ReportConfig, fmt: str, n: int, *, kind: str, turns, prompts, points
) -> _Texts:
    """One pass over the input for every text the report shows: the ``turns`` of the top
    and bottom samples, the ``prompts`` of the clusters' examples, the ``points`` the
    explorer draws (sets or arrays of record indices)."""
    from fastscore.data.formats import sample_turns, to_sample
    from fastscore.selection.coverage import prompt_text

    points = set(np.asarray(points).tolist())
    out = _Texts({}, {}, {})
    records = 0
    for raw in read_records(cfg.input, kind):
        i = raw.index
        records += 1
        if i >= n:
            raise InputError(
                f"{cfg.input} has more records than the scores file ({n}); the scores were "
                "computed on another input (wrong --input?)"
            )
        if i not in turns and i not in prompts and i not in points:
            continue
        sample = to_sample(raw, fmt)
        if i in turns:
            out.turns[i] = sample_turns(sample)
        if i in prompts:
            out.prompts[i] = " ".join((prompt_text(sample) or "").split())
        if i in points:
            out.points[i] = explorer.point_texts(sample)
    if records < n:
        raise InputError(
            f"{cfg.input} has {records} records but the scores file has {n}; the scores were "
            "computed on another input (wrong --input?)"
        )
    return out


def _sample_row(i: int, table: ScoresTable, columns: dict, texts: _Texts) -> dict[str, Any]:
    return {
        "index": int(i),
        "id": table.ids[i],
        "length": int(table.length[i]),
        "scores": {c: _num(columns[c][i]) for c in columns},
        "messages": texts.turns[i],
    }


def _num(x: float) -> str:
    return "null" if not math.isfinite(x) else f"{x:.4f}"


@dataclass(frozen=True)
class PageContext:
    """What the page template (``templates/report.html.j2``) shows after the
    ``render.Heading``."""

    sampled: bool  # the scatter plots draw a sample of the records
    shown: int
    status: list[tuple[str, int]]  # records per status, most first
    groups: dict[str, dict[str, int]] | None
    group_field: str | None
    rhos: list[tuple[str, str]]  # Spearman with length per score, formatted
    figures: list[dict[str, Any]]
    samples: dict[str, list[dict]]
    clusters: list[dict] | None
    coverage: dict[str, Any]
    explorer: str | None  # the explorer's file name, beside the page
