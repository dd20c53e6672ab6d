"""The demo's pretraining loop: a tiny model learns a made-up world from scratch.

A hand-written loop (AdamW, warm-up then cosine), since every token counts and the corpus
is a few thousand chats: the reference itself is trained by ``fastscore.training`` on TRL's
``SFTTrainer``. The selection benchmark pretrains its bases with it too.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

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
    log.debug("%s: %d steps, final loss %.3f, %.1fs", what, step, final, seconds)
    return {"steps": step, "final_loss": round(final, 6), "seconds": round(seconds, 3)}
