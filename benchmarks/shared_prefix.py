"""Shared prefixes computed once: chats with long shared system prompts against the same
chats without them, with sharing on and off, whole processes side by side in one run.

300 long-tailed chats (``fastscore.benchmarks.cpu.make_data``); the preamble set gives
each one of four ~200-word system prompts (in turn: neighbours differ; ~3.2 times the
tokens, as the issue's set had), and the grouped set is the same records ordered by
their system prompt. Each file is scored by ``fastscore score`` in a new process (the
torch engine, fp32, a random-init Llama of real shape); the time is the whole process's
(a first run, not counted, warms the page cache and the imports). Also: the share of the
tokens a run did not compute (the manifest's ``prefix_sharing``), the largest difference
of a loss with sharing against without, and, with a budget for about one prompt's
states, what the order of the records costs.

    python benchmarks/shared_prefix.py
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

TIGHT = 0.02  # GB: about one ~400-token prompt's states on llama60m (13 MB), not two


def with_preambles(src: Path, dst: Path, *, grouped: bool, words: int, seed: int) -> None:
    from fastscore.demodata.world import _word

    rng = random.Random(seed)
    vocab = [_word(rng, rng.choice((1, 2, 3))) for _ in range(3000)]
    prompts = [" ".join(rng.choice(vocab) for _ in range(words)) for _ in range(4)]
    recs = [orjson.loads(x) for x in src.read_bytes().splitlines()]
    for i, r in enumerate(recs):
        r["messages"] = [{"role": "system", "content": prompts[i % 4]}, *r["messages"]]
        r["_p"] = i % 4
    if grouped:
        recs.sort(key=lambda r: r["_p"])  # stable: by system prompt, then as before
    dst.write_bytes(b"".join(orjson.dumps({k: v for k, v in r.items() if k != "_p"}) + b"\n"
                             for r in recs))  # fmt: skip


def score(data: Path, out: Path, base: Path, ref: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "fastscore.cli", "score", str(data), "--base", str(base),
           "--ref", str(ref), "--output", str(out), "--engine", "torch", "--dtype", "float32",
           "--no-progress", *extra]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    seconds = time.perf_counter() - t0
    m = orjson.loads(out.with_name(out.stem + ".manifest.json").read_bytes())
    shared = m["engines"]["base"].get("prefix_sharing") or {}
    done, skipped = shared.get("tokens_computed", 0), shared.get("tokens_skipped", 0)
    return {
        "seconds": round(seconds, 2),
        "scoring_seconds": m["seconds"]["scoring"],
        "tokens": m["counts"]["tokens_scored_samples"],
        "by_status": m["counts"]["by_status"],
        "skipped_share": round(skipped / (done + skipped), 3) if done + skipped else 0.0,
        "evictions": shared.get("evictions", 0),
        "losses": {
            r["id"]: (r["loss_base"], r["loss_ref"])
            for r in map(orjson.loads, out.read_bytes().splitlines())
        },  # fmt: skip
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama60m-4k", choices=["llama60m-4k", "llama100m"])
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--words", type=int, default=200, help="words per system prompt")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    from fastscore.benchmarks.cpu import build_models, make_data
    from fastscore.benchmarks.ways import write_json

    work = Path(tempfile.mkdtemp(prefix="fastscore-prefix-"))
    base, ref = build_models(args.model, work)
    plain = work / "plain.jsonl"
    make_data(plain, args.samples, seed=0, max_words=300)
    mixed, grouped = work / "preamble.jsonl", work / "preamble-grouped.jsonl"
    with_preambles(plain, mixed, grouped=False, words=args.words, seed=1)
    with_preambles(plain, grouped, grouped=True, words=args.words, seed=1)
    off = ("--no-share-prefixes",)
    cases = {
        "chats, sharing off (before)": (plain, off),
        "chats, sharing on": (plain, ()),
        "preamble, sharing off (before)": (mixed, off),
        "preamble, sharing on": (mixed, ()),
        "preamble grouped by prompt, sharing on": (grouped, ()),
        # a budget for about one prompt's states: what the order of the records then costs
        f"preamble, {TIGHT} GB kept": (mixed, ("--prefix-cache-gb", str(TIGHT))),
        f"preamble grouped, {TIGHT} GB kept": (grouped, ("--prefix-cache-gb", str(TIGHT))),
    }
    score(plain, work / "warm.jsonl", base, ref)  # not counted
    got = {}
    for name, (data, extra) in cases.items():
        got[name] = score(data, work / f"{len(got)}.jsonl", base, ref, *extra)
        print(f"{name}: {got[name]['seconds']} s", file=sys.stderr, flush=True)
    # the no-sharing pair again, in the other order: the faster of each pair's two runs
    # (this machine's noise is ~20% between two runs of one process)
    for name in ("chats, sharing on", "chats, sharing off (before)"):
        again = score(plain, work / "again.jsonl", base, ref, *cases[name][1])
        got[name]["runs"] = [got[name]["seconds"], again["seconds"]]
        got[name]["seconds"] = min(got[name]["runs"])
    before = got["chats, sharing off (before)"]["seconds"]
    for name, c in got.items():  # every record scored: a too-long one would be less work
        assert set(c["by_status"]) == {"ok"}, (name, c["by_status"])
    diff = max(
        abs(a - b)
        for x, y in (
            ("preamble, sharing off (before)", "preamble, sharing on"),
            ("chats, sharing off (before)", "chats, sharing on"),
        )  # fmt: skip
        for k, pair in got[x]["losses"].items()
        for a, b in zip(pair, got[y]["losses"][k], strict=True)
        if a is not None
    )
    print(f"{args.samples} chats, {args.model}, {os.cpu_count()} cpus, whole processes")
    print(f"{'case':<42}{'seconds':>9}{'x chats':>9}{'tokens':>9}{'skipped':>9}{'evicted':>9}")
    for name, c in got.items():
        print(f"{name:<42}{c['seconds']:>9}{c['seconds'] / before:>9.2f}{c['tokens']:>9}"
              f"{c['skipped_share']:>9.1%}{c['evictions']:>9}")  # fmt: skip
    print(f"largest |loss with sharing - without|: {diff:.2e}")
    summary = {
        "samples": args.samples,
        "model": args.model,
        "cpus": os.cpu_count(),
        "cases": {k: {kk: vv for kk, vv in v.items() if kk != "losses"} for k, v in got.items()},
        "largest_loss_difference": diff,
        "preamble_over_chats_before": round(
            got["preamble, sharing off (before)"]["seconds"] / before, 3
        ),
        "preamble_over_chats_after": round(got["preamble, sharing on"]["seconds"] / before, 3),
        "chats_speed_with_sharing": round(before / got["chats, sharing on"]["seconds"], 3),
    }
    write_json(summary, args.json_out)


if __name__ == "__main__":
    main()
