"""The command line: parse options, build a config, call the library. Nothing else here."""

from __future__ import annotations

import logging
import sys

import click
import orjson
from click.core import ParameterSource

from .errors import FastscoreError

EXAMPLE = """\b
Examples:
  fastscore demo
  fastscore run data.jsonl --base ./base --ref ./sft --output-dir out --fraction 0.06
  fastscore score data.jsonl --base ./base --ref ./sft --output scores.jsonl
  fastscore select scores.jsonl --input data.jsonl --output subset.jsonl --top-k 3000
  fastscore train-ref data.jsonl --base ./base --output-dir ./sft
  fastscore report scores.jsonl --input data.jsonl --output-dir report --fraction 0.06
  fastscore inspect data.jsonl --base ./base --ref ./sft --id 42
  fastscore score data.jsonl --base ./base --ref ./sft --output s.jsonl --dry-run
"""

# CLI option name -> dotted field of ScoreConfig
SCORE_OPTIONS = {
    "input": "input",
    "base": "base",
    "ref": "ref",
    "output": "output",
    "format": "format",
    "template": "template",
    "chat_template": "chat_template",
    "date": "date",
    "max_length": "max_length",
    "batch_tokens": "batch_tokens",
    "ifd": "ifd",
    "progress": "progress",
    "engine": "engine.kind",
    "dtype": "engine.dtype",
    "gpu_memory_utilization": "engine.gpu_memory_utilization",
    "kv_cache_gb": "engine.kv_cache_gb",
    "enforce_eager": "engine.enforce_eager",
    "tensor_parallel_size": "engine.tensor_parallel_size",
    "logprobs_path": "engine.logprobs_path",
    "seed": "engine.seed",
    "trust_remote_code": "engine.trust_remote_code",
    "forward_tokens": "engine.forward_tokens",
    "base_url": "base_url",
    "ref_url": "ref_url",
    "base_model": "base_model",
    "ref_model": "ref_model",
    "tokenizer": "tokenizer",
    "api_key_env": "engine.api_key_env",
    "concurrency": "engine.concurrency",
    "request_timeout": "engine.request_timeout",
    "retry_seconds": "engine.retry_seconds",
    "executor": "executor",
    "resume": "resume",
    "strict": "strict",
    "ray_address": "ray.address",
    "ray_workers": "ray.workers",
    "shards": "ray.shards",
    "cpus_per_worker": "ray.cpus_per_worker",
    "gpus_per_worker": "ray.gpus_per_worker",
    "batching": "engine.batching",
    "device": "engine.device",
}
SELECT_OPTIONS = {
    "scores": "scores",
    "input": "input",
    "output": "output",
    "top_k": "top_k",
    "fraction": "fraction",
    "threshold": "threshold",
    "score": "score",
    "order": "order",
    "random_seed": "seed",
    "group_field": "group_field",
    "quota": "quota",
    "length_bins": "length_bins",
    "dedup": "dedup",
}


def _apply(ctx: click.Context, cfg, mapping: dict[str, str], prefix: str = "") -> None:
    """Copy the options the user actually typed onto the config (they beat the file)."""
    from .config import set_path

    for name, dotted in mapping.items():
        if name not in ctx.params:
            continue
        value = ctx.params[name]
        source = ctx.get_parameter_source(name)
        if value is not None and source in (
            ParameterSource.COMMANDLINE,
            ParameterSource.ENVIRONMENT,
        ):
            set_path(cfg, prefix + dotted, value)


def render_options(f):
    """How records become token ids: shared by score, train-ref and inspect."""
    from .formats import FORMATS
    from .render import TEMPLATES

    opts = [
        click.option(
            "--format",
            type=click.Choice(["auto", *FORMATS]),
            help="Record format [default: auto, detected from the first record].",
        ),
        click.option(
            "--template",
            type=click.Choice(TEMPLATES),
            help="Chat template: the tokenizer's (model), the plain alpaca-style one, or "
            "auto (the tokenizer's when it has one) [default: auto].",
        ),
        click.option(
            "--chat-template",
            type=click.Path(dir_okay=False),
            help="A Jinja chat template file to render with instead (e.g. the training "
            "template your SFT run used); its {% generation %} markers mark the response.",
        ),
        click.option(
            "--date",
            help="The date templates that write one render, YYYY-MM-DD [default: the day "
            "the run starts; kept by --resume and Ray].",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def score_options(f):
    opts = [
        click.option("--base", help="Base model: a local Hugging Face checkpoint directory."),
        click.option("--ref", help="Reference model fine-tuned from the base on the full set."),
        click.option(
            "--engine",
            type=click.Choice(["auto", "vllm", "torch", "served"]),
            help="auto: torch (until a vLLM GPU run is verified); served: running vLLM "
            "servers [default: auto].",
        ),
        click.option("--base-url", help="served: base endpoint(s), comma-separated."),
        click.option("--ref-url", help="served: reference endpoint(s), comma-separated."),
        click.option("--base-model", help="served: the base's name on its servers."),
        click.option("--ref-model", help="served: the reference's name (a LoRA adapter too)."),
        click.option("--tokenizer", help="Tokenizer directory [default: the base's]."),
        click.option(
            "--api-key-env",
            help="served: environment variable holding the API key [default: FASTSCORE_API_KEY].",
        ),
        click.option("--concurrency", type=int, help="served: requests per endpoint [8]."),
        click.option("--request-timeout", type=float, help="served: seconds [300]."),
        click.option(
            "--retry-seconds", type=float, help="served: retry a failing request this long [120]."
        ),
        click.option(
            "--batching",
            type=click.Choice(["auto", "packed", "padded", "single"]),
            help="torch engine: auto = packed for Llama-style models (flash varlen attention "
            "on a GPU in bf16/fp16), else padded on GPU, single on CPU [default: auto].",
        ),
        click.option(
            "--forward-tokens",
            type=int,
            help="torch engine: tokens per forward [default: packed 1024 on CPU, 16384 on GPU; "
            "padded 16384].",
        ),
        click.option("--device", help="torch engine: auto, cpu, cuda, cuda:N [default: auto]."),
        click.option(
            "--max-length", type=int, help="Longest sample scored, in tokens [default: context-1]."
        ),
        click.option("--batch-tokens", type=int, help="Tokens per engine step [default: 32768]."),
        click.option(
            "--ifd",
            is_flag=True,
            default=None,
            help="Also score each response without its prompt (one more base pass) for the "
            "ifd column.",
        ),
        click.option(
            "--dtype", help="auto, float32, bfloat16, float16 [default: auto, the checkpoint's]."
        ),
        click.option("--gpu-memory-utilization", type=float, help="Per engine (vLLM)."),
        click.option("--kv-cache-gb", type=float, help="KV cache per engine [CPU default: 1]."),
        click.option("--enforce-eager/--no-enforce-eager", default=None, help="vLLM eager mode."),
        click.option("--tensor-parallel-size", type=int, help="GPUs per model [default: 1]."),
        click.option(
            "--logprobs-path",
            type=click.Choice(["auto", "flat", "token_ids"]),
            help="How vLLM returns logprobs [default: auto].",
        ),
        click.option("--seed", type=int, help="Engine seed [default: 0]."),
        click.option(
            "--trust-remote-code", is_flag=True, default=None, help="Run the model's own code."
        ),
        click.option("--progress/--no-progress", default=None, help="Progress bar [default: on]."),
        click.option("--executor", type=click.Choice(["local", "ray"]), help="[default: local]"),
        click.option(
            "--resume",
            is_flag=True,
            default=None,
            help="Continue an interrupted run (same input and options).",
        ),
        click.option(
            "--strict",
            is_flag=True,
            default=None,
            help="Stop at the first record that cannot be scored.",
        ),
        click.option("--ray-address", help="ray: cluster address [default: $RAY_ADDRESS/local]."),
        click.option("--ray-workers", type=int, help="ray: workers [default: one per GPU]."),
        click.option("--shards", type=int, help="ray: input shards [default: 4 per worker]."),
        click.option("--cpus-per-worker", type=float, help="ray [default: 1]."),
        click.option("--gpus-per-worker", type=float, help="ray [default: 1 if GPUs, else 0]."),
        click.option(
            "--dry-run",
            is_flag=True,
            help="Count records and tokens, time the engines on a short sample, estimate the "
            "run's time; score nothing, write nothing.",
        ),
        click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return render_options(f)


def _dry_run(cfg) -> None:
    from .pipeline import dry_run

    d = dry_run(cfg)
    by = ", ".join(f"{k}={v}" for k, v in d["by_status"].items())
    s = d["sample"]
    rate = "n/a" if s["tokens_per_second"] is None else f"{s['tokens_per_second']:,.0f}"
    est = "n/a (nothing to score)" if d["estimate_seconds"] is None else _hms(d["estimate_seconds"])
    click.echo(
        f"dry run of {d['input']} ({d['format']}, {d['engine']} engine):\n"
        f"  records            {d['records']:,} ({by})\n"
        f"  tokens to score    {d['tokens']:,} ({d['response_tokens']:,} response tokens)\n"
        f"  timed sample       {s['records']} records, {s['tokens']:,} tokens in "
        f"{s['seconds']:.2f}s: {rate} tokens/s through both models\n"
        f"  set-up             {d['seconds'].get('load_tokenizers', 0.0):.1f}s tokenizers, "
        f"{d['seconds'].get('engine_start', 0.0):.1f}s engine start\n"
        f"  estimated run      {est}"
    )


def _hms(seconds: float) -> str:
    m, sec = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {sec:02d}s" if h else f"{m}m {sec:02d}s" if m else f"{sec}s"


def select_rule_options(f):
    opts = [
        click.option("--top-k", type=int, help="Keep the k best records."),
        click.option("--fraction", type=float, help="Keep floor(F x records) best records."),
        click.option("--threshold", type=float, help="Keep records scoring at least T."),
        click.option(
            "--score",
            help="Rank by: lobass [default], rho, loss_base, ifd (scored with --ifd), "
            "perplexity, length, random, or any numeric scores column.",
        ),
        click.option(
            "--order", type=click.Choice(["desc", "asc"]), help="desc: highest first [default]."
        ),
        click.option("--random-seed", type=int, help="Seed of --score random [0]."),
        click.option("--group-field", help="Quotas: the input records' field naming a group."),
        click.option(
            "--quota",
            help="Shares of the budget per group, 'a:0.3,b:0.7' (or 'FIELD=a:0.3,b:0.7'), "
            "or 'proportional' to the input.",
        ),
        click.option(
            "--length-bins",
            type=int,
            help="Select within N response-length bins, in proportion to each bin's records.",
        ),
        click.option(
            "--dedup",
            is_flag=True,
            default=None,
            help="Drop exact duplicates (normalised text) before ranking; the first stays.",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _handle_errors(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FastscoreError as e:
            raise click.ClickException(str(e)) from e

    return wrapper


@click.group(epilog=EXAMPLE)
@click.option("-v", "--verbose", is_flag=True, help="Log more, the engines' logs included.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(package_name="fastscore")
def main(verbose: bool, quiet: bool) -> None:
    """fastscore: pick the most learnable SFT samples for a base model (LoBaSS / DavIR)."""
    from .engines.vllm_engine import quiet_vllm

    # Our own progress at INFO; the engines' logs (a wall of text per engine) only with -v.
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("fastscore").setLevel(
        logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    )
    quiet_vllm(verbose)


@main.command(
    epilog="\b\nExample:\n  fastscore score data.jsonl --base ./base --ref ./sft "
    "--output scores.jsonl --dtype float32"
)
@click.argument("input", required=False)
@click.option("--output", help="Scores file to write (JSONL, one line per input record).")
@score_options
@click.pass_context
@_handle_errors
def score(ctx: click.Context, config_file: str | None, **_: object) -> None:
    """Score every record of INPUT under the base and the reference model."""
    from .config import ScoreConfig, load_yaml
    from .pipeline import score as run_score

    cfg = load_yaml(ScoreConfig, config_file) if config_file else ScoreConfig()
    _apply(ctx, cfg, SCORE_OPTIONS)
    if ctx.params.get("dry_run"):
        return _dry_run(cfg)
    m = run_score(cfg)
    click.echo(_summary(m), err=True)


@main.command(
    epilog="\b\nExample:\n  fastscore select scores.jsonl --input data.jsonl "
    "--output subset.jsonl --fraction 0.06"
)
@click.argument("scores", required=False)
@click.option("--input", help="The input file the scores were computed on.")
@click.option("--output", help="Subset to write (.jsonl, .json or .parquet).")
@select_rule_options
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file.")
@click.pass_context
@_handle_errors
def select(ctx: click.Context, config_file: str | None, **_: object) -> None:
    """Write the best-scoring records of INPUT, unchanged and in input order."""
    from .config import SelectConfig, load_yaml
    from .selection import select as run_select

    cfg = load_yaml(SelectConfig, config_file) if config_file else SelectConfig()
    _apply(ctx, cfg, SELECT_OPTIONS)
    summary = run_select(cfg)
    click.echo(
        f"selected {summary['selected']} of {summary['records']} records "
        f"({summary['eligible']} eligible) by {summary['score']} -> {summary['output']}",
        err=True,
    )


@main.command(
    epilog="\b\nExample:\n  fastscore run data.jsonl --base ./base --ref ./sft "
    "--output-dir out --fraction 0.06"
)
@click.argument("input", required=False)
@click.option("--output-dir", help="Directory for scores.jsonl, selected.jsonl, manifest.json.")
@click.option(
    "--report/--no-report", default=None, help="Also write report/report.html [default: on]."
)
@score_options
@select_rule_options
@click.pass_context
@_handle_errors
def run(ctx: click.Context, config_file: str | None, **_: object) -> None:
    """Score INPUT and select from it in one go."""
    from .config import RunConfig, load_yaml
    from .runner import run as run_all

    cfg = load_yaml(RunConfig, config_file) if config_file else RunConfig()
    if ctx.params.get("output_dir"):
        cfg.output_dir = ctx.params["output_dir"]
    _apply(ctx, cfg, {"report": "report"})
    _apply(ctx, cfg, {k: v for k, v in SCORE_OPTIONS.items() if k != "output"}, "score.")
    _apply(
        ctx,
        cfg,
        {k: v for k, v in SELECT_OPTIONS.items() if k not in ("scores", "input", "output")},
        "select.",
    )
    if ctx.params.get("dry_run"):
        return _dry_run(cfg.score)
    m = run_all(cfg)
    click.echo(_summary(m), err=True)
    sel = m["selection"]
    click.echo(
        f"selected {sel['selected']} of {sel['records']} by {sel['score']} -> {sel['output']}",
        err=True,
    )


TRAIN_OPTIONS = {
    name: name
    for name in (
        "input",
        "base",
        "output_dir",
        "format",
        "template",
        "chat_template",
        "date",
        "max_length",
        "epochs",
        "max_steps",
        "lr",
        "batch_size",
        "warmup_steps",
        "weight_decay",
        "lora",
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "keep_adapter",
        "device",
        "dtype",
        "seed",
        "progress",
        "trust_remote_code",
    )
}


@main.command(
    "train-ref",
    epilog="\b\nExamples:\n  fastscore train-ref data.jsonl --base ./base --output-dir ./ref\n"
    "  fastscore train-ref data.jsonl --base ./base --output-dir ./ref --lora --lr 2e-4\n"
    "  fastscore score data.jsonl --base ./base --ref ./ref --output scores.jsonl",
)
@click.argument("input", required=False)
@click.option("--base", help="Base model: a local Hugging Face checkpoint directory.")
@click.option("--output-dir", help="Where the reference checkpoint is saved.")
@render_options
@click.option("--max-length", type=int, help="Longest sample trained on, in tokens.")
@click.option("--epochs", type=int, help="[1]")
@click.option("--max-steps", type=int, help="Train exactly N steps instead of --epochs.")
@click.option("--lr", type=float, help="Peak learning rate [2e-5; 2e-4 with --lora].")
@click.option("--batch-size", type=int, help="Samples per optimiser step [16].")
@click.option("--warmup-steps", type=int, help="[3%% of the steps]; then cosine decay to 0.")
@click.option("--weight-decay", type=float, help="[0]")
@click.option("--lora/--full", default=None, help="LoRA (peft), saved merged [full].")
@click.option("--lora-r", type=int, help="[16]")
@click.option("--lora-alpha", type=int, help="[32]")
@click.option("--lora-dropout", type=float, help="[0]")
@click.option("--keep-adapter", is_flag=True, default=None, help="LoRA: also save the adapter.")
@click.option("--device", help="auto, cpu, cuda, cuda:1 [auto].")
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
    help="auto: bfloat16 autocast on cuda, float32 on cpu.",
)
@click.option("--seed", type=int, help="[0]")
@click.option("--progress/--no-progress", default=None)
@click.option("--trust-remote-code", is_flag=True, default=None)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file.")
@click.pass_context
@_handle_errors
def train_ref(ctx: click.Context, config_file: str | None, **_: object) -> None:
    """Fine-tune the base on INPUT into the reference model, with the loss on exactly the
    response tokens the scorer scores."""
    from .config import TrainConfig, load_yaml
    from .train import train_ref as run_train

    cfg = load_yaml(TrainConfig, config_file) if config_file else TrainConfig()
    _apply(ctx, cfg, TRAIN_OPTIONS)
    m = run_train(cfg)
    click.echo(
        f"trained on {m['trained_samples']} of {m['counts']['records']} records, "
        f"{m['steps']} steps, final loss {m['final_loss']:.3f}, {m['seconds']:.0f}s "
        f"-> {m['output_dir']}",
        err=True,
    )


@main.command(
    epilog="\b\nExamples:\n  fastscore report scores.jsonl --input data.jsonl --output-dir rep\n"
    "  fastscore report out/scores.jsonl --input data.jsonl --output-dir rep --top-k 500 "
    "--group-field source"
)
@click.argument("scores", required=False)
@click.option("--input", help="The input file the scores were computed on.")
@click.option("--output-dir", help="Where report.html and its PNGs are written.")
@select_rule_options
@click.option("--samples", type=int, help="Top and bottom samples shown with their text [10].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file.")
@click.pass_context
@_handle_errors
def report(ctx: click.Context, config_file: str | None, **_: object) -> None:
    """Write an HTML page (and PNGs) of SCORES: histograms, scores against length with
    Spearman's rho, loss_base against loss_ref with the selection marked (by default the
    top 6% by lobass), counts per status and group, the top and bottom samples' text."""
    from .config import ReportConfig, load_yaml
    from .reporting import report as run_report

    cfg = load_yaml(ReportConfig, config_file) if config_file else ReportConfig()
    p = ctx.params
    if p.get("top_k") is not None or p.get("threshold") is not None:
        cfg.select.fraction = None  # the default rule gives way to the one typed
    _apply(ctx, cfg, {"scores": "scores", "input": "input", "output_dir": "output_dir"})
    _apply(ctx, cfg, {"samples": "samples", "group_field": "group_field"})
    rule = {k: v for k, v in SELECT_OPTIONS.items() if k not in ("scores", "input", "output")}
    if p.get("quota") is None:
        rule.pop("group_field")  # without quotas the field only groups the counts
    _apply(ctx, cfg, rule, "select.")
    summary = run_report(cfg)
    click.echo(
        f"report of {summary['records']} records ({summary['selected']} selected) -> "
        f"{summary['output']}",
        err=True,
    )


@main.command(
    epilog="\b\nExamples:\n  fastscore inspect data.jsonl --base ./base --id 42\n"
    "  fastscore inspect data.jsonl --base ./base --ref ./sft --index 0\n"
    "  fastscore inspect --scores out/scores.jsonl --id 42   # models from its manifest"
)
@click.argument("input", required=False)
@click.option("--base", help="Base model: its tokenizer and template render the record.")
@click.option("--ref", help="Reference model: adds each scored token's logprob under both.")
@click.option("--scores", help="A scores file: its row, and (unless given) its models/options.")
@click.option("--id", "record_id", help="The record's id [default: the first record].")
@click.option("--index", type=int, help="Or the record's 0-based position.")
@render_options
@click.option("--max-length", type=int, help="As in score [default: context-1].")
@click.option("--engine", type=click.Choice(["torch", "vllm"]), help="For --ref [torch].")
@click.option("--dtype", help="auto, float32, bfloat16, float16 [auto].")
@click.option("--color/--no-color", default=None, help="[auto: colour on a terminal]")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
@_handle_errors
def inspect(ctx: click.Context, record_id, as_json: bool, color, **_: object) -> None:
    """Show one record of INPUT as the model sees it: the rendered text with the scored
    response tokens marked and, with --ref, each one's logprob under both models."""
    from .config import InspectConfig
    from .inspection import format_inspect
    from .inspection import inspect as run_inspect

    cfg = InspectConfig(id=record_id)
    _apply(
        ctx,
        cfg,
        {
            k: k
            for k in (
                "input",
                "base",
                "ref",
                "scores",
                "index",
                "format",
                "template",
                "chat_template",
                "date",
                "max_length",
            )
        },
    )
    _apply(ctx, cfg, {"engine": "engine.kind", "dtype": "engine.dtype"})
    result = run_inspect(cfg)
    if as_json:
        click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        color = sys.stdout.isatty() if color is None else color
        click.echo(format_inspect(result, color), color=color)


@main.command(epilog="\b\nExample:\n  fastscore demo --output-dir runs/demo")
@click.option("--output-dir", default="runs/demo", show_default=True)
@click.option("--fraction", default=0.2, show_default=True, type=float)
@click.option("--progress/--no-progress", default=True)
@_handle_errors
def demo(output_dir: str, fraction: float, progress: bool) -> None:
    """Build the tiny demo models and data (once, cached), then score and select."""
    from .runner import demo as run_demo
    from .runner import format_demo

    result = run_demo(output_dir, fraction=fraction, progress=progress)
    click.echo(format_demo(result))
    click.echo(
        f"outputs in {output_dir}/ (scores.jsonl, selected.jsonl, manifest.json, "
        "report/report.html)"
    )


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    epilog="\b\nExamples:\n  fastscore bench --model llama60m --samples 150 --repeats 2\n"
    "  fastscore bench --gpu --shape llama-8b --json-out gpu-8b.json --profile",
)
@click.pass_context
def bench(ctx: click.Context) -> None:
    """Throughput against the hardware's ceiling and today's ways (benchmarks/throughput.py).

    Options: --model demo|llama60m|llama100m, --samples N, --repeats N, --ways LIST,
    --json-out FILE (see python -m fastscore.bench --help).

    With --gpu: the GPU benchmark (benchmarks/gpu.py): --shape llama-1b|llama-8b|tiny,
    --json-out FILE, --profile (see python -m fastscore.gpu_bench --help).
    """
    import argparse

    args = list(ctx.args)
    if "--gpu" in args:
        from . import gpu_bench

        args.remove("--gpu")
        parser = argparse.ArgumentParser(prog="fastscore bench --gpu")
        gpu_bench.add_cli_args(parser)
        gpu_bench.main(parser.parse_args(args), args)
        return
    from . import bench as bench_mod

    parser = argparse.ArgumentParser(prog="fastscore bench")
    bench_mod.add_cli_args(parser)
    bench_mod.main(parser.parse_args(args))


def _summary(m: dict) -> str:
    by = ", ".join(f"{k}={v}" for k, v in m["counts"]["by_status"].items())
    return (
        f"scored {m['counts']['records']} records ({by}) at "
        f"{m['throughput']['tokens_per_second']:,.0f} tokens/s -> {m['output']}"
    )


if __name__ == "__main__":
    sys.exit(main())
