"""``train-ref``: fine-tune the base model on the data into the reference model, with TRL's
``SFTTrainer`` (so transformers' ``Trainer`` and accelerate: one process, or many under
``torchrun`` / ``accelerate launch`` with DDP or FSDP).

The trainer is fed the scorer's own rendering, pre-tokenized: the samples are rendered by
the scorer's ``Renderer`` (same chat template, same response spans, same ``max_length``),
and each example's ``completion_mask`` is the scorer's response positions, so the trainer's
labels are the scored tokens by construction. A record the scorer would not score (bad,
empty, too long) is not trained on either; the counts by status go into
``train_manifest.json`` with the schedule, the world size and the loss curve (also drawn
in ``loss_curve.png``). Full fine-tuning or LoRA (peft, merged into the saved checkpoint so
every engine loads it as a plain model). Checkpoints every ``save_steps`` steps go to
``output_dir/checkpoints``; ``--resume`` continues from the last one.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastscore import storage
from fastscore.config import TrainConfig, api_config, validate_train
from fastscore.data.formats import resolve_format, to_samples
from fastscore.data.ids import IdRegistry, flag_duplicate_ids
from fastscore.data.readers import detect_file_kind, read_records
from fastscore.engines.models import (
    fingerprint,
    load_tokenizer,
    model_max_length,
    model_width,
    pair_dtype,
    require_checkpoint,
)
from fastscore.errors import ConfigError
from fastscore.quiet import libraries_quiet
from fastscore.records import OK, RenderedSample
from fastscore.rendering.renderer import make_renderer
from fastscore.runs.claims import Claims
from fastscore.scoring import folds, reference
from fastscore.scoring.arithmetic import mean_nll
from fastscore.scoring.reference import holdout_count, sample_count, seeded_draw, split_holdout

log = logging.getLogger(__name__)

MANIFEST = "train_manifest.json"
CURVE = "loss_curve.png"
CHECKPOINTS = "checkpoints"  # under output_dir; the trainer's own output_dir
RUN = "train_run.json"  # in CHECKPOINTS: the settings a --resume must match
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
# options that change nothing about what is trained: a resume may change them
# (the checkpoint's own save and logging intervals win on resume, so those are not neutral;
# the paths are not compared: the data's digest and the base's fingerprint are)
NEUTRAL = (
    "progress", "resume", "keep_checkpoints", "keep_adapter", "merge", "strict", "input",
    "base", "output_dir",
)  # fmt: skip
# past this many steps the loss curve takes one point per steps/CURVE_POINTS steps
CURVE_POINTS = 500
WARMUP_SHARE = 0.03  # the default warm-up: this share of the steps, rounded up


@dataclass(frozen=True)
class Examples:
    """The scorer's rendering of the records that can be trained on: token ids and the
    positions whose token is a target (the scorer's response positions)."""

    token_ids: list[list[int]]
    targets: list[list[int]]
    counts: Counter  # records by status (a pair counts once: its chosen side)
    template: dict[str, Any]  # the renderer's info
    indices: tuple[int, ...] = ()  # each example's record index in the input
    held: tuple[RenderedSample, ...] = ()  # held out of training: the learning check's

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def tokens(self) -> int:
        return sum(len(t) for t in self.targets)

    def completion_masks(self) -> list[list[int]]:
        masks = []
        for ids, targets in zip(self.token_ids, self.targets, strict=True):
            mask = [0] * len(ids)
            for t in targets:
                mask[t] = 1
            masks.append(mask)
        return masks

    def dataset(self):
        """A pre-tokenized dataset as TRL takes it: ``input_ids`` and ``completion_mask``
        (with ``completion_only_loss`` the trainer's labels are the ids where it is 1)."""
        import datasets

        datasets.disable_progress_bars()  # a bar per map over an in-memory list: noise
        return datasets.Dataset.from_dict(
            {"input_ids": self.token_ids, "completion_mask": self.completion_masks()}
        )

    def digest(self) -> str:
        """A hash of exactly what is trained on, for --resume to tell other data apart."""
        h = hashlib.sha256()
        for ids, targets in zip(self.token_ids, self.targets, strict=True):
            # the lengths first: two rows' bytes cannot run together into other rows
            h.update(np.array([len(ids), len(targets), *ids, *targets], dtype=np.int64).data)
        return h.hexdigest()[:16]


def rendered_examples(cfg: TrainConfig, tokenizer, max_length: int) -> Examples:
    """The scorer's rendering of every record of ``cfg.input``, a repeated id flagged as
    ``score`` flags it. A preference record trains on its chosen side (SFT on the preferred
    answers). Every record that can be trained on (``split_for_training`` keeps some out)."""
    kind = detect_file_kind(cfg.input)
    renderer = make_renderer(cfg, tokenizer, max_length)
    fmt = resolve_format(cfg.input, kind, cfg.format)
    samples = flag_duplicate_ids(to_samples(read_records(cfg.input, kind), fmt), IdRegistry())
    ids, targets, indices, counts = [], [], [], Counter()
    for r in renderer.render_all(samples):
        if r.side == "rejected":
            continue
        counts[r.status] += 1
        if r.status == OK:
            ids.append(r.token_ids.tolist())
            targets.append(r.response_positions.tolist())
            indices.append(r.index)
    return Examples(ids, targets, counts, renderer.info(), tuple(indices))


def split_for_training(examples: Examples, cfg: TrainConfig) -> Examples:
    """``examples`` less ``cfg.holdout``'s seeded share, kept out for the check that the
    reference learned (``held``; ``scoring.reference``), and with ``cfg.sample`` a seeded
    sample of the rest."""
    n = len(examples)
    held_at = split_holdout(n, holdout_count(cfg.holdout, n), cfg.seed).tolist()
    out = set(held_at)
    keep = [i for i in range(n) if i not in out]
    if cfg.sample is not None:  # (the held-out slice stays out)
        keep = [keep[j] for j in seeded_draw(len(keep), sample_count(cfg.sample, len(keep)),
                                             [cfg.seed, 0x5A3])]  # fmt: skip
    return _subset(examples, keep, held_at)


def _subset(examples: Examples, keep: list[int], held_at: list[int]) -> Examples:
    """``examples`` at positions ``keep``, those at ``held_at`` held out for the check."""
    held = tuple(
        RenderedSample(
            examples.indices[i],
            None,
            np.asarray(examples.token_ids[i], dtype=np.int32),
            np.asarray(examples.targets[i], dtype=np.int32),
        )
        for i in held_at
    )
    return dataclasses.replace(
        examples,
        token_ids=[examples.token_ids[i] for i in keep],
        targets=[examples.targets[i] for i in keep],
        indices=tuple(examples.indices[i] for i in keep),
        held=held,
    )


@dataclass(frozen=True)
class Launch:
    """This process's place in a launch (torchrun and accelerate set these variables)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Launch:
        env = os.environ
        return cls(
            int(env.get("WORLD_SIZE", 1)), int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0))
        )

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class Plan:
    """What the options resolve to for this launch, before a model is loaded."""

    device: str  # cpu or cuda
    world_size: int
    dtype: str  # float32, bfloat16 or float16 (the last two: mixed precision)
    lr: float
    per_device_batch_size: int
    max_length: int

    def schedule(self, cfg: TrainConfig, trainer) -> dict[str, Any]:
        """The schedule as the trainer ran it (its steps count packed rows with --packing)."""
        steps = trainer.state.max_steps
        return {
            "optimizer": "adamw_torch",
            "scheduler": "linear warm-up, then cosine to 0",
            "epochs": cfg.epochs,
            "max_steps": cfg.max_steps,
            "steps": steps,
            "lr": self.lr,
            "batch_size": cfg.batch_size,
            "per_device_batch_size": self.per_device_batch_size,
            "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
            "world_size": self.world_size,
            "warmup_steps": trainer.args.get_warmup_steps(steps),
            "logging_steps": trainer.state.logging_steps,
            "weight_decay": cfg.weight_decay,
            "max_grad_norm": cfg.max_grad_norm,
        }


# The default peak learning rate falls with the model's width (as muP's does for hidden
# layers): LR_WIDTH / hidden_size is 1e-3 at the demo's 128 (where 2e-5, a common 8B value,
# left a reference that learned 8% on held-out records and whose top 10% was 26 noise
# records of 30) and 3.1e-5 at an 8B's 4096. LoRA's adapters take ten times that (2e-4 at
# 8B, the usual value), at most LORA_LR_MOST.
LR_WIDTH = 0.128
LORA_LR_MOST = 5e-3


def default_lr(hidden_size: int | None, *, lora: bool) -> float:
    full = LR_WIDTH / hidden_size if hidden_size else 2e-5
    return min(10 * full, LORA_LR_MOST) if lora else full


def plan(cfg: TrainConfig, max_length: int, launch: Launch, hidden_size: int | None = None) -> Plan:
    import torch

    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train-ref --device cuda: torch sees no CUDA device")
    dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
    if dtype == "float16" and device == "cpu":
        raise ConfigError("train-ref: float16 mixed precision needs CUDA; use bfloat16 on CPU")
    if cfg.fsdp and "WORLD_SIZE" not in os.environ:
        raise ConfigError(
            "train-ref --fsdp shards over the processes of a launch: start it with "
            "torchrun or accelerate launch"
        )
    if device == "cpu" and (cfg.fsdp or os.environ.get("ACCELERATE_USE_FSDP") == "true"):
        # accelerate runs CPU processes as DDP whatever it is asked: said, not done quietly
        raise ConfigError(
            "train-ref: FSDP needs GPUs (accelerate runs processes on CPU as DDP); "
            "drop --fsdp or FSDP from the accelerate config"
        )
    per_step = launch.world_size * cfg.gradient_accumulation_steps
    if cfg.batch_size % per_step:
        raise ConfigError(
            f"train-ref: batch_size {cfg.batch_size} is not a multiple of processes "
            f"({launch.world_size}) x gradient_accumulation_steps "
            f"({cfg.gradient_accumulation_steps}); the batch is split evenly between them"
        )
    return Plan(
        device=device,
        world_size=launch.world_size,
        dtype=dtype,
        lr=cfg.lr if cfg.lr is not None else default_lr(hidden_size, lora=cfg.lora),
        per_device_batch_size=cfg.batch_size // per_step,
        max_length=max_length,
    )


def sft_config(cfg: TrainConfig, p: Plan, checkpoints: Path):
    """The ``SFTConfig`` for ``cfg``: every default TRL would pick for us set explicitly
    (TRL turns gradient checkpointing and bf16 on by default, truncates to 1024 tokens)."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(checkpoints),
        per_device_train_batch_size=p.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        learning_rate=p.lr,
        lr_scheduler_type="cosine",
        # shares (< 1) of the steps the trainer counts: with --packing, packed rows
        warmup_steps=cfg.warmup_steps if cfg.warmup_steps is not None else WARMUP_SHARE,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        optim="adamw_torch",
        bf16=p.dtype == "bfloat16",
        fp16=p.dtype == "float16",
        use_cpu=p.device == "cpu",
        ddp_backend="gloo" if p.device == "cpu" and p.world_size > 1 else None,
        # every parameter has a gradient: the search for unused ones is a graph walk a step
        ddp_find_unused_parameters=False,
        # a full state dict: the saved reference is one plain checkpoint, not shards
        fsdp=cfg.fsdp,
        fsdp_config={"version": 2, "state_dict_type": "FULL_STATE_DICT"} if cfg.fsdp else None,
        gradient_checkpointing=cfg.gradient_checkpointing,
        # the samples already fit (the renderer refused longer ones as too_long); packing
        # needs the row length
        max_length=p.max_length if cfg.packing else None,
        packing=cfg.packing,
        completion_only_loss=True,
        dataset_num_proc=None,
        logging_strategy="steps",
        logging_steps=cfg.logging_steps or 1 / CURVE_POINTS,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        save_total_limit=1,
        report_to="none",
        disable_tqdm=True,  # the progress bar is ours (the trainer's prints every log line)
        seed=cfg.seed,
        data_seed=cfg.seed,
    )


def build_trainer(cfg: TrainConfig, examples: Examples, p: Plan, tokenizer, checkpoints: Path):
    """TRL's ``SFTTrainer`` over ``examples``, the base loaded in float32 (lower precision
    only as mixed precision)."""
    import torch
    from transformers import PrinterCallback, Trainer
    from trl import SFTTrainer

    from fastscore._compat import import_transformers

    class RefTrainer(SFTTrainer):
        """On CPU the loss is the model's own: TRL's fused LM head has its Triton kernel on
        GPUs only, and elsewhere scores every position in torch tiles, which made a step on
        the demo 1.4x as long. The same mean over the same labels, without the entropy
        and accuracy it logs beside the loss."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if p.device == "cuda":
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs["use_cache"] = False  # as TRL's: no cache while training
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    tf = import_transformers()
    model = tf.AutoModelForCausalLM.from_pretrained(
        cfg.base, dtype=torch.float32, trust_remote_code=cfg.trust_remote_code
    )
    trainer = RefTrainer(
        model=model,
        args=sft_config(cfg, p, checkpoints),
        train_dataset=examples.dataset(),
        # a copy: TRL sets a missing pad token on the tokenizer it is given, and the saved
        # reference's tokenizer must stay the base's (score compares them)
        processing_class=copy.deepcopy(tokenizer),
        peft_config=_lora_config(cfg) if cfg.lora else None,
        callbacks=[_progress(cfg.progress), _last_step(keep_checkpoint=cfg.keep_checkpoints)],
    )
    trainer.remove_callback(PrinterCallback)
    _check_saving(trainer)
    return trainer


def _check_saving(trainer) -> None:
    """The launch's parallelism saves one plain checkpoint, or an error before training:
    under FSDP with sharded state dicts (accelerate's default for FSDP2) or DeepSpeed the
    trainer would save shards or 16-bit weights, or nothing."""
    kind = _distributed_kind(trainer)
    if kind not in ("NO", "MULTI_CPU", "MULTI_GPU", "FSDP"):
        raise ConfigError(f"train-ref runs on one process, DDP or FSDP; the launch asks for {kind}")
    if trainer.is_fsdp_enabled:
        plugin = trainer.accelerator.state.fsdp_plugin
        if "FULL_STATE_DICT" not in str(plugin.state_dict_type):
            raise ConfigError(
                "train-ref under FSDP saves the reference whole: set "
                "fsdp_state_dict_type: FULL_STATE_DICT in the accelerate config (or use --fsdp)"
            )


def _distributed_kind(trainer) -> str:
    """accelerate's name for the launch's parallelism: NO, MULTI_CPU, MULTI_GPU, FSDP..."""
    return str(trainer.accelerator.distributed_type).split(".")[-1]


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


def _train(
    cfg: TrainConfig, launch: Launch, t_start: float, examples: Examples | None = None
) -> dict[str, Any]:
    """One reference: of ``examples`` (split already: a fold's), else of the input's
    records less the held-out slice (and with --sample, a sample of them)."""
    import orjson
    import torch

    torch.manual_seed(cfg.seed)
    require_checkpoint(cfg.base, "base model")
    tokenizer = load_tokenizer(cfg.base, cfg.trust_remote_code)
    max_length = cfg.max_length or model_max_length(cfg.base, cfg.trust_remote_code) - 1
    if examples is None:
        examples = rendered_examples(cfg, tokenizer, max_length)
        if len(examples):
            examples = split_for_training(examples, cfg)
    if not len(examples):
        raise ConfigError(
            f"train-ref: no record of {cfg.input} can be trained on "
            f"(by status: {dict(examples.counts)})"
        )
    p = plan(cfg, max_length, launch, model_width(cfg.base, cfg.trust_remote_code))
    out = Path(cfg.output_dir)
    checkpoints = out / CHECKPOINTS
    base_fingerprint = fingerprint(cfg.base)
    run = _run_record(cfg, examples, max_length, base_fingerprint)
    resume_from = _resume_point(cfg, checkpoints, run, main=launch.main)
    if launch.main:
        _write_run(checkpoints, run)
    trainer = build_trainer(cfg, examples, p, tokenizer, checkpoints)
    trainer.add_callback(_record_runs(run))
    t_train = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - t_train
    _save(trainer, cfg, out, tokenizer, launch)
    check = held_out_check(cfg, p, out, examples.held) if launch.main else None
    curve = _loss_curve(trainer.state.log_history)
    # the last ~10 steps (each point of the curve is the mean of logging_steps steps)
    recent = [c["loss"] for c in curve[-max(1, 10 // trainer.state.logging_steps) :]]
    manifest = {
        "fastscore_manifest": 1,
        "command": "train-ref",
        "trainer": _trainer_versions(),
        "input": storage.shown(cfg.input),
        "base": base_fingerprint,
        "output_dir": str(out.resolve()),
        "template": examples.template,
        "max_length": max_length,
        "options": dataclasses.asdict(cfg),
        "schedule": p.schedule(cfg, trainer),
        "device": p.device,
        "dtype": p.dtype,
        "world_size": launch.world_size,
        "distributed": _distributed_kind(trainer),
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
        _draw_curve(curve, out / CURVE, title=f"train-ref on {Path(cfg.input).name}")
        mine = {*SAVED_FILES, CURVE, ADAPTER, *([CHECKPOINTS] if cfg.keep_checkpoints else [])}
        manifest["written"] = sorted(
            {str(p.resolve()) for p in out.iterdir() if p.name in mine}
            | {str((out / MANIFEST).resolve())}
        )
        (out / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        if cfg.keep_checkpoints:
            _write_run(checkpoints, {**run, "finished": True})
        else:
            shutil.rmtree(checkpoints, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    _said_if_not_learned(check, cfg, out, launch)
    return manifest


def _train_folds(cfg: TrainConfig, launch: Launch, t_start: float) -> dict[str, Any]:
    """``--folds K``: K references, fold k's trained on every record outside fold k and
    checked on a held-out draw from fold k (records it never saw, as every record it will
    score is); the output directory's manifest says how the folds were drawn and what
    each reference learned (``scoring.folds``)."""
    import orjson

    require_checkpoint(cfg.base, "base model")
    tokenizer = load_tokenizer(cfg.base, cfg.trust_remote_code)
    max_length = cfg.max_length or model_max_length(cfg.base, cfg.trust_remote_code) - 1
    examples = rendered_examples(cfg, tokenizer, max_length)
    n_records = sum(examples.counts.values())
    draw = folds.assignment(n_records, cfg.folds, cfg.seed)
    out = Path(cfg.output_dir)
    runs = []
    for k in range(cfg.folds):
        part = fold_split(examples, draw, k, cfg)
        fold_cfg = dataclasses.replace(
            cfg, output_dir=str(out / folds.fold_dir(k)), folds=None, strict=False
        )
        done = _finished_fold(fold_cfg, part) if cfg.resume else None
        if done is not None:
            log.info("train-ref: %s was trained already (--resume): kept", fold_cfg.output_dir)
            runs.append(done)
            continue
        if launch.main:
            log.info("train-ref: fold %d of %d, on %d records", k + 1, cfg.folds, len(part))
        runs.append(_train(fold_cfg, launch, t_start, examples=part))
    checks = [r["held_out"] for r in runs]
    check = reference.pooled(checks) if all(checks) else None
    manifest = {
        "fastscore_manifest": 1,
        "command": "train-ref",
        "trainer": runs[0]["trainer"],
        "input": storage.shown(cfg.input),
        "base": runs[0]["base"],
        "output_dir": str(out.resolve()),
        "template": examples.template,
        "max_length": max_length,
        "options": dataclasses.asdict(cfg),
        "folds": {
            "k": cfg.folds,
            "seed": cfg.seed,
            "records": n_records,
            "input": storage.shown(cfg.input),
            "dirs": [folds.fold_dir(k) for k in range(cfg.folds)],
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
    _said_if_not_learned(check, cfg, out, launch)
    return manifest


def fold_split(examples: Examples, draw: np.ndarray, k: int, cfg: TrainConfig) -> Examples:
    """Fold ``k``'s training examples (every record outside fold k) and its held-out
    check's records: ``cfg.holdout``'s count of them, drawn from fold k."""
    inside = [i for i, index in enumerate(examples.indices) if draw[index] == k]
    n_held = min(holdout_count(cfg.holdout, len(examples)), len(inside))
    held_at = [inside[j] for j in split_holdout(len(inside), n_held, cfg.seed + k)]
    out = set(inside)
    keep = [i for i in range(len(examples)) if i not in out]
    return _subset(examples, keep, held_at)


def _finished_fold(cfg: TrainConfig, part: Examples) -> dict[str, Any] | None:
    """A fold reference saved by an earlier run of the same data and settings, which
    ``--resume`` keeps; else None (and it is trained, from its checkpoints if any)."""
    import orjson

    p = Path(cfg.output_dir) / MANIFEST
    if not p.is_file():
        return None
    m = orjson.loads(p.read_bytes())
    same = {**m.get("options", {}), "resume": cfg.resume} == dataclasses.asdict(cfg)
    return m if same and m.get("data_digest") == part.digest() else None


def _said_if_not_learned(check, cfg: TrainConfig, out: Path, launch: Launch) -> None:
    """The held-out check's warning, by the launch's first process; --strict: an error."""
    said = reference.warning(check) if check else None
    if said and launch.main:
        if cfg.strict:
            raise ReferenceNotLearned(f"train-ref --strict: {said} (saved in {out} all the same)")
        log.warning("train-ref: %s", said)


class ReferenceNotLearned(ConfigError):
    """train-ref --strict: the held-out check says the reference did not learn enough."""


def held_out_check(
    cfg: TrainConfig, p: Plan, ref: Path, held: tuple[RenderedSample, ...]
) -> dict[str, Any] | None:
    """The held-out records' mean response loss under the base and under the saved
    reference, by the scorer's own torch engine (the losses score will compute), and the
    verdict (``scoring.reference.verdict``); None when nothing was held out (said)."""
    from fastscore.config import EngineConfig
    from fastscore.engines.adapters import is_adapter, torch_pair
    from fastscore.engines.torch_engine import TorchEngine

    if not held:  # asked for (--holdout 0): said; too few records for auto: warned
        said = log.info if str(cfg.holdout).strip() == "0" else log.warning
        said(
            "train-ref: no records held out (--holdout %s), so nothing checks that the "
            "reference learned",
            cfg.holdout,
        )
        return None
    t0 = time.perf_counter()
    ecfg, _ = pair_dtype(
        EngineConfig(kind="torch", device=p.device, trust_remote_code=cfg.trust_remote_code),
        cfg.base,
        ref,
    )
    losses = {}
    engines = logging.getLogger("fastscore.engines")
    level = engines.level
    engines.setLevel(logging.WARNING)  # their start lines: the check's own line says it all
    try:
        if is_adapter(ref):  # one base, the adapter off then on
            pair = torch_pair(cfg.base, ref, ecfg)
            try:
                for name, engine in zip(("base", "ref"), pair, strict=True):
                    losses[name] = [mean_nll(lp) for lp in engine.response_logprobs(list(held))]
            finally:
                for engine in pair:
                    engine.close()
        else:  # one model at a time
            for name, model in (("base", cfg.base), ("ref", str(ref))):
                engine = TorchEngine(model, ecfg, name=name)
                try:
                    losses[name] = [mean_nll(lp) for lp in engine.response_logprobs(list(held))]
                finally:
                    engine.close()
    finally:
        engines.setLevel(level)
    check = reference.verdict(losses["base"], losses["ref"])
    check["seconds"] = round(time.perf_counter() - t0, 3)
    check["seed"] = cfg.seed
    check["indices"] = [s.index for s in held]  # the records' places in the input
    return check


def _run_record(
    cfg: TrainConfig, examples: Examples, max_length: int, base: dict[str, Any]
) -> dict[str, Any]:
    options = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NEUTRAL}
    return {
        "options": options,
        "base": base["weights_sample_sha256"],
        "max_length": max_length,
        "data_digest": examples.digest(),
    }


def _resume_point(
    cfg: TrainConfig, checkpoints: Path, run: dict[str, Any], *, main: bool = True
) -> str | None:
    """The checkpoint to continue from (``--resume``), or None to start afresh. An
    unfinished run's checkpoints are neither continued with other settings nor dropped
    without ``--resume``; a finished run's kept checkpoints are moved aside (by the first
    process), so that a run started after it never continues from them; a checkpoint is
    continued only when the run record it carries is this run's."""
    saved = _read_run(checkpoints / RUN)
    if saved.get("finished"):
        if main:
            _move_aside(checkpoints, saved)
        if cfg.resume:
            log.warning("train-ref --resume: the run in %s finished; starting afresh", checkpoints)
        return None
    last = _last_complete(checkpoints)
    if last is None:
        if cfg.resume:
            log.warning("train-ref --resume: no checkpoint in %s; starting afresh", checkpoints)
        return None
    if not cfg.resume:
        raise ConfigError(
            f"train-ref: {checkpoints} holds checkpoints of an unfinished run "
            f"(last: {Path(last).name}); --resume continues it, or remove the folder"
        )
    for record, where in ((saved, f"the checkpoints in {checkpoints}"), (
        _read_run(Path(last) / RUN), f"{last}")):  # fmt: skip
        differ = _differences(record, run)
        if differ:
            raise ConfigError(
                f"train-ref --resume: {where} were made with other settings "
                f"({', '.join(differ)} differ); give the same ones, or remove the folder"
            )
    return last


def _differences(saved: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """What of ``run`` a saved run record does not match (all of it, when there is none)."""
    return sorted(
        [k for k in run if k != "options" and saved.get(k) != run[k]]
        + [
            f"options.{k}"
            for k in run["options"]
            if saved.get("options", {}).get(k, object()) != run["options"][k]
        ]
    )


def _read_run(path: Path) -> dict[str, Any]:
    import orjson

    try:
        return orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return {}


def _move_aside(checkpoints: Path, saved: dict[str, Any]) -> None:
    """A finished run's kept checkpoints, out of the way of the run starting here: into
    ``checkpoints/finished-<its data digest>-<n>/`` with its record (said)."""
    kept = [p for p in checkpoints.glob("checkpoint-*") if p.is_dir()]
    if not kept:
        return
    n = 1
    while (to := checkpoints / f"finished-{saved.get('data_digest', 'run')}-{n}").exists():
        n += 1
    to.mkdir()
    for p in kept:
        p.rename(to / p.name)
    (checkpoints / RUN).rename(to / RUN)
    log.info("train-ref: the finished run's kept checkpoints in %s moved to %s", checkpoints, to)


def _write_run(checkpoints: Path, run: dict[str, Any]) -> None:
    """The settings a resume must match; replaced whole, as other processes may read it."""
    import orjson

    checkpoints.mkdir(parents=True, exist_ok=True)
    tmp = checkpoints / f".{RUN}.tmp"
    tmp.write_bytes(orjson.dumps(run, option=orjson.OPT_INDENT_2))
    os.replace(tmp, checkpoints / RUN)


def _last_complete(checkpoints: Path) -> str | None:
    """The newest checkpoint the trainer finished writing and that carries its run's
    record: the trainer writes its state last, and the record follows (``_record_runs``),
    so a process killed while saving leaves a folder without them."""
    done = [
        p
        for p in checkpoints.glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit()
        and (p / "trainer_state.json").is_file()
        and (p / RUN).is_file()
    ]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def _record_runs(run: dict[str, Any]):
    """Each checkpoint gets the record of the run that saved it, which a resume checks."""
    from transformers import TrainerCallback

    class RecordRun(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.is_world_process_zero:
                _write_run(Path(args.output_dir) / f"checkpoint-{state.global_step}", run)
            return control

    return RecordRun()


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


def _loss_curve(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "step": h["step"],
            "loss": round(float(h["loss"]), 6),
            "lr": float(h.get("learning_rate", 0.0)),
        }
        for h in history
        if "loss" in h and "step" in h
    ]


def _draw_curve(curve: list[dict[str, Any]], path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot([c["step"] for c in curve], [c["loss"] for c in curve], lw=1.2, color="#4472c4")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss (response tokens)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _trainer_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("trl", "transformers", "accelerate", "torch")}


def _lora_config(cfg: TrainConfig):
    try:
        from peft import LoraConfig
    except ImportError as e:
        raise ConfigError("--lora needs peft: pip install 'fastscore[lora]'") from e
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


def _last_step(*, keep_checkpoint: bool):
    """The last step is logged (the trainer logs every logging_steps only), and its
    checkpoint is not written only to be removed with the folder (weights and optimiser
    state: three times the model) unless the checkpoints are kept."""
    from transformers import TrainerCallback

    class LastStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= state.max_steps:
                control.should_log = True
                if not keep_checkpoint:
                    control.should_save = False
            return control

    return LastStep()


def _progress(enabled: bool):
    """A progress bar with the loss, on the first process only."""
    from tqdm import tqdm
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kw):
            if enabled and state.is_world_process_zero:
                self.bar = tqdm(
                    total=state.max_steps,
                    initial=state.global_step,
                    desc="train-ref",
                    unit="step",
                    dynamic_ncols=True,
                )

        def on_step_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kw):
            if self.bar is not None and logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.3f}")

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.close()

    return Progress()
