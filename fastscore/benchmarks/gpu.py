"""GPU throughput of fastscore's torch engine beside the ways users score today.

One run, one device, one pair of random-init Llamas of a real shape built on the device
(base and ref: random weights make the losses meaningless, but the FLOPs and memory
traffic are those of the shape), one data set; side by side:

1. fastscore-e2e    the JSONL file -> read, render and tokenize -> both engines ->
                    aggregate -> the scores file (``score_file`` with the engines started
                    once, from the in-memory models: no checkpoint is saved and reloaded)
2. engine           fastscore's torch engine alone on the pre-tokenized samples
3. hf-padded        transformers, length-sorted batches of 16, full logits and a
                    log-softmax over them (lm-eval-harness's HF way)
4. one-sample-loop  transformers, one sample per forward, loss at every position with
                    the prompt masked, ``loss.item()`` per sample (the Cherry-LLM way)

5. engine-fp8, fastscore-e2e-fp8: the same two in FP8 (``--quantize fp8``: the trunk's
                    linear layers e4m3 with per-channel weight and per-token activation
                    scales, ``engines.fp8``), the bf16 models quantised in place after the
                    bf16 ways, with the per-sample losses' agreement against bf16 on the
                    same samples (random weights: the numbers' agreement, not a ranking's)

plus the bf16 8192^3 matmul rate (and the e4m3 one, row-wise scales, for the FP8 ways),
measured in the same run. MFU is the exact-scoring
FLOPs of a way's samples (``flops.py``: trunk on every token, causal attention, head on
response tokens only) per second, over that rate: the same useful work for every way.

``tokens_per_s`` counts tokens through the pair: each token goes through the base *and*
the reference model, so one model's rate is twice the figure. The slow ways run on fewer
samples (a length-stratified subset of the main set) so the whole run fits a short device
slot; tokens/s and MFU are rates, so the figures compare. Each way gets a warm-up apart
from its timed run; peak memory is ``torch.cuda.max_memory_allocated`` from a reset at the
start of the way, so it includes both resident models' weights (``resident_gib``).

The tokenizer is a word-level one over the shape's vocabulary of synthetic words
(``w0``, ``w1``, ...) with a ChatML template, so a record of p prompt words and r
response words renders to exactly p + r + 6 tokens, r + 1 of them scored.

    python -m fastscore.benchmarks.gpu --shape llama-8b --json-out gpu-8b.json --profile
    python -m fastscore.benchmarks.gpu --shape tiny --device cpu     (a quick check of the code)
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from fastscore.benchmarks import ways
from fastscore.benchmarks.flops import ModelShape, mfu, scoring_flops
from fastscore.benchmarks.shapes import GPU_SHAPES, SHAPES, BenchShape, llama_config

WAYS = (
    "fastscore-e2e",
    "engine",
    "hf-padded",
    "one-sample-loop",
    "engine-fp8",
    "fastscore-e2e-fp8",
)
FP8_WAYS = ("engine-fp8", "fastscore-e2e-fp8")
LOWER_IS_BETTER = ("mem_vs_hf_padded",)
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
ROLES = ["system", "user", "assistant"]
TEMPLATE_TOKENS = 6  # <|im_start|> user ... <|im_end|> <|im_start|> assistant ... <|im_end|>


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", default="llama-8b", choices=list(GPU_SHAPES))
    p.add_argument("--repeats", type=int, default=3, help="timed runs per way, after a warm-up")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--samples", type=int, default=None, help="main set (default: per shape)")
    p.add_argument("--padded-samples", type=int, default=None)
    p.add_argument("--loop-samples", type=int, default=None)
    p.add_argument("--ways", default=",".join(WAYS))
    p.add_argument("--median-prompt", type=float, default=150.0, help="tokens")
    p.add_argument("--median-response", type=float, default=250.0, help="tokens")
    # log-normal sigma: with medians 150 and 250 the mean sample is about 590 tokens
    p.add_argument("--sigma", type=float, default=0.9)
    p.add_argument("--max-tokens", type=int, default=4096, help="longest sample")
    p.add_argument("--matmul-size", type=int, default=None, help="default 8192 (cuda), 512")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--json-out", type=Path, default=None)
    p.add_argument("--profile", action="store_true", help="profile one engine forward")
    p.add_argument("--profile-out", type=Path, default=None, help="the profile's table (text)")
    p.add_argument(
        "--fp8-rehearsal",
        action="store_true",
        help="on CPU, run the FP8 ways with the layers quantised directly (torch's CPU "
        "_scaled_mm; the engine refuses FP8 there): a check of the code, not of FP8",
    )


# ---------------------------------------------------------------- tokenizer, data, models


def build_word_tokenizer(vocab_size: int, out_dir: Path):
    """A fast tokenizer of exactly ``vocab_size`` ids: special tokens, the role names and
    synthetic words w0, w1, ..., split on whitespace; ChatML chat template. Built without
    any download, in well under a second at 128K."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from fastscore.demodata.build import CHATML_TEMPLATE

    fixed = SPECIALS + ROLES
    vocab = {w: i for i, w in enumerate(fixed)}
    vocab.update({f"w{i}": len(fixed) + i for i in range(vocab_size - len(fixed))})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(out_dir)
    return fast


@dataclass(frozen=True)
class DataSpec:
    median_prompt: float
    median_response: float
    sigma: float
    max_tokens: int


def sample_lengths(n: int, spec: DataSpec, seed: int) -> np.ndarray:
    """[n, 2] words (prompt, response), each log-normal, the sample capped at max_tokens."""
    rng = np.random.default_rng(seed)
    p = np.maximum(1, rng.lognormal(math.log(spec.median_prompt), spec.sigma, n).astype(int))
    r = np.maximum(1, rng.lognormal(math.log(spec.median_response), spec.sigma, n).astype(int))
    room = spec.max_tokens - TEMPLATE_TOKENS
    p = np.minimum(p, room - 1)
    r = np.minimum(r, room - p)
    return np.stack([p, r], axis=1)


def write_records(path: Path, lengths: np.ndarray, *, n_words: int, seed: int) -> None:
    """Chat records (messages format) of the given prompt and response word counts."""
    rng = np.random.default_rng(seed + 1)
    with open(path, "wb") as f:
        for i, (p, r) in enumerate(lengths.tolist()):
            text = [" ".join(f"w{j}" for j in rng.integers(0, n_words, k)) for k in (p, r)]
            msgs = [{"role": "user", "content": text[0]}, {"role": "assistant", "content": text[1]}]
            f.write(orjson.dumps({"id": f"g{i}", "messages": msgs}) + b"\n")


def build_model(shape: BenchShape, tok, *, seed: int, device, dtype):
    """A random-init Llama built directly on the device in ``dtype`` (seconds, even at 8B)."""
    import torch
    from transformers import LlamaForCausalLM

    cfg = llama_config(shape, tok)
    torch.manual_seed(seed)
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(before)
    return model.eval()


def stratified(samples: list, n: int) -> list:
    """``n`` samples spread evenly over the length distribution (sorted by length, every
    len/n-th), so a small subset has the main set's mix of short and long samples."""
    if n >= len(samples):
        return list(samples)
    order = sorted(range(len(samples)), key=lambda i: samples[i].n_tokens)
    return [samples[order[int((k + 0.5) * len(samples) / n)]] for k in range(n)]


# ---------------------------------------------------------------- measuring


class Device:
    """Synchronisation and peak memory, no-ops on CPU."""

    def __init__(self, device):
        import torch

        self.torch, self.device = torch, device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float | None:
        if not self.cuda:
            return None
        return round(self.torch.cuda.max_memory_allocated(self.device) / 2**30, 2)

    def allocated_gib(self) -> float | None:
        if not self.cuda:
            return None
        return round(self.torch.cuda.memory_allocated(self.device) / 2**30, 2)

    def name(self) -> str:
        import transformers

        what = self.torch.cuda.get_device_name(self.device) if self.cuda else "CPU"
        return f"{what} (torch {self.torch.__version__}, transformers {transformers.__version__})"


def matmul_flops_per_s(dev: Device, dtype, n: int, *, seconds: float = 1.0) -> tuple[float, float]:
    """The rate of an n^3 matrix product: (burst, sustained). Burst: ten products timed
    after three warm-ups, the way the rates MFU is usually quoted against are measured
    (the GPU at its boost clock); sustained: repeated for about ``seconds``, where power
    and heat may lower the clock. MFU is given against the burst rate, the higher."""
    torch = dev.torch
    a = torch.randn(n, n, device=dev.device, dtype=dtype)
    b = torch.randn(n, n, device=dev.device, dtype=dtype)
    return _rate(dev, n, lambda: a @ b, seconds)


def fp8_matmul_flops_per_s(dev: Device, n: int, *, seconds: float = 1.0) -> tuple[float, float]:
    """``matmul_flops_per_s`` of the FP8 layers' product: e4m3 operands with row-wise
    scales through ``torch._scaled_mm`` (fast accumulation, bf16 out)."""
    from fastscore.engines.fp8 import quantize_rows

    torch = dev.torch
    a, sa = quantize_rows(torch.randn(n, n, device=dev.device))
    b, sb = quantize_rows(torch.randn(n, n, device=dev.device))
    sb = sb.reshape(1, -1).contiguous()

    def product():
        return torch._scaled_mm(a, b.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16,
                                use_fast_accum=True)  # fmt: skip

    return _rate(dev, n, product, seconds)


def _rate(dev: Device, n: int, product: Callable, seconds: float) -> tuple[float, float]:
    for _ in range(3):
        product()
    dev.sync()
    t0 = time.perf_counter()
    for _ in range(10):
        product()
    dev.sync()
    burst = 2 * n**3 * 10 / (time.perf_counter() - t0)
    reps = max(3, int(seconds * burst / (2 * n**3)))
    t0 = time.perf_counter()
    for _ in range(reps):
        product()
    dev.sync()
    return burst, 2 * n**3 * reps / (time.perf_counter() - t0)


@dataclass
class WayResult:
    name: str
    samples: int
    tokens: int
    seconds: float
    tokens_per_s: float
    mfu: float
    peak_mem_gib: float | None
    note: str = ""
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = asdict(self)
        out.update(out.pop("extra"))
        return out


def pair_flops(shape: ModelShape, samples: list) -> int:
    """Exact-scoring FLOPs of both models (same shape) over the samples."""
    return 2 * scoring_flops(shape, [(s.n_tokens, s.n_response_tokens) for s in samples])


def run_e2e(data: Path, base_dir: Path, ref_dir: Path, *, out: Path, engines, device) -> dict:
    """``score_file`` on the JSONL with the started engines; returns its manifest."""
    from fastscore.config import EngineConfig, ScoreConfig

    cfg = ScoreConfig(
        input=str(data),
        base=str(base_dir),
        ref=str(ref_dir),
        output=str(out),
        format="messages",
        progress=False,
        engine=EngineConfig(kind="torch", device=str(device)),
    )
    return ways.fastscore_e2e(cfg, engines)()


# ---------------------------------------------------------------- profile


def profile_forward(engine, samples: list, dev: Device, *, top: int = 20) -> tuple[list, str]:
    """torch.profiler over one engine call of about one forward's tokens: the top kernels
    by device time (ops by CPU time on CPU), and the profiler's table as text."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    group, size = [], 0
    for s in samples:
        if group and size + s.n_tokens > engine.forward_tokens:
            break
        group.append(s)
        size += s.n_tokens
    engine.response_logprobs(group)  # warm
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.cuda else [])
    with profile(activities=activities) as prof:
        engine.response_logprobs(group)
        dev.sync()
    events = prof.key_averages()
    if dev.cuda:
        rows = [e for e in events if getattr(e, "device_type", None) == DeviceType.CUDA]

        def us(e):
            return getattr(e, "self_device_time_total", None) or getattr(
                e, "self_cuda_time_total", 0
            )

        sort_by = "self_device_time_total"
    else:
        rows = list(events)

        def us(e):
            return e.self_cpu_time_total

        sort_by = "self_cpu_time_total"
    total = sum(us(e) for e in rows) or 1
    rows.sort(key=us, reverse=True)
    table = [
        {
            "name": e.key[:120],
            "ms": round(us(e) / 1e3, 3),
            "share": round(us(e) / total, 4),
            "calls": e.count,
        }
        for e in rows[:top]
    ]
    head = f"one engine call: {len(group)} samples, {size} tokens, {total / 1e3:.1f} ms total\n"
    try:
        text = events.table(sort_by=sort_by, row_limit=top)
    except Exception as e:  # the table's options move between torch versions; keep the top
        text = f"(no profiler table: {type(e).__name__}: {e})\n" + "\n".join(map(str, table))
    return table, head + text


# ---------------------------------------------------------------- main


def _ratio(a, b, digits: int = 3):
    return round(a / b, digits) if a is not None and b else None


def summarize(results: dict[str, WayResult]) -> dict:
    """The ratios the issue's targets are stated in: fastscore's engine against each way.
    Against the transformers ways the ratio is of MFU (useful FLOPs per second), which is
    the tokens/s ratio on equal data and does not depend on which subset a way ran."""
    eng = results.get("engine")
    e2e = results.get("fastscore-e2e")
    loop = results.get("one-sample-loop")
    pad = results.get("hf-padded")
    eng8, e2e8 = results.get("engine-fp8"), results.get("fastscore-e2e-fp8")
    return {
        "fp8_e2e_over_bf16_e2e": _ratio(e2e8 and e2e8.tokens_per_s, e2e and e2e.tokens_per_s),
        "fp8_engine_over_bf16_engine": _ratio(eng8 and eng8.tokens_per_s, eng and eng.tokens_per_s),
        "mfu": round(eng.mfu, 4) if eng else None,
        "e2e_over_engine": _ratio(e2e and e2e.tokens_per_s, eng and eng.tokens_per_s),
        "vs_one_sample_loop": _ratio(eng and eng.mfu, loop and loop.mfu, 2),
        "vs_hf_padded": _ratio(eng and eng.mfu, pad and pad.mfu),
        "mem_vs_hf_padded": _ratio(eng and eng.peak_mem_gib, pad and pad.peak_mem_gib),
    }


def check_targets(ratios: dict, targets: dict) -> dict:
    met = {}
    for k, want in targets.items():
        got = ratios.get(k)
        if got is not None:
            met[k] = got <= want if k in LOWER_IS_BETTER else got >= want
    return met


@dataclass
class Run:
    """One benchmark run's state, handed from step to step: the settings, the device and
    its matmul rates, the data, the models and engines, and what has been measured (the
    summary, written after every way, so a run cut short still leaves its figures)."""

    args: argparse.Namespace
    shape: BenchShape
    dev: Device
    dtype: Any
    wanted: list[str]
    work: Path
    summary: dict
    matmul_n: int = 0
    rates: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    samples: list = field(default_factory=list)
    data: Path | None = None
    dirs: list = field(default_factory=list)
    models: list = field(default_factory=list)
    engines: tuple = ()
    tokenizer: Any = None
    warm_n: int = 16

    @property
    def warm_data(self) -> Path:
        """The main set's first ``warm_n`` records, for the end-to-end ways' warm-ups."""
        path = self.work / "warm.jsonl"
        if not path.exists():
            lines = self.data.read_bytes().splitlines(keepends=True)[: self.warm_n]
            path.write_bytes(b"".join(lines))
        return path

    def write(self) -> None:
        if self.args.json_out:
            self.args.json_out.parent.mkdir(parents=True, exist_ok=True)
            self.args.json_out.write_text(json.dumps(self.summary, indent=2) + "\n")

    def failed(self, name: str, why: str) -> None:
        self.errors[name] = why[:2000]
        self.summary["errors"] = self.errors
        print(f"  {name} FAILED: {self.errors[name]}", flush=True)
        self.write()

    def measure(
        self, name: str, subset: list, *, run: Callable, warm: Callable, note: str, fmt="bf16"
    ) -> None:
        """Time ``run`` (after ``warm``) ``--repeats`` times; its median, tokens/s, MFU
        against ``fmt``'s matmul rate (and bf16's), peak memory into the summary."""
        dev = self.dev
        print(f"  {name}: {len(subset)} samples ...", flush=True)
        dev.reset_peak()
        try:
            warm()
            dev.sync()
            times, extra = [], {}
            for _ in range(max(1, self.args.repeats)):
                t0 = time.perf_counter()
                extra = run() or {}
                dev.sync()
                times.append(extra.pop("seconds", None) or time.perf_counter() - t0)
        except Exception as e:  # an OOM in one way must not lose the others
            self.failed(name, f"{type(e).__name__}: {e}")
            return
        dt = statistics.median(times)
        extra["seconds_min"], extra["seconds_max"] = round(min(times), 3), round(max(times), 3)
        extra["repeats"] = len(times)
        toks = sum(s.n_tokens for s in subset)
        flops = pair_flops(self.shape.model, subset)
        if dev.cuda:  # (the FP8 ways' models are the FP8 weights)
            resident = self.summary["resident_gib_fp8" if fmt == "fp8" else "resident_gib"]
            extra["peak_over_resident_gib"] = round(dev.peak_gib() - resident, 2)
        if fmt != "bf16":  # MFU against its own format's rate, and against bf16's
            extra["mfu_vs_bf16_rate"] = round(mfu(flops, dt, self.rates["bf16"]), 4)
        res = WayResult(
            name,
            len(subset),
            toks,
            round(dt, 3),
            round(toks / dt, 1),
            round(mfu(flops, dt, self.rates[fmt]), 4),
            dev.peak_gib(),
            note,
            extra,
        )
        self.results[name] = res
        self.summary["ways"].append(res.to_json())
        print(
            f"  {name:<16} {res.tokens_per_s:>12,.0f} tok/s (pair)  MFU {res.mfu:.3f}  "
            f"peak {res.peak_mem_gib} GiB  {dt:.2f}s",
            flush=True,
        )
        self.write()

    def e2e(self, engines, out: str, data: Path | None = None) -> dict:
        """``score_file`` of the main set (or ``data``) with ``engines``: its manifest."""
        return run_e2e(data or self.data, self.dirs[0], self.dirs[1], out=self.work / out,
                       engines=engines, device=self.dev.device)  # fmt: skip


def start(args: argparse.Namespace, argv: list[str] | None) -> Run:
    """The run's settings and device, and the bf16 (or --dtype) matmul rate MFU is of."""
    import torch

    from fastscore.engines.torch_engine import resolve_device

    shape = SHAPES[args.shape]
    device = resolve_device(args.device or "auto")
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    dev = Device(device)
    wanted = [w for w in args.ways.split(",") if w]
    unknown = set(wanted) - set(WAYS)
    if unknown:
        raise SystemExit(f"unknown ways {sorted(unknown)}; choose from {WAYS}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fastscore-gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    summary: dict = {
        "device": dev.name(),
        "command": "python -m fastscore.benchmarks.gpu " + shlex.join(argv or sys.argv[1:]),
        "shape": {"name": args.shape, "tied_head": shape.tied, **asdict(shape.model)},
        "dtype": str(dtype).removeprefix("torch."),
        "tokens_per_s_counts": "tokens through both models (base and ref) per second",
        "note": "fastscore-e2e and engine run the main set; hf-padded and one-sample-loop a "
        "length-stratified subset of it, to fit a short device slot (tokens/s and MFU are "
        "rates). The ratios compare fastscore's engine (pre-tokenized, as the transformers "
        "ways are) with each way by MFU, useful FLOPs per second, which does not depend on "
        "the subset; e2e_over_engine is of tokens/s on the same samples. Peak memory "
        "includes both models' weights (resident_gib); peak_over_resident_gib is the rest.",
        "ways": [],
    }
    run = Run(args, shape, dev, dtype, wanted, work, summary)
    n = run.matmul_n = args.matmul_size or (8192 if dev.cuda else 512)
    rate, sustained = matmul_flops_per_s(dev, dtype, n)
    run.rates["bf16"] = rate
    summary["matmul_tflops"] = round(rate / 1e12, 3)
    summary["matmul_tflops_sustained"] = round(sustained / 1e12, 3)
    summary["matmul"] = f"{n}^3 {summary['dtype']}: burst of 10 after 3 warm-ups (MFU's base)"
    print(
        f"{summary['device']}: {n}^3 {summary['dtype']} matmul {rate / 1e12:,.1f} TFLOP/s "
        f"(burst), {sustained / 1e12:,.1f} sustained"
    )
    return run


def make_data(run: Run) -> None:
    """The word-level tokenizer, the main set's JSONL and its rendered samples."""
    from fastscore.data.formats import to_samples
    from fastscore.data.readers import read_records
    from fastscore.engines.models import load_tokenizer
    from fastscore.records import OK
    from fastscore.rendering.renderer import Renderer

    args, shape = run.args, run.shape
    t0 = time.perf_counter()
    spec = DataSpec(args.median_prompt, args.median_response, args.sigma, args.max_tokens)
    tok_dir = run.work / "tokenizer"
    build_word_tokenizer(shape.model.vocab, tok_dir)
    run.tokenizer = load_tokenizer(tok_dir)
    lengths = sample_lengths(args.samples or shape.samples, spec, args.seed)
    run.data = run.work / "data.jsonl"
    n_words = shape.model.vocab - len(SPECIALS) - len(ROLES)
    write_records(run.data, lengths, n_words=n_words, seed=args.seed)
    rendered = Renderer(run.tokenizer).render_all(to_samples(read_records(run.data), "messages"))
    run.samples = samples = list(rendered)
    for s, (p, r) in zip(samples, lengths.tolist(), strict=True):
        # the word-level tokenizer's promise: one token per word, six template tokens
        assert s.status == OK, s.reason
        assert (s.n_tokens, s.n_response_tokens) == (p + r + TEMPLATE_TOKENS, r + 1), s.index
    n_tokens = sum(s.n_tokens for s in samples)
    run.summary["data"] = {
        "samples": len(samples),
        "tokens": n_tokens,
        "mean_tokens": round(n_tokens / len(samples), 1),
        "max_tokens": max(s.n_tokens for s in samples),
        "response_share": round(sum(s.n_response_tokens for s in samples) / n_tokens, 3),
        "lengths": asdict(spec),
        "seconds_to_make": round(time.perf_counter() - t0, 2),
    }
    print(f"data: {run.summary['data']}")


def make_models(run: Run) -> None:
    """The pair built on the device, their config-and-tokenizer directories (what the
    pipeline reads besides the weights, which the engines take from memory), the engines."""
    from fastscore.config import EngineConfig
    from fastscore.engines.torch_engine import TorchEngine

    t0 = time.perf_counter()
    device = run.dev.device
    run.models = [
        build_model(run.shape, run.tokenizer, seed=seed, device=device, dtype=run.dtype)
        for seed in (0, 1)
    ]
    run.dev.sync()
    for name, m in zip(("base", "ref"), run.models, strict=True):
        d = run.work / name
        m.config.save_pretrained(d)
        run.tokenizer.save_pretrained(d)
        run.dirs.append(d)
    ecfg = EngineConfig(kind="torch", device=str(device))
    run.engines = tuple(
        TorchEngine(m, ecfg, name=nm) for m, nm in zip(run.models, ("base", "ref"), strict=True)
    )
    run.summary["models_seconds"] = round(time.perf_counter() - t0, 2)
    run.summary["resident_gib"] = run.dev.allocated_gib()
    run.summary["engine"] = run.engines[0].info()
    print(f"models built in {run.summary['models_seconds']}s; engine {run.summary['engine']}")


def bf16_ways(run: Run) -> None:
    """fastscore end to end, the engine alone, and the two transformers ways."""
    from fastscore.records import OK

    samples, engines, wanted = run.samples, run.engines, run.wanted
    if "fastscore-e2e" in wanted:

        def e2e() -> dict:
            t0 = time.perf_counter()
            m = run.e2e(engines, "scores.jsonl")
            wall = time.perf_counter() - t0
            ok = m["counts"]["by_status"].get(OK, 0)
            assert ok == len(samples), f"e2e scored {ok} of {len(samples)}: {m['counts']}"
            return {
                "seconds": m["seconds"]["scoring"],
                "wall_seconds": round(wall, 3),
                "tokens_per_s_wall": round(run.summary["data"]["tokens"] / wall, 1),
                "stage_seconds": m["seconds"],
            }

        run.measure(
            "fastscore-e2e",
            samples,
            run=e2e,
            warm=lambda: run.e2e(engines, "warm.scores.jsonl", run.warm_data),
            note="score_file from the JSONL: seconds = the stream (read, render, tokenize, both "
            "engines, aggregate, write); wall_seconds adds the one-off set-up a run pays once "
            "(tokenizer loading and comparison, fingerprints) and the final manifest/rename",
        )
    if "engine" in wanted:
        go = ways.engine_only(engines)
        run.measure(
            "engine",
            samples,
            run=lambda: go(samples),
            warm=lambda: go(samples[: run.warm_n]),
            note=f"fastscore's torch engine on pre-tokenized samples: {engines[0].batching}, "
            f"{engines[0].info().get('attention')}, forward_tokens {engines[0].forward_tokens}",
        )
    if "hf-padded" in wanted:
        sub = stratified(samples, run.args.padded_samples or run.shape.padded_samples)
        padded = ways.padded(run.models, run.dev.device)
        longest = sorted(sub, key=lambda s: -s.n_tokens)[:16]  # the warm-up meets the peak
        run.measure(
            "hf-padded",
            sub,
            run=lambda: padded(sub),
            warm=lambda: padded(longest),
            note="transformers, length-sorted batches of 16, full logits, log_softmax (lm-eval)",
        )
    if "one-sample-loop" in wanted:
        sub = stratified(samples, run.args.loop_samples or run.shape.loop_samples)
        loop = ways.one_sample_loop(run.models, run.dev.device)
        run.measure(
            "one-sample-loop",
            sub,
            run=lambda: loop(sub),
            warm=lambda: loop(sub[:2]),
            note="transformers, one sample per forward, loss at every position, .item() each",
        )


def fp8_ways(run: Run) -> None:
    """The FP8 ways, after every bf16 one: the bf16 engines' per-sample losses kept, the
    models quantised in place by the engine's own ``--quantize fp8`` (refused, and said,
    where FP8 cannot run; ``--fp8-rehearsal`` on CPU quantises them directly), the e4m3
    matmul rate, then the ways and their agreement with bf16."""
    from fastscore.benchmarks.agreement import agreement
    from fastscore.config import EngineConfig
    from fastscore.engines import fp8 as fp8_format
    from fastscore.engines.torch_engine import TorchEngine
    from fastscore.errors import ModelError

    if not any(w in run.wanted for w in FP8_WAYS):
        return
    dev, samples = run.dev, run.samples
    rehearsal = run.args.fp8_rehearsal and not dev.cuda
    try:  # (before the bf16 losses: a device that cannot run FP8 pays for no pass)
        if not rehearsal:
            fp8_format.require(dev.device)
    except ModelError as e:
        for w in FP8_WAYS:
            run.failed(w, f"not run: {e}")
        return
    bf16 = _losses(run.engines, samples)  # (the models are quantised in place below)
    for e in run.engines:  # their kept prefixes are of the bf16 weights: gone with them
        e.prefixes = None
    cfg = EngineConfig(kind="torch", device=str(dev.device), quantize="fp8")
    if rehearsal:
        for m in run.models:
            fp8_format.quantize_model(m)
        cfg = EngineConfig(kind="torch", device=str(dev.device))
    try:  # (the engine's own refusals: a dtype FP8 does not take, say)
        fp8 = tuple(
            TorchEngine(m, cfg, name=nm) for m, nm in zip(run.models, ("base", "ref"), strict=True)
        )
    except ModelError as e:
        for w in FP8_WAYS:
            run.failed(w, f"not run: {e}")
        return
    run.summary["resident_gib_fp8"] = dev.allocated_gib()
    run.summary["fp8"] = fp8[0].info().get("quantize", {}).get("fp8", "rehearsal on CPU")
    burst, sustained = fp8_matmul_flops_per_s(dev, run.matmul_n)
    run.rates["fp8"] = burst
    run.summary["matmul_tflops_fp8"] = round(burst / 1e12, 3)
    run.summary["matmul_tflops_fp8_sustained"] = round(sustained / 1e12, 3)
    print(f"{run.matmul_n}^3 e4m3 _scaled_mm (row-wise scales) {burst / 1e12:,.1f} TFLOP/s")
    if "engine-fp8" in run.wanted:
        go = ways.engine_only(fp8)
        run.measure("engine-fp8", samples, run=lambda: go(samples),
                    warm=lambda: go(samples[: run.warm_n]),
                    note="the engine with --quantize fp8", fmt="fp8")  # fmt: skip
    if "fastscore-e2e-fp8" in run.wanted:

        def e2e() -> dict:
            m = run.e2e(fp8, "scores-fp8.jsonl")
            return {"seconds": m["seconds"]["scoring"], "stage_seconds": m["seconds"]}

        run.measure("fastscore-e2e-fp8", samples, run=e2e,
                    warm=lambda: run.e2e(fp8, "warm-fp8.jsonl", run.warm_data),
                    note="score_file with the FP8 engines", fmt="fp8")  # fmt: skip
    run.summary["fp8_agreement"] = agreement(bf16, _losses(fp8, samples))
    for e in fp8:
        e.close()


def _losses(engines, samples: list) -> dict:
    """Per-sample mean losses of a (base, ref) pair, and lobass."""
    from fastscore.benchmarks.agreement import loss_columns, mean_losses

    return loss_columns(*(mean_losses(e.response_logprobs(samples)) for e in engines))


def profile(run: Run) -> None:
    """``--profile``: the top kernels of one bf16 engine forward."""
    args, summary = run.args, run.summary
    if not (args.profile or args.profile_out):
        return
    try:
        top, text = profile_forward(run.engines[0], run.samples, run.dev)
        summary["profile_top"] = top
        print(text)
        if args.profile_out:
            args.profile_out.parent.mkdir(parents=True, exist_ok=True)
            args.profile_out.write_text(text)
    except Exception as e:
        summary["profile_error"] = f"{type(e).__name__}: {e}"[:2000]


def finish(run: Run, t_start: float) -> dict:
    """The ratios against the targets, the rate again (a card that throttled as it warmed
    shows it), the table; the engines closed."""
    summary, dev, shape = run.summary, run.dev, run.shape
    summary["ratios"] = summarize(run.results)
    summary["targets"] = shape.targets
    summary["met"] = check_targets(summary["ratios"], shape.targets)
    run.write()
    burst_end, sustained_end = matmul_flops_per_s(dev, run.dtype, run.matmul_n)
    summary["matmul_tflops_end"] = round(burst_end / 1e12, 3)
    summary["matmul_tflops_sustained_end"] = round(sustained_end / 1e12, 3)
    summary["total_seconds"] = round(time.perf_counter() - t_start, 1)
    run.write()
    print()
    ways.print_table(
        [r.to_json() for r in run.results.values()],
        [
            ("way", "name", 18, ""),
            ("tok/s (pair)", "tokens_per_s", 14, ",.0f"),
            ("MFU", "mfu", 8, ".3f"),
            ("peak GiB", "peak_mem_gib", 10, ".2f"),
            ("samples", "samples", 9, "d"),
            ("median s", "seconds", 10, ".2f"),
            ("min s", "seconds_min", 8, ".2f"),
            ("max s", "seconds_max", 8, ".2f"),
        ],
    )
    for k, v in summary["ratios"].items():
        mark = {True: "met", False: "MISSED"}.get(summary["met"].get(k), "")
        want = shape.targets.get(k)
        print(f"{k:<22}{v!s:>10}  {'' if want is None else f'target {want}'} {mark}")
    print(json.dumps(summary))  # the file was written after each way
    for e in run.engines:
        e.close()
    return summary


def main(args: argparse.Namespace, argv: list[str] | None = None) -> dict:
    t_start = time.perf_counter()
    run = start(args, argv)
    make_data(run)
    make_models(run)
    bf16_ways(run)
    profile(run)
    fp8_ways(run)  # last: it quantises the models in place
    return finish(run, t_start)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cli_args(parser)
    main(parser.parse_args())
