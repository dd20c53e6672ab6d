"""The throughput benchmark runs (a small, torch-only configuration) and reports ratios."""

import json
import subprocess
import sys


def test_bench_runs_and_prints_json_last(tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastscore.benchmarks.cpu",
            "--model",
            "demo",
            "--samples",
            "12",
            "--repeats",
            "1",
            "--ways",
            "fastscore-torch,engine-only,cherry,padded",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["samples"] == 12 and summary["fastscore_best"] == "fastscore-torch"
    assert set(summary["ways"]) == {"fastscore-torch", "engine-only", "cherry", "padded"}
    for way in summary["ways"].values():
        assert way["tokens_per_s"] > 0 and way["peak_rss_gib"] > 0
    assert summary["ratios"]["fastscore/cherry"] > 0
    assert 0 < summary["head_flop_share"] < 1
