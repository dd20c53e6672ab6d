"""What a Ray shard costs, what a lost worker costs, and what object storage adds.

One local Ray cluster, the demo models on the torch engine, the same chats scored side by
side in one run:

- ``local, W shards`` and ``local, S shards`` (W workers): the difference over the extra
  shards is the overhead of one shard (its task, its done mark, its merge, the tail where
  a worker waits).
- ``s3, S shards``: the input, the shards and the scores in a bucket of an S3-compatible
  server on loopback (moto): the store's cost per shard (segments per chunk, objects).
- ``local, S shards, 1 kill`` and ``s3, ...``: a worker SIGKILLed once its shard has
  flushed some lines; the time it adds to the run, and what the manifest counts
  (``seconds_lost``: from its last flush to the retry; records kept from the lost attempt).

    python benchmarks/ray_shards.py --copies 5 --workers 2 --shards 16

Prints a table and one JSON line last (``--json-out`` writes it too).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers: the server

import fastscore  # noqa: E402
from fastscore.benchmarks.ways import write_json  # noqa: E402
from fastscore.config import EngineConfig, RayConfig  # noqa: E402
from fastscore.demodata.build import ensure_demo  # noqa: E402
from tests.helpers.ray_nodes import first_attempt, killing_first  # noqa: E402
from tests.helpers.s3 import MotoServer, first_attempt_in  # noqa: E402


def one(assets, data: str, out: str, *, shards: int, workers: int, kill=None) -> dict:
    # a kill of the first busy worker (``kill``: what finds it), or none
    killing = killing_first(kill, poll=0.02) if kill else contextlib.nullcontext([])
    t0 = time.perf_counter()
    with killing as kills:
        m = fastscore.score(input=data, output=out, base=str(assets.base), ref=str(assets.ref),
                            progress=False, executor="ray", batch_tokens=300,
                            engine=EngineConfig(kind="torch", dtype="float32"),
                            ray=RayConfig(workers=workers, shards=shards))  # fmt: skip
    ex = m["executor"]
    return {
        "seconds": round(time.perf_counter() - t0, 2),
        "scoring_seconds": m["seconds"]["scoring"],
        "plan_seconds": m["seconds"].get("plan"),
        "merge_seconds": m["seconds"].get("merge"),
        "records": m["counts"]["records"],
        "shards": len(ex["shards"]),
        "kills": len(kills),
        "workers_lost": ex["workers_lost"],
        "seconds_lost": ex["seconds_lost"],
        "records_kept_from_lost_attempts": ex["records_kept_from_lost_attempts"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=int, default=5, help="demo chats x this many")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    import ray

    assets = ensure_demo()
    work = Path(tempfile.mkdtemp(prefix="fastscore-bench-shards-"))
    recs = [orjson.loads(x) for x in assets.data.read_bytes().splitlines()]
    n = args.copies * len(recs)
    data = work / "d.jsonl"
    data.write_bytes(b"".join(orjson.dumps(dict(recs[i % len(recs)], id=f"r{i}")) + b"\n"
                              for i in range(n)))  # fmt: skip
    server = MotoServer()
    os.environ.update(server.env())
    fs = server.fs()
    bucket = server.new_bucket()
    fs.put_file(str(data), f"{bucket}/d.jsonl")
    aws = {k: v for k, v in server.env().items() if k.startswith("AWS_")}
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": aws})  # fmt: skip
    w, s = args.workers, args.shards
    cases = {}
    try:
        # a first run warms what every later one shares (imports, page cache)
        one(assets, str(data), str(work / "warm.jsonl"), shards=w, workers=w)
        cases[f"local, {w} shards"] = one(assets, str(data), str(work / "a.jsonl"),
                                          shards=w, workers=w)  # fmt: skip
        cases[f"local, {s} shards"] = one(assets, str(data), str(work / "b.jsonl"),
                                          shards=s, workers=w)  # fmt: skip
        cases[f"s3, {s} shards"] = one(assets, f"s3://{bucket}/d.jsonl",
                                       f"s3://{bucket}/b/s.jsonl", shards=s, workers=w)  # fmt: skip
        shards_dir = work / "c.jsonl.shards"
        cases[f"local, {s} shards, 1 kill"] = one(
            assets, str(data), str(work / "c.jsonl"), shards=s, workers=w,
            kill=lambda: first_attempt(shards_dir, flushed_over=3000))  # fmt: skip
        cases[f"s3, {s} shards, 1 kill"] = one(
            assets, f"s3://{bucket}/d.jsonl", f"s3://{bucket}/c/s.jsonl", shards=s, workers=w,
            kill=lambda: first_attempt_in(fs, f"{bucket}/c/s.jsonl.shards",
                                          flushed_over=3000))  # fmt: skip
    finally:
        ray.shutdown()
        server.stop()
    lw, ls = cases[f"local, {w} shards"], cases[f"local, {s} shards"]
    s3s = cases[f"s3, {s} shards"]
    kl, ks = cases[f"local, {s} shards, 1 kill"], cases[f"s3, {s} shards, 1 kill"]
    derived = {
        "overhead_per_shard_s": round((ls["seconds"] - lw["seconds"]) / (s - w), 3),
        "store_overhead_per_shard_s": round((s3s["seconds"] - ls["seconds"]) / s, 3),
        "seconds_added_by_a_loss_local": round(kl["seconds"] - ls["seconds"], 2),
        "seconds_added_by_a_loss_s3": round(ks["seconds"] - s3s["seconds"], 2),
    }
    print(f"{n} records, {w} workers, {os.cpu_count()} cpus")
    print(f"{'case':<28}{'seconds':>9}{'scoring':>9}{'lost s':>8}{'kept':>6}{'kills':>6}")
    for name, c in cases.items():
        print(f"{name:<28}{c['seconds']:>9}{c['scoring_seconds']:>9}{c['seconds_lost']:>8}"
              f"{c['records_kept_from_lost_attempts']:>6}{c['kills']:>6}")  # fmt: skip
    for k, v in derived.items():
        print(f"{k}: {v}")
    summary = {"records": n, "workers": w, "shards": s, "cpus": os.cpu_count(),
               "cases": cases, **derived}  # fmt: skip
    write_json(summary, args.json_out)


if __name__ == "__main__":
    main()
