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
from typing import Any, ClassVar

from fastscore import storage
from fastscore.data.memory import as_input
from fastscore.errors import ConfigError
from fastscore.storage import Location, locate

ENGINES = ("auto", "vllm", "torch", "served")
LOGPROB_PATHS = ("auto", "flat", "token_ids")
BATCHINGS = ("auto", "packed", "padded", "single")
DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTIZE = ("none", "fp8")
EXECUTORS = ("local", "ray")
TRAIN_DEVICES = ("auto", "cpu", "cuda")
ORDERS = ("desc", "asc")
# the record formats (data.formats parses them) and templates (rendering.renderer renders them)
FORMATS = ("messages", "prompt-completion", "preference", "alpaca", "sharegpt", "prompt-response")
FORMAT_CHOICES = ("auto", *FORMATS)
TEMPLATES = ("auto", "model", "plain")
# select --coverage (selection.coverage): what spreads the budget, how, and over which features;
# "auto" is resolved by resolve_coverage, "none" is the paper's plain top-k
COVERAGES = ("auto", "none", "clusters", "diverse")  # the last two spread a budget
SPREADS = ("proportional", "balanced")
FEATURE_SOURCES = ("auto", "engine", "lexical")
WITHIN = ("auto", "none", "responses")


def option(
    default: Any = None,
    help: str = "",
    *,
    choices: tuple | None = None,
    cli: str | None = None,
    switch: str | None = None,
    factory: Any = None,
) -> Any:
    """A config field that is also a command-line option (``cli.py`` builds the options
    from these): ``help`` (the default is appended to it), ``choices``, ``cli`` (the
    option's name when it is not the field's), ``switch`` (a boolean's ``--on/--off``
    form; without it a boolean is a flag)."""
    meta = {"help": help, "choices": choices, "cli": cli, "switch": switch}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


class Located:
    """A config whose ``LOCATIONS`` fields name files (a path or a store URL): each is a
    ``storage.Location`` from the moment it is set, however it is set (the CLI, a YAML
    file, the Python API, ``dataclasses.replace``, an option copied onto a config)."""

    LOCATIONS: ClassVar[tuple[str, ...]] = ()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.LOCATIONS:
            value = locate(value)
        object.__setattr__(self, name, value)


@dataclass
class EngineConfig:
    """How each model is run. Applies to the base and the reference engine alike."""

    kind: str = option(
        "auto",
        "auto: the torch engine (on CPU the faster, on a GPU packed varlen streams) until a "
        "vLLM GPU run is verified; vllm; torch; served: running vLLM servers.",
        choices=ENGINES,
        cli="engine",
    )
    dtype: str = option(
        "auto", "auto keeps the checkpoint's dtype; float32 matches a transformers fp32 "
        "reference.", choices=DTYPES
    )  # fmt: skip
    quantize: str = option(
        "none",
        "fp8: the trunk's linear layers in e4m3 (per-channel weights, per-token activations), "
        "the rest bf16; CUDA of compute capability >= 8.9 (torch engine), vLLM's online fp8 "
        "(vllm engine on a GPU).",
        choices=QUANTIZE,
    )
    fp8_keep_ends: bool = option(
        False,
        "With --quantize fp8: keep the first and last decoder layers in bf16.",
        switch="--fp8-keep-ends/--no-fp8-keep-ends",
    )
    gpu_memory_utilization: float | None = option(
        None, "vLLM: share of accelerator memory per engine (of RAM on CPU)."
    )
    kv_cache_gb: float | None = option(None, "vLLM: KV cache per engine [CPU: 1].")
    enforce_eager: bool | None = option(
        None,
        "vLLM eager mode [eager on CPU, graphs on GPU].",
        switch="--enforce-eager/--no-enforce-eager",
    )
    tensor_parallel_size: int = option(1, "vLLM: GPUs per model.")
    logprobs_path: str = option(
        "auto",
        "vLLM: token_ids (the response-only fast path, V2 model runner), flat "
        "(prompt_logprobs=0 at every position), auto (the fast path when supported).",
        choices=LOGPROB_PATHS,
    )
    seed: int = option(0, "Engine seed.")
    trust_remote_code: bool = option(False, "Run the model's own code.")
    batching: str = option(
        "auto",
        "torch engine: auto = packed where the model allows (varlen flash attention on a "
        "GPU), else padded on a GPU and single on CPU.",
        choices=BATCHINGS,
    )
    forward_tokens: int | None = option(
        None, "torch engine: tokens per forward [1024 packed on CPU, 16384 otherwise]."
    )
    device: str = option("auto", "torch engine: auto, cpu, cuda, cuda:N.")
    share_prefixes: bool = option(
        True,
        "torch engine (packed): run each token prefix several samples share (a system "
        "prompt, a template preamble, a pair's prompt) once.",
        switch="--share-prefixes/--no-share-prefixes",
    )
    prefix_cache_gb: float = option(
        1.0, "torch engine: memory for shared prefixes' keys and values kept across steps."
    )
    api_key_env: str = option(
        "FASTSCORE_API_KEY", "served: the environment variable holding the API key (never "
        "stored)."
    )  # fmt: skip
    concurrency: int = option(8, "served: requests in flight per endpoint.")
    request_timeout: float = option(300.0, "served: seconds per request.")
    retry_seconds: float = option(120.0, "served: how long a failing request is retried.")


@dataclass
class RayConfig:
    """``executor: ray``: shards of the input scored by Ray workers that own their engines."""

    address: str | None = option(
        None, "ray: the cluster's address [$RAY_ADDRESS, else a local cluster].", cli="ray_address"
    )  # fmt: skip
    workers: int | None = option(
        None, "ray: workers [one per GPU; per --cpus-per-worker CPUs without GPUs].",
        cli="ray_workers",
    )  # fmt: skip
    shards: int | None = option(None, "ray: input shards [4 per worker].")
    cpus_per_worker: float = option(1.0, "ray: CPUs per worker.")
    gpus_per_worker: float | None = option(None, "ray: GPUs per worker [1 with GPUs, else 0].")
    max_failures: int = option(
        3, "ray: times a shard is retried on a restarted worker after its worker is lost; "
        "one more loss stops the run (finished shards kept).",
    )  # fmt: skip
    max_run_failures: int | None = option(
        None, "ray: workers the whole run may lose before it stops [--max-failures per worker]."
    )  # fmt: skip


@dataclass
class ScoreConfig(Located):
    LOCATIONS: ClassVar[tuple[str, ...]] = ("input", "output")

    input: Location | str | None = None  # the command's argument
    base: str | None = option(None, "Base model: a local Hugging Face checkpoint directory.")
    ref: str | None = option(None, "Reference model fine-tuned from the base on the full set.")
    output: Location | str | None = option(
        None, "Scores file to write (.jsonl, or .parquet), one line per input record."
    )
    base_url: str | None = option(None, "served: base endpoint(s), comma-separated.")
    ref_url: str | None = option(None, "served: reference endpoint(s), comma-separated.")
    base_model: str | None = option(None, "served: the base's name on its servers.")
    ref_model: str | None = option(None, "served: the reference's name (a LoRA adapter too).")
    tokenizer: str | None = option(
        None, "Tokenizer directory [the base's; served: the server's model path if local]."
    )
    format: str = option(
        "auto", "Record format (auto: from the first record that fits one).",
        choices=FORMAT_CHOICES,
    )  # fmt: skip
    template: str = option(
        "auto",
        "Chat template: the tokenizer's (model), the plain alpaca-style one, or auto (the "
        "tokenizer's when it has one).",
        choices=TEMPLATES,
    )
    chat_template: str | None = option(
        None,
        "A Jinja chat template file to render with instead (e.g. the training template "
        "your SFT run used); its {% generation %} markers mark the response.",
    )
    date: str | None = option(
        None,
        "The date templates that write one (Llama 3.1, GPT-OSS) render, YYYY-MM-DD [the "
        "day the run starts, kept by --resume and by Ray].",
    )
    max_length: int | None = option(
        None, "Longest sample scored, in tokens; longer ones get status too_long [context-1]."
    )
    batch_tokens: int = option(32768, "Tokens handed to the engines per step (the streaming unit).")
    ifd: bool = option(
        False,
        "Also score each response without its prompt under the base (one more base pass) "
        "for the ifd column: loss_base / loss_alone.",
    )
    progress: bool = option(True, "Progress bar.", switch="--progress/--no-progress")
    executor: str = option("local", "Where shards are scored.", choices=EXECUTORS)
    resume: bool = option(
        False,
        "Continue <output>.partial after a crash (same input, models and options); with "
        "executor ray, finished shards are always kept.",
    )
    strict: bool = option(
        False,
        "Stop at the first record that cannot be scored (with its line and reason) instead "
        "of recording its status and going on.",
    )
    allow_empty: bool = option(
        False,
        "When no record can be scored (or selected), write the outputs anyway and exit 0 "
        "(for pipelines); by default such a run stops with an error naming the first "
        "records' reasons and writes nothing.",
    )
    engine: EngineConfig = field(default_factory=EngineConfig)
    ray: RayConfig = field(default_factory=RayConfig)


@dataclass
class SelectConfig(Located):
    LOCATIONS: ClassVar[tuple[str, ...]] = ("scores", "input", "output")

    scores: Location | str | None = None  # the command's argument
    input: Location | str | None = option(None, "The input file the scores were computed on.")
    output: Location | str | None = option(None, "Subset to write (.jsonl, .json or .parquet).")
    top_k: int | None = option(None, "Keep the k best records.")
    fraction: float | None = option(None, "Keep floor(F x records) best records.")
    threshold: float | None = option(None, "Keep records scoring at least T.")
    score: str = option(
        "lobass",
        "Rank by: lobass, rho, loss_base, ifd (scored with --ifd), margin (preference "
        "records), perplexity (exp loss_base), length (response tokens), random, or any "
        "numeric scores column.",
    )
    order: str = option("desc", "desc: highest scores first.", choices=ORDERS)
    seed: int = option(
        0, "The seed of the random score and of coverage (samples, k-means).", cli="random_seed"
    )
    group_field: str | None = option(
        None,
        "The input records' field naming a group: for --quota, or as the clusters of "
        "--coverage clusters.",
    )
    quota: str | None = option(
        None,
        "Shares of the budget per group, 'a:0.3,b:0.7' (or 'FIELD=a:0.3,b:0.7'), or "
        "'proportional' to the input.",
    )
    length_bins: int | None = option(
        None,
        "Select within N bins of response length, each bin's budget in proportion to its "
        "eligible records (the subset keeps the data's length mix).",
    )
    dedup: bool = option(
        False,
        "Drop exact duplicates (same roles and texts, case and whitespace normalised) "
        "before ranking; the first in input order stays.",
    )
    coverage: str = option(
        "auto",
        "What spreads the budget over what the records are about (see selection.coverage): "
        "clusters (the budget split across clusters of the records, the best of each), "
        "diverse (a record joins only if far enough from those kept), none (the paper's "
        "plain top-k by the score), auto (clusters with varied responses for a --top-k or "
        "--fraction budget without --quota or --length-bins, else none: in "
        "benchmarks/selection_quality.py the plain top-k fell below random, clusters with "
        "varied responses stayed above it).",
        choices=COVERAGES,
    )
    clusters: int | None = option(
        None, "clusters: how many [sqrt(eligible / 2), at most 256 and half the budget]."
    )
    spread: str = option(
        "proportional",
        "clusters: each cluster's budget, proportional to its eligible records or balanced.",
        choices=SPREADS,
    )
    features: str = option(
        "auto",
        "What the clustering sees: auto (the scores' engine features file when there is "
        "one, else lexical), engine, lexical (the prompts' words).",
        choices=FEATURE_SOURCES,
    )
    min_distance: float = option(
        0.1, "diverse: the least cosine distance to every record kept (DEITA's 0.9)."
    )
    allow_empty: bool = option(
        False,
        "When nothing is selected (no eligible record, a budget of 0, a threshold above "
        "every score), write the empty subset and exit 0; by default that is an error "
        "and nothing is written.",
    )
    within: str = option(
        "auto",
        "clusters: spread each cluster's budget over sub-clusters of its records' responses "
        "(their words), so that a family's picks vary in what they answer; auto: responses "
        "under --coverage clusters; none: the best of each cluster.",
        choices=WITHIN,
    )


@dataclass
class TrainConfig(Located):
    """``fastscore train-ref``: fine-tune the base on the data into the reference model,
    with the loss on exactly the response tokens the scorer scores."""

    LOCATIONS: ClassVar[tuple[str, ...]] = ("input",)

    input: Location | str | None = None  # the command's argument
    base: str | None = option(None, "Base model: a local Hugging Face checkpoint directory.")
    output_dir: str | None = option(None, "Where the reference checkpoint is saved.")
    format: str = option("auto", "Record format.", choices=FORMAT_CHOICES)
    template: str = option("auto", "Chat template (as in score).", choices=TEMPLATES)
    chat_template: str | None = option(None, "A Jinja chat template file (as in score).")
    date: str | None = option(None, "The date templates render, YYYY-MM-DD [today].")
    max_length: int | None = option(None, "Longest sample trained on, in tokens [context-1].")
    epochs: int = option(3, "Epochs.")
    max_steps: int | None = option(
        None,
        "Train exactly this many optimiser steps instead (epochs repeat as needed): the "
        "same compute for subsets of different sizes.",
    )
    lr: float | None = option(
        None,
        "Peak learning rate [by the model's width: 0.128 / hidden_size, 1e-3 at 128, 3.1e-5 "
        "at 4096; ten times that with --lora, at most 5e-3].",
    )
    batch_size: int = option(
        16, "Samples per optimiser step, over all processes (the same schedule on any count)."
    )
    gradient_accumulation_steps: int = option(
        1, "Micro-batches each process adds up per step (batch-size / processes / this each)."
    )
    warmup_steps: int | None = option(None, "Warm-up steps [3% of the steps], then cosine to 0.")
    weight_decay: float = option(0.0, "AdamW weight decay.")
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = option(
        False,
        "Recompute activations in the backward pass: less memory, about a third more time.",
        switch="--gradient-checkpointing/--no-gradient-checkpointing",
    )
    packing: bool = option(
        False,
        "Pack samples into rows of max-length (TRL's best-fit packing, each sample attending "
        "to itself only); off, each row is one sample, as the scorer sees it.",
        switch="--packing/--no-packing",
    )
    fsdp: bool = option(
        False,
        "Launched on many processes: shard weights, gradients and optimiser state (FSDP2) "
        "instead of a copy per process (DDP); the reference is saved whole.",
        switch="--fsdp/--ddp",
    )
    save_steps: int = option(
        500, "A checkpoint every N optimiser steps, into output_dir/checkpoints (0: none)."
    )
    resume: bool = option(
        False, "Continue from the last checkpoint in output_dir/checkpoints (same settings)."
    )
    keep_checkpoints: bool = option(
        False, "Keep output_dir/checkpoints once the reference is saved (removed by default)."
    )
    logging_steps: int | None = option(
        None, "Steps per point of the loss curve [1, or steps/500 past 500 steps]."
    )
    holdout: str = option(
        "auto",
        "Records kept out of training to check that the reference learned (their loss "
        "before and after): auto (3%, 32 to 1,000), a count, a share (0.05), or 0 (no check).",
    )
    sample: str | None = option(
        None,
        "Train on a seeded random sample of the records, a share (0.25) or a count: a cheaper "
        "reference; score still scores every record.",
    )
    folds: int | None = option(
        None,
        "Cross-fit: K references, each trained on every record but one fold, so score scores "
        "each record with the one that never saw it (output_dir/fold-0 ...; --ref output_dir).",
    )
    strict: bool = option(
        False, "Exit 1 when the held-out check says the reference did not learn (else a warning)."
    )
    lora: bool = option(
        False,
        "LoRA (peft) instead of full fine-tuning; the adapter is saved as the reference "
        "(score --ref takes it over the base).",
        switch="--lora/--full",
    )
    merge: bool = option(
        False, "LoRA: save the adapter merged into a full copy of the base (the base's dtype)."
    )
    lora_r: int = option(16, "LoRA rank.")
    lora_alpha: int = option(32, "LoRA alpha.")
    lora_dropout: float = option(0.0, "LoRA dropout.")
    keep_adapter: bool = option(
        False, "LoRA --merge: also keep the adapter alone in output_dir/adapter."
    )
    device: str = option(
        "auto",
        "auto (cuda when available), cpu or cuda; launched by torchrun or accelerate, each "
        "process takes its LOCAL_RANK's GPU.",
        choices=TRAIN_DEVICES,
    )
    dtype: str = option(
        "auto",
        "auto: bfloat16 mixed precision on cuda, float32 on cpu; weights stay float32.",
        choices=DTYPES,
    )
    seed: int = option(0, "Seed.")
    progress: bool = option(True, "Progress bar.", switch="--progress/--no-progress")
    trust_remote_code: bool = option(False, "Run the model's own code.")


@dataclass
class RunConfig(Located):
    LOCATIONS: ClassVar[tuple[str, ...]] = ("output_dir",)

    output_dir: Location | str | None = option(
        None, "Directory for scores.jsonl, selected.jsonl, manifest.json."
    )
    score: ScoreConfig = field(default_factory=ScoreConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    report: bool = option(
        True, "Also write output_dir/report/report.html.", switch="--report/--no-report"
    )


@dataclass
class InspectConfig(Located):
    """``fastscore inspect``: one record as the models see it, the scored tokens marked;
    with ``ref``, each scored token's logprob under both models. With ``scores``, the
    models, template, format and max_length default to those the scores were made with."""

    LOCATIONS: ClassVar[tuple[str, ...]] = ("input", "scores")

    input: Location | str | None = None  # the command's argument
    base: str | None = option(None, "Base model: its tokenizer and template render the record.")
    ref: str | None = option(None, "Reference model: adds each scored token's logprob under both.")
    scores: Location | str | None = option(
        None, "A scores file: its row, and (unless given) its models and options."
    )
    # the record's id (compared as text too: --id 3 finds id 3 and "3")
    id: Any = option(None, "The record's id [the first record].")
    index: int | None = option(None, "Or the record's 0-based position.")
    format: str = option("auto", "Record format.", choices=FORMAT_CHOICES)
    template: str = option("auto", "Chat template (as in score).", choices=TEMPLATES)
    chat_template: str | None = option(None, "A Jinja chat template file (as in score).")
    date: str | None = option(None, "The date templates render, YYYY-MM-DD [today].")
    max_length: int | None = option(None, "As in score [context-1].")
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(kind="torch"))


@dataclass
class ReportConfig(Located):
    """``fastscore report``: an HTML page and PNGs of a scores file; ``select`` is the rule
    whose chosen records the page marks (its scores / input / output are not used)."""

    LOCATIONS: ClassVar[tuple[str, ...]] = ("scores", "input", "output_dir")

    scores: Location | str | None = None  # the command's argument
    input: Location | str | None = option(None, "The input file the scores were computed on.")
    output_dir: Location | str | None = option(None, "Where report.html and its PNGs are written.")
    select: SelectConfig = field(default_factory=lambda: SelectConfig(fraction=0.06))
    group_field: str | None = None  # counts per value of this input field (--group-field)
    samples: int = option(10, "Top and bottom samples shown with their text.")
    points: int = option(
        50_000,
        "Records the scatter plots draw when there are more: a seeded sample (explorer.html "
        "adds the selection to it).",
    )
    explorer: bool = option(
        True,
        "Also write explorer.html: the plots to hover, a budget to try, ids to find (offline).",
        switch="--explorer/--no-explorer",
    )


def plain(cfg: Any) -> dict[str, Any]:
    """A config's fields as a manifest records them: nested dicts, each location the path
    it was given (a URL without its userinfo: a password is no option)."""
    return storage.without_userinfo(dataclasses.asdict(cfg))


def api_config(cls: type, config: Any, fields: dict[str, Any]) -> Any:
    """A command's config as the Python API takes it: the config given with ``fields``
    replaced, or one made of ``fields``; an ``input`` given as a ``datasets.Dataset`` or a
    list of records is wrapped to be read where it is (``data.memory``)."""
    cfg = dataclasses.replace(config, **fields) if config else cls(**fields)
    if getattr(cfg, "input", None) is not None:
        cfg = dataclasses.replace(cfg, input=as_input(cfg.input))
    return cfg


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


def check_choices(cfg: Any, where: str = "") -> None:
    """Every field with ``choices`` holds one of them (nested configs too)."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            check_choices(v, f"{where}{f.name}.")
        elif f.metadata.get("choices") and v is not None and v not in f.metadata["choices"]:
            raise ConfigError(f"{where}{f.name} must be one of {f.metadata['choices']}, got {v!r}")


def _check_format_and_template(cfg) -> None:
    check_choices(cfg)
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
    if cfg.batch_tokens < 1:
        raise ConfigError(f"batch_tokens must be >= 1, got {cfg.batch_tokens}")
    for name in ("max_failures", "max_run_failures"):
        v = getattr(cfg.ray, name)
        if v is not None and v < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {v}")
    if cfg.max_length is not None and cfg.max_length < 2:
        raise ConfigError(f"max_length must be >= 2, got {cfg.max_length}")
    e = cfg.engine
    if e.quantize == "fp8" and e.kind == "served":
        raise ConfigError(
            "--quantize fp8: a served model's format is the server's (vllm serve "
            "--quantization fp8); drop --quantize here"
        )
    if e.quantize == "fp8" and e.dtype in ("float32", "float16"):
        raise ConfigError(
            f"--quantize fp8 runs everything but the linear layers in bfloat16; drop --dtype "
            f"{e.dtype}"
        )
    if e.fp8_keep_ends and e.quantize != "fp8":
        raise ConfigError("--fp8-keep-ends goes with --quantize fp8")


def validate_select(cfg: SelectConfig, need_paths: bool = True) -> None:
    if need_paths:
        for name in ("scores", "input", "output"):
            if not getattr(cfg, name):
                raise ConfigError(f"select: {name!r} is required")
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
    check_choices(cfg)
    spreads = [
        n
        for n, v in (
            ("--quota", cfg.quota),
            ("--length-bins", cfg.length_bins),
            # auto and none (or null) spread nothing themselves: auto gives way to a quota
            (f"--coverage {cfg.coverage}", cfg.coverage if cfg.coverage in COVERAGES[2:] else None),
        )
        if v is not None
    ]
    if len(spreads) > 1:
        raise ConfigError(f"select: give one of {', '.join(spreads)}, not several")
    if spreads and cfg.threshold is not None:
        raise ConfigError(
            "select: quotas, length bins and coverage need a budget (--top-k or --fraction)"
        )
    resolved = resolve_coverage(cfg)
    if cfg.group_field is not None and cfg.quota is None and resolved.coverage != "clusters":
        raise ConfigError(
            "select: --group-field needs --quota (shares, or 'proportional') or "
            "--coverage clusters (the field's values as the clusters)"
        )
    validate_coverage(resolved)
    if cfg.length_bins is not None and cfg.length_bins < 1:
        raise ConfigError(f"length_bins must be >= 1, got {cfg.length_bins}")
    if cfg.quota is not None:
        parse_quota(cfg.quota, cfg.group_field)  # raises on a malformed one


def resolve_coverage(cfg: SelectConfig) -> SelectConfig:
    """``cfg`` with its ``auto`` coverage made concrete (None is read as "none").

    coverage auto: clusters when the rule is a budget (top-k or fraction) that no quota or
    length bins already spread, else none. within auto: responses under clusters, else
    none. Measured (benchmarks/selection_quality.py, two worlds, 3 seeds): the plain top-k
    fell below a random subset of the same size at every budget; clusters with varied
    responses stayed above random at every budget in both worlds."""
    coverage = "none" if cfg.coverage is None else cfg.coverage
    if coverage == "auto":
        budgeted = cfg.threshold is None and cfg.quota is None and cfg.length_bins is None
        coverage = "clusters" if budgeted else "none"
    within = "none" if cfg.within is None else cfg.within
    if within == "auto":
        within = "responses" if coverage == "clusters" else "none"
    return dataclasses.replace(cfg, coverage=coverage, within=within)


def validate_coverage(cfg: SelectConfig) -> None:
    """Checks of a selection whose coverage is resolved (``resolve_coverage``)."""
    if cfg.clusters is not None and cfg.clusters < 1:
        raise ConfigError(f"clusters must be >= 1, got {cfg.clusters}")
    if not 0.0 <= cfg.min_distance <= 2.0:
        raise ConfigError(f"min_distance is a cosine distance in [0, 2], got {cfg.min_distance}")
    if cfg.coverage != "clusters" and cfg.clusters is not None:
        raise ConfigError(
            "select: --clusters needs --coverage clusters (and a --top-k or --fraction budget)"
        )
    if cfg.coverage != "clusters" and cfg.within != "none":
        raise ConfigError(
            "select: --within needs --coverage clusters (and a --top-k or --fraction budget)"
        )


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
        where = getattr(cfg, name)
        if not where.exists():
            raise ConfigError(f"report: {name} {where.shown!r} does not exist")
    validate_select(cfg.select, need_paths=False)
    if cfg.samples < 0:
        raise ConfigError(f"samples must be >= 0, got {cfg.samples}")
    if cfg.points < 1:
        raise ConfigError(f"points must be >= 1, got {cfg.points}")


def validate_train(cfg: TrainConfig) -> None:
    for name in ("input", "base", "output_dir"):
        if not getattr(cfg, name):
            flag = name.replace("_", "-")
            raise ConfigError(f"train-ref: {name!r} is required (--{flag})")
    _check_format_and_template(cfg)
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise ConfigError(f"max_steps must be >= 1, got {cfg.max_steps}")
    for name in ("epochs", "batch_size", "lora_r", "gradient_accumulation_steps"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.save_steps < 0:
        raise ConfigError(f"save_steps must be >= 0 (0: no checkpoints), got {cfg.save_steps}")
    if cfg.logging_steps is not None and cfg.logging_steps < 1:
        raise ConfigError(f"logging_steps must be >= 1, got {cfg.logging_steps}")
    if cfg.lr is not None and not cfg.lr > 0:
        raise ConfigError(f"lr must be > 0, got {cfg.lr}")
    from fastscore.scoring.reference import parse_holdout, sample_count

    parse_holdout(cfg.holdout)
    if cfg.sample is not None:
        sample_count(cfg.sample, 1)
    from fastscore.scoring.folds import check_folds

    check_folds(cfg.folds)
    if cfg.folds is not None and cfg.sample is not None:
        raise ConfigError(
            "--folds trains each reference on every record outside its fold; --sample would "
            "train on a sample instead: give one of them"
        )
