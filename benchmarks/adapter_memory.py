"""What a LoRA reference costs to score: the adapter over the base against the same adapter
merged into a second full model, side by side in one run.

A random Llama of a given width (the demo's tokenizer, its vocabulary) is saved as the
base; a LoRA adapter (rank 16 on every linear layer, random) and its merge into a full
checkpoint are saved beside it. Each way scores the same records with the torch engine in
a process of its own, which reports its peak resident memory, the engines' start time and
the scoring throughput. One JSON line at the end.

    python benchmarks/adapter_memory.py                  # hidden 1024, 8 layers (~0.11B)
    python benchmarks/adapter_memory.py --hidden 2048 --layers 16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, resource, sys, time
import fastscore
from fastscore.config import EngineConfig
t0 = time.perf_counter()
m = fastscore.score(input=sys.argv[1], output=sys.argv[2], base=sys.argv[3], ref=sys.argv[4],
                    progress=False, engine=EngineConfig(kind="torch", dtype="float32"))
man = json.load(open(sys.argv[2].replace(".jsonl", ".manifest.json")))
print(json.dumps({
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "engine_start_s": man["seconds"].get("engine_start"),
    "tokens_per_second": man["throughput"]["tokens_per_second"],
    "total_s": round(time.perf_counter() - t0, 2),
}))
"""


def build(root: Path, hidden: int, layers: int, demo) -> tuple[Path, Path, Path]:
    import peft
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from fastscore.engines.models import load_tokenizer

    tok = load_tokenizer(demo.base)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 3,
                      num_hidden_layers=layers, num_attention_heads=hidden // 64,
                      num_key_value_heads=hidden // 64, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    base, adapter, merged = root / "base", root / "adapter", root / "merged"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    lora = peft.LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                           init_lora_weights=False, task_type="CAUSAL_LM")  # fmt: skip
    pm = peft.get_peft_model(model, lora)
    pm.save_pretrained(adapter)
    pm.merge_and_unload().save_pretrained(merged)
    tok.save_pretrained(merged)
    return base, adapter, merged


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--records", type=int, default=200)
    args = ap.parse_args(argv)
    from fastscore.demodata.build import ensure_demo

    demo = ensure_demo()
    root = Path(tempfile.mkdtemp(prefix="fastscore-adapter-"))
    base, adapter, merged = build(root, args.hidden, args.layers, demo)
    data = root / "d.jsonl"
    data.write_bytes(b"".join(demo.data.read_bytes().splitlines(True)[: args.records]))
    sizes = {
        p.name: round(sum(f.stat().st_size for f in p.iterdir()) / 2**20, 1)
        for p in (base, adapter, merged)
    }
    out = {"hidden": args.hidden, "layers": args.layers, "records": args.records,
           "checkpoint_mb": sizes, "ways": {}}  # fmt: skip
    for way, ref in (("two full models", merged), ("adapter over the base", adapter)):
        t0 = time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-c", CHILD, str(data), str(root / f"{ref.name}.jsonl"),
             str(base), str(ref)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        out["ways"][way] = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"{way:<24} {out['ways'][way]} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    a, b = (out["ways"][w]["peak_rss_mb"] for w in ("adapter over the base", "two full models"))
    out["peak_rss_ratio"] = round(a / b, 3)
    print(f"peak memory, adapter / two full models: {a / b:.2f}", file=sys.stderr)
    out["this_process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


if __name__ == "__main__":
    main()
