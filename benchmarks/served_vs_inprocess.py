"""Served vs in-process scoring on the same data and models.

Starts two local vLLM OpenAI-compatible servers (base, ref) on 127.0.0.1, then scores the
same input with ``--engine served``, in-process ``--engine vllm`` and ``--engine torch``;
engine start-up is excluded from the scoring time (the manifest's ``scoring`` seconds).
Prints a table (with the served engine's retries and reconnects per model) and a JSON line.

    python benchmarks/served_vs_inprocess.py --repeat-data 5
    # chunks slower than the servers' 5 s keep-alive: each model's connections sit idle
    # while the other model scores a chunk
    python benchmarks/served_vs_inprocess.py --model llama60m --samples 240 \
        --batch-tokens 8192 --engines served
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import orjson


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo", choices=["demo", "llama60m", "llama100m"])
    ap.add_argument("--repeat-data", type=int, default=5, help="demo: copies of the 600 samples")
    ap.add_argument("--samples", type=int, default=240, help="llama60m/100m: generated samples")
    ap.add_argument("--batch-tokens", type=int, default=32768)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--engines", default="served,vllm,torch")
    ap.add_argument(
        "--pin-servers",
        action="store_true",
        help="each server on a core of its own (as on devices of their own): what sending "
        "both models' requests at once can gain shows only when they do not share cores",
    )
    args = ap.parse_args()

    import fastscore
    from fastscore.benchmarks.cpu import build_models, make_data
    from fastscore.config import EngineConfig
    from fastscore.demodata.build import ensure_demo
    from fastscore.engines.servers import Server

    work = Path(tempfile.mkdtemp(prefix="fastscore-served-"))
    data = work / "data.jsonl"
    if args.model == "demo":
        a = ensure_demo()
        base_dir, ref_dir, max_len = a.base, a.ref, 256
        recs = [orjson.loads(x) for x in a.data.read_bytes().splitlines()]
        with open(data, "wb") as f:
            for i in range(args.repeat_data * len(recs)):
                f.write(orjson.dumps(dict(recs[i % len(recs)], id=f"s{i}")) + b"\n")
    else:
        base_dir, ref_dir = build_models(args.model, work)
        make_data(data, args.samples, seed=0, max_words=300)
        max_len = 1024
    engines = args.engines.split(",")

    def run(kind: str, **where) -> dict:
        return fastscore.score(
            input=str(data),
            output=str(work / f"{kind}.jsonl"),
            progress=False,
            batch_tokens=args.batch_tokens,
            **where,
        )

    def start(server: Server, cpu: int | None) -> Server:
        if cpu is None:
            return server.start()
        # the server and its engine processes inherit this process's CPU affinity
        old = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpu})
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = str(cpu)
        try:
            return server.start()
        finally:
            os.sched_setaffinity(0, old)
            del os.environ["VLLM_CPU_OMP_THREADS_BIND"]

    results = {}
    if "served" in engines:
        pins = (0, 1) if args.pin_servers else (None, None)
        base = start(Server(base_dir, "base", max_model_len=max_len), pins[0])
        ref = start(Server(ref_dir, "ref", max_model_len=max_len), pins[1])
        try:
            base.wait(), ref.wait()
            results["served"] = run(
                "served",
                base_url=base.url,
                ref_url=ref.url,
                tokenizer=str(base_dir),
                engine=EngineConfig(kind="served", concurrency=args.concurrency),
            )
        finally:
            base.kill()
            ref.kill()
    for kind in ("vllm", "torch"):
        if kind in engines:
            results[kind] = run(
                kind,
                base=str(base_dir),
                ref=str(ref_dir),
                engine=EngineConfig(kind=kind, dtype="float32"),
            )

    rows = {
        k: [orjson.loads(x) for x in (work / f"{k}.jsonl").read_bytes().splitlines()]
        for k in results
    }
    first = next(iter(results.values()))
    n_tokens = first["counts"]["tokens_scored_samples"]
    print(
        f"{len(next(iter(rows.values())))} samples, {n_tokens:,} tokens, each through both "
        f"models; {args.model}, batch_tokens {args.batch_tokens}"
    )
    print(f"{'engine':<10}{'tokens/s':>12}{'samples/s':>12}{'scoring s':>12}  retries/reconnects")
    summary: dict = {
        "model": args.model,
        "samples": len(rows[next(iter(rows))]),
        "tokens": n_tokens,
    }
    for k, m in results.items():
        t = m["throughput"]
        faults = {
            name: [
                sum(ep.get(f, 0) for ep in m["engines"][name].get("endpoints", []))
                for f in ("retries", "reconnects")
            ]
            for name in ("base", "ref")
        }
        shown = ", ".join(f"{n} {r}/{c}" for n, (r, c) in faults.items()) if k == "served" else ""
        print(
            f"{k:<10}{t['tokens_per_second']:>12,.0f}{t['samples_per_second']:>12,.1f}"
            f"{m['seconds']['scoring']:>12.1f}  {shown}"
        )
        summary[k] = {**t, "scoring_seconds": m["seconds"]["scoring"]}
        if k == "served":
            summary[k]["retries_reconnects"] = faults
    if "served" in rows and "vllm" in rows:
        diff = max(
            abs(x["loss_base"] - y["loss_base"]) + abs(x["loss_ref"] - y["loss_ref"])
            for x, y in zip(rows["served"], rows["vllm"], strict=True)
        )
        summary["max_loss_diff_served_vs_vllm"] = diff
        print(f"max |loss difference|, served vs in-process vLLM: {diff:.2e}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
