"""Resuming an interrupted run: what was finished is kept, nothing is scored twice.

Scores are appended to ``SCORES.partial`` and flushed chunk by chunk; beside it,
``SCORES.run.json`` records a fingerprint of the input, of the two models' contents (a
reference retrained in place is another model) and the tokenizer's files, of the rendering
(the template's text as it renders, its rule, and the versions of the code that renders
and masks: fastscore, TRL, transformers, tokenizers) and of every option that changes a
score.
``--resume`` checks that record, cuts a torn last line, and goes on after the last
complete one. The final file appears (atomically renamed) only when all is scored. Ray's
shard markers carry the same fingerprint.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from fastscore.config import plain
from fastscore.data.ids import IdRegistry
from fastscore.errors import ConfigError
from fastscore.records import BAD_RECORD, DUPLICATE_ID
from fastscore.runs.outputs import OutputPaths

if TYPE_CHECKING:
    from fastscore.scoring.session import SessionFacts

# Options that cannot change any score: a run may resume under other values of these.
NEUTRAL = frozenset(
    {
        "output",
        "progress",
        "executor",
        "ray",
        "resume",
        "strict",
        "allow_empty",
        "batch_tokens",
        "base_url",  # which endpoints serve a model: the model is in ``models``
        "ref_url",
        "engine.concurrency",
        "engine.request_timeout",
        "engine.retry_seconds",
        "engine.api_key_env",
        "engine.forward_tokens",
        "engine.share_prefixes",  # the same scores (within rounding), less work
        "engine.prefix_cache_gb",
        "engine.gpu_memory_utilization",
        "engine.kv_cache_gb",
    }
)
# what identifies a model in a fingerprint (not where it is)
_MODEL_KEYS = ("config_sha256", "weights_sample_sha256", "served", "root", "max_model_len")


def kill_point(name: str) -> None:
    """A named point where the crash tests SIGKILL the process (``FASTSCORE_KILL_AT=name``),
    for moments too short to hit from outside, such as between the final writes."""
    if os.environ.get("FASTSCORE_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def score_options(cfg) -> dict:
    """Every option that can change a score, nested ones as ``engine.dtype``."""
    out = {}
    for k, v in plain(cfg).items():  # (a URL's password is no option, and may rotate)
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return {k: v for k, v in out.items() if k not in NEUTRAL and k.split(".")[0] not in NEUTRAL}


def model_identity(models: dict | None) -> dict:
    """What tells the run's models apart: their contents' hashes (local), what the servers
    report of them (served); not their paths or endpoints."""
    return {
        name: {k: m[k] for k in _MODEL_KEYS if k in m}
        for name, m in (models or {}).items()
        if isinstance(m, dict)
    }


def rendering_identity(facts: SessionFacts) -> dict:
    """What decides which tokens are scored beside the options: the template as it
    renders (its text's hash, the checkpoint's or ``--chat-template``'s, and TRL's training
    variant when that is what renders), the rule that finds the response, and the code
    that renders and masks (a new TRL ships new training templates)."""
    from importlib.metadata import PackageNotFoundError, version

    from fastscore import __version__

    keys = ("name", "rule", "trl_variant", "sha256", "original_sha256")
    versions = {"fastscore": __version__}
    for dist in ("trl", "transformers", "tokenizers"):
        with contextlib.suppress(PackageNotFoundError):
            versions[dist] = version(dist)
    return {
        "template": {k: facts.template.get(k) for k in keys},
        "versions": versions,
    }


def run_fingerprint(cfg, facts: SessionFacts) -> str:
    src = facts.source  # (found once per run: data.source)
    blob = orjson.dumps(
        {
            "input": [cfg.input.shown, src.size, src.version],
            "format": facts.fmt,
            "models": model_identity(facts.models),
            "rendering": rendering_identity(facts),
            "options": score_options(cfg),
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(blob).hexdigest()


def read_run_record(paths: OutputPaths) -> dict | None:
    if not paths.store.pull(paths.run_record):
        return None
    return orjson.loads(paths.run_record.read_bytes())


def write_run_record(paths: OutputPaths, cfg, facts: SessionFacts) -> None:
    src = facts.source
    record = {
        "fingerprint": run_fingerprint(cfg, facts),
        "format": facts.fmt,
        "input": {"path": cfg.input.shown, "size": src.size, "mtime_ns": src.version},
        "models": facts.models,
        "rendering": rendering_identity(facts),
        "options": score_options(cfg),
    }
    paths.run_record.parent.mkdir(parents=True, exist_ok=True)
    paths.run_record.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    paths.store.push(paths.run_record)


def what_changed(record: dict, cfg, facts: SessionFacts) -> list[str]:
    """What differs between a run record and now, in words."""
    now = score_options(cfg)
    was = record.get("options", {})
    changed = sorted(k for k in set(now) | set(was) if now.get(k) != was.get(k))
    src = facts.source
    if [src.size, src.version] != [record["input"]["size"], record["input"]["mtime_ns"]]:
        changed.append("the input file (size or modification time)")
    if record["format"] != facts.fmt:
        changed.append("the record format")
    models = facts.models
    before, after = model_identity(record.get("models")), model_identity(models)
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name):
            where = (models or {}).get(name, {})
            path = where.get("path") or where.get("served") or name
            what = "model" if name in ("base", "ref") else "files"
            changed.append(
                f"the {name} {what} {path} (its contents changed since the run started, e.g. "
                "retrained or edited in place)"
            )
    was_r, now_r = record.get("rendering") or {}, rendering_identity(facts)
    t_was, t_now = was_r.get("template") or {}, now_r["template"]
    if (t_was.get("sha256"), t_was.get("original_sha256")) != (
        t_now["sha256"],
        t_now["original_sha256"],
    ):
        changed.append(
            f"the chat template's text ({t_now['name']}: edited since the run started, or "
            "another one)"
        )
    elif (t_was.get("rule"), t_was.get("trl_variant")) != (t_now["rule"], t_now["trl_variant"]):
        changed.append(f"the rule that finds the response ({t_was.get('rule')} -> {t_now['rule']})")
    v_was, v_now = was_r.get("versions") or {}, now_r["versions"]
    for dist in sorted(set(v_was) | set(v_now)):
        if v_was.get(dist) != v_now.get(dist):
            changed.append(f"{dist} {v_was.get(dist)} -> {v_now.get(dist)} (its rendering)")
    return changed


def prepare_resume(
    paths: OutputPaths, cfg, facts: SessionFacts
) -> tuple[int, Counter, IdRegistry] | None:
    """Check a partial run can be continued; cut a torn last line. Returns (records done,
    counts rebuilt from the kept lines, the ids they used), or None when there is nothing
    to continue: the run starts afresh (and records itself then, so that a job that always
    passes --resume keeps its work)."""
    record = read_run_record(paths)
    if record is None or not paths.restore():
        if paths.store.exists(paths.scores):
            where = paths.url(paths.scores).shown
            raise ConfigError(f"{where} is already complete; nothing to resume")
        return None  # a fresh start (recorded by the caller, as a run without --resume)
    # what the record says, item by item, and its fingerprint (of the same, hashed)
    changed = what_changed(record, cfg, facts)
    if changed or record["fingerprint"] != run_fingerprint(cfg, facts):
        changed = ", ".join(changed) or "its fingerprint"
        raise ConfigError(
            f"cannot resume {paths.url(paths.partial).shown}: it was started with "
            f"other settings ({changed}). Resume with the same input, models and options, "
            "or start again without --resume"
        )
    n, counts, ids = kept_lines(paths.partial)
    return n, counts, ids


def kept_lines(partial: Path, first: int = 0) -> tuple[int, Counter, IdRegistry]:
    """The complete lines of a partial scores file (records ``first``, ``first + 1``, ...),
    a torn last line cut off: (how many, the counts they make, the ids they used)."""
    data = partial.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]  # a line cut by the crash is scored again
    counts: Counter = Counter()
    ids = IdRegistry()
    for n, line in enumerate(keep.splitlines()):
        row = orjson.loads(line)
        if row.get("index") != first + n:
            raise ConfigError(
                f"{partial}: line {n + 1} has index {row.get('index')}, not {first + n}; "
                "start again without --resume"
            )
        counts["records"] += 1
        if row["status"] not in (BAD_RECORD, DUPLICATE_ID) and row.get("id") is not None:
            ids.first(row["id"], first + n)
        counts[f"status:{row['status']}"] += 1
        if row["status"] == "ok":  # (a preference record's two sides)
            counts["tokens_scored_samples"] += row["n_tokens"] + row.get("n_tokens_rejected", 0)
            counts["response_tokens"] += row["n_response_tokens"] + row.get(
                "n_response_tokens_rejected", 0
            )
    if len(keep) != len(data):
        with open(partial, "r+b") as f:
            f.truncate(len(keep))
    return counts["records"], counts, ids
