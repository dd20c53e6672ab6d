"""fastscore: pick the most learnable SFT samples for a base model (LoBaSS / DavIR).

    import fastscore
    fastscore.score(input="data.jsonl", base="./base", ref="./sft", output="scores.jsonl")
    fastscore.select(scores="scores.jsonl", input="data.jsonl", output="subset.jsonl",
                     fraction=0.06)
    fastscore.report(scores="scores.jsonl", input="data.jsonl", output_dir="report")

Heavy libraries (vLLM, torch, transformers) load only when a function runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "score": ("fastscore.executors.local", "score"),
    "select": ("fastscore.selection.selector", "select"),
    "run": ("fastscore.runner", "run"),
    "demo": ("fastscore.runner", "demo"),
    "report": ("fastscore.reporting.page", "report"),
    "inspect": ("fastscore.reporting.inspection", "inspect"),
    "dry_run": ("fastscore.executors.local", "dry_run"),
    "train_ref": ("fastscore.training.run", "train_ref"),
    "TrainConfig": ("fastscore.config", "TrainConfig"),
    "ScoreConfig": ("fastscore.config", "ScoreConfig"),
    "SelectConfig": ("fastscore.config", "SelectConfig"),
    "RunConfig": ("fastscore.config", "RunConfig"),
    "ReportConfig": ("fastscore.config", "ReportConfig"),
    "InspectConfig": ("fastscore.config", "InspectConfig"),
    "EngineConfig": ("fastscore.config", "EngineConfig"),
    "FastscoreError": ("fastscore.errors", "FastscoreError"),
}
__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from fastscore.config import (  # noqa: F401
        EngineConfig,
        InspectConfig,
        ReportConfig,
        RunConfig,
        ScoreConfig,
        SelectConfig,
        TrainConfig,
    )
    from fastscore.errors import FastscoreError  # noqa: F401
    from fastscore.executors.local import dry_run, score  # noqa: F401
    from fastscore.reporting.inspection import inspect  # noqa: F401
    from fastscore.reporting.page import report  # noqa: F401
    from fastscore.runner import demo, run  # noqa: F401
    from fastscore.selection.selector import select  # noqa: F401
    from fastscore.training.run import train_ref  # noqa: F401


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'fastscore' has no attribute {name!r}")
