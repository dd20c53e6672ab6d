"""``executor: ray``: score shards of the input on Ray workers, merge into one scores file.

The driver opens a session without engines (record format, model fingerprints, the
rendering that a fingerprint covers) and cuts the input into shards without reading it:
a JSONL file into byte ranges, a Parquet file into row ranges. Ray tasks survey the
shards side by side (records, lines, id hashes: ``data.ranges``) and the driver adds the
surveys up into each shard's first record index and byte offset and the duplicate ids
across shards, so a worker reads only its shard and flags the same duplicates a
whole-file run does.
Each worker is a Ray actor that opens its own session (in-process engines on its GPU, or
a client of served endpoints) and keeps it for every shard it takes. A shard is written
to ``SCORES.shards/shard-NNNNN.jsonl`` (atomically) and marked done with a fingerprint of
the input, of the models' contents and of every option that changes a score; a restarted
run keeps only the shards done with the same fingerprint. The merged file holds what the
local executor writes, one line per record in input order.

Lost workers are survived with Ray's own mechanisms: the actors restart (their
constructor opens the session again, on a live node) and a shard's task is retried on the
restarted actor, up to ``--max-failures`` times. A retried shard continues from the lines
its lost attempt had flushed (``shard-NNNNN.jsonl.partial``, as a local ``--resume``
does), so a loss repeats at most the chunk in flight. Each attempt records where it ran
(``shard-NNNNN.attempt.json``: node, process, attempt number, the attempts lost before),
which names the node in an error and counts the losses in the manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import orjson

from fastscore.config import ScoreConfig, from_dict
from fastscore.data import ranges
from fastscore.data.ids import KnownDuplicates, duplicate_records
from fastscore.data.readers import count_records, read_record_range, skip_jsonl
from fastscore.data.source import Source
from fastscore.errors import ConfigError, EngineError
from fastscore.executors.base import require_scorable, score_range
from fastscore.runs.manifest import build_manifest
from fastscore.runs.outputs import OutputPaths, partial_of
from fastscore.runs.resume import kept_lines, run_fingerprint, write_run_record
from fastscore.runs.stats import Stats
from fastscore.scoring.features import features_partial_path, features_path, finish_features
from fastscore.scoring.session import open_session
from fastscore.storage.staging import Store

log = logging.getLogger(__name__)


class ShardGaveUp(EngineError):
    """A shard that lost its worker more often than ``--max-failures`` allows."""


def plan_shards(n_records: int, n_shards: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) index ranges covering 0..n_records, as even as can be."""
    n_shards = max(1, min(n_shards, n_records)) if n_records else 1
    size = math.ceil(n_records / n_shards) if n_records else 0
    return [(lo, min(lo + size, n_records)) for lo in range(0, max(n_records, 1), max(size, 1))]


def attempt_path(shard_data: str | Path) -> Path:
    p = Path(shard_data)
    return p.with_name(p.name.removesuffix(".jsonl") + ".attempt.json")


def read_attempt(store: Store, shard_data: str | Path) -> dict | None:
    p = attempt_path(shard_data)
    try:
        return orjson.loads(p.read_bytes()) if store.pull(p) else None
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None


def _write_attempt(store: Store, shard_data: str | Path, attempt: dict) -> None:
    p = attempt_path(shard_data)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(orjson.dumps(attempt))
    os.replace(tmp, p)
    store.push(p)


def clear_attempt(store: Store, shard_data: str | Path) -> None:
    """What an earlier run left of a shard that is scored again: its partial, its
    features' partial and its attempt record (its lines may be of other settings)."""
    for p in (partial_of(shard_data), features_partial_path(shard_data), attempt_path(shard_data)):
        store.remove(p)


class ShardWorker:
    """A Ray actor's body: a session (engines included) opened once, then one shard per
    ``score`` call. Restarted by Ray after its process is lost; the retried call continues
    the shard from its partial."""

    def __init__(self, cfg_dict: dict, threads: int, source: Source):
        import torch

        torch.set_num_threads(max(1, threads))
        self.cfg = from_dict(ScoreConfig, cfg_dict)
        self._stack = contextlib.ExitStack()
        # the input's facts as the driver found them (not looked up again per worker)
        opened = open_session(self.cfg, check_folds=False, source=source)
        self.session = self._stack.enter_context(opened)

    def score(self, lo: int, hi: int, *, start, shard: str, duplicates: dict) -> dict:
        """Shard ``[lo, hi)`` into ``shard`` (its scores' path or store URL)."""
        s = self.session
        s.stats = Stats()
        s.cfg = dataclasses.replace(self.cfg, output=shard, progress=False)
        t0 = time.perf_counter()
        sp = OutputPaths.of(shard)  # in a store: this worker's own staging copy
        store, out_path, partial = sp.store, sp.scores, sp.partial
        before = read_attempt(store, out_path)  # an attempt of this shard that was lost
        done, kept = 0, None
        if before is not None and sp.restore():
            done, kept, _ = kept_lines(partial, first=lo)
        lost = []
        if before is not None:
            # from its last flushed line (or its start) to now: the work this attempt does
            # again, and the restart
            since = store.last_synced(partial) or before["started"]
            loss = {**_where(before), "seconds_lost": round(time.time() - since, 3)}
            lost = [*before.get("lost", []), loss]
            if len(lost) > self.cfg.ray.max_failures:
                raise ShardGaveUp(
                    f"lost its worker more than --max-failures {self.cfg.ray.max_failures} times"
                )
        _write_attempt(
            store,
            out_path,
            {"attempt": len(lost) + 1, **_where(None), "started": time.time(), "lost": lost},
        )
        if done and s.kind == "jsonl" and start is not None:
            start = skip_jsonl(s.cfg.input, start, done)
        records = read_record_range(s.cfg.input, s.kind, lo=lo + done, hi=hi, start=start)
        score_range(
            s,
            records,
            partial,
            done=done,
            ids=KnownDuplicates(duplicates),
            flushed=sp.sync,
        )
        os.replace(partial, out_path)
        # the shard's scores, then its features, each one complete object; the driver
        # marks it done after
        store.push(out_path)
        if finish_features(out_path):
            store.push(sp.features)
        sp.drop_partials()
        if kept:
            s.stats.counts.update(kept)  # the lost attempt's lines count as this shard's
        seconds = s.stats.to_json()["seconds"]
        return {
            "range": [lo, hi],
            "counts": dict(s.stats.counts),
            "seconds": {**seconds, "shard": round(time.perf_counter() - t0, 4)},
            "engines": s.engine_info(),
            **_where(None),
            "attempts": len(lost) + 1,
            "lost": lost,
            "kept_from_lost_attempts": done,
        }

    def close(self) -> None:
        self._stack.close()


def _where(attempt: dict | None) -> dict:
    """Where an attempt ran (``None``: this one): the host, Ray's id of the node (several
    nodes can share a host) and the process."""
    if attempt is None:
        import ray

        node_id = ray.get_runtime_context().get_node_id()
        return {"node": os.uname().nodename, "ray_node": node_id, "pid": os.getpid()}
    return {k: attempt.get(k) for k in ("node", "ray_node", "pid")}


def _plan(
    ray, cfg: ScoreConfig, source: Source, fmt: str, *, n_shards: int, tasks: int, records=None
):
    """The shards ([lo, hi) record ranges), where each JSONL shard's first record starts,
    and the duplicate ids ({index: first index}). JSONL byte ranges and Parquet row ranges
    are surveyed by ``tasks`` Ray tasks side by side (``data.ranges``), each taking a run
    of consecutive parts (a task is a process to start: one per shard costs more than the
    reading), so the driver reads no more than a Parquet footer; a JSON array or a
    datasets directory is read here whole. ``records``: the count, when the session made
    it already (a cross-fitted reference's check)."""
    kind = source.kind
    survey = ray.remote(num_cpus=0)(_survey_parts)  # reading, beside the workers' engines
    if kind == "jsonl":
        parts = ranges.byte_ranges(source.size, n_shards)
    elif kind == "parquet":
        n = records if records is not None else count_records(cfg.input, kind)
        parts = plan_shards(n, n_shards)
    else:
        n = records if records is not None else count_records(cfg.input, kind)
        return plan_shards(n, n_shards), {}, duplicate_records(cfg.input, kind, fmt)
    tasks = max(1, min(tasks, len(parts)))
    runs = [parts[len(parts) * t // tasks : len(parts) * (t + 1) // tasks] for t in range(tasks)]
    surveys = ray.get([survey.remote(cfg.input, kind, fmt, run) for run in runs])
    p = ranges.plan([one for run in surveys for one in run])
    return p.ranges, (p.starts if kind == "jsonl" else {}), p.duplicates


def _survey_parts(path: str, kind: str, fmt: str, parts) -> list[ranges.PartSurvey]:
    return [_survey(path, kind, fmt, lo, hi) for lo, hi in parts]


def _survey(path: str, kind: str, fmt: str, lo: int, hi: int) -> ranges.PartSurvey:
    if kind == "jsonl":
        return ranges.survey_jsonl(path, fmt, lo, hi)
    return ranges.survey_rows(path, kind, fmt, lo, hi)


def _losses_so_far(paths: OutputPaths, pending_shards) -> int:
    """Workers lost by the shards in flight (their attempt records say so)."""
    return sum(
        len((read_attempt(paths.store, paths.shard(k)[0]) or {}).get("lost", []))
        for k in pending_shards
    )


def run_scoring_ray(
    cfg: ScoreConfig, paths: OutputPaths | None = None, source: Source | None = None
) -> dict[str, Any]:
    """Score ``cfg.input`` in shards on Ray workers into ``SCORES.partial``: plan the shards,
    keep those an earlier run finished, schedule the rest (``Scheduler``: a lost worker
    costs a retry of its shard, within the failure bounds), merge them in input order;
    returns the manifest (not written)."""
    try:
        import ray
    except ImportError as e:
        raise ConfigError("executor 'ray' needs Ray: pip install 'fastscore[ray]'") from e
    from fastscore.scoring.session import session_facts

    paths = paths or OutputPaths.of(cfg.output)
    t_start = time.perf_counter()
    stats = Stats()
    with open_session(cfg, start_engines=False, stats=stats, source=source) as s:  # no engines
        facts, records = session_facts(s), s.records
        if not cfg.allow_empty:
            require_scorable(s)
    fmt = facts.fmt
    # a shard of other renderings (an edited template, another TRL) is never reused
    fp = run_fingerprint(cfg, facts)
    paths.scores.parent.mkdir(parents=True, exist_ok=True)
    write_run_record(paths, cfg, facts)  # keeps the date for a restart
    paths.shards.mkdir(parents=True, exist_ok=True)

    started_here = _connect(ray, cfg)
    try:
        n_workers, per_gpu, cpus = _workers(ray, cfg)
        with stats.timer("plan"):
            shards, starts, duplicates = _plan(
                ray,
                cfg,
                facts.source,
                fmt,
                n_shards=cfg.ray.shards or 4 * n_workers,
                tasks=int(cpus),
                records=records,
            )
        results = _reused(paths, shards, fp)
        todo = [k for k in range(len(shards)) if k not in results]
        log.info(
            "ray: %d records in %d shards (%d done before), %d workers",
            shards[-1][1],
            len(shards),
            len(results),
            min(n_workers, len(todo)),
        )
        t_scoring = time.perf_counter()
        scheduler = Scheduler(
            ray, cfg, paths, shards, starts, duplicates, fp, results, source=facts.source
        )
        if todo:
            scheduler.run(todo, min(n_workers, len(todo)), per_gpu, n_workers)
        scoring_seconds = time.perf_counter() - t_scoring
    finally:
        if started_here:
            ray.shutdown()
    with stats.timer("merge"):
        _merge(paths, shards)
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
    fresh = [r for r in results.values() if not r.get("reused")]
    manifest["executor"] = {
        "kind": "ray",
        "workers": n_workers,
        "shards": [{"index": k, **results[k]} for k in range(len(shards))],
        "reused_shards": sorted(k for k, r in results.items() if r.get("reused")),
        # what lost workers cost: each loss is a retry of the shard it held
        "workers_lost": sum(len(r.get("lost", [])) for r in fresh),
        # of them, workers Ray could not restart, started again by the driver
        "workers_replaced": sum(scheduler.replaced.values()),
        "shards_retried": sum(1 for r in fresh if r.get("lost")),
        "records_kept_from_lost_attempts": sum(r.get("kept_from_lost_attempts", 0) for r in fresh),
        "seconds_lost": round(sum(x["seconds_lost"] for r in fresh for x in r.get("lost", [])), 3),
    }
    return manifest


def _connect(ray, cfg: ScoreConfig) -> bool:
    """Ray started (or joined at ``--ray-address``) unless it is already; whether it was
    started here (and is then shut down here)."""
    if ray.is_initialized():
        return False
    try:
        ray.init(
            address=cfg.ray.address,
            ignore_reinit_error=True,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    except (ConnectionError, RuntimeError) as e:
        if "InvalidAuthToken" in str(e) or "AuthenticationError" in repr(e.__cause__):
            raise ConfigError(
                f"ray: the cluster at {cfg.ray.address or os.environ.get('RAY_ADDRESS')} "
                "wants token authentication: set RAY_AUTH_MODE=token and its token "
                "(RAY_AUTH_TOKEN, or ~/.ray/auth_token)"
            ) from e
        raise
    return True


def _workers(ray, cfg: ScoreConfig) -> tuple[int, float, float]:
    """(workers, GPUs per worker, the cluster's CPUs): one worker per GPU when the cluster
    has GPUs, else per ``--cpus-per-worker`` CPUs, unless ``--workers`` says."""
    gpus = ray.cluster_resources().get("GPU", 0)
    cpus = ray.cluster_resources().get("CPU", 1)
    per_gpu = (
        cfg.ray.gpus_per_worker if cfg.ray.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    )
    n_workers = cfg.ray.workers or max(
        1, int(gpus // per_gpu) if per_gpu else int(cpus // cfg.ray.cpus_per_worker)
    )
    return n_workers, per_gpu, cpus


def _reused(paths: OutputPaths, shards, fp: str) -> dict[int, dict]:
    """The shards an earlier run finished with this run's fingerprint and range, by index;
    any other shard's attempt record and done mark removed."""
    results: dict[int, dict] = {}
    for k, (lo, hi) in enumerate(shards):
        data, done = paths.shard(k)
        if paths.store.pull(done) and paths.store.exists(data):
            mark = orjson.loads(done.read_bytes())
            if mark.get("fingerprint") == fp and mark.get("range") == [lo, hi]:
                results[k] = {**mark["result"], "reused": True}
                continue
            if mark.get("fingerprint") != fp:
                log.warning("ray: shard %d was made with other settings or models", k)
        clear_attempt(paths.store, data)
        # a done mark of other settings would outlive this run's data if it died
        # before marking the shard: a rerun would take that data for the mark's
        paths.store.remove(done)
    return results


class Scheduler:
    """The shards to do on a pool of workers, one shard each at a time, the next as one
    finishes; each result marked done beside its shard's data. Ray restarts a lost worker
    and retries its shard there (``max_restarts``); a worker Ray could not restart is
    replaced here. The run stops when a shard fails on its own, when one shard lost more
    workers than ``--max-failures``, or when the run lost more than
    ``--max-run-failures`` (counted from the attempt records the workers leave).

    Not ``ray.util.ActorPool`` (Ray 2.60): its ``get_next_unordered`` raises a dead
    worker's ``ActorDiedError`` without saying which submitted shard it was running (the
    shard to resubmit and to count the loss against), and it drops the dead worker
    without replacing it, so the pool shrinks with every loss Ray could not restart."""

    def __init__(self, ray, cfg, paths, shards, starts, duplicates, fp, results, *, source):
        self.ray, self.cfg, self.paths, self.source = ray, cfg, paths, source
        self.shards, self.starts, self.duplicates, self.fp = shards, starts, duplicates, fp
        self.results = results
        self.replaced: dict[int, int] = {}  # workers Ray could not restart, by shard

    def run(self, todo: list[int], n: int, per_gpu: float, n_workers: int) -> None:
        ray, cfg = self.ray, self.cfg
        self.max_run_failures = (
            cfg.ray.max_run_failures
            if cfg.ray.max_run_failures is not None
            else cfg.ray.max_failures * n_workers
        )
        # Ray restarts a lost worker (its constructor runs again, on a live node) and
        # retries the shard it had on the restarted one: the bounds are ours
        self.actor = ray.remote(ShardWorker).options(
            num_cpus=cfg.ray.cpus_per_worker,
            num_gpus=per_gpu,
            max_restarts=self.max_run_failures,
            # retried until the restarted worker runs it: an unreachable worker is one
            # loss however often Ray tries it meanwhile; the worker counts the attempts
            max_task_retries=-1,
        )
        self.cfg_dict = dataclasses.asdict(cfg)
        workers = [self._worker() for _ in range(n)]
        pending, queue = {}, list(todo)
        try:
            for w in workers:  # one shard each to start, then the next as one finishes
                if queue:
                    k = queue.pop(0)
                    pending[self._submit(w, k)] = (k, w)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
                self._check_losses([k for k, _ in pending.values()])
                if not ready:
                    continue
                k, w = pending.pop(ready[0])
                result = self._result(ready[0], k, w)
                if result is None:  # its worker is gone for good: another takes the shard
                    w2 = self._worker()
                    workers[workers.index(w)] = w2
                    pending[self._submit(w2, k)] = (k, w2)
                    continue
                self._done(k, result)
                if queue:
                    k = queue.pop(0)
                    pending[self._submit(w, k)] = (k, w)
        finally:
            for w in workers:
                try:
                    ray.get(w.close.remote(), timeout=120)
                except Exception as e:  # a dead actor cannot close; report, go on
                    log.warning("ray: a worker did not close cleanly: %s", e)
                ray.kill(w, no_restart=True)

    def _worker(self):
        return self.actor.remote(self.cfg_dict, int(self.cfg.ray.cpus_per_worker), self.source)

    def _submit(self, w, k: int):
        lo, hi = self.shards[k]
        mine = {i: f for i, f in self.duplicates.items() if lo <= i < hi}
        shard = self.paths.url(self.paths.shard(k)[0])
        return w.score.remote(lo, hi, start=self.starts.get(lo), shard=shard, duplicates=mine)

    def _check_losses(self, in_flight: list[int]) -> None:
        """Workers lost so far: by the shards in flight (their attempt records), by those
        done in this run, and those replaced here; over the bound, the run stops."""
        lost = (
            _losses_so_far(self.paths, in_flight)
            + sum(len(r.get("lost", [])) for r in self.results.values() if not r.get("reused"))
            + sum(self.replaced.values())
        )
        if lost > self.max_run_failures:
            raise self._stopped(
                in_flight[0],
                f"was in flight when the run had lost {lost} workers "
                f"(--max-run-failures {self.max_run_failures})",
                None,
            )

    def _result(self, ref, k: int, w) -> dict | None:
        """A finished shard's result; None when its worker is gone and Ray could not
        restart it (it is killed here, and counted); a shard's own error stops the run."""
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # the shard's own error: no retry
            if isinstance(e.cause, ShardGaveUp):
                raise self._stopped(k, str(e.cause), None) from e
            raise self._stopped(k, "failed", e.cause or e) from e
        except ray.exceptions.RayError as e:  # a worker Ray did not restart
            self.replaced[k] = self.replaced.get(k, 0) + 1
            if self.replaced[k] > self.cfg.ray.max_failures:
                raise self._stopped(
                    k,
                    f"lost its worker more than --max-failures {self.cfg.ray.max_failures} times",
                    e,
                ) from e
            log.warning("ray: shard %d lost its worker for good; starting another", k)
            with contextlib.suppress(Exception):
                ray.kill(w, no_restart=True)
            return None

    def _done(self, k: int, result: dict) -> None:
        """The shard's result kept, and its done mark put after its data."""
        paths = self.paths
        self.results[k] = result
        paths.store.remove(attempt_path(paths.shard(k)[0]))
        mark = {"fingerprint": self.fp, "range": list(self.shards[k]), "result": result}
        paths.shard(k)[1].write_bytes(orjson.dumps(mark))
        paths.store.push(paths.shard(k)[1])

    def _stopped(self, k: int, why: str, cause: BaseException | None) -> EngineError:
        """The run stops: which shard, where its last attempt ran, why, what is kept."""
        paths = self.paths
        attempt = read_attempt(paths.store, paths.shard(k)[0]) or {}
        text = str(cause).strip() if cause is not None else ""
        return EngineError(
            f"ray: shard {k} {self.shards[k]} {why}; its last attempt ran on node "
            f"{attempt.get('node', '?')} (pid {attempt.get('pid', '?')})"
            + (f": {text.splitlines()[0]}" if text else "")
            + f". {len(self.results)} of {len(self.shards)} shards are done and kept in "
            f"{paths.url(paths.shards).shown}; run again to score the rest"
        )


def _merge(paths: OutputPaths, shards) -> None:
    """The shards' scores into the partial in input order (every line accounted for), and
    their coverage features into one file beside the scores."""
    from fastscore.scoring.features import merge_features, remove_features

    n_records = shards[-1][1]
    n_lines = 0
    with open(paths.partial, "wb") as f:
        for k in range(len(shards)):
            if not paths.store.pull(paths.shard(k)[0]):
                raise EngineError(f"ray: shard {k} is marked done but its scores are gone")
            data = paths.shard(k)[0].read_bytes()
            n_lines += data.count(b"\n")
            f.write(data)
    if n_lines != n_records:
        raise EngineError(f"ray: the shards hold {n_lines} lines for {n_records} records")
    parts = [paths.shard(k)[0] for k in range(len(shards))]
    for p in parts:
        # a shard's features (an earlier version left its partial for the driver)
        if not paths.store.pull(features_path(p)):
            finish_features(p)
    if not merge_features(parts, paths.scores):
        remove_features(paths.scores)
