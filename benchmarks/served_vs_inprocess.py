"""Served vs in-process scoring on the same data and models.

Starts two local vLLM OpenAI-compatible servers (base, ref) on 127.0.0.1, then scores the
same input with ``--engine served``, in-process ``--engine vllm`` and ``--engine torch``;
engine start-up is excluded from the scoring time (the manifest's ``scoring`` seconds).
Prints a table and a JSON line.

    python benchmarks/served_vs_inprocess.py --repeat-data 5
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import orjson


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat-data", type=int, default=5, help="copies of the 600-sample set")
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()

    import fastscore
    from fastscore.config import EngineConfig
    from fastscore.demodata.build import ensure_demo
    from fastscore.servers import Server

    a = ensure_demo()
    work = Path(tempfile.mkdtemp(prefix="fastscore-served-"))
    data = work / "data.jsonl"
    recs = [orjson.loads(x) for x in a.data.read_bytes().splitlines()]
    with open(data, "wb") as f:
        for i in range(args.repeat_data * len(recs)):
            f.write(orjson.dumps(dict(recs[i % len(recs)], id=f"s{i}")) + b"\n")

    results = {}
    base, ref = Server(a.base, "base").start(), Server(a.ref, "ref").start()
    try:
        base.wait(), ref.wait()
        m = fastscore.score(
            input=str(data),
            output=str(work / "served.jsonl"),
            progress=False,
            base_url=base.url,
            ref_url=ref.url,
            engine=EngineConfig(kind="served", concurrency=args.concurrency),
        )
        results["served"] = m
    finally:
        base.kill()
        ref.kill()
    for kind in ("vllm", "torch"):
        results[kind] = fastscore.score(
            input=str(data),
            output=str(work / f"{kind}.jsonl"),
            base=str(a.base),
            ref=str(a.ref),
            progress=False,
            engine=EngineConfig(kind=kind, dtype="float32"),
        )

    rows = {
        k: [orjson.loads(x) for x in (work / f"{k}.jsonl").read_bytes().splitlines()]
        for k in results
    }
    diff = max(
        abs(x["loss_base"] - y["loss_base"]) + abs(x["loss_ref"] - y["loss_ref"])
        for x, y in zip(rows["served"], rows["vllm"])
    )
    n_tokens = results["vllm"]["counts"]["tokens_scored_samples"]
    print(f"{len(rows['vllm'])} samples, {n_tokens:,} tokens, each through both models")
    print(f"{'engine':<10}{'tokens/s':>12}{'samples/s':>12}{'scoring s':>12}")
    summary = {
        "samples": len(rows["vllm"]),
        "tokens": n_tokens,
        "max_loss_diff_served_vs_vllm": diff,
    }
    for k, m in results.items():
        t = m["throughput"]
        print(
            f"{k:<10}{t['tokens_per_second']:>12,.0f}{t['samples_per_second']:>12,.1f}"
            f"{m['seconds']['scoring']:>12.1f}"
        )
        summary[k] = {**t, "scoring_seconds": m["seconds"]["scoring"]}
    print(f"max |loss difference|, served vs in-process vLLM: {diff:.2e}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
