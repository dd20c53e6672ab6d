"""benchmarks/selection_quality.py's code path on a tiny world, in-process: every method
selects, fine-tunes and is evaluated, and the report holds what it promises. (The
figures come from the benchmark's own runs: python benchmarks/selection_quality.py.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "selection_quality.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("selection_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_tiny_run_reports_every_method(tmp_path, capsys):
    import argparse

    bench = _benchmark()
    methods = ["default", "lobass", "random", "lobass+clusters", "lobass+diverse"]
    tiny = bench.WorldSize(
        words=60,
        train_per_skill=12,
        test_per_skill=4,
        known=12,
        noise=12,
        pretrain_copy=100,
        pretrain_runs=50,
        pretrain_known=30,
    )
    # a few optimiser steps: the code path, not the figures
    args = argparse.Namespace(steps=3, pretrain_steps=3, lr=2e-3)
    result = bench.run_seed(0, tiny, [0.1], methods, tmp_path, args, world=1)
    out = bench.report([result], [0.1], methods, tmp_path, world=1)
    captured = capsys.readouterr()
    assert "world check:" in captured.out and "planted kinds in each subset" in captured.out
    n = sum(result["in_data"].values())
    assert n == 4 * 12 + 12 + 12
    for run in ("base", "full", "clean", *(f"{m}@0.1" for m in methods)):
        acc, lo, hi = out["table"][run]["accuracy"]
        assert 0.0 <= lo <= acc <= hi <= 1.0
        assert out["table"][run]["loss"][0] > 0.0
    for m in methods:  # 10% of the records, every one of a planted kind
        assert sum(out["kinds"][f"{m}@0.1"].values()) == n // 10, m
        # the learnable picks, by skill
        assert sum(out["skills"][f"{m}@0.1"].values()) == out["kinds"][f"{m}@0.1"]["learnable"]
    assert set(out["length_spearman"]) >= {"lobass", "rho", "ifd", "perplexity", "random"}
    assert isinstance(out["world_check"]["passed"], bool)
    assert {k.split(" k=")[0] for k in out["clusters"]} == {
        "engine (prompt)",
        "engine (response)",
        "lexical",
    }
    for c in out["clusters"].values():
        assert 0.0 <= c["homogeneity"] <= 1.0 and 0.0 <= c["completeness"] <= 1.0
    if out["plot"] is not None:
        assert Path(out["plot"]).stat().st_size > 10_000
