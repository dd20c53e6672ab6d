"""``fastscore ARGS`` in a child process forked from a server that imported torch,
transformers and TRL once (multiprocessing's forkserver).

A CLI run in a new interpreter spends ~7 s of this CPU importing those before it does
anything; the suite runs the CLI about a hundred times. The child here is still a process
of its own, as a user's run is: its own environment, stdout and stderr, exit status, and
signals (the resume tests SIGKILL it). The forkserver itself never runs a torch op, so its
children start with no thread pools to inherit. Runs that start vLLM or Ray use a new
interpreter (``tests.helpers.cli(..., fresh=True)``), as those libraries start processes
of their own.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

PRELOAD = [
    "torch",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "trl.chat_template_utils",
    "fastscore.cli",
    "fastscore.scoring.session",
    "fastscore.engines.torch_engine",
    "fastscore.executors.local",
    "fastscore.selection.selector",
    "fastscore.reporting.page",
    "fastscore.training.run",
]

_context = None


def _ctx():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _main(args: list[str], env: dict[str, str], out: str, err: str) -> None:
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.dup2(f, fd)
        os.close(f)
    from fastscore.cli import main

    try:
        main(args=args, prog_name="fastscore")  # click ends with SystemExit(status)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


class Child:
    """A running ``fastscore ARGS``; ``poll``/``wait``/``send_signal`` as subprocess's."""

    def __init__(self, args, env: dict[str, str] | None = None):
        self.args = [str(a) for a in args]
        d = Path(tempfile.mkdtemp(prefix="fastscore-cli-"))
        self._out, self._err = d / "stdout", d / "stderr"
        self._out.touch()
        self._err.touch()
        env = dict(os.environ if env is None else env)
        self._proc = _ctx().Process(
            target=_main, args=(self.args, env, str(self._out), str(self._err))
        )
        self._proc.start()
        self.pid = self._proc.pid

    def poll(self) -> int | None:
        return self._proc.exitcode

    def wait(self) -> int:
        self._proc.join()
        return self._proc.exitcode

    def send_signal(self, sig: int = signal.SIGKILL) -> None:
        os.kill(self.pid, sig)

    def result(self) -> subprocess.CompletedProcess:
        """Once it has ended: its status (a negative signal number if killed) and output."""
        code = self.wait()
        out = self._out.read_text(errors="replace")
        err = self._err.read_text(errors="replace")
        for p in (self._out, self._err):
            p.unlink()
        self._out.parent.rmdir()
        return subprocess.CompletedProcess(["fastscore", *self.args], code, out, err)


def run(args, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return Child(args, env).result()
