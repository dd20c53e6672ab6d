"""``train-ref`` itself: one reference, or K cross-fitted ones (``--folds``), trained,
saved, checked and described in ``train_manifest.json``."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from fastscore.config import TrainConfig, api_config, plain, validate_train
from fastscore.engines.models import (
    fingerprint,
    load_tokenizer,
    model_max_length,
    model_width,
    require_checkpoint,
)
from fastscore.errors import ConfigError
from fastscore.quiet import libraries_quiet
from fastscore.runs.claims import Claims
from fastscore.scoring import folds, reference
from fastscore.training.check import held_out_check, said_if_not_learned
from fastscore.training.checkpoints import (
    CHECKPOINTS,
    record_runs,
    resume_point,
    run_record,
    write_run,
)
from fastscore.training.curve import CURVE, draw_curve, loss_curve
from fastscore.training.examples import Examples, fold_split, rendered_examples, split_for_training
from fastscore.training.schedule import Launch, plan
from fastscore.training.trainer import build_trainer, distributed_kind, trainer_versions

log = logging.getLogger(__name__)


MANIFEST = reference.TRAIN_MANIFEST  # (score reads it from beside the reference)


ADAPTER = "adapter"  # under output_dir: the LoRA adapter, before it is merged


# what save_pretrained writes into output_dir (the model's and the tokenizer's files)
SAVED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "adapter_config.json",  # LoRA without --merge: the adapter is the reference
    "adapter_model.safetensors",
    "README.md",  # (peft's model card beside an adapter)
)


def train_ref(config: TrainConfig | None = None, /, **fields: Any) -> dict[str, Any]:
    """Fine-tune ``base`` on ``input`` into ``output_dir`` (a checkpoint ``score --ref``
    loads); returns the training manifest, also written as ``output_dir/train_manifest.json``
    (by the first process of a launch; every process returns it)."""

    cfg = api_config(TrainConfig, config, fields)
    validate_train(cfg)
    t_start = time.perf_counter()
    launch = Launch.from_env()
    with train_claims(cfg, launch).settled(), libraries_quiet():
        if cfg.folds:
            return _train_folds(cfg, launch, t_start)
        return _train(cfg, launch, t_start)


def train_claims(cfg: TrainConfig, launch: Launch) -> Claims:
    """What train-ref reads (the input, the base, a template file) and writes (the
    reference's files, its checkpoints and adapter directories; the output directory held
    for the run's life by the launch's first process)."""
    out = Path(cfg.output_dir)
    c = (
        Claims("train-ref")
        .read("input", cfg.input)
        .read("base model", cfg.base)
        .read("chat template", cfg.chat_template)
        .write("output directory", out, lock=launch.main, directory=True)
        .write("checkpoints directory", out / CHECKPOINTS, tree=True)
        .write("adapter directory", out / ADAPTER, tree=True)
    )
    for name in (*SAVED_FILES, MANIFEST, CURVE):
        c.write("reference file", out / name)
    for k in range(cfg.folds or 0):
        c.write("fold reference directory", out / folds.fold_dir(k), tree=True)
    return c


@dataclasses.dataclass(frozen=True)
class _Base:
    """What a run takes from the base once (the folds of ``--folds`` share it): its
    tokenizer, the longest sample, its fingerprint and its width."""

    tokenizer: Any
    max_length: int
    fingerprint: dict[str, Any]
    width: int | None

    @classmethod
    def of(cls, cfg: TrainConfig) -> _Base:
        require_checkpoint(cfg.base, "base model")
        trc = cfg.trust_remote_code
        return cls(
            load_tokenizer(cfg.base, trc),
            cfg.max_length or model_max_length(cfg.base, trc) - 1,
            fingerprint(cfg.base),
            model_width(cfg.base, trc),
        )


def _train(
    cfg: TrainConfig,
    launch: Launch,
    t_start: float,
    examples: Examples | None = None,
    base: _Base | None = None,
) -> dict[str, Any]:
    """One reference: of ``examples`` (split already: a fold's), else of the input's
    records less the held-out slice (and with --sample, a sample of them)."""
    import orjson
    import torch

    torch.manual_seed(cfg.seed)
    base = base or _Base.of(cfg)
    tokenizer, max_length = base.tokenizer, base.max_length
    if examples is None:
        examples = rendered_examples(cfg, tokenizer, max_length)
        if len(examples):
            examples = split_for_training(examples, cfg)
    if not len(examples):
        raise ConfigError(
            f"train-ref: no record of {cfg.input} can be trained on "
            f"(by status: {dict(examples.counts)})"
        )
    p = plan(cfg, max_length, launch, base.width)
    out = Path(cfg.output_dir)
    checkpoints = out / CHECKPOINTS
    run = run_record(cfg, examples, max_length, base.fingerprint)
    resume_from = resume_point(cfg, checkpoints, run, main=launch.main)
    if launch.main:
        write_run(checkpoints, run)
    trainer = build_trainer(cfg, examples, p, tokenizer, checkpoints)
    trainer.add_callback(record_runs(run))
    t_train = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - t_train
    _save(trainer, cfg, out, tokenizer, launch)
    check = held_out_check(cfg, p, out, examples.held) if launch.main else None
    curve = loss_curve(trainer.state.log_history)
    # the last ~10 steps (each point of the curve is the mean of logging_steps steps)
    recent = [c["loss"] for c in curve[-max(1, 10 // trainer.state.logging_steps) :]]
    manifest = {
        "fastscore_manifest": 1,
        "command": "train-ref",
        "trainer": trainer_versions(),
        "input": cfg.input.shown,
        "base": base.fingerprint,
        "output_dir": str(out.resolve()),
        "template": examples.template,
        "max_length": max_length,
        "options": plain(cfg),
        "schedule": p.schedule(cfg, trainer),
        "device": p.device,
        "dtype": p.dtype,
        "world_size": launch.world_size,
        "distributed": distributed_kind(trainer),
        "fsdp": bool(trainer.is_fsdp_enabled),
        "counts": {"records": sum(examples.counts.values()), "by_status": dict(examples.counts)},
        "trained_samples": len(examples),
        # --sample: the share of the records (held-out ones aside) trained on
        "sample": None if cfg.sample is None else {"spec": cfg.sample, "records": len(examples)},
        "held_out": check,
        "trained_rows": len(trainer.train_dataset),  # fewer with --packing
        "trained_tokens": examples.tokens,
        "data_digest": run["data_digest"],
        "resumed_from": Path(resume_from).name if resume_from else None,
        "steps": trainer.state.global_step,
        "final_loss": round(sum(recent) / len(recent), 6) if recent else None,
        "loss_curve": curve,
        "seconds": round(seconds, 3),
        "total_seconds": round(time.perf_counter() - t_start, 3),
    }
    if launch.main:
        name = getattr(cfg.input, "name", cfg.input)  # (an input held in memory: its name)
        draw_curve(curve, out / CURVE, title=f"train-ref on {name}")
        mine = {*SAVED_FILES, CURVE, ADAPTER, *([CHECKPOINTS] if cfg.keep_checkpoints else [])}
        manifest["written"] = sorted(
            {str(p.resolve()) for p in out.iterdir() if p.name in mine}
            | {str((out / MANIFEST).resolve())}
        )
        (out / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        if cfg.keep_checkpoints:
            write_run(checkpoints, {**run, "finished": True})
        else:
            shutil.rmtree(checkpoints, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    said_if_not_learned(check, cfg, out, launch)
    return manifest


def _train_folds(cfg: TrainConfig, launch: Launch, t_start: float) -> dict[str, Any]:
    """``--folds K``: K references, fold k's trained on every record outside fold k and
    checked on a held-out draw from fold k (records it never saw, as every record it will
    score is); the output directory's manifest says how the folds were drawn and what
    each reference learned (``scoring.folds``)."""
    import orjson

    base = _Base.of(cfg)
    max_length = base.max_length
    examples = rendered_examples(cfg, base.tokenizer, max_length)
    n_records = sum(examples.counts.values())
    draw = folds.assignment(n_records, cfg.folds, cfg.seed)
    out = Path(cfg.output_dir)
    parts = [fold_split(examples, draw, k, cfg) for k in range(cfg.folds)]
    for k, part in enumerate(parts):  # before any fold trains
        if not len(part):
            raise ConfigError(
                f"train-ref --folds {cfg.folds}: every record of {cfg.input} that can be "
                f"trained on is in fold {k}, so its reference has nothing to train on "
                f"(by status: {dict(examples.counts)}); use fewer folds or more records"
            )
    runs = []
    for k, part in enumerate(parts):
        fold_cfg = dataclasses.replace(
            cfg, output_dir=str(out / folds.fold_dir(k)), folds=None, strict=False
        )
        done = _finished_fold(fold_cfg, part, max_length, base.fingerprint) if cfg.resume else None
        if done is not None:
            log.info("train-ref: %s was trained already (--resume): kept", fold_cfg.output_dir)
            runs.append(done)
            continue
        if launch.main:
            log.info("train-ref: fold %d of %d, on %d records", k + 1, cfg.folds, len(part))
        # (each fold's own seconds, not the run's so far)
        runs.append(_train(fold_cfg, launch, time.perf_counter(), examples=part, base=base))
    checks = [r["held_out"] for r in runs]
    present = [c for c in checks if c]
    check = reference.pooled(present) if present else None
    if present and len(present) < len(checks) and launch.main:
        log.warning(
            "train-ref: folds %s held nothing out (too few records in them), so only the "
            "others' references are checked",
            [k for k, c in enumerate(checks) if not c],
        )
    manifest = {
        "fastscore_manifest": 1,
        "command": "train-ref",
        "trainer": runs[0]["trainer"],
        "input": cfg.input.shown,
        "base": runs[0]["base"],
        "output_dir": str(out.resolve()),
        "template": examples.template,
        "max_length": max_length,
        "options": plain(cfg),
        "folds": {
            "k": cfg.folds,
            "seed": cfg.seed,
            "records": n_records,
            "input": cfg.input.shown,
            "dirs": [folds.fold_dir(k) for k in range(cfg.folds)],
            "draw_sha256": folds.draw_digest(draw),
            "trained_samples": [r["trained_samples"] for r in runs],
            "held_out": checks,
            "seconds": [r["seconds"] for r in runs],
        },
        "device": runs[0]["device"],
        "dtype": runs[0]["dtype"],
        "world_size": launch.world_size,
        "lora": cfg.lora and not cfg.merge,
        "counts": {"records": n_records, "by_status": dict(examples.counts)},
        "trained_samples": sum(r["trained_samples"] for r in runs),
        "held_out": check,
        "steps": sum(r["steps"] for r in runs),
        "final_loss": None,
        "seconds": round(sum(r["seconds"] for r in runs), 3),
        "total_seconds": round(time.perf_counter() - t_start, 3),
    }
    if launch.main:
        manifest["written"] = sorted(
            {str((out / folds.fold_dir(k)).resolve()) for k in range(cfg.folds)}
            | {str((out / MANIFEST).resolve())}
        )
        (out / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    said_if_not_learned(check, cfg, out, launch)
    return manifest


def _finished_fold(
    cfg: TrainConfig, part: Examples, max_length: int, base: dict[str, Any]
) -> dict[str, Any] | None:
    """A fold reference saved by an earlier run of the same data, base weights and
    settings (those that change what is trained or saved), which ``--resume`` keeps; else
    None (and it is trained, from its checkpoints if any)."""
    m = reference.read_train_manifest(cfg.output_dir)  # (a torn one: trained again)
    if m is None:
        return None
    want = run_record(cfg, part, max_length, base)
    saved = m.get("options", {})
    same = (
        {k: v for k, v in saved.items() if k in want["options"]} == want["options"]
        and saved.get("merge") == cfg.merge  # (what is saved: an adapter, or merged)
        and (m.get("base") or {}).get("weights_sample_sha256") == want["base"]
        and m.get("max_length") == max_length
        and m.get("data_digest") == want["data_digest"]
    )
    return m if same else None


def _save(trainer, cfg: TrainConfig, out: Path, tokenizer, launch: Launch) -> None:
    """The reference: full weights; with LoRA the adapter alone (``score --ref`` takes it
    over the base: one set of base weights), or with ``--merge`` merged into a full copy
    of the base in the base's own dtype. Every process takes part (FSDP gathers the
    shards to the first)."""
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.lora or not cfg.merge:
        trainer.save_model(str(out))
        if launch.main:
            (out / "training_args.bin").unlink(missing_ok=True)
            tokenizer.save_pretrained(out)  # the base's, over the trainer's copy
            if cfg.lora:
                _point_at_base(out, cfg.base)
            else:
                require_checkpoint(out, "trained reference")
        return
    adapter = out / ADAPTER
    trainer.save_model(str(adapter))
    trainer.accelerator.wait_for_everyone()
    if launch.main:
        from peft import PeftModel

        from fastscore._compat import import_transformers

        # merged into a fresh base, not the trained one: under FSDP only the gathered
        # adapter is whole; in the base's own dtype, so the pair scores in one precision
        base = import_transformers().AutoModelForCausalLM.from_pretrained(
            cfg.base, dtype="auto", trust_remote_code=cfg.trust_remote_code
        )
        PeftModel.from_pretrained(base, adapter).merge_and_unload().save_pretrained(out)
        tokenizer.save_pretrained(out)
        require_checkpoint(out, "trained reference")
        if not cfg.keep_adapter:
            shutil.rmtree(adapter)


def _point_at_base(adapter: Path, base: str) -> None:
    """The saved adapter names the base it was trained over by its full path (peft writes
    what the model was loaded from), which score compares with --base."""
    import json

    p = adapter / "adapter_config.json"
    c = json.loads(p.read_text())
    c["base_model_name_or_path"] = str(Path(base).resolve())
    p.write_text(json.dumps(c, indent=2, sort_keys=True))
