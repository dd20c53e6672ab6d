"""fastscore: pick the most learnable SFT samples for a base model (LoBaSS / DavIR).

    import fastscore
    fastscore.score(input="data.jsonl", base="./base", ref="./sft", output="scores.jsonl")
    fastscore.select(scores="scores.jsonl", input="data.jsonl", output="subset.jsonl",
                     fraction=0.06)

Heavy libraries (vLLM, torch, transformers) load only when a function runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "score": ("fastscore.pipeline", "score"),
    "select": ("fastscore.selection", "select"),
    "run": ("fastscore.runner", "run"),
    "demo": ("fastscore.runner", "demo"),
    "ScoreConfig": ("fastscore.config", "ScoreConfig"),
    "SelectConfig": ("fastscore.config", "SelectConfig"),
    "RunConfig": ("fastscore.config", "RunConfig"),
    "EngineConfig": ("fastscore.config", "EngineConfig"),
    "FastscoreError": ("fastscore.errors", "FastscoreError"),
}
__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from .config import EngineConfig, RunConfig, ScoreConfig, SelectConfig  # noqa: F401
    from .errors import FastscoreError  # noqa: F401
    from .pipeline import score  # noqa: F401
    from .runner import demo, run  # noqa: F401
    from .selection import select  # noqa: F401


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'fastscore' has no attribute {name!r}")
