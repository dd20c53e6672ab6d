"""The Ray driver's time before the first shard can start, before and after the surveys.

Before (the driver reads the input itself, as fastscore did up to this change): count
the records, parse every record for duplicate ids, scan again for the shards' byte
offsets. After: the file cut into byte ranges, each surveyed by a Ray task (records,
lines, id hashes: ``fastscore.data.ranges``), the surveys added up by the driver. Also the
driver's own share of "after" (adding the surveys up: hashes merged per second) and the
merge of finished shards into one scores file (MB/s). Synthetic JSONL records, 1% with a
repeated id. Prints one JSON line last.

    python benchmarks/ray_driver.py --records 1000000 --cpus 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import orjson

from fastscore.data import ranges
from fastscore.data.ids import duplicate_records
from fastscore.data.readers import count_records, jsonl_starts
from fastscore.executors.ray_shards import _survey, plan_shards

FMT = "prompt-response"


def make_data(path: Path, n: int) -> None:
    with open(path, "wb") as f:
        for i in range(n):
            rid = f"r{i - 1}" if i % 100 == 99 else f"r{i}"  # 1% repeat the id before
            f.write(orjson.dumps({"id": rid, "prompt": f"question {i}?", "response": "an answer."}))
            f.write(b"\n")


def before(path: Path, n_shards: int) -> dict:
    t0 = time.perf_counter()
    n = count_records(path, "jsonl")
    dups = duplicate_records(path, "jsonl", FMT)
    shards = plan_shards(n, n_shards)
    jsonl_starts(path, [lo for lo, _ in shards])
    return {"seconds": round(time.perf_counter() - t0, 3), "records": n, "duplicates": len(dups)}


def after(ray, path: Path, n_shards: int) -> dict:
    t0 = time.perf_counter()
    survey = ray.remote(num_cpus=0)(_survey)
    parts = ranges.byte_ranges(os.path.getsize(path), n_shards)
    surveys = ray.get([survey.remote(str(path), "jsonl", FMT, lo, hi) for lo, hi in parts])
    t1 = time.perf_counter()
    p = ranges.plan(surveys)
    t2 = time.perf_counter()
    return {
        "seconds": round(t2 - t0, 3),
        "surveys_seconds": round(t1 - t0, 3),
        "driver_plan_seconds": round(t2 - t1, 3),
        "driver_hashes_per_s": round(p.records / max(t2 - t1, 1e-9)),
        "records": p.records,
        "duplicates": len(p.duplicates),
    }


def merge_rate(path: Path, n_shards: int, workdir: Path) -> dict:
    """The driver's merge: finished shard files read and written into one, in order."""
    data = path.read_bytes()
    cuts = [len(data) * k // n_shards for k in range(n_shards + 1)]
    cuts = [0] + [data.index(b"\n", c) + 1 for c in cuts[1:-1]] + [len(data)]
    parts = []
    for k in range(n_shards):
        p = workdir / f"shard-{k:05d}.jsonl"
        p.write_bytes(data[cuts[k] : cuts[k + 1]])
        parts.append(p)
    t0 = time.perf_counter()
    lines = 0
    with open(workdir / "merged.jsonl", "wb") as f:
        for p in parts:
            blob = p.read_bytes()
            lines += blob.count(b"\n")
            f.write(blob)
    s = time.perf_counter() - t0
    return {"mb_per_s": round(len(data) / 1e6 / s, 1), "records_per_s": round(lines / s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", default="1000000", help="comma-separated sizes")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="the Ray cluster's")
    ap.add_argument("--shards", type=int, default=None, help="[4 per CPU]")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    import ray

    n_shards = args.shards or 4 * args.cpus
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    out = {"cpus": args.cpus, "shards": n_shards, "sizes": {}}
    try:
        with tempfile.TemporaryDirectory(dir=args.workdir) as d:
            for n in (int(x) for x in args.records.split(",")):
                path = Path(d) / f"synthetic-{n}.jsonl"
                make_data(path, n)
                b, a = before(path, n_shards), after(ray, path, n_shards)
                assert (a["records"], a["duplicates"]) == (b["records"], b["duplicates"])
                row = {"bytes": path.stat().st_size, "before": b, "after": a,
                       "merge": merge_rate(path, n_shards, Path(d))}  # fmt: skip
                out["sizes"][n] = row
                print(f"{n:>11,} records: driver before the first shard {b['seconds']:.1f} s "
                      f"-> {a['seconds']:.1f} s ({a['driver_plan_seconds']:.2f} s of it the "
                      f"driver's, {a['driver_hashes_per_s']:,} hashes/s); merge "
                      f"{row['merge']['mb_per_s']} MB/s", flush=True)  # fmt: skip
                path.unlink()
    finally:
        ray.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
