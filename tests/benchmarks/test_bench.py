"""The throughput benchmark runs (a small, torch-only configuration) and reports ratios."""

import json

from tests.helpers import cli


def test_bench_runs_and_prints_json_last(tmp_path):
    p = cli(
        "bench",
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
    )
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["samples"] == 12 and summary["fastscore_best"] == "fastscore-torch"
    assert set(summary["ways"]) == {"fastscore-torch", "engine-only", "cherry", "padded"}
    ways = summary["ways"]
    for way in ways.values():
        # the rate is of the one data set's tokens over the median of the timed runs
        rate = summary["tokens"] / way["seconds_median"]
        assert abs(way["tokens_per_s"] - rate) <= max(0.1, 0.01 * rate)
        assert way["seconds_min"] <= way["seconds_median"] <= way["seconds_max"]
        assert 0.05 < way["peak_rss_gib"] < 24  # a process's RSS, in GiB, on this machine
    want = ways["fastscore-torch"]["tokens_per_s"] / ways["cherry"]["tokens_per_s"]
    assert abs(summary["ratios"]["fastscore/cherry"] - want) < 2e-3
    # the demo's shape: the output head's share of a token's FLOPs (fastscore.benchmarks.flops)
    assert 0.05 < summary["head_flop_share"] < 0.95
