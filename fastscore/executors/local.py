"""``score`` and ``--dry-run``: the entry points that turn an input file into scores.

A run opens a session (``scoring.session``: tokenizer, renderer, format, models,
engines), streams the records through it into ``SCORES.partial`` (``executors.base``),
then writes the manifest and puts the scores in place (``runs.manifest``). ``executor:
ray`` scores shards on Ray workers instead (``executors.ray_shards``) and merges them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from fastscore.config import ScoreConfig, api_config, validate_score
from fastscore.data.ids import IdRegistry, flag_duplicate_ids
from fastscore.data.readers import count_records, jsonl_starts, read_record_range, read_records
from fastscore.data.source import Source, find_source
from fastscore.errors import ConfigError
from fastscore.executors.base import by_record, require_scorable, score_range
from fastscore.records import OK, RenderedSample
from fastscore.rendering.renderer import today
from fastscore.runs.claims import Claims
from fastscore.runs.manifest import build_manifest, finish
from fastscore.runs.outputs import OutputPaths
from fastscore.runs.problems import SHOWN, Problem, located, nothing_to_score
from fastscore.runs.resume import prepare_resume, read_run_record, write_run_record
from fastscore.runs.stats import Stats
from fastscore.scoring import reference
from fastscore.scoring.session import Session, open_session, session_facts
from fastscore.scoring.stream import alone_sample
from fastscore.selection.table import ScoresTable
from fastscore.storage.locks import raise_if_lease_lost

log = logging.getLogger(__name__)


def score(config: ScoreConfig | None = None, /, **fields: Any) -> dict[str, Any]:
    """Score every record of ``config.input`` into ``config.output``; returns the manifest.

    Fields may be given as keywords instead of a config: ``score(input=..., base=...,
    ref=..., output=...)``. The manifest is also written beside the output as
    ``<output stem>.manifest.json``.
    """
    cfg = api_config(ScoreConfig, config, fields)
    validate_score(cfg)
    return score_file(cfg)[0]


def resolve_date(cfg: ScoreConfig) -> str:
    """The date templates render with: the one given, else the one an interrupted run of
    this output started with (``--resume``, and Ray, which always keeps its finished
    shards), else today (UTC)."""
    if cfg.date:
        return str(cfg.date)
    if cfg.resume or cfg.executor == "ray":
        record = read_run_record(OutputPaths.of(cfg.output))
        if record and record.get("options", {}).get("date"):
            return record["options"]["date"]
    return today()


def score_file(
    cfg: ScoreConfig, manifest_path: str | Path | None = None, engines: tuple | None = None
) -> tuple[dict[str, Any], ScoresTable]:
    """Score with the configured executor, then write the manifest (by default
    ``<output stem>.manifest.json``) and move the scores into place; returns the manifest
    and the scores table (read once, for the length diagnostic and whoever selects next).
    ``engines``: see ``run_scoring``."""
    paths = OutputPaths.of(cfg.output, manifest_path)
    # an input that cannot be read says so before any model is loaded (its facts are
    # found here, once for the run); so does an output that is an input, cannot be
    # written or is another run's
    source = find_source(cfg.input)
    with score_claims(cfg, paths).settled():
        cfg = dataclasses.replace(cfg, date=resolve_date(cfg))
        if cfg.executor == "ray":
            if getattr(cfg.input, "in_memory", False):
                raise ConfigError(
                    f"executor ray: {cfg.input} is in this process's memory, which Ray's "
                    "workers cannot read; write it to a file or a store they can "
                    "(Dataset.to_parquet) and score that"
                )
            from fastscore.executors.ray_shards import run_scoring_ray

            manifest = run_scoring_ray(cfg, paths, source)
        else:
            manifest = run_scoring(cfg, paths, engines, source)
        t0 = time.perf_counter()
        table = ScoresTable.read(paths.partial, fmt=manifest["input"]["format"])
        # Spearman(score, response length) per score: the paper's reason for normalising
        manifest["length_spearman"] = table.length_correlations()
        manifest["seconds"]["length_spearman"] = round(time.perf_counter() - t0, 4)
        manifest["reference"] = reference.scoring_block(
            cfg.ref,
            manifest["template"],
            manifest["max_length"],
            table.values("lobass")[table.ok] if "lobass" in table.columns else None,
        )
        for said in manifest["reference"]["warnings"]:
            log.warning("%s", said)
        problems = located(cfg.input, manifest["input"]["kind"], table.problems)
        manifest["problems"] = [p.to_json() for p in problems]
        by_status = manifest["counts"]["by_status"]
        if not by_status.get(OK) and not cfg.allow_empty:
            # (the partial stays: --resume --allow-empty puts it in place as it is)
            raise nothing_to_score(cfg.input, by_status, problems, kept=paths.url(paths.partial))
        raise_if_lease_lost()
        manifest["written"] = finish(paths, manifest)
    table.path = paths.scores
    return manifest, table


def score_claims(cfg: ScoreConfig, paths: OutputPaths, command: str = "score") -> Claims:
    """What a scoring run reads (the input, the models, a tokenizer, a template file) and
    writes (the scores and every file beside them; the scores held for the run's life)."""
    c = Claims(command)
    for role, path in (
        ("input", cfg.input),
        ("base model", cfg.base),
        ("reference model", cfg.ref),
        ("tokenizer", cfg.tokenizer),
        ("chat template", cfg.chat_template),
    ):
        c.read(role, path)
    for role, path in paths.files():
        # the manifest too: a.jsonl and a.parquet share a.manifest.json and a.features.npy
        held = role in ("scores output", "scores manifest")
        c.write(role, path, lock=held, tree=role == "Ray shards")
    return c


def run_scoring(
    cfg: ScoreConfig,
    paths: OutputPaths | None = None,
    engines: tuple | None = None,
    source: Source | None = None,
) -> dict[str, Any]:
    """Score ``cfg.input`` into ``SCORES.partial``; returns the manifest (not written).

    ``engines``: a (base, ref) pair already started, which is then left running (for
    benchmarks and tests that score several inputs); by default both are started here
    and shut down at the end.
    """
    from tqdm import tqdm

    paths = paths or OutputPaths.of(cfg.output)
    stats = Stats()
    t_start = time.perf_counter()
    with open_session(cfg, engines=engines, start_engines=False, stats=stats, source=source) as s:
        paths.scores.parent.mkdir(parents=True, exist_ok=True)
        done, ids = 0, IdRegistry()
        facts = session_facts(s)
        resumed = prepare_resume(paths, cfg, facts) if cfg.resume else None
        if resumed is None:  # a fresh start
            if not cfg.allow_empty:  # before the engines start and anything is written
                require_scorable(s)
            paths.drop_partials()  # an earlier run's, which this one's must not extend
            write_run_record(paths, cfg, facts)
        else:
            done, counts, ids = resumed
            stats.counts.update(counts)
            stats.counts["resumed_after_records"] = done
            stats.counts["resumed_tokens"] = counts["tokens_scored_samples"]
        # (a store's JSONL would be read whole for the count: the bar goes without a total)
        cheap = s.kind != "jsonl" or s.source.local
        total = s.records
        if total is None and cfg.progress and cheap:
            total = count_records(cfg.input, s.kind)
        s.start_engines()
        bar = tqdm(
            total=total, initial=done, unit="sample", disable=not cfg.progress, dynamic_ncols=True
        )
        t_scoring = time.perf_counter()

        def progress(n: int) -> None:
            bar.update(n)
            new = stats.counts["tokens_scored_samples"] - stats.counts["resumed_tokens"]
            bar.set_postfix(tok_s=f"{new / max(time.perf_counter() - t_scoring, 1e-9):,.0f}")

        if done:  # on from the first record not yet scored, without parsing those before
            start = jsonl_starts(cfg.input, [done]).get(done) if s.kind == "jsonl" else None
            records = read_record_range(cfg.input, s.kind, lo=done, hi=2**62, start=start)
        else:
            records = read_records(cfg.input, s.kind)
        try:
            score_range(
                s,
                records,
                paths.partial,
                done=done,
                ids=ids,
                on_chunk=progress,
                flushed=paths.sync,
            )
        finally:
            bar.close()
        scoring_seconds = time.perf_counter() - t_scoring
        engine_info = s.engine_info()
    return build_manifest(
        cfg,
        facts,
        engine_info=engine_info,
        stats=stats,
        scoring_seconds=scoring_seconds,
        total_seconds=time.perf_counter() - t_start,
    )


# what a dry run times: the first scorable samples, at most this many and this many tokens
# (the estimate needs a rate, not a run: 277 of 300 records timed once cost more than the run)
DRY_RUN_RECORDS = 32
DRY_RUN_TOKENS = 8192


def dry_run(
    config: ScoreConfig | None = None,
    /,
    sample_tokens: int = DRY_RUN_TOKENS,
    sample_records: int = DRY_RUN_RECORDS,
    **fields: Any,
) -> dict[str, Any]:
    """Count the records, their statuses and tokens (everything is read and rendered, so
    the counts are exact), then time the engines on the first scorable samples (at most
    ``sample_records`` of them and ``sample_tokens`` tokens) and estimate the whole run.
    Nothing is written."""
    cfg = api_config(ScoreConfig, config, fields)
    if not cfg.output:
        cfg = dataclasses.replace(cfg, output=Path(str(cfg.input or ".")).with_suffix(".dry"))
    validate_score(cfg)
    stats = Stats()
    t_start = time.perf_counter()
    with open_session(cfg, start_engines=False, stats=stats) as s:
        samples = flag_duplicate_ids(_samples(s), IdRegistry())
        counts: Counter = Counter()
        sample: list[RenderedSample] = []
        sample_tok = sampled = 0  # (a pair's two sides are one record)
        problems: list[Problem] = []
        with stats.timer("read_render"):
            for sides in by_record(s.renderer.render_all(samples)):
                bad = next((r for r in sides if r.status != OK), None)
                counts[f"status:{bad.status if bad else OK}"] += 1
                if bad is not None:
                    if len(problems) < SHOWN:
                        problems.append(Problem(bad.index, bad.id, bad.status, bad.reason))
                    continue
                for r in sides:
                    counts["tokens"] += r.n_tokens
                    counts["response_tokens"] += r.n_response_tokens
                if sample_tok < sample_tokens and sampled < sample_records:
                    sample += sides
                    sample_tok += sum(r.n_tokens for r in sides)
                    sampled += 1
        base, ref = s.engines
        timed = 0.0
        if sample:
            bos = s.tokenizer.bos_token_id
            passes = [(base, sample), (ref, sample)]
            if cfg.ifd:
                alone = [a for a in (alone_sample(r, bos) for r in sample) if a.n_response_tokens]
                passes.append((base, alone))
            for engine, items in passes:  # a warm-up on one sample: first calls compile
                engine.response_logprobs(items[:1])
            t0 = time.perf_counter()
            for engine, items in passes:
                engine.response_logprobs(items)
            timed = time.perf_counter() - t0
        fmt, engine_kind = s.fmt, s.engine_info()["base"]["engine"]
    rate = sample_tok / timed if timed > 0 else None
    by_status = {k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if ":" in k}
    return {
        "input": cfg.input.shown,
        "problems": [p.to_json() for p in located(cfg.input, s.kind, problems)],
        "format": fmt,
        "engine": engine_kind,
        "records": sum(by_status.values()),
        "by_status": by_status,
        "tokens": counts["tokens"],
        "response_tokens": counts["response_tokens"],
        "sample": {
            "records": sampled,
            "tokens": sample_tok,
            "seconds": round(timed, 4),
            "tokens_per_second": None if rate is None else round(rate, 1),
        },
        "seconds": {k: round(v, 3) for k, v in stats.seconds.items()},
        # loading the tokenizers and starting the engines, then every scorable token at the
        # sample's pace through both models (and the ifd pass); reading and rendering
        # overlap the engines in a run
        "estimate_seconds": None
        if rate is None
        else round(
            sum(stats.seconds.get(k, 0.0) for k in ("load_tokenizers", "engine_start"))
            + counts["tokens"] / rate,
            1,
        ),
        "dry_run_seconds": round(time.perf_counter() - t_start, 2),
    }


def _samples(s: Session):
    from fastscore.data.formats import to_samples

    return to_samples(read_records(s.cfg.input, s.kind), s.fmt)
