"""Which reference is worth its cost? The selection benchmark's worlds, one reference per row.

For each world and seed (``selection_quality``'s worlds, base and held-out test split), the
reference is trained each of these ways with ``fastscore train-ref`` (its own held-out
check on, as users get it), the records are scored with it, the default selection picks
5/10/25%, the base is fine-tuned on each subset (the same steps as every run there) and
evaluated on the held-out test split:
- full: full fine-tuning on every record (what the selection benchmark uses);
- lora-r16, lora-r64: LoRA on every record, the adapter scored over the base;
- full@25%, full@10%: full fine-tuning on a seeded 25% / 10% sample (same epochs, so a
  quarter / a tenth of the steps), scoring every record;
- lora-r16@25%: LoRA on a 25% sample;
- full x2, lora-r16 x2: cross-fitted (``train-ref --folds 2``), two references each
  trained on half the records (half the steps each: the same compute as one on all) and
  each record scored by the one that never saw it.
Beside each row: the reference's training time, its held-out drop and, as yardsticks,
random subsets and the full set. A table per world, then one JSON line.

    python benchmarks/reference_choice.py                   # both worlds, 3 seeds
    python benchmarks/reference_choice.py --seeds 1         # a first look (about an hour)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import selection_quality as sq  # noqa: E402

# name: (train-ref options, the share of the selection benchmark's steps it trains)
VARIANTS = {
    "full": ({}, 1.0),
    "lora-r16": ({"lora": True, "lora_r": 16, "lora_alpha": 32}, 1.0),
    "lora-r64": ({"lora": True, "lora_r": 64, "lora_alpha": 128}, 1.0),
    "full@25%": ({"sample": "0.25"}, 0.25),
    "full@10%": ({"sample": "0.1"}, 0.1),
    "lora-r16@25%": ({"lora": True, "lora_r": 16, "lora_alpha": 32, "sample": "0.25"}, 0.25),
    "full x2": ({"folds": 2}, 0.5),
    "lora-r16 x2": ({"lora": True, "lora_r": 16, "lora_alpha": 32, "folds": 2}, 0.5),
}
LORA_LR = 5e-3  # train-ref's LoRA default is ten times full's, at most this


def _fp32():
    from fastscore.config import EngineConfig

    return EngineConfig(kind="torch", dtype="float32")


def run_seed(seed: int, world: int, budgets, variants, work: Path, args) -> dict:
    import fastscore

    texts, known_chats, sft, test = sq.build_world(sq.WorldSize(), seed, world)
    base = work / "base"
    sq.pretrain_base(texts, known_chats, sft, test, base, seed, args.pretrain_steps)
    data = sq.write_jsonl(work / "sft.jsonl", sft)
    out = {"seed": seed, "world": world, "runs": {}, "refs": {}, "kinds": {}}
    out["runs"]["base"] = sq.evaluate(base, test)
    sq.finetune(base, data, work / "ft-full", args.steps, args.lr, seed)
    out["runs"]["full set"] = sq.evaluate(work / "ft-full", test)
    for frac in budgets:  # random subsets: the yardstick
        name = f"random@{frac:g}"
        subset = work / f"{name}.jsonl"
        fastscore.select(scores=str(_scores(work, base, data, work / "ft-full")), input=str(data),
                         output=str(subset), fraction=frac, score="random", coverage="none",
                         seed=seed)  # fmt: skip
        sq.finetune(base, subset, work / f"ft-{name}", args.steps, args.lr, seed)
        out["runs"][name] = sq.evaluate(work / f"ft-{name}", test)
    for variant in variants:
        opts, share = VARIANTS[variant]
        ref = work / f"ref-{variant}"
        lr = LORA_LR if opts.get("lora") else args.lr
        t0 = time.perf_counter()
        m = sq.finetune(base, data, ref, max(1, round(args.steps * share)), lr, seed,
                        holdout="auto", **opts)  # fmt: skip
        check = m["held_out"] or {}
        out["refs"][variant] = {
            "train_seconds": round(time.perf_counter() - t0, 1),
            "relative_drop": check.get("relative_drop"),
            "verdict": check.get("verdict"),
        }
        scores = work / f"scores-{variant}.jsonl"
        fastscore.score(input=str(data), output=str(scores), base=str(base), ref=str(ref),
                        progress=False, engine=_fp32())  # fmt: skip
        for frac in budgets:
            name = f"{variant}@{frac:g}"
            subset = work / f"sel-{name}.jsonl"
            fastscore.select(scores=str(scores), input=str(data), output=str(subset),
                             fraction=frac, seed=seed)  # fmt: skip
            picked = [orjson.loads(x) for x in subset.read_bytes().splitlines()]
            out["kinds"][name] = dict(Counter(r["kind"] for r in picked))
            sq.finetune(base, subset, work / f"ft-{name}", args.steps, args.lr, seed)
            out["runs"][name] = sq.evaluate(work / f"ft-{name}", test)
            print(f"  world {world} seed {seed} {name:<22} acc "
                  f"{out['runs'][name]['accuracy']:.3f}", file=sys.stderr, flush=True)  # fmt: skip
    return out


def _scores(work: Path, base: Path, data: Path, ref: Path) -> Path:
    """A scores file for random selection (any reference: random ignores the scores)."""
    import fastscore

    path = work / "scores-any.jsonl"
    if not path.exists():
        fastscore.score(input=str(data), output=str(path), base=str(base), ref=str(ref),
                        progress=False, engine=_fp32())  # fmt: skip
    return path


def table(results: list[dict], budgets, variants) -> str:
    def acc(name):
        v = [r["runs"][name]["accuracy"] for r in results if name in r["runs"]]
        return f"{statistics.fmean(v):.3f}" if v else "-"

    def ref(variant, key):
        v = [r["refs"][variant][key] for r in results
             if r["refs"].get(variant, {}).get(key) is not None]  # fmt: skip
        return statistics.fmean(v) if v else None

    def noise(variant, b):  # the share of noise records in the pick at budget b
        v = [
            r["kinds"][name].get("noise", 0) / sum(r["kinds"][name].values())
            for r in results
            if (name := f"{variant}@{b:g}") in r["kinds"]
        ]
        return f"{statistics.fmean(v):.0%}" if v else "-"

    mid = budgets[len(budgets) // 2]
    head = f"{'reference':<16}{'train s':>9}{'drop':>7}{f'noise@{mid:g}':>11}" + "".join(
        f"{f'acc@{b:g}':>10}" for b in budgets
    )
    lines = [head]
    for variant in variants:
        if ref(variant, "train_seconds") is None:
            continue  # (not among these runs)
        drop = ref(variant, "relative_drop")
        lines.append(
            f"{variant:<16}{ref(variant, 'train_seconds'):>9.0f}"
            + (f"{drop:>7.0%}" if drop is not None else f"{'-':>7}")
            + f"{noise(variant, mid):>11}"
            + "".join(f"{acc(f'{variant}@{b:g}'):>10}" for b in budgets)
        )
    lines.append(
        f"{'random':<16}{'':>27}" + "".join(f"{acc(f'random@{b:g}'):>10}" for b in budgets)
    )
    lines.append(f"full set: {acc('full set')}, base: {acc('base')}")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run from this one on")
    ap.add_argument("--budgets", default="0.05,0.1,0.25")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--world", choices=("1", "2", "both"), default="both")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--pretrain-steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument(
        "--tables", type=Path, nargs="+", help="print the tables of saved runs' JSON lines (their "
        "seeds pooled) and their merge as one JSON line, and run nothing",
    )  # fmt: skip
    args = ap.parse_args(argv)
    budgets = [float(b) for b in args.budgets.split(",")]
    variants = args.variants.split(",")
    if args.tables:
        runs = [json.loads(p.read_text().strip().splitlines()[-1]) for p in args.tables]
        merged = {"budgets": runs[0]["budgets"], "steps": runs[0]["steps"], "worlds": {}}
        for run in runs:  # one result per world and seed: a later run's rows join an earlier's
            for w, results in run["worlds"].items():
                by_seed = merged["worlds"].setdefault(w, {})
                for r in results:
                    into = by_seed.setdefault(r["seed"], {**r, "runs": {}, "refs": {}, "kinds": {}})
                    for key in ("runs", "refs", "kinds"):
                        into[key].update(r[key])
        merged["worlds"] = {w: [rs[k] for k in sorted(rs)] for w, rs in merged["worlds"].items()}
        merged["seeds"] = sorted({r["seed"] for rs in merged["worlds"].values() for r in rs})
        for w, results in sorted(merged["worlds"].items()):
            print(f"\nworld {w}, seeds {[r['seed'] for r in results]}", file=sys.stderr)
            print(table(results, merged["budgets"], variants), file=sys.stderr)
        print(json.dumps(merged))
        return
    worlds = [1, 2] if args.world == "both" else [int(args.world)]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fastscore-refchoice-"))
    t0 = time.perf_counter()
    out: dict = {"seeds": args.seeds, "budgets": budgets, "steps": args.steps, "worlds": {}}
    for world in worlds:
        results = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            d = work / f"world{world}" / f"seed{seed}"
            d.mkdir(parents=True, exist_ok=True)
            results.append(run_seed(seed, world, budgets, variants, d, args))
        print(f"\nworld {world}, {args.seeds} seed(s): accuracy on the held-out split of a "
              f"fine-tune on the default selection", file=sys.stderr)  # fmt: skip
        print(table(results, budgets, variants), file=sys.stderr)
        out["worlds"][str(world)] = results
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
