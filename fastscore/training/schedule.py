"""Where this process stands in a launch, and the run's schedule: per-device batch, steps,
warm-up and the learning rate (by the model's width when not given)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from fastscore.config import TrainConfig
from fastscore.errors import ConfigError

WARMUP_SHARE = 0.03  # the default warm-up: this share of the steps, rounded up


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
