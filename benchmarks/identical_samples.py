"""Identical samples are computed once: the same chats scored distinct and repeated.

300 long-tailed chats (``fastscore.benchmarks.cpu.make_data``), then a file of 600 that holds each
chat twice (the second copy after all the firsts, as a data set concatenated with itself
would), both scored with the torch engine on a random-init Llama of real shape. With the
repeats scored from the first copy's losses, the 600 cost about what the 300 do.

    python benchmarks/identical_samples.py --model llama60m
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import orjson


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama60m", choices=["llama60m", "llama100m"])
    ap.add_argument("--samples", type=int, default=300)
    args = ap.parse_args()

    import fastscore
    from fastscore.benchmarks.cpu import build_models, make_data
    from fastscore.config import EngineConfig

    work = Path(tempfile.mkdtemp(prefix="fastscore-identical-"))
    base, ref = build_models(args.model, work)
    distinct = work / "distinct.jsonl"
    make_data(distinct, args.samples, seed=0, max_words=300)
    lines = distinct.read_bytes().splitlines()
    repeated = work / "repeated.jsonl"
    with open(repeated, "wb") as f:
        for copy in range(2):
            for line in lines:
                rec = orjson.loads(line)
                f.write(orjson.dumps({**rec, "id": f"{rec['id']}-{copy}"}) + b"\n")
    out = {}
    for name, data in (("distinct", distinct), ("repeated", repeated)):
        t0 = time.perf_counter()
        m = fastscore.score(
            input=str(data),
            base=str(base),
            ref=str(ref),
            output=str(work / f"{name}.scores.jsonl"),
            progress=False,
            engine=EngineConfig(kind="torch", dtype="float32"),
        )
        out[name] = {
            "records": m["counts"]["records"],
            "seconds": round(time.perf_counter() - t0, 2),
            "scoring_seconds": m["seconds"]["scoring"],
            "identical_samples": m["counts"].get("identical_samples"),
            "engine_tokens": m["counts"].get("engine_tokens"),
        }
        print(f"{name:<10}{json.dumps(out[name])}")
    a = [orjson.loads(x) for x in (work / "repeated.scores.jsonl").read_bytes().splitlines()]
    n = len(a) // 2
    same = all(
        x["loss_base"] == y["loss_base"] and x["loss_ref"] == y["loss_ref"]
        for x, y in zip(a[:n], a[n:], strict=True)
    )
    print(f"repeats scored the same as their first copy: {same}")
    print(json.dumps({"model": args.model, **out, "repeats_equal": same}))


if __name__ == "__main__":
    main()
