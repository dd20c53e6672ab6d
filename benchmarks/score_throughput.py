"""End-to-end scoring throughput of fastscore on the demo models.

Scores N samples (the demo SFT set, repeated with fresh ids) through both models, with
the engines started once: one warm-up run, then --repeats timed runs of the whole
stream (read -> render -> base -> ref -> aggregate -> write). Prints a table, then one
JSON line. Engine start-up is reported apart, since it does not grow with the data.

The demo model is tiny (about 1M parameters): here per-request overheads, not the
model's FLOPs, set the pace, so the figure is a floor on the pipeline's overhead rather
than a hardware ceiling. Issue-3 benchmarks use models of real shape.

    python benchmarks/score_throughput.py --samples 3000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import orjson


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", type=int, default=3000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-tokens", type=int, default=32768)
    p.add_argument("--json-out", type=Path, default=None)


def main(args: argparse.Namespace) -> dict:
    from fastscore.config import EngineConfig, ScoreConfig
    from fastscore.demo.build import ensure_demo
    from fastscore.engines.vllm_engine import VllmEngine
    from fastscore.pipeline import run_scoring

    assets = ensure_demo()
    tmp = Path(tempfile.mkdtemp(prefix="fastscore-bench-"))
    records = [orjson.loads(x) for x in assets.data.read_bytes().splitlines()]
    data = tmp / "data.jsonl"
    with open(data, "wb") as f:
        for i in range(args.samples):
            rec = dict(records[i % len(records)], id=f"b{i}")
            f.write(orjson.dumps(rec) + b"\n")

    ecfg = EngineConfig(dtype="float32")
    t0 = time.perf_counter()
    base = VllmEngine(assets.base, ecfg, max_model_len=256, name="base")
    ref = VllmEngine(assets.ref, ecfg, max_model_len=256, name="ref")
    start_s = time.perf_counter() - t0
    runs = []
    try:
        for rep in range(args.repeats + 1):
            cfg = ScoreConfig(
                input=str(data),
                base=str(assets.base),
                ref=str(assets.ref),
                output=str(tmp / f"scores{rep}.jsonl"),
                progress=False,
                batch_tokens=args.batch_tokens,
                max_length=255,
                engine=ecfg,
            )
            m = run_scoring(cfg, engines=(base, ref))
            if rep:  # the first run warms up
                runs.append(m)
    finally:
        base.close()
        ref.close()

    tok_s = [m["throughput"]["tokens_per_second"] for m in runs]
    smp_s = [m["throughput"]["samples_per_second"] for m in runs]
    engine_share = [
        (m["seconds"]["engine_base"] + m["seconds"]["engine_ref"]) / m["seconds"]["scoring"]
        for m in runs
    ]
    result = {
        "samples": args.samples,
        "tokens": runs[0]["counts"]["tokens_scored_samples"],
        "repeats": args.repeats,
        "tokens_per_s_median": statistics.median(tok_s),
        "tokens_per_s_min": min(tok_s),
        "tokens_per_s_max": max(tok_s),
        "samples_per_s_median": statistics.median(smp_s),
        "engine_share_of_scoring_median": round(statistics.median(engine_share), 3),
        "engine_start_seconds_both": round(start_s, 1),
        "logprobs_path": runs[0]["engines"]["base"]["logprobs_path"],
    }
    print(f"{'samples':<34}{result['samples']:>12,}")
    print(f"{'tokens per run (each through both)':<34}{result['tokens']:>12,}")
    print(
        f"{'tokens/s (median, min-max)':<34}{result['tokens_per_s_median']:>12,.0f}  "
        f"({result['tokens_per_s_min']:,.0f}-{result['tokens_per_s_max']:,.0f})"
    )
    print(f"{'samples/s (median)':<34}{result['samples_per_s_median']:>12,.1f}")
    print(f"{'engine share of scoring time':<34}{result['engine_share_of_scoring_median']:>12.3f}")
    print(f"{'engine start, both (s)':<34}{result['engine_start_seconds_both']:>12.1f}")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cli_args(parser)
    main(parser.parse_args())
