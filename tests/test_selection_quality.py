"""benchmarks/selection_quality.py --quick runs end to end and reports what it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "selection_quality.py"


def test_quick_run_reports_every_method(tmp_path):
    p = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])["worlds"]["1"]
    assert "steps policy: every fine-tune" in p.stderr and "world check:" in p.stdout
    assert "engine features: the base's final hidden states" in p.stderr
    methods = (
        "lobass",
        "rho",
        "ifd",
        "perplexity",
        "length",
        "random",
        "lobass+clusters",
        "lobass+clusters:engine",
        "lobass+clusters:balanced",
        "lobass+diverse",
        "lobass+clusters+responses",
        "lobass+clusters:engine+responses",
        "default",
    )
    for run in ("base", "full", "clean", *(f"{m}@0.1" for m in methods)):
        acc, lo, hi = out["table"][run]["accuracy"]
        assert 0.0 <= lo <= acc <= hi <= 1.0
        assert out["table"][run]["loss"][0] > 0.0
    # 10% of the quick world's 360 samples, every one of a planted kind
    for m in methods:
        assert sum(out["kinds"][f"{m}@0.1"].values()) == 36, m
        # the learnable picks, by skill
        assert sum(out["skills"][f"{m}@0.1"].values()) == out["kinds"][f"{m}@0.1"]["learnable"]
    assert set(out["length_spearman"]) >= {"lobass", "rho", "ifd", "perplexity", "random"}
    assert isinstance(out["world_check"]["passed"], bool)
    # how each feature source's clusters match the planted families
    assert {k.split(" k=")[0] for k in out["clusters"]} == {
        "engine (prompt)",
        "engine (response)",
        "lexical",
    }
    for c in out["clusters"].values():
        assert 0.0 <= c["homogeneity"] <= 1.0 and 0.0 <= c["completeness"] <= 1.0
    if out["plot"] is not None:
        assert Path(out["plot"]).stat().st_size > 10_000
