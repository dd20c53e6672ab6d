"""Other libraries' output kept off the terminal unless asked for: ``fastscore -v`` on the
command line, ``FASTSCORE_VERBOSE=1`` (or the ``fastscore`` logger at DEBUG) for the
Python API.

Quiet, a run shows fastscore's own lines only: transformers' loading and saving bars and
notices, FutureWarnings and vLLM's INFO logs are off while fastscore works (and restored
after, so a notebook keeps its own settings). vLLM's engine runs in processes of its own
whose output (Triton's and NUMA's notices, its loading bars) no setting reaches; that
output goes to a log file instead, which an engine error names, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

VERBOSE_ENV = "FASTSCORE_VERBOSE"
KEEP_LOGS = 32  # engine logs kept in the cache, the newest


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1" or logging.getLogger("fastscore").isEnabledFor(
        logging.DEBUG
    )


def set_verbose(on: bool) -> None:
    """Show (or hide) other libraries' output, in this process and those it starts."""
    if on:
        os.environ[VERBOSE_ENV] = "1"
    else:
        os.environ.pop(VERBOSE_ENV, None)
    # read by vLLM when it is imported, by it and by its engine processes (a level the
    # user set is theirs)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO" if on else "ERROR")


@contextlib.contextmanager
def libraries_quiet() -> Iterator[None]:
    """transformers' bars and notices, FutureWarnings and vLLM's logs off for the block,
    unless ``verbose()``; the settings found are restored after it."""
    if verbose():
        yield
        return
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    vllm_logger = logging.getLogger("vllm")
    vllm_level = vllm_logger.level
    vllm_logger.setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
        vllm_logger.setLevel(vllm_level)


# one process has one stdout and stderr: engines started side by side take turns
_REDIRECT = threading.Lock()


@contextlib.contextmanager
def output_to_log(name: str) -> Iterator[Path | None]:
    """This process's stdout and stderr (the file descriptors) into a log file for the
    block, unless ``verbose()``; processes started in it write there for their life.
    Yields the log's path (None when verbose, or when no log can be written: the output
    then stays on the terminal)."""
    if verbose():
        yield None
        return
    with _REDIRECT:
        fd, path = _open_log(name)
        if fd is None:
            yield None
            return
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            yield path
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for f in (fd, *saved):
                os.close(f)


def _open_log(name: str) -> tuple[int | None, Path | None]:
    """A new log file in the cache (the oldest beyond ``KEEP_LOGS`` removed), else in the
    temporary directory; (None, None) when neither can be written."""
    import tempfile

    from fastscore.paths import cache_dir

    stamp = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for logs in (cache_dir() / "logs", Path(tempfile.gettempdir()) / "fastscore-logs"):
        try:
            logs.mkdir(parents=True, exist_ok=True)
            path = logs / stamp
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError:
            continue
        found = []
        for old in logs.glob("*.log"):
            with contextlib.suppress(OSError):  # (another run may remove it meanwhile)
                found.append((old.stat().st_mtime, old))
        for _, old in sorted(found)[:-KEEP_LOGS]:
            with contextlib.suppress(OSError):
                old.unlink()
        return fd, path
    return None, None
