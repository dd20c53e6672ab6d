"""The reference stage, ``train-ref``: fine-tune the base model on the data into the
reference model, with TRL's ``SFTTrainer`` (so transformers' ``Trainer`` and accelerate:
one process, or many under ``torchrun`` / ``accelerate launch`` with DDP or FSDP).

The trainer is fed the scorer's own rendering, pre-tokenized: the samples are rendered by
the scorer's ``Renderer`` (same chat template, same response spans, same ``max_length``),
and each example's ``completion_mask`` is the scorer's response positions, so the trainer's
labels are the scored tokens by construction. A record the scorer would not score (bad,
empty, too long) is not trained on either; the counts by status go into
``train_manifest.json`` with the schedule, the world size and the loss curve (also drawn
in ``loss_curve.png``). Full fine-tuning or LoRA (peft: the adapter is the reference, or
merged into a full checkpoint with ``--merge``). Checkpoints every ``save_steps`` steps go
to ``output_dir/checkpoints``; ``--resume`` continues from the last one.

``run`` is the command (one reference, or K cross-fitted ones); ``examples`` the scorer's
rendering as the trainer's data (the held-out and sampled splits, a fold's); ``schedule``
the launch and the steps, batch and learning rate; ``trainer`` TRL's ``SFTTrainer`` set up;
``checkpoints`` what a ``--resume`` may continue; ``check`` the held-out check that the
reference learned; ``curve`` the loss curve.
"""
