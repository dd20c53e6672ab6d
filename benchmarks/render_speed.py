"""Rendering throughput: records per second turned into token ids and a response mask.

Rendering runs on every record (in the prefetch thread, beside the engines), so its rate
bounds a run on a fast engine. Conversations of one and of three exchanges, with the demo
tokenizer under each chat template given (the demo's own ChatML, and templates that TRL
ships when ``trl`` is installed). Prints a table and a JSON line.

    python benchmarks/render_speed.py --records 2000
"""

from __future__ import annotations

import argparse
import json
import random
import time


def conversations(n: int, turns: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "kobu", "rega", "black", "the", "is", "of"]

    def text(k: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(k, 3 * k)))

    out = []
    for i in range(n):
        msgs = [{"role": "system", "content": text(5)}]
        for _ in range(turns):
            msgs += [
                {"role": "user", "content": text(10)},
                {"role": "assistant", "content": text(20)},
            ]
        out.append({"id": i, "messages": msgs})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--templates", default="demo,llama3,qwen2_5,qwen3,gptoss")
    args = ap.parse_args()

    from fastscore.data.formats import to_samples
    from fastscore.demodata.build import ensure_demo
    from fastscore.engines.models import load_tokenizer
    from fastscore.records import OK, RawRecord
    from fastscore.rendering.renderer import Renderer

    tok = load_tokenizer(ensure_demo().base)
    templates = {"demo": tok.chat_template}
    try:
        import trl.chat_template_utils as ctu

        for name in args.templates.split(","):
            if name != "demo":
                templates[name] = getattr(ctu, f"{name}_chat_template")
    except ImportError:
        print("trl is not installed: only the demo template is measured")
    results = {}
    print(f"{'template':<12}{'turns':>6}{'records/s':>12}{'ok':>8}")
    for name, source in templates.items():
        tok.chat_template = source
        renderer = Renderer(tok)
        for turns in (1, 3):
            recs = conversations(args.records, turns)
            raws = [RawRecord(i, r) for i, r in enumerate(recs)]
            samples = list(to_samples(raws, "messages"))
            renderer.render(samples[0])  # compiles the template
            t0 = time.perf_counter()
            rendered = [renderer.render(s) for s in samples]
            rate = len(samples) / (time.perf_counter() - t0)
            ok = sum(r.status == OK for r in rendered)
            results[f"{name}/{turns}"] = {"records_per_s": round(rate, 1), "ok": ok}
            print(f"{name:<12}{turns:>6}{rate:>12,.0f}{ok:>8}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
