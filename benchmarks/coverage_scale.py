"""Coverage at a million records: time and peak RSS of select, plain and with coverage.

Writes N synthetic prompt-response records (five instruction frames over 5,000 words,
responses of 3-30 words) and a scores file for them, then runs `select --fraction 0.06`
in a fresh subprocess per mode (plain top-k; `--coverage clusters` on lexical features;
the same `--within responses`), one after the other, and prints wall time and the peak
RSS of each; JSON last line.

    OMP_NUM_THREADS=1 python benchmarks/coverage_scale.py --records 1000000
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from memory_scale import peak_rss_of  # noqa: E402

MODES = {
    "plain": ["--coverage", "none"],
    "clusters": ["--coverage", "clusters", "--within", "none"],
    "clusters+within": [],  # the default: --coverage clusters --within responses
}


def write_data(n: int, work: Path) -> tuple[Path, Path]:
    inp, scores = work / f"in{n}.jsonl", work / f"scores{n}.jsonl"
    if scores.exists():
        return inp, scores
    rng = random.Random(0)
    words = [f"w{i}" for i in range(5000)]
    frames = ["explain {a} and {b}", "write a poem about {a}", "what is {a} plus {b}",
              "translate {a} to {b}", "summarise the {a} of {b}"]  # fmt: skip
    with open(inp, "wb") as f, open(scores, "wb") as g:
        for i in range(n):
            p = rng.choice(frames).format(a=rng.choice(words), b=rng.choice(words))
            r = " ".join(rng.choice(words) for _ in range(rng.randint(3, 30)))
            f.write(orjson.dumps({"id": i, "prompt": p, "response": r}) + b"\n")
            row = {"id": i, "index": i, "status": "ok", "n_response_tokens": 3,
                   "lobass": rng.random()}  # fmt: skip
            g.write(orjson.dumps(row) + b"\n")
    return inp, scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fastscore-coverage-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    inp, scores = write_data(args.records, work)
    fastscore = [sys.executable, "-m", "fastscore.cli"]
    results = {}
    for mode in args.modes.split(","):
        out = work / f"selected-{mode}.jsonl"
        cmd = [*fastscore, "-q", "select", str(scores), "--input", str(inp),
               "--output", str(out), "--fraction", "0.06", *MODES[mode]]  # fmt: skip
        peak, seconds = peak_rss_of(cmd)
        picked = sum(1 for _ in out.open("rb"))
        results[mode] = {"seconds": round(seconds, 1), "peak_rss_mib": round(peak / 2**20),
                         "selected": picked}  # fmt: skip
        print(
            f"{mode:<16} {seconds:7.1f} s  peak RSS {peak / 2**20:7,.0f} MiB  {picked:,} selected"
        )
    print(json.dumps({"records": args.records, "modes": results}))


if __name__ == "__main__":
    main()
