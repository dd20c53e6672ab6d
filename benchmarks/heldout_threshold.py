"""Where the held-out check draws its line: references that learned more or less, each
one's held-out drop beside what its lobass top 10% picks.

``train-ref`` calls a reference whose held-out mean loss fell under 15% "learned little"
(``scoring.reference.WEAK_DROP``). This measures why: on a slice of the demo's data (its
records know their kind: learnable, noise, known), references are trained with settings
from far too weak to the defaults (full and LoRA), each is scored with the torch engine,
and the top 10% by lobass is counted by kind. A drop that does not separate learnable
records from noise puts noise at the top. A table sorted by drop, then one JSON line.

    python benchmarks/heldout_threshold.py                # 300 records, 8 references
    python benchmarks/heldout_threshold.py --records 600
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson

# name: train-ref options (the rest default; lr None: the width's default)
SETTINGS = {
    "full lr 2e-5 x1": {"lr": 2e-5, "epochs": 1},
    "full lr 1e-4 x1": {"lr": 1e-4, "epochs": 1},
    "full lr 3e-4 x1": {"lr": 3e-4, "epochs": 1},
    "full defaults": {},
    "lora lr 2e-4 x1": {"lora": True, "lr": 2e-4, "epochs": 1},
    "lora lr 1e-3 x1": {"lora": True, "lr": 1e-3, "epochs": 1},
    "lora lr 3e-3 x1": {"lora": True, "lr": 3e-3, "epochs": 1},
    "lora defaults": {"lora": True},
}


def main(argv=None) -> None:
    import fastscore
    from fastscore.config import EngineConfig
    from fastscore.demodata.build import ensure_demo
    from fastscore.training.run import train_ref

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=300, help="the demo data's first N records")
    ap.add_argument("--top", type=float, default=0.1, help="the share counted by kind")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    demo = ensure_demo()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fastscore-threshold-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data.jsonl"
    lines = demo.data.read_bytes().splitlines()[: args.records]
    data.write_bytes(b"\n".join(lines) + b"\n")
    kind = {orjson.loads(x)["id"]: orjson.loads(x)["kind"] for x in lines}
    k = max(1, round(args.top * len(lines)))
    rows = []
    t0 = time.perf_counter()
    for name in args.settings.split(","):
        ref = work / name.replace(" ", "_")
        m = train_ref(input=str(data), base=str(demo.base), output_dir=str(ref), progress=False,
                      **SETTINGS[name])  # fmt: skip
        scores = work / f"{ref.name}.scores.jsonl"
        fp32 = EngineConfig(kind="torch", dtype="float32")
        fastscore.score(input=str(data), output=str(scores), base=str(demo.base), ref=str(ref),
                        progress=False, engine=fp32)  # fmt: skip
        scored = map(orjson.loads, scores.read_bytes().splitlines())
        ok = [r for r in scored if r["lobass"] is not None]
        top = sorted(ok, key=lambda r: -r["lobass"])[:k]
        rows.append({
            "setting": name,
            "relative_drop": m["held_out"]["relative_drop"],
            "verdict": m["held_out"]["verdict"],
            "held_out_records": m["held_out"]["records"],
            "top": dict(Counter(kind[r["id"]] for r in top)),
        })  # fmt: skip
        print(f"  {name:<18} drop {rows[-1]['relative_drop']:6.1%}  top {k}: {rows[-1]['top']}",
              file=sys.stderr, flush=True)  # fmt: skip
    rows.sort(key=lambda r: r["relative_drop"])
    print(f"\n{len(lines)} records of the demo's data, top {k} by lobass, by held-out drop:",
          file=sys.stderr)  # fmt: skip
    print(f"{'reference':<18}{'drop':>7}  {'verdict':<15}{'learnable':>10}{'noise':>7}{'known':>7}",
          file=sys.stderr)  # fmt: skip
    for r in rows:
        t = r["top"]
        print(f"{r['setting']:<18}{r['relative_drop']:>7.0%}  {r['verdict']:<15}"
              f"{t.get('learnable', 0):>10}{t.get('noise', 0):>7}{t.get('known', 0):>7}",
              file=sys.stderr)  # fmt: skip
    out = {"records": len(lines), "top": k, "rows": rows,
           "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
