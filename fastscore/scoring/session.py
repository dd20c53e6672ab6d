"""A scoring session: everything a run needs before its first record, opened once.

The tokenizer (the base's, checked against the reference's), the renderer (template,
rule, date, max length), the input's kind and record format, the facts that identify the
two models (checkpoint hashes, or what the servers report), and the two engines. Local
scoring, dry runs, Ray workers and ``inspect`` all open one with ``open_session``, which
closes the engines it started on the way out, whatever happens.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastscore.config import EngineConfig, ScoreConfig
from fastscore.data.formats import resolve_format
from fastscore.data.source import Source, find_source
from fastscore.engines import Engine
from fastscore.engines.adapters import check_adapter, is_adapter, torch_engines
from fastscore.engines.models import (
    check_same_tokenizer,
    fingerprint,
    has_tokenizer,
    load_tokenizer,
    model_max_length,
    pair_dtype,
    require_checkpoint,
)
from fastscore.errors import ConfigError
from fastscore.quiet import libraries_quiet
from fastscore.rendering.renderer import Renderer, make_renderer
from fastscore.runs.stats import Stats
from fastscore.scoring import folds

log = logging.getLogger(__name__)

# No vLLM GPU run of fastscore has been verified yet (the GPU machine it was measured on has
# no vLLM); until one is, ``auto`` takes the torch engine on a GPU as well.
VLLM_GPU_VERIFIED = False


@dataclass
class Session:
    cfg: ScoreConfig
    tokenizer: Any
    renderer: Renderer
    max_length: int
    source: Source  # the input's facts, found once (data.source)
    fmt: str  # the record format of the whole file
    models: dict[str, Any]  # what identifies each model: hashes, or the servers' facts
    stats: Stats
    base: Engine | None = None
    ref: Engine | None = None
    _owned: list = field(default_factory=list)
    dtype_note: str | None = None  # when the pair's dtype is not each checkpoint's own
    folds: dict[str, Any] | None = None  # a cross-fitted reference's draw (scoring.folds)
    records: int | None = None  # the input's record count, when a step had to count them

    @property
    def kind(self) -> str:
        """The input's kind (jsonl, json, parquet, hf_disk; dataset, records in memory)."""
        return self.source.kind

    @property
    def engines(self) -> tuple[Engine, Engine]:
        if self.base is None or self.ref is None:
            self.start_engines()
        return self.base, self.ref

    def start_engines(self) -> None:
        """Start both in-process engines (once; served ones start with the session)."""
        if self.base is not None and self.ref is not None:
            return
        refs = ref_dirs(self.cfg.ref, self.folds)
        engine_cfg, self.dtype_note = pair_dtype(self.cfg.engine, self.cfg.base, refs[0])
        if self.dtype_note:
            log.info("%s", self.dtype_note)
        with self.stats.timer("engine_start"):
            if is_adapter(refs[0]):  # one base, each reference an adapter on it
                self.base, ref_engines = torch_engines(self.cfg.base, refs, engine_cfg)
                self._owned += [self.base, *ref_engines]
            else:
                self.base = make_engine(
                    self.cfg.base, engine_cfg, max_model_len=self.max_length + 1, name="base"
                )
                self._owned.append(self.base)
                ref_engines = []
                for d in refs:
                    name = f"ref {Path(d).name}" if self.folds else "ref"
                    e = make_engine(d, engine_cfg, max_model_len=self.max_length + 1, name=name)
                    self._owned.append(e)
                    ref_engines.append(e)
            if self.folds is None:
                self.ref = ref_engines[0]
            else:
                self.ref = folds.FoldedEngine(
                    ref_engines, folds.drawn(self.folds), path=str(self.cfg.ref)
                )

    def engine_info(self) -> dict[str, Any]:
        info = {"base": self.base.info(), "ref": self.ref.info()}
        if self.dtype_note:
            info["dtype_note"] = self.dtype_note
        return info


@contextlib.contextmanager
def open_session(
    cfg: ScoreConfig,
    *,
    engines: tuple[Engine, Engine] | None = None,
    start_engines: bool = True,
    stats: Stats | None = None,
    check_folds: bool = True,
    source: Source | None = None,
) -> Iterator[Session]:
    """The session of ``cfg``. ``engines``: a (base, ref) pair already started, left
    running on exit (benchmarks and tests that score several inputs); by default both are
    started here (``start_engines=False`` defers it to ``Session.start_engines``) and shut
    down on exit. ``check_folds``: a cross-fitted reference's record count is checked
    against the input (a read of it; a Ray worker leaves that to its driver). ``source``:
    the input's facts when the caller found them (else found here)."""
    stats = stats or Stats()
    owned: list = []
    with libraries_quiet(), _closing(owned, stats):
        drawn = None  # (a cross-fitted reference's draw: read once, here)
        if cfg.engine.kind == "served":
            tok, max_length, models = _served(cfg, stats, owned)
            engines = (owned[0], owned[1])
        else:
            drawn = folds.block(cfg.ref)
            tok, max_length, models = _local(cfg, stats, drawn, load_weights=engines is None)
        source = source or find_source(cfg.input)
        kind = source.kind
        fmt = resolve_format(cfg.input, kind, cfg.format)
        check_format_options(cfg, fmt)
        records = None
        if drawn is not None and check_folds:
            from fastscore.data.readers import count_records

            records = count_records(cfg.input, kind)  # (once: the progress bar takes it too)
            folds.check_input(drawn, cfg.input.shown, records)
        session = Session(
            cfg,
            tok,
            make_renderer(cfg, tok, max_length),
            max_length,
            source,
            fmt,
            models,
            stats,
            *(engines or (None, None)),
            _owned=owned,
            folds=drawn,
            records=records,
        )
        if start_engines:
            session.start_engines()
        yield session


@contextlib.contextmanager
def _closing(owned: list, stats: Stats) -> Iterator[None]:
    """The engines the session started, shut down on the way out, whatever happens."""
    try:
        yield
    finally:
        if owned:
            with stats.timer("engine_shutdown"):
                for e in owned:
                    e.close()


@dataclass(frozen=True)
class SessionFacts:
    """What the manifest says of a session: the input (its kind, size and version) and
    record format, the models (their fingerprints), the rendering (template, rule, date)
    and the length limit."""

    source: Source
    fmt: str
    models: dict[str, Any]
    template: dict[str, Any]
    max_length: int

    @property
    def kind(self) -> str:
        return self.source.kind


def session_facts(s: Session) -> SessionFacts:
    return SessionFacts(
        source=s.source,
        fmt=s.fmt,
        models=s.models,
        template=s.renderer.info(),
        max_length=s.max_length,
    )


def check_format_options(cfg: ScoreConfig, fmt: str) -> None:
    if cfg.ifd and fmt == "preference":
        raise ConfigError(
            "--ifd scores one response per record; preference records have two (drop --ifd)"
        )


def _local(cfg: ScoreConfig, stats: Stats, drawn: dict[str, Any] | None, *, load_weights: bool):
    """Tokenizer (the base's, checked against the ref's), max length, model fingerprints.
    ``drawn``: a cross-fitted reference's draw (``folds.block``), or None."""
    trc = cfg.engine.trust_remote_code
    kind = resolve_engine_kind(cfg.engine)
    # engines handed in (benchmarks' in-memory models) need no weight files here
    require_checkpoint(cfg.base, "base model", weights=load_weights)
    refs = ref_dirs(cfg.ref, drawn)
    adapter = is_adapter(refs[0])
    if drawn and kind == "vllm":
        raise ConfigError(
            f"the cross-fitted reference {cfg.ref} is {len(refs)} models: with the base that "
            f"is {len(refs) + 1} vLLM engines, whose memory shares are sized for two; use "
            "--engine torch (with --lora folds, one base in memory)"
        )
    if cfg.engine.quantize == "fp8" and kind in ("torch", "vllm"):  # (vLLM's refusal too)
        from fastscore.engines import fp8
        from fastscore.engines.torch_engine import resolve_device

        fp8.require(resolve_device(cfg.engine.device))  # before a run record or any output
    if adapter and cfg.engine.quantize == "fp8":
        raise ConfigError(
            "--quantize fp8 with a peft adapter as the reference is not built yet (the "
            "adapter's layers wrap the linear layers fp8 replaces); merge it into a full "
            "checkpoint (train-ref --lora --merge)"
        )
    for d in refs:
        if adapter:
            check_adapter(d, cfg.base, kind)
        else:
            require_checkpoint(d, "reference model", weights=load_weights)
    if cfg.tokenizer:
        require_checkpoint(cfg.tokenizer, "tokenizer directory", config=False, weights=False)
    with stats.timer("load_tokenizers"):
        tok = load_tokenizer(cfg.tokenizer or cfg.base, trc)
        # (an adapter directory may carry the tokenizer it was trained with, or none)
        if Path(refs[0]).resolve() != Path(cfg.base).resolve() and (
            not adapter or has_tokenizer(refs[0])
        ):
            ref_tok = load_tokenizer(refs[0], trc)
            check_same_tokenizer(
                tok, ref_tok, base=cfg.base, ref=refs[0], templates=not cfg.chat_template
            )
    with stats.timer("fingerprints"):
        models = {
            "base": fingerprint(cfg.base),
            "ref": folds.fingerprint(cfg.ref, drawn) if drawn else fingerprint(cfg.ref),
        }
        if cfg.tokenizer:  # (else the base's fingerprint covers its tokenizer's files)
            models["tokenizer"] = fingerprint(cfg.tokenizer)
    return tok, resolve_max_length(cfg, refs[0]), models


def _served(cfg: ScoreConfig, stats: Stats, owned: list):
    """Connect to the servers, find and check the tokenizer, take the context length."""
    from fastscore.engines.served import ServedEngine

    with stats.timer("engine_start"):
        for name, urls, model in (
            ("base", cfg.base_url, cfg.base_model),
            ("ref", cfg.ref_url, cfg.ref_model),
        ):
            split = [u.strip() for u in urls.split(",") if u.strip()]
            owned.append(ServedEngine(split, cfg.engine, model=model, name=name))
    base, ref = owned
    tok_dir = cfg.tokenizer or cfg.base or base.root()
    if not tok_dir or not Path(tok_dir).is_dir():
        raise ConfigError(
            f"the served base model's path {base.root()!r} is not a local directory; pass "
            "--tokenizer DIR with a local copy of its tokenizer"
        )
    require_checkpoint(tok_dir, "tokenizer directory", config=False, weights=False)
    with stats.timer("load_tokenizers"):
        tok = load_tokenizer(tok_dir, cfg.engine.trust_remote_code)
        for e in owned:
            e.check_tokenizer(tok)
    context = min(base.max_model_len, ref.max_model_len)
    if cfg.max_length is not None and cfg.max_length > context - 1:
        raise ConfigError(
            f"max_length {cfg.max_length} exceeds what the servers take ({context - 1})"
        )
    # the served models' contents cannot be hashed from here: what the servers report of
    # them (name, path, context) stands for them
    models = {
        name: {
            "served": e.model,
            "endpoints": e.urls,
            "root": e.root(),
            "max_model_len": e.max_model_len,
        }
        for name, e in (("base", base), ("ref", ref))
    }
    models["tokenizer"] = fingerprint(tok_dir)
    return tok, cfg.max_length or context - 1, models


def ref_dirs(ref: str | Path, drawn: dict[str, Any] | None) -> list:
    """The reference's checkpoint or adapter directories: one, or a cross-fitted
    reference's folds (``scoring.folds``)."""
    return folds.dirs(ref, drawn) if drawn else [ref]


def resolve_max_length(cfg, first: str | Path) -> int:
    """The longest sample: ``cfg.max_length``, checked, or the context of the base and the
    reference (``first``: its checkpoint, or a fold's) less one."""
    trc = cfg.engine.trust_remote_code
    models = [cfg.base] + ([] if is_adapter(first) else [first])
    context = min(model_max_length(m, trc) for m in models)
    if cfg.max_length is None:
        return context - 1  # vLLM needs room for the one token it generates
    if cfg.max_length > context - 1:
        raise ConfigError(
            f"max_length {cfg.max_length} exceeds what the models can take ({context - 1}: "
            f"context {context} minus the one token vLLM generates)"
        )
    return cfg.max_length


def resolve_engine_kind(cfg: EngineConfig) -> str:
    """``auto``: the torch engine (packed varlen streams on a GPU, see
    benchmarks/results/gpu-*.json; on CPU vLLM's prompt-logprob path runs the output head
    at every position and is the slower). vLLM on a GPU once VLLM_GPU_VERIFIED."""
    if cfg.kind != "auto":
        return cfg.kind
    import torch

    if (
        VLLM_GPU_VERIFIED
        and torch.cuda.is_available()
        and importlib.util.find_spec("vllm") is not None
    ):
        return "vllm"
    return "torch"


def make_engine(model: str, cfg: EngineConfig, *, max_model_len: int, name: str) -> Engine:
    kind = resolve_engine_kind(cfg)
    if kind == "vllm":
        from fastscore.engines.vllm_engine import VllmEngine

        return VllmEngine(model, cfg, max_model_len=max_model_len, name=name)
    if kind == "torch":
        from fastscore.engines.torch_engine import TorchEngine

        # the base's prompt-pooled hidden states are selection's coverage features, from
        # the forward scoring runs anyway (scoring.features)
        return TorchEngine(model, cfg, name=name, pool="prompt" if name == "base" else None)
    raise ConfigError(f"unknown engine {cfg.kind!r}")
