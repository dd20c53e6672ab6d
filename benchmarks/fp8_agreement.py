"""Does FP8 keep LoBaSS's ranking? A trained pair scored in bf16 and in FP8 on the same
samples, side by side in one run.

The demo's trained pair (base and reference, ``ensure_demo``; or ``--base``/``--ref``)
scores the demo's records with the torch engine in bf16, then in FP8 each way: ``fp8``
(every decoder linear layer e4m3, fast accumulation), ``fp8-ends`` (the first and last
layers kept bf16), ``fp8-exact-accum`` (no fast accumulation). Per way: the mean and
largest |delta| of ``loss_base``, ``loss_ref`` and ``lobass`` against bf16, Spearman's rho
of lobass and the overlap of the top 10%, and the seconds. Each FP8 way is the engine's own
layers (``engines.fp8.quantize_model``, as ``--quantize fp8`` makes them) with that way's
settings, in a bf16 torch engine: on CUDA (compute capability >= 8.9) the real kernels; on
CPU torch's CPU ``_scaled_mm``, the number format's effect, not its speed. One JSON line.

    python benchmarks/fp8_agreement.py                     # the demo's 600 records
    python benchmarks/fp8_agreement.py --base B --ref R --data d.jsonl
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

WAYS = {  # name: (quantise, keep the first and last layers bf16, fast accumulation)
    "bf16": (False, False, True),
    "fp8": (True, False, True),
    "fp8-ends": (True, True, True),
    "fp8-exact-accum": (True, False, False),
}
GATES = {"spearman": 0.995, "top_0.1_overlap": 0.97}  # issue 33's, on lobass


def score_way(way: str, models: dict, samples: list, device) -> tuple[dict, float]:
    import torch
    from transformers import AutoModelForCausalLM

    from fastscore.benchmarks.agreement import loss_columns, mean_losses
    from fastscore.config import EngineConfig
    from fastscore.engines import fp8
    from fastscore.engines.torch_engine import TorchEngine

    quantise, ends, fast = WAYS[way]
    out, seconds = {}, 0.0
    for side, path in models.items():
        m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
        if quantise:  # the engine's own layers, with this way's settings
            fp8.quantize_model(m, keep_ends=ends, fast_accum=fast)
        e = TorchEngine(m, EngineConfig(kind="torch", device=str(device), dtype="bfloat16"),
                        name=side)  # fmt: skip
        e.response_logprobs(samples[:4])  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        lps = e.response_logprobs(samples)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        out[side] = mean_losses(lps)
        e.close()
        del m
    return loss_columns(out["base"], out["ref"]), seconds


def main(argv=None) -> dict:
    import torch

    from fastscore.benchmarks.agreement import agreement
    from fastscore.data.formats import to_samples
    from fastscore.data.readers import read_records
    from fastscore.engines import fp8
    from fastscore.engines.models import load_tokenizer
    from fastscore.engines.torch_engine import resolve_device
    from fastscore.records import OK
    from fastscore.rendering.renderer import Renderer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path)
    ap.add_argument("--ref", type=Path)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--ways", default=",".join(WAYS))
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--note", default=None, help="said in the JSON (how the machine ran)")
    args = ap.parse_args(argv)
    if not (args.base and args.ref and args.data):
        from fastscore.demodata.build import ensure_demo

        demo = ensure_demo()
        args.base, args.ref, args.data = demo.base, demo.ref, demo.data
    device = resolve_device(args.device or "auto")
    if device.type == "cuda" and (why := fp8.unavailable(device)):
        raise SystemExit(f"fp8 cannot run here: {why}")
    tok = load_tokenizer(args.base)
    rendered = Renderer(tok).render_all(to_samples(read_records(str(args.data))))
    samples = [s for s in rendered if s.status == OK]
    models = {"base": args.base, "ref": args.ref}
    summary: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "kernel": "torch._scaled_mm, row-wise scales, bf16 out"
        + ("" if device.type == "cuda" else " (torch's CPU kernel: the format, not the speed)"),
        "models": {k: str(v) for k, v in models.items()},
        "samples": len(samples),
        "tokens": sum(s.n_tokens for s in samples),
        "gates": GATES,
        "ways": {},
        "command": shlex.join(["python", "benchmarks/fp8_agreement.py", *(argv or sys.argv[1:])]),
        **({"note": args.note} if args.note else {}),
    }
    scored = {}
    for way in args.ways.split(","):
        scored[way], seconds = score_way(way, models, samples, device)
        row = {"seconds": round(seconds, 3)}
        if way != "bf16" and "bf16" in scored:
            row["agreement"] = agreement(scored["bf16"], scored[way])
            lob = row["agreement"]["lobass"]
            row["gates_met"] = {k: lob[k] is not None and lob[k] >= v for k, v in GATES.items()}
        summary["ways"][way] = row
        a = row.get("agreement")
        print(f"  {way:<16} {seconds:7.2f}s"
              + (f"  max|dL_base| {a['loss_base']['max_abs_delta']:.4f}  max|dL_ref| "
                 f"{a['loss_ref']['max_abs_delta']:.4f}  spearman(lobass) "
                 f"{a['lobass']['spearman']:.5f}  top10% overlap "
                 f"{a['lobass']['top_0.1_overlap']:.3f}" if a else ""),
              file=sys.stderr, flush=True)  # fmt: skip
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
