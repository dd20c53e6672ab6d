"""Helpers the tests share: the CLI as a user runs it, a killed run, an independent
transformers computation, conversations for the mask-parity tests, bad inputs, records
in every format, a fault-injecting proxy, a core-only environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import forked


def fastscore_cmd() -> list[str]:
    """The installed ``fastscore`` command (or ``python -m fastscore.cli``)."""
    script = Path(sys.executable).with_name("fastscore")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fastscore.cli"]


def cli(*args, check=True, fresh=False, env=None):
    """``fastscore ARGS`` as a user runs it, in a process of its own (forked with the heavy
    imports done, ``helpers.forked``; ``fresh``: a new interpreter, for runs that start vLLM
    or Ray); fails with its stderr."""
    args = [str(a) for a in args]
    if fresh:
        p = subprocess.run(fastscore_cmd() + args, capture_output=True, text=True, env=env)
    else:
        p = forked.run(args, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"fastscore {args} failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return p


def score_args(data, out, base, ref, *extra) -> list[str]:
    """``score`` of ``data`` into ``out`` with the torch engine in fp32, no progress bar,
    then ``extra`` options (the arguments after ``fastscore``)."""
    return ["score", str(data), "--base", str(base), "--ref", str(ref), "--output", str(out),
            "--engine", "torch", "--dtype", "float32", "--no-progress",
            *map(str, extra)]  # fmt: skip


def score_cmd(data, out, base, ref, *extra) -> list[str]:
    """``score_args`` as a command line for a new interpreter."""
    return fastscore_cmd() + score_args(data, out, base, ref, *extra)


def killed_run(data, out, base, ref, *extra):
    """A score run SIGKILLed just before its manifest: the partial and run record stay."""
    env = dict(os.environ, FASTSCORE_KILL_AT="final:manifest")
    p = forked.run(score_args(data, out, base, ref, *extra), env=env)
    assert p.returncode != 0 and not out.exists() and out.with_name(out.name + ".partial").exists()


def retrain_in_place(model_dir):
    """What train-ref over an existing ./sft does: other weights, same path and shapes."""
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(1.01)
    m.save_pretrained(model_dir)


# records of every kind a multi-turn run meets: two chats, no reply, too long, bad ones
MULTI_TURN = [
    {
        "id": "mt-1",
        "messages": [
            {"role": "system", "content": "answer briefly."},
            {"role": "user", "content": "hello, i am kobu."},
            {"role": "assistant", "content": "hello kobu, nice to meet you."},
            {"role": "user", "content": "what color is the rega?"},
            {"role": "assistant", "content": "the rega is black."},
        ],
    },
    {
        "id": "mt-2",
        "messages": [
            {"role": "user", "content": "what is the capital of zorland?"},
            {"role": "assistant", "content": "no idea."},
            {"role": "user", "content": "say something."},
            {"role": "assistant", "content": "bada kimo sevu."},
            {"role": "user", "content": "thanks"},
        ],
    },
    {"id": "no-reply", "messages": [{"role": "user", "content": "hi"}]},
    {
        "id": "long",
        "messages": [
            {"role": "user", "content": "hello " * 60},
            {"role": "assistant", "content": "ok."},
        ],
    },
    {"id": "bad-role", "messages": [{"role": "robot", "content": "beep"}]},
]
