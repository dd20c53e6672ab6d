"""TRL's ``SFTTrainer`` set up for the reference: every default spelled out, the scorer's
completion masks as its labels, LoRA by peft, the last step saved, a quiet progress bar."""

from __future__ import annotations

import copy
from pathlib import Path

from fastscore.config import TrainConfig
from fastscore.errors import ConfigError
from fastscore.training.curve import CURVE_POINTS
from fastscore.training.examples import Examples
from fastscore.training.schedule import WARMUP_SHARE, Plan


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
    kind = distributed_kind(trainer)
    if kind not in ("NO", "MULTI_CPU", "MULTI_GPU", "FSDP"):
        raise ConfigError(f"train-ref runs on one process, DDP or FSDP; the launch asks for {kind}")
    if trainer.is_fsdp_enabled:
        plugin = trainer.accelerator.state.fsdp_plugin
        if "FULL_STATE_DICT" not in str(plugin.state_dict_type):
            raise ConfigError(
                "train-ref under FSDP saves the reference whole: set "
                "fsdp_state_dict_type: FULL_STATE_DICT in the accelerate config (or use --fsdp)"
            )


def distributed_kind(trainer) -> str:
    """accelerate's name for the launch's parallelism: NO, MULTI_CPU, MULTI_GPU, FSDP..."""
    return str(trainer.accelerator.distributed_type).split(".")[-1]


def trainer_versions() -> dict[str, str]:
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
