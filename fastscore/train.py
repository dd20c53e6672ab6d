"""``train-ref``: fine-tune the base model on the data into the reference model.

The loss is on exactly the tokens the scorer scores: the samples are rendered by the
scorer's own ``Renderer`` (same chat template, same response spans, same ``max_length``),
and a record the scorer would not score (bad, empty, too long) is not trained on either;
the counts by status go into ``train_manifest.json``. Full fine-tuning or LoRA (peft,
merged into the saved checkpoint so every engine loads it as a plain model).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastscore import storage
from fastscore.config import TrainConfig, validate_train
from fastscore.data.formats import resolve_format, to_samples
from fastscore.data.ids import IdRegistry, flag_duplicate_ids
from fastscore.data.readers import detect_file_kind, read_records
from fastscore.engines.models import (
    fingerprint,
    load_tokenizer,
    model_max_length,
    require_checkpoint,
)
from fastscore.errors import ConfigError
from fastscore.records import OK
from fastscore.rendering.renderer import make_renderer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """Optimiser steps: AdamW, linear warm-up then cosine decay to 0."""

    epochs: int
    lr: float
    batch_size: int = 32
    warmup_steps: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_steps: int | None = None  # instead of epochs: this many steps, epochs repeating

    def total_steps(self, n_examples: int) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return math.ceil(n_examples / self.batch_size) * self.epochs

    def lr_at(self, step: int, total: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, total - self.warmup_steps)
        return self.lr * 0.5 * (1 + math.cos(math.pi * progress))


def train_examples(
    model,
    examples: list[tuple[list[int], list[int]]],
    schedule: Schedule,
    *,
    pad_id: int,
    what: str = "train",
    progress: bool = False,
    device: str = "cpu",
    autocast_dtype=None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train ``model`` in place; ``examples`` are (token ids, positions whose token is a
    target). Returns steps, the mean loss of the last 10 steps and seconds."""
    import torch
    from tqdm import tqdm

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    g = torch.Generator().manual_seed(seed)
    total = schedule.total_steps(len(examples))
    bar = tqdm(total=total, desc=what, unit="step", disable=not progress, dynamic_ncols=True)
    step, t0, recent = 0, time.perf_counter(), []
    while step < total:  # epochs: each a fresh shuffle, cut short at the last step
        order = torch.randperm(len(examples), generator=g).tolist()
        for b in range(0, len(order), schedule.batch_size):
            if step >= total:
                break
            batch = [examples[i] for i in order[b : b + schedule.batch_size]]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            attn = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (ids, targets) in enumerate(batch):
                t = torch.tensor(ids)
                input_ids[row, : len(ids)] = t
                attn[row, : len(ids)] = 1
                labels[row, targets] = t[targets]
            for group in opt.param_groups:
                group["lr"] = schedule.lr_at(step, total)
            with torch.autocast(
                device_type=device.split(":")[0],
                dtype=autocast_dtype or torch.float32,
                enabled=autocast_dtype is not None,
            ):
                # transformers shifts labels itself: labels[t] is predicted from tokens < t
                out = model(
                    input_ids=input_ids.to(device),
                    attention_mask=attn.to(device),
                    labels=labels.to(device),
                )
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, schedule.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            recent = (recent + [out.loss.item()])[-10:]
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{recent[-1]:.3f}")
    bar.close()
    model.eval()
    final = sum(recent) / len(recent) if recent else float("nan")
    seconds = time.perf_counter() - t0
    log.info("%s: %d steps, final loss %.3f, %.1fs", what, step, final, seconds)
    return {"steps": step, "final_loss": round(final, 6), "seconds": round(seconds, 3)}


def rendered_examples(cfg: TrainConfig, tokenizer, max_length: int):
    """(examples, counts by status, rendering info): the scorer's rendering of every record,
    a repeated id flagged as ``score`` flags it. A preference record trains on its chosen
    side (SFT on the preferred answers)."""
    kind = detect_file_kind(cfg.input)
    renderer = make_renderer(cfg, tokenizer, max_length)
    fmt = resolve_format(cfg.input, kind, cfg.format)
    samples = flag_duplicate_ids(to_samples(read_records(cfg.input, kind), fmt), IdRegistry())
    examples, counts = [], Counter()
    for r in renderer.render_all(samples):
        if r.side == "rejected":
            continue
        counts[r.status] += 1
        if r.status == OK:
            examples.append((r.token_ids.tolist(), r.response_positions.tolist()))
    return examples, counts, renderer.info()


def train_ref(config: TrainConfig | None = None, /, **fields: Any) -> dict[str, Any]:
    """Fine-tune ``base`` on ``input`` into ``output_dir`` (a checkpoint ``score --ref``
    loads); returns the training manifest, also written as ``output_dir/train_manifest.json``.
    """
    import orjson
    import torch

    from fastscore._compat import import_transformers

    cfg = dataclasses.replace(config, **fields) if config else TrainConfig(**fields)
    validate_train(cfg)
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    require_checkpoint(cfg.base, "base model")
    tokenizer = load_tokenizer(cfg.base, cfg.trust_remote_code)
    max_length = cfg.max_length or model_max_length(cfg.base, cfg.trust_remote_code) - 1
    examples, counts, template = rendered_examples(cfg, tokenizer, max_length)
    if not examples:
        raise ConfigError(
            f"train-ref: no record of {cfg.input} can be trained on (by status: {dict(counts)})"
        )
    device = (
        cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    dtype = cfg.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    autocast = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    tf = import_transformers()
    # fp32 master weights; lower precision only inside autocast
    model = tf.AutoModelForCausalLM.from_pretrained(
        cfg.base, torch_dtype=torch.float32, trust_remote_code=cfg.trust_remote_code
    ).to(device)
    if cfg.lora:
        model = _with_lora(model, cfg)
    lr = cfg.lr if cfg.lr is not None else (2e-4 if cfg.lora else 2e-5)
    schedule = Schedule(
        epochs=cfg.epochs,
        lr=lr,
        batch_size=cfg.batch_size,
        warmup_steps=0,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        max_steps=cfg.max_steps,
    )
    steps = schedule.total_steps(len(examples))
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else math.ceil(0.03 * steps)
    schedule = dataclasses.replace(schedule, warmup_steps=warmup)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:  # padded positions are masked out of attention and loss anyway
        pad_id = tokenizer.eos_token_id or 0
    result = train_examples(
        model,
        examples,
        schedule,
        pad_id=pad_id,
        what="train-ref",
        progress=cfg.progress,
        device=device,
        autocast_dtype=autocast,
        seed=cfg.seed,
    )
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.lora:
        if cfg.keep_adapter:
            model.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    model.to("cpu").save_pretrained(out)
    tokenizer.save_pretrained(out)
    manifest = {
        "fastscore_manifest": 1,
        "command": "train-ref",
        "input": storage.shown(cfg.input),
        "base": fingerprint(cfg.base),
        "output_dir": str(out.resolve()),
        "template": template,
        "max_length": max_length,
        "options": dataclasses.asdict(cfg),
        "schedule": dataclasses.asdict(schedule),
        "device": device,
        "counts": {"records": sum(counts.values()), "by_status": dict(counts)},
        "trained_samples": len(examples),
        "trained_tokens": sum(len(t) for _, t in examples),
        **result,
        "total_seconds": round(time.perf_counter() - t_start, 3),
    }
    (out / "train_manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return manifest


def _with_lora(model, cfg: TrainConfig):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise ConfigError("--lora needs peft: pip install 'fastscore[lora]'") from e
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)
