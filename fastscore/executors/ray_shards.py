"""``executor: ray``: score shards of the input on Ray workers, merge into one scores file.

The driver opens a session without engines (record format, model fingerprints, the
rendering that a fingerprint covers), counts the records, and cuts the index range into
shards; a JSONL shard is given the byte offset of its first record, so its worker reads
from there without parsing the records before it (Parquet shards read their row groups).
Each worker is a Ray actor that opens its own session (in-process engines on its GPU, or
a client of served endpoints) and keeps it for every shard it takes. A shard is written
to ``SCORES.shards/shard-NNNNN.jsonl`` (atomically) and marked done with a fingerprint of
the input, of the models' contents and of every option that changes a score; a restarted
run keeps only the shards done with the same fingerprint. The merged file is byte-for-byte
what the local executor writes, one line per record in input order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from typing import Any

import orjson

from fastscore.config import ScoreConfig, from_dict
from fastscore.data.ids import KnownDuplicates, duplicate_records
from fastscore.data.readers import count_records, jsonl_starts, read_record_range
from fastscore.errors import ConfigError, EngineError
from fastscore.executors.base import score_range
from fastscore.runs.manifest import build_manifest
from fastscore.runs.outputs import OutputPaths, partial_of
from fastscore.runs.resume import run_fingerprint, write_run_record
from fastscore.runs.stats import Stats
from fastscore.scoring.session import open_session

log = logging.getLogger(__name__)


def plan_shards(n_records: int, n_shards: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) index ranges covering 0..n_records, as even as can be."""
    n_shards = max(1, min(n_shards, n_records)) if n_records else 1
    size = math.ceil(n_records / n_shards) if n_records else 0
    return [(lo, min(lo + size, n_records)) for lo in range(0, max(n_records, 1), max(size, 1))]


class ShardWorker:
    """A Ray actor's body: a session (engines included) opened once, then one shard per
    ``score`` call."""

    def __init__(self, cfg_dict: dict, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.cfg = from_dict(ScoreConfig, cfg_dict)
        self._stack = contextlib.ExitStack()
        self.session = self._stack.enter_context(open_session(self.cfg))

    def score(self, lo: int, hi: int, *, start, out_path: str, duplicates: dict) -> dict:
        s = self.session
        s.stats = Stats()
        s.cfg = dataclasses.replace(self.cfg, output=out_path, progress=False)
        t0 = time.perf_counter()
        records = read_record_range(s.cfg.input, s.kind, lo=lo, hi=hi, start=start)
        score_range(s, records, partial_of(out_path), done=0, ids=KnownDuplicates(duplicates))
        os.replace(partial_of(out_path), out_path)
        seconds = s.stats.to_json()["seconds"]
        return {
            "range": [lo, hi],
            "counts": dict(s.stats.counts),
            "seconds": {**seconds, "shard": round(time.perf_counter() - t0, 4)},
            "engines": s.engine_info(),
            "node": os.uname().nodename,
        }

    def close(self) -> None:
        self._stack.close()


def run_scoring_ray(cfg: ScoreConfig, paths: OutputPaths | None = None) -> dict[str, Any]:
    try:
        import ray
    except ImportError as e:
        raise ConfigError("executor 'ray' needs Ray: pip install 'fastscore[ray]'") from e
    from fastscore.scoring.session import session_facts

    paths = paths or OutputPaths.of(cfg.output)
    t_start = time.perf_counter()
    stats = Stats()
    with open_session(cfg, start_engines=False, stats=stats) as s:  # no engines here
        facts = session_facts(s)
    kind, fmt = facts.kind, facts.fmt
    n_records = count_records(cfg.input, kind)
    fp = run_fingerprint(cfg, fmt, facts.models)
    paths.scores.parent.mkdir(parents=True, exist_ok=True)
    write_run_record(paths, cfg, fmt=fmt, models=facts.models)  # keeps the date for a restart
    with stats.timer("duplicate_ids"):  # found over the whole file, so shards agree with it
        duplicates = duplicate_records(cfg.input, kind, fmt)
    paths.shards.mkdir(parents=True, exist_ok=True)

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
        starts = jsonl_starts(cfg.input, [lo for lo, _ in shards]) if kind == "jsonl" else {}

        def submit(w, k: int):
            lo, hi = shards[k]
            mine = {i: f for i, f in duplicates.items() if lo <= i < hi}
            return w.score.remote(
                lo, hi, start=starts.get(lo), out_path=str(paths.shard(k)[0]), duplicates=mine
            )

        results: dict[int, dict] = {}
        for k, (lo, hi) in enumerate(shards):
            data, done = paths.shard(k)
            if done.exists() and data.exists():
                mark = orjson.loads(done.read_bytes())
                if mark.get("fingerprint") == fp and mark.get("range") == [lo, hi]:
                    results[k] = {**mark["result"], "reused": True}
                elif mark.get("fingerprint") != fp:
                    log.warning("ray: shard %d was made with other settings or models", k)
        todo = [k for k in range(len(shards)) if k not in results]
        log.info(
            "ray: %d records in %d shards (%d done before), %d workers",
            n_records,
            len(shards),
            len(results),
            min(n_workers, len(todo)),
        )

        t_scoring = time.perf_counter()
        engine_info = None
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
                    paths.shard(k)[1].write_bytes(
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
        n_lines = 0
        with open(paths.partial, "wb") as f:
            for k in range(len(shards)):
                data = paths.shard(k)[0].read_bytes()
                n_lines += data.count(b"\n")
                f.write(data)
        if n_lines != n_records:
            raise EngineError(f"ray: the shards hold {n_lines} lines for {n_records} records")
        from fastscore.scoring.features import finish_features, merge_features, remove_features

        parts = [paths.shard(k)[0] for k in range(len(shards))]
        for p in parts:
            finish_features(p)  # a shard's features partial -> its final file
        if not merge_features(parts, paths.scores):
            remove_features(paths.scores)
    for r in results.values():
        for key, v in r["counts"].items():
            stats.counts[key] += v
        if r.get("reused"):  # scored by an earlier run: no part of this run's pace
            stats.counts["resumed_after_records"] += r["counts"].get("records", 0)
            stats.counts["resumed_tokens"] += r["counts"].get("tokens_scored_samples", 0)
    engine_info = next(
        (results[k]["engines"] for k in sorted(results) if not results[k].get("reused")),
        results[min(results)]["engines"],
    )
    manifest = build_manifest(
        cfg,
        facts,
        engine_info=engine_info,
        stats=stats,
        scoring_seconds=scoring_seconds,
        total_seconds=time.perf_counter() - t_start,
    )
    manifest["executor"] = {
        "kind": "ray",
        "workers": n_workers,
        "shards": [{"index": k, **results[k]} for k in range(len(shards))],
        "reused_shards": sorted(k for k, r in results.items() if r.get("reused")),
    }
    return manifest
