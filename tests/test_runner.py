"""The runner: the demo's table by hand, and a ``run --resume`` that finds its scoring
already finished (the whole run is exercised through the CLI in test_cli.py)."""

from __future__ import annotations

import orjson
import pytest

from fastscore.config import EngineConfig, ScoreConfig
from fastscore.errors import ConfigError
from fastscore.runner import _finished_scoring, format_demo
from fastscore.runs.outputs import OutputPaths


def test_the_demo_table_puts_each_kind_under_each_column():
    result = {
        "kinds": ["learnable", "noise"],
        "fraction": 0.2,
        "selected": 4,
        "table": {
            "in_data": {"learnable": 10, "noise": 10},
            "selected": {"learnable": 3, "noise": 1},
            "lobass": {"learnable": 4},
            "rho": {"noise": 4},
            "random_expected": {"learnable": 2.0, "noise": 2.0},
        },
        "manifest": {
            "selection": {"method": "top 20% by lobass"},
            "counts": {"records": 20},
            "throughput": {"tokens_per_second": 12345.6},
        },
    }
    lines = format_demo(result).splitlines()
    assert [ln.split() for ln in lines[:3]] == [
        ["kind", "in_data", "selected", "lobass", "rho", "random_expected"],
        ["learnable", "10", "3", "4", "0", "2.0"],
        ["noise", "10", "1", "0", "4", "2.0"],
    ]
    assert lines[3] == (
        "selected: the default selection, top 20% by lobass (4 of 20 samples, in selected.jsonl)"
    )
    assert "plain top 20% (--coverage none)" in lines[4] and "12,346 tokens/s" in lines[4]


def _cfg(tmp_path, demo_assets, **over):
    return ScoreConfig(
        input=str(demo_assets.data),
        output=str(tmp_path / "scores.jsonl"),
        base=str(demo_assets.base),
        ref=str(demo_assets.ref),
        engine=EngineConfig(kind="torch", dtype="float32"),
        **over,
    )


def test_scoring_runs_unless_a_resume_finds_it_finished(tmp_path, demo_assets):
    paths = OutputPaths.of(tmp_path / "scores.jsonl")
    assert _finished_scoring(_cfg(tmp_path, demo_assets), paths) is None  # no --resume
    cfg = _cfg(tmp_path, demo_assets, resume=True)
    assert _finished_scoring(cfg, paths) is None  # nothing written yet
    paths.scores.write_bytes(b"")
    paths.manifest.write_bytes(orjson.dumps({"fingerprint": "x"}))
    paths.partial.write_bytes(b"")
    assert _finished_scoring(cfg, paths) is None  # a partial: scoring did not end


def test_finished_scores_of_other_settings_are_refused(tmp_path, demo_assets):
    paths = OutputPaths.of(tmp_path / "scores.jsonl")
    paths.scores.write_bytes(b"")
    paths.manifest.write_bytes(orjson.dumps({"fingerprint": "made-with-something-else"}))
    with pytest.raises(ConfigError, match="made with other settings, models or another input"):
        _finished_scoring(_cfg(tmp_path, demo_assets, resume=True), paths)
