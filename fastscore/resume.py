"""Resuming an interrupted run: what was finished is kept, nothing is scored twice.

Scores are appended to ``<output>.partial`` and flushed chunk by chunk; beside it,
``<output>.run.json`` records a fingerprint of the input and of every option that changes
a score. ``--resume`` checks that record, cuts a torn last line, and goes on after the
last complete one. The final file appears (atomically renamed) only when all is scored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
from collections import Counter
from pathlib import Path

import orjson

from .errors import ConfigError
from .ids import IdRegistry
from .records import BAD_RECORD, DUPLICATE_ID

# Options that do not change any score: a run may resume under other values of these.
NEUTRAL = {"output", "progress", "executor", "ray", "resume", "batch_tokens"}


def kill_point(name: str) -> None:
    """A named point where the crash tests SIGKILL the process (``FASTSCORE_KILL_AT=name``),
    for moments too short to hit from outside, such as between the final writes."""
    if os.environ.get("FASTSCORE_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def score_options(cfg) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NEUTRAL}


def input_signature(path) -> tuple[int, int]:
    """(size, modification time) of an input: a file's own; for a ``save_to_disk``
    directory, the total size and latest time of its files."""
    p = Path(path)
    if not p.is_dir():
        st = os.stat(p)
        return st.st_size, st.st_mtime_ns
    stats = [f.stat() for f in sorted(p.rglob("*")) if f.is_file()]
    return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)


def run_fingerprint(cfg, fmt: str) -> str:
    size, mtime = input_signature(cfg.input)
    blob = orjson.dumps(
        {
            "input": [str(Path(cfg.input).resolve()), size, mtime],
            "format": fmt,
            "options": score_options(cfg),
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(blob).hexdigest()


def run_record_path(output: Path) -> Path:
    return output.with_name(output.name + ".run.json")


def read_run_record(output: Path) -> dict | None:
    path = run_record_path(output)
    return orjson.loads(path.read_bytes()) if path.exists() else None


def write_run_record(output: Path, cfg, fmt: str) -> None:
    size, mtime = input_signature(cfg.input)
    record = {
        "fingerprint": run_fingerprint(cfg, fmt),
        "format": fmt,
        "input": {"path": str(Path(cfg.input).resolve()), "size": size, "mtime_ns": mtime},
        "options": score_options(cfg),
    }
    run_record_path(output).write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))


def prepare_resume(output: Path, partial: Path, cfg, fmt: str) -> tuple[int, Counter, IdRegistry]:
    """Check a partial run can be continued; cut a torn last line. Returns (records done,
    counts rebuilt from the kept lines, the ids they used)."""
    record_path = run_record_path(output)
    if not partial.exists() or not record_path.exists():
        if output.exists():
            raise ConfigError(f"{output} is already complete; nothing to resume")
        return 0, Counter(), IdRegistry()
    record = orjson.loads(record_path.read_bytes())
    if record["fingerprint"] != run_fingerprint(cfg, fmt):
        now = score_options(cfg)
        changed = sorted(
            k for k in set(now) | set(record["options"]) if now.get(k) != record["options"].get(k)
        )
        if list(input_signature(cfg.input)) != [
            record["input"]["size"],
            record["input"]["mtime_ns"],
        ]:
            changed.append("the input file (size or modification time)")
        if record["format"] != fmt:
            changed.append("the record format")
        raise ConfigError(
            f"cannot resume {partial}: it was started with other settings ({', '.join(changed)}"
            "). Resume with the same input and options, or start again without --resume"
        )
    data = partial.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]  # a line cut by the crash is scored again
    counts: Counter = Counter()
    ids = IdRegistry()
    for n, line in enumerate(keep.splitlines()):
        row = orjson.loads(line)
        if row.get("index") != n:
            raise ConfigError(
                f"{partial}: line {n + 1} has index {row.get('index')}, not {n}; "
                "start again without --resume"
            )
        counts["records"] += 1
        if row["status"] not in (BAD_RECORD, DUPLICATE_ID):
            ids.first(row["id"], n)
        counts[f"status:{row['status']}"] += 1
        if row["status"] == "ok":
            counts["tokens_scored_samples"] += row["n_tokens"]
            counts["response_tokens"] += row["n_response_tokens"]
    if len(keep) != len(data):
        with open(partial, "r+b") as f:
            f.truncate(len(keep))
    return counts["records"], counts, ids
