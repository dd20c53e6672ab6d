"""The command line: parse options, build a config, call the library. Nothing else here."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Any

import click
import orjson
from click.core import ParameterSource

from fastscore.errors import FastscoreError

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


def config_options(cls: type, *, skip: tuple[str, ...] = (), defaults: Any = None):
    """click options built from a config dataclass's fields (``config.option`` metadata:
    help, choices, the option's name, a switch's form; the default from the dataclass),
    nested configs included (``engine.dtype`` is ``--dtype``). ``skip``: dotted fields left
    out (``engine.*`` leaves out a whole section). Returns (decorator, {parameter: dotted
    field}) for ``_apply``."""
    import typing

    from fastscore.config import _dataclass_of

    defaults = defaults if defaults is not None else cls()
    opts, mapping = [], {}

    def walk(c: type, obj: Any, prefix: str) -> None:
        hints = typing.get_type_hints(c)
        for f in dataclasses.fields(c):
            dotted = prefix + f.name
            if dotted in skip or f"{prefix}*" in skip:
                continue
            sub = _dataclass_of(hints[f.name])
            if sub is not None:
                walk(sub, getattr(obj, f.name), dotted + ".")
                continue
            meta = f.metadata
            if "help" not in meta:
                continue
            name = meta.get("cli") or f.name
            flag = "--" + name.replace("_", "-")
            default = getattr(obj, f.name)
            kind = _base_type(hints[f.name])
            help_text = meta["help"]
            if kind is bool:
                if meta.get("switch"):
                    on = meta["switch"].split("/")[0]
                    shown = {True: f" [default: {on}]", False: "", None: ""}[default]
                    opts.append(click.option(meta["switch"], name, default=None,
                                             help=help_text + shown))  # fmt: skip
                else:
                    opts.append(click.option(flag, name, is_flag=True, default=None,
                                             help=help_text))  # fmt: skip
            else:
                typ = click.Choice(meta["choices"]) if meta.get("choices") else kind
                shown = "" if default is None else f" [default: {default}]"
                opts.append(click.option(flag, name, type=typ, help=help_text + shown))
            mapping[name] = dotted

    walk(cls, defaults, "")

    def decorate(fn):
        for opt in reversed(opts):
            fn = opt(fn)
        return fn

    return decorate, mapping


def _base_type(hint: Any) -> type:
    """int / float / bool / str from a field's annotation (``int | None`` -> int)."""
    import types
    import typing

    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else ()
    if typing.get_origin(hint) is typing.Union:
        args = typing.get_args(hint)
    for t in args or (hint,):
        if t in (int, float, bool, str):
            return t
    return str


def _apply(ctx: click.Context, cfg, mapping: dict[str, str], *, prefix: str = "") -> None:
    """Copy the options the user actually typed onto the config (they beat the file)."""
    from fastscore.config import set_path

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


CONFIG_FILE = click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), help="YAML file."
)
DRY_RUN = click.option(
    "--dry-run",
    is_flag=True,
    help="Count records and tokens, time the engines on a short sample, estimate the "
    "run's time; score nothing, write nothing.",
)


def _dry_run(cfg) -> None:
    from fastscore.executors.local import dry_run

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
    from fastscore.runs.problems import Problem, summary_lines

    not_ok = d["records"] - d["by_status"].get("ok", 0)
    if not_ok:
        click.echo(f"  not scorable       {not_ok:,} records")
        click.echo(
            "\n".join(summary_lines([Problem(**p) for p in d["problems"]], not_ok, indent="    "))
        )
    if not d["by_status"].get("ok") and not cfg.allow_empty:
        raise click.ClickException(
            "nothing to score (the records above); --allow-empty to go on anyway"
        )


def _hms(seconds: float) -> str:
    m, sec = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {sec:02d}s" if h else f"{m}m {sec:02d}s" if m else f"{sec}s"


def _handle_errors(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FastscoreError as e:
            raise click.ClickException(str(e)) from e
        except OSError as e:  # a file that cannot be read or written: its path and why
            if logging.getLogger("fastscore").isEnabledFor(logging.DEBUG):
                raise  # -v: the traceback too
            where = f": {e.filename}" if e.filename else ""
            raise click.ClickException(
                f"{e.strerror or e}{where} (fastscore -v ... shows where it happened)"
            ) from e

    return wrapper


class _Lines(logging.Formatter):
    """fastscore's own progress as plain lines; warnings, errors and other libraries'
    messages with their level and logger."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.INFO and record.name.startswith("fastscore"):
            return record.getMessage()
        return super().format(record)


@click.group(epilog=EXAMPLE)
@click.option("-v", "--verbose", is_flag=True, help="Log more, the engines' logs included.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(package_name="fastscore")
def main(verbose: bool, quiet: bool) -> None:
    """fastscore: pick the most learnable SFT samples for a base model (LoBaSS / DavIR)."""
    from fastscore.quiet import VERBOSE_ENV, set_verbose

    # Our own progress at INFO, as plain lines; the engines' logs only with -v.
    handler = logging.StreamHandler()
    handler.setFormatter(_Lines())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler])
    logging.getLogger("fastscore").setLevel(
        logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    )
    # other libraries' output (vLLM's, transformers' bars) only with -v (fastscore.quiet)
    set_verbose(verbose or os.environ.get(VERBOSE_ENV) == "1")


from fastscore.config import (  # noqa: E402 (the options are built from them at import)
    InspectConfig,
    ReportConfig,
    RunConfig,
    ScoreConfig,
    SelectConfig,
    TrainConfig,
)

SCORE_OPTIONS, SCORE_MAP = config_options(ScoreConfig, skip=("input",))
SELECT_OPTIONS, SELECT_MAP = config_options(SelectConfig, skip=("scores",))
# run's --allow-empty is its scoring's, which run hands on to its selection
RUN_OPTIONS, RUN_MAP = config_options(
    RunConfig,
    skip=("score.input", "score.output", "select.scores", "select.input", "select.output",
          "select.allow_empty"),
)  # fmt: skip
TRAIN_OPTIONS, TRAIN_MAP = config_options(TrainConfig, skip=("input",))
REPORT_OPTIONS, REPORT_MAP = config_options(
    ReportConfig,
    skip=("scores", "select.scores", "select.input", "select.output", "select.allow_empty"),
)
# inspect runs an engine only with --ref: its kind and dtype are the options it takes
INSPECT_OPTIONS, INSPECT_MAP = config_options(
    InspectConfig,
    skip=("input",) + tuple(f"engine.{n}" for n in dataclasses.asdict(InspectConfig().engine)
                            if n not in ("kind", "dtype")),
)  # fmt: skip


@main.command(
    epilog="\b\nExample:\n  fastscore score data.jsonl --base ./base --ref ./sft "
    "--output scores.jsonl --dtype float32"
)
@click.argument("input", required=False)
@SCORE_OPTIONS
@DRY_RUN
@CONFIG_FILE
@click.pass_context
@_handle_errors
def score(ctx: click.Context, config_file: str | None, **_: object) -> None:
    """Score every record of INPUT under the base and the reference model."""
    from fastscore.config import load_yaml
    from fastscore.executors.local import score as run_score

    cfg = load_yaml(ScoreConfig, config_file) if config_file else ScoreConfig()
    _apply(ctx, cfg, {"input": "input", **SCORE_MAP})
    if ctx.params.get("dry_run"):
        return _dry_run(cfg)
    m = run_score(cfg)
    click.echo(_summary(m), err=True)
    click.echo(_wrote(m["written"]), err=True)


@main.command(
    epilog="\b\nExample:\n  fastscore select scores.jsonl --input data.jsonl "
    "--output subset.jsonl --fraction 0.06"
)
@click.argument("scores", required=False)
@SELECT_OPTIONS
@CONFIG_FILE
@click.pass_context
@_handle_errors
def select(ctx: click.Context, config_file: str | None, **_: object) -> None:
    """Write the best-scoring records of INPUT, unchanged and in input order."""
    from fastscore.config import load_yaml
    from fastscore.selection.selector import select as run_select

    cfg = load_yaml(SelectConfig, config_file) if config_file else SelectConfig()
    _apply(ctx, cfg, {"scores": "scores", **SELECT_MAP})
    summary = run_select(cfg)
    click.echo(_selection_line(summary), err=True)
    if "coverage" in summary:
        click.echo(_cluster_lines(summary["coverage"]), err=True)


def _wrote(files: list[str]) -> str:
    """Every file a command wrote, by directory: ``wrote in DIR/: a, b, c``."""
    by_dir: dict[str, list[str]] = {}
    for f in files:
        where, _, name = f.rpartition("/")
        by_dir.setdefault(where, []).append(name)
    return "\n".join(f"wrote in {d}/: {', '.join(names)}" for d, names in by_dir.items())


def _selection_line(sel: dict) -> str:
    short = sel.get("short_by", 0)
    return (
        f"selected {sel['selected']} of {sel['records']} records ({sel['eligible']} "
        f"eligible), {sel['method']}"
        + (f", {short} short of the budget" if short > 0 else "")
        + f" -> {sel['output']}"
    )


def _cluster_lines(c: dict, most: int = 20) -> str:
    """The clusters as a short table: records, eligible, quota, selected, mean score."""
    by = c["by_cluster"]
    head = f"  {'cluster':<16}{'records':>9}{'eligible':>10}{'quota':>7}{'selected':>10}{'mean':>9}"
    lines = [head]
    for name in list(by)[:most]:
        r = by[name]
        mean = "" if r["score_mean"] is None else f"{r['score_mean']:.4f}"
        lines.append(
            f"  {str(name)[:15]:<16}{r['records']:>9}{r['eligible']:>10}"
            f"{r.get('quota', ''):>7}{r['selected']:>10}{mean:>9}"
        )
    if len(by) > most:
        lines.append(f"  ... {len(by) - most} more (all in the summary / manifest)")
    return "\n".join(lines)


@main.command(
    epilog="\b\nExample:\n  fastscore run data.jsonl --base ./base --ref ./sft "
    "--output-dir out --fraction 0.06"
)
@click.argument("input", required=False)
@RUN_OPTIONS
@DRY_RUN
@CONFIG_FILE
@click.pass_context
@_handle_errors
def run(ctx: click.Context, config_file: str | None, **_: object) -> None:
    """Score INPUT and select from it in one go."""
    from fastscore.config import load_yaml
    from fastscore.runner import run as run_all

    cfg = load_yaml(RunConfig, config_file) if config_file else RunConfig()
    _apply(ctx, cfg, {"input": "score.input", **RUN_MAP})
    if ctx.params.get("dry_run"):
        return _dry_run(cfg.score)
    m = run_all(cfg)
    click.echo(_summary(m), err=True)
    click.echo(_selection_line(m["selection"]), err=True)
    if m.get("report"):
        explorer = f" (and the explorer: {m['explorer']})" if m.get("explorer") else ""
        click.echo(f"report: {m['report']}{explorer}", err=True)
    click.echo(_wrote(m["written"]), err=True)


def _fmt_loss(x: float | None) -> str:
    return "n/a (no step logged)" if x is None else f"{x:.3f}"


@main.command(
    "train-ref",
    epilog="\b\nExamples:\n  fastscore train-ref data.jsonl --base ./base --output-dir ./ref\n"
    "  fastscore train-ref data.jsonl --base ./base --output-dir ./ref --lora --lr 2e-4\n"
    "  torchrun --nproc-per-node 8 -m fastscore train-ref data.jsonl --base ./base "
    "--output-dir ./ref --batch-size 64\n"
    "  fastscore train-ref data.jsonl --base ./base --output-dir ./ref --resume\n"
    "  fastscore score data.jsonl --base ./base --ref ./ref --output scores.jsonl",
)
@click.argument("input", required=False)
@TRAIN_OPTIONS
@CONFIG_FILE
@click.pass_context
@_handle_errors
def train_ref(ctx: click.Context, config_file: str | None, **_: object) -> None:
    """Fine-tune the base on INPUT into the reference model, with the loss on exactly the
    response tokens the scorer scores."""
    from fastscore.config import load_yaml
    from fastscore.training.run import train_ref as run_train
    from fastscore.training.schedule import Launch

    cfg = load_yaml(TrainConfig, config_file) if config_file else TrainConfig()
    _apply(ctx, cfg, {"input": "input", **TRAIN_MAP})
    m = run_train(cfg)
    if Launch.from_env().main:  # under a launcher, one line for the run, not one per process
        processes = f" on {m['world_size']} processes" if m["world_size"] > 1 else ""
        if m.get("folds"):
            f = m["folds"]
            click.echo(
                f"trained {f['k']} cross-fitted references on "
                f"{' / '.join(map(str, f['trained_samples']))} of {m['counts']['records']} "
                f"records (each on all but its fold), {m['steps']} steps{processes}, "
                f"{m['seconds']:.0f}s -> {m['output_dir']}",
                err=True,
            )
        else:
            click.echo(
                f"trained on {m['trained_samples']} of {m['counts']['records']} records, "
                f"{m['steps']} steps{processes}, final loss {_fmt_loss(m['final_loss'])}, "
                f"{m['seconds']:.0f}s -> {m['output_dir']}",
                err=True,
            )
        if m["held_out"]:
            from fastscore.scoring.reference import describe

            click.echo(f"reference check: {describe(m['held_out'])}", err=True)
        click.echo(_wrote(m["written"]), err=True)


@main.command(
    epilog="\b\nExamples:\n  fastscore report scores.jsonl --input data.jsonl --output-dir rep\n"
    "  fastscore report out/scores.jsonl --input data.jsonl --output-dir rep --top-k 500 "
    "--group-field source"
)
@click.argument("scores", required=False)
@REPORT_OPTIONS
@CONFIG_FILE
@click.pass_context
@_handle_errors
def report(ctx: click.Context, config_file: str | None, **_: object) -> None:
    """Write an HTML page (and PNGs) of SCORES: histograms, scores against length with
    Spearman's rho, loss_base against loss_ref with the selection marked (by default what
    select picks at 6% by lobass), counts per status and group, the top and bottom
    samples' text."""
    from fastscore.config import load_yaml
    from fastscore.reporting.page import report as run_report

    cfg = load_yaml(ReportConfig, config_file) if config_file else ReportConfig()
    p = ctx.params
    if p.get("top_k") is not None or p.get("threshold") is not None:
        cfg.select.fraction = None  # the default rule gives way to the one typed
    mapping = {"scores": "scores", **REPORT_MAP}
    if p.get("group_field") is not None:
        cfg.group_field = p["group_field"]  # the counts per group
        if p.get("quota") is None and p.get("coverage") != "clusters":
            mapping.pop("group_field")  # without quotas the field only groups the counts
    _apply(ctx, cfg, mapping)
    summary = run_report(cfg)
    also = f" and {summary['explorer']}" if "explorer" in summary else ""
    click.echo(
        f"report of {summary['records']} records ({summary['selected']} selected) -> "
        f"{summary['output']}{also}",
        err=True,
    )
    click.echo(_wrote(summary["written"]), err=True)


@main.command(
    epilog="\b\nExamples:\n  fastscore inspect data.jsonl --base ./base --id 42\n"
    "  fastscore inspect data.jsonl --base ./base --ref ./sft --index 0\n"
    "  fastscore inspect --scores out/scores.jsonl --id 42   # models from its manifest"
)
@click.argument("input", required=False)
@INSPECT_OPTIONS
@click.option("--color/--no-color", default=None, help="[auto: colour on a terminal]")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
@_handle_errors
def inspect(ctx: click.Context, as_json: bool, color, **_: object) -> None:
    """Show one record of INPUT as the model sees it: the rendered text with the scored
    response tokens marked and, with --ref, each one's logprob under both models."""
    from fastscore.reporting.inspection import format_inspect
    from fastscore.reporting.inspection import inspect as run_inspect

    cfg = InspectConfig()
    _apply(ctx, cfg, {"input": "input", **INSPECT_MAP})
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
    from fastscore.runner import demo as run_demo
    from fastscore.runner import format_demo

    result = run_demo(output_dir, fraction=fraction, progress=progress)
    click.echo(format_demo(result))
    m = result["manifest"]
    click.echo(
        f"demo models and data: {result['models']} (base/, ref/, sft.jsonl; {result['built']}, "
        "reused by later runs)"
    )
    click.echo(f"report: {m['report']} (and the explorer: {m['explorer']})")
    click.echo(_wrote(m["written"]))


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    epilog="\b\nExamples:\n  fastscore bench --model llama60m --samples 150 --repeats 2\n"
    "  fastscore bench --gpu --shape llama-8b --json-out gpu-8b.json --profile",
)
@click.pass_context
def bench(ctx: click.Context) -> None:
    """Throughput against the hardware's ceiling and today's ways (fastscore.benchmarks.cpu).

    Options: --model demo|llama60m|llama100m, --samples N, --repeats N, --ways LIST,
    --json-out FILE (see python -m fastscore.benchmarks.cpu --help).

    With --gpu: the GPU benchmark (fastscore.benchmarks.gpu): --shape llama-1b|llama-8b|tiny,
    --json-out FILE, --profile (see python -m fastscore.benchmarks.gpu --help).
    """
    import argparse

    args = list(ctx.args)
    if "--gpu" in args:
        from fastscore.benchmarks import gpu as gpu_bench

        args.remove("--gpu")
        parser = argparse.ArgumentParser(prog="fastscore bench --gpu")
        gpu_bench.add_cli_args(parser)
        gpu_bench.main(parser.parse_args(args), args)
        return
    from fastscore.benchmarks import cpu as bench_mod

    parser = argparse.ArgumentParser(prog="fastscore bench")
    bench_mod.add_cli_args(parser)
    bench_mod.main(parser.parse_args(args))


def _summary(m: dict) -> str:
    from fastscore.runs.problems import Problem, summary_lines
    from fastscore.scoring.reference import summary_line

    counts = m["counts"]
    by = ", ".join(f"{k}={v}" for k, v in counts["by_status"].items())
    masks = m["template"].get("masks")  # absent from manifests of older versions
    lines = [
        f"scored {counts['records']} records ({by}) at "
        f"{m['throughput']['tokens_per_second']:,.0f} tokens/s -> {m['output']}"
    ]
    if masks:
        lines.append(f"scored tokens: {masks}")
    ref_line = summary_line(m["reference"]) if m.get("reference") else None
    if ref_line:
        lines.append(ref_line)
    not_ok = counts["records"] - counts["by_status"].get("ok", 0)
    if not_ok:
        lines.append(f"not scored: {not_ok} record{'s' * (not_ok != 1)}")
        lines += summary_lines([Problem(**p) for p in m.get("problems", [])], not_ok)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
