"""Config dataclasses. A ``configs/*.yaml`` file maps 1:1 onto them; unknown keys are refused.

``ScoreConfig`` is what ``fastscore score`` takes, ``SelectConfig`` what ``fastscore select``
takes, and ``RunConfig`` (``score:`` and ``select:`` sections plus ``output_dir``) what
``fastscore run`` takes, ``TrainConfig`` what ``fastscore train-ref`` takes,
``ReportConfig`` what ``fastscore report`` takes. CLI options override the file's values.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

ENGINES = ("auto", "vllm", "torch", "served")
LOGPROB_PATHS = ("auto", "flat", "token_ids")
BATCHINGS = ("auto", "packed", "padded", "single")


@dataclass
class EngineConfig:
    """How each model is run. Applies to the base and the reference engine alike."""

    # auto: torch, on CPU (the faster there: see benchmarks/throughput.py) and on a GPU
    # (packed varlen streams: benchmarks/gpu.py) until a vLLM GPU run has been verified
    kind: str = "auto"
    # "auto" keeps the checkpoint's dtype; "float32" matches a transformers fp32 reference.
    dtype: str = "auto"
    # Share of accelerator memory per engine (two engines share one device). On CPU
    # vLLM reads it as a share of RAM; kv_cache_gb is the simpler knob there.
    gpu_memory_utilization: float | None = None
    kv_cache_gb: float | None = None  # KV cache per engine; default 1 GiB on CPU
    enforce_eager: bool | None = None  # None: eager on CPU (no compile wait), graphs on GPU
    tensor_parallel_size: int = 1
    # token_ids: vLLM's response-only fast path (V2 model runner); flat: prompt_logprobs=0
    # at every position; auto: the fast path when the engine supports it.
    logprobs_path: str = "auto"
    seed: int = 0
    trust_remote_code: bool = False
    # torch engine: auto = packed for Llama-style models (on a GPU with flash varlen
    # attention, which needs bf16/fp16), else padded on a GPU and single on CPU; the
    # engine's info() in the manifest says which and why
    batching: str = "auto"
    # torch engine: tokens per forward pass; None: packed 1024 on CPU, 16384 on a GPU;
    # padded 16384
    forward_tokens: int | None = None
    device: str = "auto"  # torch engine: auto, cpu, cuda, cuda:1, ...
    # served engine: the API key is read from this environment variable, never stored
    api_key_env: str = "FASTSCORE_API_KEY"
    concurrency: int = 8  # served engine: requests in flight per endpoint
    request_timeout: float = 300.0  # served engine: seconds per request
    retry_seconds: float = 120.0  # served engine: how long a failing request is retried


@dataclass
class RayConfig:
    """``executor: ray``: shards of the input scored by Ray workers that own their engines."""

    address: str | None = None  # None: $RAY_ADDRESS if set, else a local cluster
    workers: int | None = None  # None: one per GPU (per cpus_per_worker CPUs without GPUs)
    shards: int | None = None  # None: 4 per worker (finished shards survive a restart)
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None  # None: 1 when the cluster has GPUs, else 0


@dataclass
class ScoreConfig:
    input: str | None = None
    base: str | None = None  # local checkpoint directories (in-process engines)
    ref: str | None = None
    output: str | None = None
    # served engine: comma-separated endpoints per model, and the served model names
    base_url: str | None = None
    ref_url: str | None = None
    base_model: str | None = None
    ref_model: str | None = None
    # the tokenizer that renders the data: default the base checkpoint's, or with a served
    # engine the server's model path when it is a local directory
    tokenizer: str | None = None
    format: str = "auto"
    template: str = "auto"  # auto: the tokenizer's chat template, else the plain one
    # a Jinja chat template file to render with instead of the tokenizer's (e.g. the
    # training template an SFT run used); its {% generation %} markers give the response
    chat_template: str | None = None
    # the date templates that write one (Llama 3.1, GPT-OSS) render, YYYY-MM-DD; None: the
    # day the run starts, kept by --resume and by Ray shards
    date: str | None = None
    # Longest sample scored, in tokens; longer ones get status too_long.
    # None: the models' context length minus one.
    max_length: int | None = None
    batch_tokens: int = 32768  # tokens handed to the engines per step (the streaming unit)
    # also score each response without its prompt under the base (one more base pass) for
    # the ifd column: loss_base / loss_alone
    ifd: bool = False
    progress: bool = True
    executor: str = "local"  # local | ray
    # continue <output>.partial after a crash (same input and options), instead of starting
    # over; with executor ray, finished shards are always kept
    resume: bool = False
    # stop at the first record that cannot be scored (with its line and reason) instead
    # of recording its status and going on
    strict: bool = False
    engine: EngineConfig = field(default_factory=EngineConfig)
    ray: RayConfig = field(default_factory=RayConfig)


@dataclass
class SelectConfig:
    scores: str | None = None
    input: str | None = None
    output: str | None = None
    top_k: int | None = None
    fraction: float | None = None
    threshold: float | None = None
    # a scores column, or perplexity (exp loss_base), length (response tokens), random
    score: str = "lobass"
    order: str = "desc"  # desc: highest scores first
    seed: int = 0  # the random score's seed
    # quotas per group: group_field names a top-level field of each input record, quota is
    # "a:0.3,b:0.7" (shares of the budget per value) or "proportional" (to the input)
    group_field: str | None = None
    quota: str | None = None
    # select within N bins of response length, each bin's budget in proportion to its
    # eligible records, so the subset keeps the data's length mix
    length_bins: int | None = None
    # drop exact duplicates (same roles and texts, case and whitespace normalised) before
    # ranking; the first in input order stays
    dedup: bool = False


@dataclass
class TrainConfig:
    """``fastscore train-ref``: fine-tune the base on the data into the reference model,
    with the loss on exactly the response tokens the scorer scores."""

    input: str | None = None
    base: str | None = None
    output_dir: str | None = None
    format: str = "auto"
    template: str = "auto"
    chat_template: str | None = None
    date: str | None = None
    max_length: int | None = None  # None: the base's context length minus one
    epochs: int = 1
    # train exactly this many optimiser steps instead (epochs repeat as needed): the same
    # compute for subsets of different sizes
    max_steps: int | None = None
    lr: float | None = None  # None: 2e-5 full fine-tuning, 2e-4 LoRA
    batch_size: int = 16  # samples per optimiser step
    warmup_steps: int | None = None  # None: 3% of the steps
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora: bool = False  # LoRA (peft) instead of full fine-tuning; saved merged
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    keep_adapter: bool = False  # LoRA: also save the adapter alone in output_dir/adapter
    device: str = "auto"  # auto: cuda when available, else cpu
    dtype: str = "auto"  # auto: bfloat16 autocast on cuda, float32 on cpu
    seed: int = 0
    progress: bool = True
    trust_remote_code: bool = False


@dataclass
class RunConfig:
    output_dir: str | None = None
    score: ScoreConfig = field(default_factory=ScoreConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    report: bool = True  # also write output_dir/report/report.html (see ReportConfig)


@dataclass
class InspectConfig:
    """``fastscore inspect``: one record as the models see it, the scored tokens marked;
    with ``ref``, each scored token's logprob under both models. With ``scores``, the
    models, template, format and max_length default to those the scores were made with."""

    input: str | None = None
    base: str | None = None
    ref: str | None = None
    scores: str | None = None
    id: Any = None  # the record's id (compared as text too: --id 3 finds id 3 and "3")
    index: int | None = None  # or its 0-based position; default the first record
    format: str = "auto"
    template: str = "auto"
    chat_template: str | None = None
    date: str | None = None
    max_length: int | None = None
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(kind="torch"))


@dataclass
class ReportConfig:
    """``fastscore report``: an HTML page and PNGs of a scores file; ``select`` is the rule
    whose chosen records the page marks (its scores / input / output are not used)."""

    scores: str | None = None
    input: str | None = None
    output_dir: str | None = None
    select: SelectConfig = field(default_factory=lambda: SelectConfig(fraction=0.06))
    group_field: str | None = None  # counts per value of this input field
    samples: int = 10  # top and bottom samples shown with their text


def _dataclass_of(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build ``cls`` from a nested dict, refusing keys the dataclass does not have."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; valid keys for {cls.__name__}: {sorted(names)}"
        )
    kwargs = {}
    for key, value in data.items():
        sub = _dataclass_of(hints[key])
        kwargs[key] = from_dict(sub, value, f"{where}.{key}") if sub else value
    return cls(**kwargs)


def load_yaml(cls: type, path: str | Path) -> Any:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError as e:
        raise ConfigError(f"config file {str(path)!r} does not exist") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path}: invalid YAML ({e})") from e
    return from_dict(cls, data, where=str(path))


def set_path(obj: Any, dotted: str, value: Any) -> None:
    """Set ``a.b.c`` on nested dataclasses."""
    *parents, last = dotted.split(".")
    for p in parents:
        obj = getattr(obj, p)
    setattr(obj, last, value)


def _check_format_and_template(cfg) -> None:
    from .formats import FORMATS
    from .render import TEMPLATES

    if cfg.format != "auto" and cfg.format not in FORMATS:
        raise ConfigError(f"format must be auto or one of {FORMATS}, got {cfg.format!r}")
    if cfg.template not in TEMPLATES:
        raise ConfigError(f"template must be one of {TEMPLATES}, got {cfg.template!r}")
    if cfg.chat_template and not Path(cfg.chat_template).is_file():
        raise ConfigError(f"chat_template {cfg.chat_template!r} is not a file")
    if cfg.date is not None:
        import datetime

        try:
            datetime.date.fromisoformat(str(cfg.date))
        except ValueError as e:
            raise ConfigError(f"date must be YYYY-MM-DD, got {cfg.date!r}") from e


def validate_score(cfg: ScoreConfig) -> None:
    needed = (
        ("input", "base_url", "ref_url", "output")
        if cfg.engine.kind == "served"
        else ("input", "base", "ref", "output")
    )
    for name in needed:
        if not getattr(cfg, name):
            flag = name.replace("_", "-")
            raise ConfigError(f"score: {name!r} is required (--{flag} or '{name}:' in the config)")
    _check_format_and_template(cfg)
    if cfg.engine.kind not in ENGINES:
        raise ConfigError(f"engine must be one of {ENGINES}, got {cfg.engine.kind!r}")
    if cfg.engine.logprobs_path not in LOGPROB_PATHS:
        raise ConfigError(
            f"logprobs_path must be one of {LOGPROB_PATHS}, got {cfg.engine.logprobs_path!r}"
        )
    if cfg.executor not in ("local", "ray"):
        raise ConfigError(f"executor must be local or ray, got {cfg.executor!r}")
    if cfg.engine.batching not in BATCHINGS:
        raise ConfigError(f"batching must be one of {BATCHINGS}, got {cfg.engine.batching!r}")
    if cfg.batch_tokens < 1:
        raise ConfigError(f"batch_tokens must be >= 1, got {cfg.batch_tokens}")
    if cfg.max_length is not None and cfg.max_length < 2:
        raise ConfigError(f"max_length must be >= 2, got {cfg.max_length}")
    if Path(cfg.output).resolve() == Path(cfg.input).resolve():
        raise ConfigError("the scores output must not be the input file")


def validate_select(cfg: SelectConfig, need_paths: bool = True) -> None:
    if need_paths:
        for name in ("scores", "input", "output"):
            if not getattr(cfg, name):
                raise ConfigError(f"select: {name!r} is required")
        if Path(cfg.output).resolve() == Path(cfg.input).resolve():
            raise ConfigError("the subset output must not be the input file")
    given = [n for n in ("top_k", "fraction", "threshold") if getattr(cfg, n) is not None]
    if len(given) != 1:
        raise ConfigError(
            "select: give exactly one of --top-k, --fraction, --threshold"
            + (f" (got {given})" if given else "")
        )
    if cfg.top_k is not None and cfg.top_k < 0:
        raise ConfigError(f"top_k must be >= 0, got {cfg.top_k}")
    if cfg.fraction is not None and not 0.0 <= cfg.fraction <= 1.0:
        raise ConfigError(f"fraction must be in [0, 1], got {cfg.fraction}")
    if cfg.order not in ("desc", "asc"):
        raise ConfigError(f"order must be desc or asc, got {cfg.order!r}")
    grouped = cfg.quota is not None or cfg.length_bins is not None
    if cfg.quota is not None and cfg.length_bins is not None:
        raise ConfigError("select: give --quota or --length-bins, not both")
    if grouped and cfg.threshold is not None:
        raise ConfigError("select: quotas and length bins need a budget (--top-k or --fraction)")
    if cfg.group_field is not None and cfg.quota is None:
        raise ConfigError("select: --group-field needs --quota (shares, or 'proportional')")
    if cfg.length_bins is not None and cfg.length_bins < 1:
        raise ConfigError(f"length_bins must be >= 1, got {cfg.length_bins}")
    if cfg.quota is not None:
        parse_quota(cfg.quota, cfg.group_field)  # raises on a malformed one


def parse_quota(text: str, group_field: str | None) -> tuple[str, dict[str, float] | None]:
    """'[FIELD=]a:0.3,b:0.7' or '[FIELD=]proportional' -> (field, shares or None)."""
    field_name, sep, spec = text.partition("=")
    if not sep:
        field_name, spec = group_field, text
    elif group_field is not None and group_field != field_name:
        raise ConfigError(f"quota names field {field_name!r} but group_field is {group_field!r}")
    if not field_name:
        raise ConfigError("select: a quota needs --group-field (or 'FIELD=' before the shares)")
    if spec.strip() == "proportional":
        return field_name, None
    shares: dict[str, float] = {}
    for part in spec.split(","):
        value, colon, share = part.strip().rpartition(":")
        try:
            shares[value] = float(share)
        except ValueError:
            colon = ""
        if not colon or not value or not 0.0 <= shares[value] <= 1.0:
            raise ConfigError(
                f"quota {text!r}: each part must be VALUE:SHARE with a share in [0, 1] "
                f"(e.g. chat:0.3,math:0.7), got {part.strip()!r}"
            )
    if sum(shares.values()) > 1.0 + 1e-9:
        raise ConfigError(f"quota {text!r}: the shares add up to {sum(shares.values()):g} > 1")
    return field_name, shares


def validate_inspect(cfg: InspectConfig) -> None:
    for name in ("input", "base"):
        if not getattr(cfg, name):
            raise ConfigError(
                f"inspect: {name!r} is required (--{name}, or --scores with its manifest)"
            )
    if cfg.id is not None and cfg.index is not None:
        raise ConfigError("inspect: give --id or --index, not both")
    if cfg.index is not None and cfg.index < 0:
        raise ConfigError(f"index must be >= 0, got {cfg.index}")
    _check_format_and_template(cfg)


def validate_report(cfg: ReportConfig) -> None:
    for name in ("scores", "input", "output_dir"):
        if not getattr(cfg, name):
            raise ConfigError(f"report: {name!r} is required (--{name.replace('_', '-')})")
    for name in ("scores", "input"):
        if not Path(getattr(cfg, name)).exists():
            raise ConfigError(f"report: {name} {getattr(cfg, name)!r} does not exist")
    validate_select(cfg.select, need_paths=False)
    if cfg.samples < 0:
        raise ConfigError(f"samples must be >= 0, got {cfg.samples}")


def validate_train(cfg: TrainConfig) -> None:
    for name in ("input", "base", "output_dir"):
        if not getattr(cfg, name):
            flag = name.replace("_", "-")
            raise ConfigError(f"train-ref: {name!r} is required (--{flag})")
    _check_format_and_template(cfg)
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise ConfigError(f"max_steps must be >= 1, got {cfg.max_steps}")
    for name in ("epochs", "batch_size", "lora_r"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.lr is not None and not cfg.lr > 0:
        raise ConfigError(f"lr must be > 0, got {cfg.lr}")
    if cfg.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ConfigError(f"dtype must be auto, float32, bfloat16 or float16, got {cfg.dtype!r}")
    if Path(cfg.output_dir).resolve() == Path(cfg.base).resolve():
        raise ConfigError("train-ref: the output directory must not be the base model's")
