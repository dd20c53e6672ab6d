"""``run``: score then select into one directory; and the embedded demo built on it."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from fastscore.config import (
    EngineConfig,
    ReportConfig,
    RunConfig,
    ScoreConfig,
    SelectConfig,
    validate_score,
    validate_select,
)
from fastscore.data.memory import as_input
from fastscore.errors import ConfigError
from fastscore.executors.local import score_claims, score_file
from fastscore.reporting.page import report, report_claims
from fastscore.runs.manifest import write_manifest
from fastscore.runs.outputs import RUN_MANIFEST, OutputPaths
from fastscore.runs.resume import run_fingerprint
from fastscore.scoring.session import open_session, session_facts
from fastscore.selection.budget import choose
from fastscore.selection.selector import select, select_claims
from fastscore.selection.table import ScoresTable


def run(config: RunConfig) -> dict[str, Any]:
    """Write ``scores.jsonl``, ``selected.jsonl``, ``manifest.json`` and (unless
    ``config.report`` is off) ``report/report.html`` into ``output_dir``; returns the
    manifest."""
    return run_with_scores(config)[0]


def run_with_scores(config: RunConfig) -> tuple[dict[str, Any], ScoresTable]:
    """``run``, returning the scores table too (read once, shared by every step)."""
    if not config.output_dir:
        raise ConfigError("run: 'output_dir' is required (--output-dir)")
    out = config.output_dir  # (a storage.Location)
    score_cfg = dataclasses.replace(
        config.score, input=as_input(config.score.input), output=out / "scores.jsonl"
    )
    select_cfg = dataclasses.replace(
        config.select,
        scores=score_cfg.output,
        input=score_cfg.input,
        output=out / "selected.jsonl",
        allow_empty=config.select.allow_empty or score_cfg.allow_empty,
    )
    report_cfg = ReportConfig(
        scores=score_cfg.output,
        input=score_cfg.input,
        output_dir=out / "report",
        select=select_cfg,
        group_field=select_cfg.group_field,
    )
    validate_score(score_cfg)
    validate_select(select_cfg)  # before the expensive part, so a typo costs nothing
    paths = OutputPaths.of(score_cfg.output, out / RUN_MANIFEST)
    # every file of the run checked and held before its scoring starts (an input inside
    # the run directory, say its selected.jsonl, is not overwritten by the selection)
    claims = score_claims(score_cfg, paths, "run").then(select_claims(select_cfg, "run"))
    if config.report:
        claims = claims.then(report_claims(report_cfg, "run"))
    with claims.settled():
        done = _finished_scoring(score_cfg, paths)
        manifest, table = done if done else score_file(score_cfg, paths.manifest)
        manifest["command"] = "run"
        manifest["selection"] = select(select_cfg, table=table)
        scored = [paths.scores, paths.features, paths.manifest]
        written = [
            paths.url(f).shown for f in scored if f == paths.manifest or paths.store.exists(f)
        ]
        written.append(manifest["selection"]["output"])
        if config.report:
            summary = report(report_cfg, table=table)
            manifest["report"] = summary["output"]
            manifest["explorer"] = summary.get("explorer")
            written += summary["written"]
        manifest["written"] = written
        write_manifest(paths.manifest, manifest)
        paths.store.push(paths.manifest)
    return manifest, table


def _finished_scoring(cfg: ScoreConfig, paths: OutputPaths):
    """With ``--resume``, the manifest and scores of a scoring that already ended (a run
    killed during selection), so that only the selection is done again; None when scoring
    must run."""
    if not cfg.resume or not paths.store.pull(paths.manifest):
        return None
    if paths.restore() or not paths.store.pull(paths.scores):
        return None
    manifest = orjson.loads(paths.manifest.read_bytes())
    if cfg.date is None:  # the date the finished scores were rendered with
        cfg = dataclasses.replace(cfg, date=manifest.get("options", {}).get("date"))
    with open_session(cfg, start_engines=False) as s:  # the models as they are now
        fp = run_fingerprint(cfg, session_facts(s))
    if manifest.get("fingerprint") != fp:
        raise ConfigError(
            f"cannot resume in {paths.url(paths.scores.parent).shown}: its scores "
            "were made with "
            "other settings, models or another input; start again without --resume"
        )
    return manifest, ScoresTable.read(paths.scores, fmt=manifest["input"]["format"])


def demo(output_dir: str | Path = "runs/demo", fraction: float = 0.2, progress: bool = True):
    """Build (once) the demo models and data, run scoring and selection, summarise by kind."""
    from fastscore.demodata.build import ensure_demo
    from fastscore.demodata.world import KINDS

    assets = ensure_demo(progress=progress)
    cfg = RunConfig(
        output_dir=str(output_dir),
        score=ScoreConfig(
            input=str(assets.data),
            base=str(assets.base),
            ref=str(assets.ref),
            progress=progress,
            engine=EngineConfig(kind="vllm", dtype="float32"),
        ),
        select=SelectConfig(fraction=fraction, score="lobass"),
    )
    manifest, scores = run_with_scores(cfg)
    kinds = [orjson.loads(line)["kind"] for line in assets.data.read_bytes().splitlines()]
    total = Counter(kinds)
    subset = Path(manifest["selection"]["output"]).read_bytes().splitlines()
    # the default selection (what selected.jsonl holds) beside each score's plain top-k
    table = {
        "in_data": dict(total),
        "selected": dict(Counter(orjson.loads(x)["kind"] for x in subset)),
    }
    for column in ("lobass", "rho"):
        picked = choose(
            scores.eligible(column), len(scores), SelectConfig(fraction=fraction, score=column)
        )
        table[column] = dict(Counter(kinds[i] for i in picked))
    n_pick = manifest["selection"]["selected"]
    table["random_expected"] = {k: round(total[k] * n_pick / len(kinds), 1) for k in total}
    return {
        "kinds": list(KINDS),
        "table": table,
        "fraction": fraction,
        "selected": n_pick,
        "manifest": manifest,
        "models": str(assets.root),
        "built": (assets.root / "COMPLETE").read_text().strip(),
    }


def format_demo(result: dict) -> str:
    t = result["table"]
    cols = ["in_data", "selected", "lobass", "rho", "random_expected"]
    lines = [f"{'kind':<12}" + "".join(f"{c:>16}" for c in cols)]
    for kind in result["kinds"]:
        lines.append(f"{kind:<12}" + "".join(f"{t[c].get(kind, 0):>16}" for c in cols))
    m = result["manifest"]
    lines.append(
        f"selected: the default selection, {m['selection']['method']} "
        f"({result['selected']} of {m['counts']['records']} samples, in selected.jsonl)"
    )
    lines.append(
        f"lobass, rho: each score's plain top {result['fraction']:.0%} (--coverage none); "
        f"scoring ran at {m['throughput']['tokens_per_second']:,.0f} tokens/s through both "
        "models"
    )
    return "\n".join(lines)
