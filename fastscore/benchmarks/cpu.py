"""Throughput of fastscore against the hardware's ceiling and the ways users score today.

One run, same data, same models, side by side; each way scores the *pair* of models
(base and reference), since that is the job:

1. ceiling       vLLM bare prefill of the same token ids (max_tokens=1, no logprobs): the
                 trunk on every token, the output head on one.
2. fastscore     end to end (read -> render/tokenize -> both models -> aggregate -> write),
                 once per engine (torch, vllm).
3. lm-eval way   vLLM prompt_logprobs=1, dicts per position parsed in Python.
4. Cherry way    transformers, one sample per forward, full-vocabulary loss at every
                 position (also Data-Juicer's perplexity filter).
5. padded        transformers, longest-first right-padded batches of 16, full logits at
                 every position (lm-eval's HF way).
Plus "engine only": fastscore's torch engine on pre-tokenized ids, to price the pipeline.
The transformers ways, engine-only and fastscore end to end are ``ways``' (shared with the
GPU driver); the vLLM ways are CPU-only (no vLLM reaches the GPU machine).

Each way gets one warm-up run and ``--repeats`` timed runs; the table shows medians and
the spread, and the last line is JSON. Peak memory is the RSS of this process and its
children (vLLM's engine processes), sampled every 50 ms while a way runs.

Models are built locally: ``demo`` (the tiny demo pair), or a random-init Llama of a
shape in ``shapes.SHAPES`` (``llama60m``: hidden 512, 8 layers, 32K vocabulary, ~60M
parameters) with the demo tokenizer.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from fastscore.benchmarks import ways
from fastscore.benchmarks.flops import ModelShape, head_share
from fastscore.benchmarks.shapes import CPU_SHAPES, SHAPES, llama_config


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="llama60m", choices=["demo", *CPU_SHAPES])
    p.add_argument("--samples", type=int, default=150)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--ways", default="ceiling,fastscore-torch,fastscore-vllm,lmeval,cherry,padded,engine-only"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--json-out", type=Path, default=None)


# ---------------------------------------------------------------- models and data


def build_models(shape: str, root: Path) -> tuple[Path, Path]:
    """Two random-init Llamas of one shape (base, ref), with the demo tokenizer."""
    import torch
    from transformers import LlamaForCausalLM

    from fastscore.demodata.build import ensure_demo
    from fastscore.engines.models import load_tokenizer

    tok = load_tokenizer(ensure_demo().base)
    out = []
    for i, name in enumerate(("base", "ref")):
        d = root / f"{shape}-{name}"
        if not (d / "config.json").exists():
            torch.manual_seed(i)
            LlamaForCausalLM(llama_config(SHAPES[shape], tok)).save_pretrained(d)
            tok.save_pretrained(d)
        out.append(d)
    return out[0], out[1]


def make_data(path: Path, n: int, *, seed: int, max_words: int) -> None:
    """Chat samples with long-tailed (log-normal) prompt and response lengths."""
    from fastscore.demodata.world import _word

    rng = random.Random(seed)
    words = [_word(rng, rng.choice((1, 2, 3))) for _ in range(2000)]

    def text(median: float) -> str:
        k = min(max_words, max(1, int(rng.lognormvariate(math.log(median), 0.9))))
        return " ".join(rng.choice(words) for _ in range(k))

    with open(path, "wb") as f:
        for i in range(n):
            turns = [
                {"role": "user", "content": text(18)},
                {"role": "assistant", "content": text(30)},
            ]
            f.write(orjson.dumps({"id": f"b{i}", "messages": turns}) + b"\n")


# ---------------------------------------------------------------- measuring


class PeakRSS:
    """Peak resident memory of this process and its children while the block runs."""

    def __enter__(self):
        import psutil

        self.proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self):
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in [self.proc, *self.proc.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a child that just exited
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(0.05)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def head_flop_share(model_dir: Path, mean_len: float) -> float:
    """Share of one token's forward FLOPs spent in the output head, at the mean length."""
    from transformers import AutoConfig

    return head_share(ModelShape.from_config(AutoConfig.from_pretrained(model_dir)), mean_len)


# ---------------------------------------------------------------- the ways


def _rendered(data: Path, model: Path):
    from fastscore.data.formats import to_samples
    from fastscore.data.readers import read_records
    from fastscore.engines.models import load_tokenizer
    from fastscore.records import OK
    from fastscore.rendering.renderer import Renderer

    r = Renderer(load_tokenizer(model))
    return [s for s in r.render_all(to_samples(read_records(data))) if s.status == OK]


def _vllm_pair(base, ref, max_len):
    from fastscore.config import EngineConfig
    from fastscore.engines.vllm_engine import VllmEngine

    cfg = EngineConfig(kind="vllm", dtype="float32")
    return (
        VllmEngine(base, cfg, max_model_len=max_len, name="base"),
        VllmEngine(ref, cfg, max_model_len=max_len, name="ref"),
    )


def _prompts(samples):
    from vllm.inputs import TokensPrompt

    return [TokensPrompt(prompt_token_ids=s.token_ids.tolist()) for s in samples]


def way_ceiling(vllm_pair) -> Callable:
    """vLLM bare prefill of the same token ids: the trunk on every token, the head on one."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=1, detokenize=False)

    def run(samples):
        prompts = _prompts(samples)
        for e in vllm_pair:
            e.llm.generate(prompts, params, use_tqdm=False)

    return run


def way_lmeval(vllm_pair) -> Callable:
    """lm-eval-harness's loglikelihood: prompt_logprobs=1 dicts, summed in Python."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=1, prompt_logprobs=1, detokenize=False)

    def run(samples):
        prompts = _prompts(samples)
        for e in vllm_pair:
            outs = e.llm.generate(prompts, params, use_tqdm=False)
            for s, o in zip(samples, outs, strict=True):
                ids = s.token_ids.tolist()
                total = 0.0
                for p in s.response_positions.tolist():
                    total += o.prompt_logprobs[p][ids[p]].logprob
                assert math.isfinite(total)

    return run


# ---------------------------------------------------------------- main


def main(args: argparse.Namespace) -> dict:
    import torch

    from fastscore.config import EngineConfig, ScoreConfig
    from fastscore.demodata.build import ensure_demo
    from fastscore.engines.torch_engine import TorchEngine

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fastscore-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.model == "demo":
        a = ensure_demo()
        base, ref, ctx = a.base, a.ref, 256
    else:
        base, ref = build_models(args.model, workdir)
        ctx = SHAPES[args.model].context
    data = workdir / "data.jsonl"
    make_data(data, args.samples, seed=args.seed, max_words=ctx // 6)
    samples = _rendered(data, base)
    n_tokens = sum(s.n_tokens for s in samples)
    assert len(samples) == args.samples, "every benchmark sample must render"
    wanted = args.ways.split(",")
    results: dict[str, dict] = {}

    def e2e_config(engine_kind: str) -> ScoreConfig:
        return ScoreConfig(
            input=str(data),
            base=str(base),
            ref=str(ref),
            output=str(workdir / f"scores-{engine_kind}.jsonl"),
            progress=False,
            engine=EngineConfig(kind=engine_kind, dtype="float32"),
        )

    def measure(name: str, fn: Callable) -> None:
        times, peak = [], 0
        for rep in range(args.repeats + 1):
            gc.collect()
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                fn(samples)
                dt = time.perf_counter() - t0
            peak = max(peak, mem.peak)
            if rep:  # the first run warms up
                times.append(dt)
        med = statistics.median(times)
        results[name] = {
            "seconds_median": round(med, 3),
            "seconds_min": round(min(times), 3),
            "seconds_max": round(max(times), 3),
            "tokens_per_s": round(n_tokens / med, 1),
            "samples_per_s": round(len(samples) / med, 2),
            "peak_rss_gib": round(peak / 2**30, 2),
        }
        print(f"  {name:<16} {n_tokens / med:>10,.0f} tok/s  (median of {len(times)})", flush=True)

    print(
        f"model {args.model}, {len(samples)} samples, {n_tokens:,} tokens "
        f"(each through both models)",
        flush=True,
    )
    if {"ceiling", "fastscore-vllm", "lmeval"} & set(wanted):
        pair = _vllm_pair(base, ref, ctx)
        try:
            if "ceiling" in wanted:
                measure("ceiling", way_ceiling(pair))
            if "fastscore-vllm" in wanted:
                measure("fastscore-vllm", ways.fastscore_e2e(e2e_config("vllm"), pair))
            if "lmeval" in wanted:
                measure("lmeval", way_lmeval(pair))
        finally:
            for e in pair:
                e.close()
    tcfg = EngineConfig(kind="torch", dtype="float32")
    tpair = (TorchEngine(base, tcfg, name="base"), TorchEngine(ref, tcfg, name="ref"))
    if "fastscore-torch" in wanted:
        measure("fastscore-torch", ways.fastscore_e2e(e2e_config("torch"), tpair))
    if "engine-only" in wanted:
        measure("engine-only", ways.engine_only(tpair))
    models = (tpair[0].model, tpair[1].model)
    if "cherry" in wanted:
        measure("cherry", ways.one_sample_loop(models))
    if "padded" in wanted:
        measure("padded", ways.padded(models))

    def ratio(a: str, b: str) -> float | None:
        if a in results and b in results:
            return round(results[a]["tokens_per_s"] / results[b]["tokens_per_s"], 3)
        return None

    best = max(
        (k for k in ("fastscore-torch", "fastscore-vllm") if k in results),
        key=lambda k: results[k]["tokens_per_s"],
        default=None,
    )
    head = head_flop_share(base, n_tokens / len(samples))
    resp = sum(s.n_response_tokens for s in samples) / n_tokens
    summary = {
        "model": args.model,
        "samples": len(samples),
        "tokens": n_tokens,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "head_flop_share": round(head, 3),
        "response_token_share": round(resp, 3),
        # Response-only scoring runs the head on the response tokens; the ceiling on one
        # token per sample. At equal kernel efficiency fastscore/ceiling is at most this.
        "flop_bound_fastscore_over_ceiling": round((1 - head) / (1 - head + resp * head), 3),
        "ways": results,
        "fastscore_best": best,
        "ratios": {
            "fastscore/ceiling": ratio(best, "ceiling") if best else None,
            "fastscore/lmeval": ratio(best, "lmeval") if best else None,
            "fastscore/cherry": ratio(best, "cherry") if best else None,
            "fastscore/padded": ratio(best, "padded") if best else None,
            "fastscore-vllm/ceiling": ratio("fastscore-vllm", "ceiling"),
            "fastscore-torch/engine-only": ratio("fastscore-torch", "engine-only"),
        },
    }
    print()
    ways.print_table(
        [{"way": name, **r} for name, r in results.items()],
        [
            ("way", "way", 18, ""),
            ("tok/s", "tokens_per_s", 10, ",.0f"),
            ("min s", "seconds_min", 9, ".1f"),
            ("max s", "seconds_max", 9, ".1f"),
            ("samples/s", "samples_per_s", 11, ".1f"),
            ("peak GiB", "peak_rss_gib", 10, ".2f"),
        ],
    )
    print(
        f"output head share of per-token FLOPs: {summary['head_flop_share']:.1%}; response "
        f"tokens {resp:.1%} of all; so at equal kernel efficiency fastscore/ceiling <= "
        f"{summary['flop_bound_fastscore_over_ceiling']:.3f}"
    )
    for k, v in summary["ratios"].items():
        if v is not None:
            print(f"{k:<40}{v:>8.3f}")
    ways.write_json(summary, args.json_out)
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cli_args(parser)
    main(parser.parse_args())
