"""Memory stays flat in the data set's size: peak RSS scoring N1 vs N2 samples.

Runs `fastscore score` in a fresh subprocess per size (the torch engine on the demo
models, padded batches since the models are tiny), samples the process tree's RSS every
50 ms, and prints peak RSS per size and their ratio; JSON last line.

    python benchmarks/memory_scale.py --sizes 100000,1000000

The input is the demo SFT set repeated with fresh ids (short samples: the point is the
number of records, not their length).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson


def peak_rss_of(cmd: list[str]) -> tuple[int, float]:
    import psutil

    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc, peak = psutil.Process(p.pid), 0
    while p.poll() is None:
        total = 0
        with contextlib.suppress(psutil.Error):  # a child that just exited
            for q in [proc, *proc.children(recursive=True)]:
                total += q.memory_info().rss
        peak = max(peak, total)
        time.sleep(0.05)
    if p.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{p.stderr.read().decode()[-3000:]}")
    return peak, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--forward-tokens", type=int, default=8192)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    from fastscore.demodata.build import ensure_demo

    assets = ensure_demo()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fastscore-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    records = [orjson.loads(x) for x in assets.data.read_bytes().splitlines()]
    results = []
    for n in (int(x) for x in args.sizes.split(",")):
        data = work / f"data-{n}.jsonl"
        with open(data, "wb") as f:
            for i in range(n):
                f.write(orjson.dumps(dict(records[i % len(records)], id=f"m{i}")) + b"\n")
        cmd = [
            sys.executable,
            "-m",
            "fastscore.cli",
            "-q",
            "score",
            str(data),
            "--base",
            str(assets.base),
            "--ref",
            str(assets.ref),
            "--output",
            str(work / f"scores-{n}.jsonl"),
            "--engine",
            "torch",
            "--dtype",
            "float32",
            "--forward-tokens",
            str(args.forward_tokens),
            "--no-progress",
        ]
        peak, secs = peak_rss_of(cmd)
        with open(work / f"scores-{n}.jsonl", "rb") as f:
            lines = sum(1 for _ in f)
        assert lines == n, f"{lines} score lines for {n} records"
        results.append(
            {"samples": n, "peak_rss_mib": round(peak / 2**20, 1), "seconds": round(secs, 1)}
        )
        print(f"{n:>10,} samples  peak RSS {peak / 2**20:8.1f} MiB  {secs:7.1f} s", flush=True)
        data.unlink()
    ratio = results[-1]["peak_rss_mib"] / results[0]["peak_rss_mib"]
    print(f"peak RSS ratio, largest / smallest: {ratio:.3f}")
    print(json.dumps({"runs": results, "rss_ratio": round(ratio, 3)}))


if __name__ == "__main__":
    main()
