"""train-ref's time on the demo: the hand-written loop it replaced against TRL's
SFTTrainer in one process and in two (torchrun, DDP over gloo), side by side in one run.

The demo's data (600 chats) and base, the demo's schedule (2 epochs, lr 1e-3, 16 samples
a step, 76 steps). Each case is a new process, run once not counted, then ``--repeats``
times in turn; the figure is the median of the training loop's seconds (the manifest's
``seconds``; for the old loop the same span) and of the whole process's. The old loop
is ``fastscore.demodata.pretrain``'s ``train_examples`` on the same rendered examples
(what train-ref ran before). On 2 cores, one process uses both (2 threads) and each of
two processes one.

    python benchmarks/train_ref.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

EPOCHS, LR, BATCH = 2, 1e-3, 16


def hand_loop(data: str, base: str) -> None:
    """What train-ref ran before: the hand-written loop on the scorer's examples."""
    import torch
    from transformers import AutoModelForCausalLM

    from fastscore.config import TrainConfig
    from fastscore.demodata.pretrain import Schedule, train_examples
    from fastscore.engines.models import load_tokenizer
    from fastscore.training.examples import rendered_examples

    tok = load_tokenizer(base)
    ex = rendered_examples(TrainConfig(input=data, base=base), tok, 255)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    steps = -(-len(ex) // BATCH) * EPOCHS
    schedule = Schedule(epochs=EPOCHS, lr=LR, batch_size=BATCH, warmup_steps=-(-3 * steps // 100))
    r = train_examples(model, list(zip(ex.token_ids, ex.targets, strict=True)), schedule,
                       pad_id=tok.pad_token_id)  # fmt: skip
    print(orjson.dumps(r).decode())


def run(case: str, data: Path, base: Path, out: Path) -> dict:
    args = ["train-ref", str(data), "--base", str(base), "--output-dir", str(out),
            "--epochs", str(EPOCHS), "--lr", str(LR), "--batch-size", str(BATCH),
            "--no-progress"]  # fmt: skip
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    env = dict(os.environ)
    if case == "hand-written loop (before)":
        cmd = [sys.executable, __file__, "--hand-loop", str(data), str(base)]
        env["OMP_NUM_THREADS"] = "2"
    elif case == "SFTTrainer, 1 process":
        cmd, env["OMP_NUM_THREADS"] = [sys.executable, "-m", "fastscore", *args], "2"
    else:
        cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "fastscore", *args]
        env["OMP_NUM_THREADS"] = "1"
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"{case} failed:\n{p.stderr[-3000:]}")
    if case.startswith("hand"):
        m = orjson.loads(p.stdout.strip().splitlines()[-1])
    else:
        m = orjson.loads((out / "train_manifest.json").read_bytes())
    return {"train_seconds": m["seconds"], "process_seconds": round(wall, 2),
            "steps": m["steps"], "final_loss": m["final_loss"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hand-loop", nargs=2, metavar=("DATA", "BASE"), help=argparse.SUPPRESS)
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "train-ref.json"))
    a = ap.parse_args()
    if a.hand_loop:
        return hand_loop(*a.hand_loop)
    from fastscore.demodata.build import ensure_demo

    demo = ensure_demo()
    cases = ["hand-written loop (before)", "SFTTrainer, 1 process", "SFTTrainer, 2 processes"]
    runs: dict[str, list[dict]] = {c: [] for c in cases}
    with tempfile.TemporaryDirectory(prefix="train-ref-bench-") as tmp:
        for c in cases:  # not counted: warms the page cache and the imports' files
            run(c, demo.data, demo.base, Path(tmp) / f"warm-{len(c)}")
        for i in range(a.repeats):
            for c in cases if i % 2 == 0 else cases[::-1]:
                runs[c].append(run(c, demo.data, demo.base, Path(tmp) / f"ref{i}-{len(runs[c])}"))
                print(c, runs[c][-1], flush=True)
    rows = {}
    before = statistics.median(r["train_seconds"] for r in runs[cases[0]])
    for c in cases:
        t = statistics.median(r["train_seconds"] for r in runs[c])
        rows[c] = {
            "train_seconds": round(t, 2),
            "over_before": round(t / before, 2),
            "process_seconds": round(statistics.median(r["process_seconds"] for r in runs[c]), 2),
            "steps": runs[c][0]["steps"],
            "final_loss": runs[c][0]["final_loss"],
            "runs": runs[c],
        }
    print(f"\n{'case':32} {'train s':>8} {'/before':>8} {'process s':>10} {'steps':>6} {'loss':>7}")
    for c, r in rows.items():
        print(f"{c:32} {r['train_seconds']:8.2f} {r['over_before']:8.2f} "
              f"{r['process_seconds']:10.2f} {r['steps']:6d} {r['final_loss']:7.3f}")  # fmt: skip
    Path(a.json).write_bytes(
        orjson.dumps(
            {"cpus": os.cpu_count(), "records": 600, "cases": rows}, option=orjson.OPT_INDENT_2
        )  # fmt: skip
    )
    print(f"-> {a.json}")


if __name__ == "__main__":
    main()
