"""``executor: ray``: score shards of the input on Ray workers, merge into one scores file.

The driver counts the records, fixes the record format once for the whole file, and cuts
the index range into shards. Each worker is a Ray actor that starts its own pair of
engines (in-process on its GPU, or a client of served endpoints) and keeps them for every
shard it takes. A shard is written to ``<output>.shards/shard-NNNNN.jsonl`` (atomically)
and marked done with a fingerprint of the input and of every option that changes a score;
a restarted run skips the shards already done with the same fingerprint. The merged file
is byte-for-byte what the local executor writes, one line per record in input order.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import orjson

from .config import ScoreConfig, from_dict
from .errors import ConfigError, EngineError
from .ids import KnownDuplicates, duplicate_records
from .io import count_records, detect_file_kind
from .resume import run_fingerprint, write_run_record
from .stats import Stats

log = logging.getLogger(__name__)


def plan_shards(n_records: int, n_shards: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) index ranges covering 0..n_records, as even as can be."""
    n_shards = max(1, min(n_shards, n_records)) if n_records else 1
    size = math.ceil(n_records / n_shards) if n_records else 0
    return [(lo, min(lo + size, n_records)) for lo in range(0, max(n_records, 1), max(size, 1))]


class ShardWorker:
    """A Ray actor's body: engines started once, then one shard per ``score`` call."""

    def __init__(self, cfg_dict: dict, threads: int):
        import torch

        from .pipeline import _setup_local, _setup_served, make_engine
        from .render import make_renderer

        torch.set_num_threads(max(1, threads))
        self.cfg = from_dict(ScoreConfig, cfg_dict)
        stats, self.engines = Stats(), []
        if self.cfg.engine.kind == "served":
            tok, max_length, self.models = _setup_served(self.cfg, stats, self.engines)
        else:
            tok, max_length, self.models = _setup_local(self.cfg, stats)
            self.engines.append(make_engine(self.cfg.base, self.cfg.engine, max_length + 1, "base"))
            self.engines.append(make_engine(self.cfg.ref, self.cfg.engine, max_length + 1, "ref"))
        self.renderer = make_renderer(self.cfg, tok, max_length)
        self.kind = detect_file_kind(self.cfg.input)

    def score(self, lo: int, hi: int, fmt: str, out_path: str, duplicates: dict) -> dict:
        from .pipeline import _score_stream

        stats = Stats()
        cfg = dataclasses.replace(self.cfg, output=out_path, progress=False)
        t0 = time.perf_counter()
        _score_stream(
            cfg,
            self.kind,
            self.renderer,
            *self.engines,
            stats,
            None,
            (lo, hi),
            fmt,
            ids=KnownDuplicates(duplicates),
        )
        os.replace(out_path + ".partial", out_path)
        return {
            "range": [lo, hi],
            "counts": dict(stats.counts),
            "seconds": {**stats.to_json()["seconds"], "shard": round(time.perf_counter() - t0, 4)},
            "engines": {"base": self.engines[0].info(), "ref": self.engines[1].info()},
            "models": self.models,
            "template": self.renderer.info(),
            "max_length": self.renderer.max_length,
            "node": os.uname().nodename,
        }

    def close(self) -> None:
        for e in self.engines:
            e.close()


def run_scoring_ray(cfg: ScoreConfig) -> dict[str, Any]:
    try:
        import ray
    except ImportError as e:
        raise ConfigError("executor 'ray' needs Ray: pip install 'fastscore[ray]'") from e
    from .pipeline import build_manifest, check_format_options, resolve_format

    t_start = time.perf_counter()
    stats = Stats()
    kind = detect_file_kind(cfg.input)
    n_records = count_records(cfg.input, kind)
    fmt = resolve_format(cfg.input, kind, cfg.format)
    check_format_options(cfg, fmt)
    fp = run_fingerprint(cfg, fmt)
    write_run_record(Path(cfg.output), cfg, fmt)  # keeps the date for a restarted run
    with stats.timer("duplicate_ids"):  # found over the whole file, so shards agree with it
        duplicates = duplicate_records(cfg.input, kind, fmt)
    out = Path(cfg.output)
    shard_dir = out.with_name(out.name + ".shards")
    shard_dir.mkdir(parents=True, exist_ok=True)

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=cfg.ray.address,
            ignore_reinit_error=True,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        cpus = ray.cluster_resources().get("CPU", 1)
        per_gpu = (
            cfg.ray.gpus_per_worker
            if cfg.ray.gpus_per_worker is not None
            else (1.0 if gpus else 0.0)
        )
        n_workers = cfg.ray.workers or max(
            1, int(gpus // per_gpu) if per_gpu else int(cpus // cfg.ray.cpus_per_worker)
        )
        shards = plan_shards(n_records, cfg.ray.shards or 4 * n_workers)

        def paths(k: int) -> tuple[Path, Path]:
            return shard_dir / f"shard-{k:05d}.jsonl", shard_dir / f"shard-{k:05d}.done.json"

        def submit(w, k: int):
            lo, hi = shards[k]
            mine = {i: f for i, f in duplicates.items() if lo <= i < hi}
            return w.score.remote(lo, hi, fmt, str(paths(k)[0]), mine)

        results: dict[int, dict] = {}
        for k, (lo, hi) in enumerate(shards):
            data, done = paths(k)
            if done.exists() and data.exists():
                mark = orjson.loads(done.read_bytes())
                if mark.get("fingerprint") == fp and mark.get("range") == [lo, hi]:
                    results[k] = {**mark["result"], "reused": True}
        todo = [k for k in range(len(shards)) if k not in results]
        log.info(
            "ray: %d records in %d shards (%d done before), %d workers",
            n_records,
            len(shards),
            len(results),
            min(n_workers, len(todo)),
        )

        t_scoring = time.perf_counter()
        if todo:
            actor = ray.remote(ShardWorker).options(
                num_cpus=cfg.ray.cpus_per_worker, num_gpus=per_gpu
            )
            cfg_dict = dataclasses.asdict(cfg)
            workers = [
                actor.remote(cfg_dict, int(cfg.ray.cpus_per_worker))
                for _ in range(min(n_workers, len(todo)))
            ]
            pending, queue = {}, list(todo)
            try:
                for w in workers:  # one shard each to start, then the next as one finishes
                    if queue:
                        k = queue.pop(0)
                        pending[submit(w, k)] = (k, w)
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    k, w = pending.pop(ready[0])
                    try:
                        result = ray.get(ready[0])
                    except ray.exceptions.RayError as e:
                        raise EngineError(f"ray: shard {k} {shards[k]} failed: {e}") from e
                    results[k] = result
                    paths(k)[1].write_bytes(
                        orjson.dumps(
                            {"fingerprint": fp, "range": list(shards[k]), "result": result}
                        )
                    )
                    if queue:
                        k = queue.pop(0)
                        pending[submit(w, k)] = (k, w)
            finally:
                for w in workers:
                    try:
                        ray.get(w.close.remote(), timeout=120)
                    except Exception as e:  # a dead actor cannot close; report, go on
                        log.warning("ray: a worker did not close cleanly: %s", e)
                    ray.kill(w)
        scoring_seconds = time.perf_counter() - t_scoring
    finally:
        if started_here:
            ray.shutdown()

    with stats.timer("merge"):
        partial = out.with_name(out.name + ".partial")
        n_lines = 0
        with open(partial, "wb") as f:
            for k in range(len(shards)):
                data = paths(k)[0].read_bytes()
                n_lines += data.count(b"\n")
                f.write(data)
        if n_lines != n_records:
            raise EngineError(f"ray: the shards hold {n_lines} lines for {n_records} records")
    for r in results.values():
        for key, v in r["counts"].items():
            stats.counts[key] += v
    first = results[min(results)]  # every worker set up the same models and template
    manifest = build_manifest(
        cfg,
        kind,
        first["models"],
        first["engines"],
        first["template"],
        first["max_length"],
        stats,
        scoring_seconds,
        time.perf_counter() - t_start,
        fmt,
    )
    manifest["executor"] = {
        "kind": "ray",
        "workers": n_workers,
        "shards": [{"index": k, **results[k]} for k in range(len(shards))],
        "reused_shards": sorted(k for k, r in results.items() if r.get("reused")),
    }
    return manifest
