"""Same scores every time: per engine, end to end, whatever the --batch-tokens and the
order of the input (fp32, within 1e-5)."""

from __future__ import annotations

import random

import orjson
import pytest

from fastscore.config import EngineConfig, ScoreConfig
from fastscore.executors.local import score_file

pytestmark = pytest.mark.engine


def _rows_by_id(path):
    return {r["id"]: r for r in map(orjson.loads, path.read_bytes().splitlines())}


@pytest.mark.parametrize("engine", ["torch", "vllm"])
def test_scores_do_not_depend_on_batch_tokens_or_input_order(
    tmp_path, demo_assets, engines, engine
):
    lines = demo_assets.data.read_bytes().splitlines()
    lines = lines[:80] + lines[200:260] + lines[400:460]  # all three kinds of sample
    shuffled = list(lines)
    random.Random(0).shuffle(shuffled)
    files = {"in order": lines, "shuffled": shuffled}
    for name, ls in files.items():
        (tmp_path / f"{name}.jsonl").write_bytes(b"\n".join(ls) + b"\n")
    runs = {}
    for name, batch_tokens in (("in order", 64), ("in order", 8192), ("shuffled", 1000)):
        out = tmp_path / f"{name}-{batch_tokens}.scores.jsonl"
        cfg = ScoreConfig(
            input=str(tmp_path / f"{name}.jsonl"),
            output=str(out),
            base=str(demo_assets.base),
            ref=str(demo_assets.ref),
            progress=False,
            batch_tokens=batch_tokens,
            engine=EngineConfig(kind=engine, dtype="float32"),
        )
        score_file(cfg, engines=engines if engine == "vllm" else None)
        runs[(name, batch_tokens)] = _rows_by_id(out)
    first, *others = runs.values()
    assert len(first) == len(lines) and {r["status"] for r in first.values()} == {"ok"}
    for other in others:
        assert other.keys() == first.keys()
        for rid, a in first.items():
            b = other[rid]
            for key in ("loss_base", "loss_ref", "lobass"):
                assert abs(a[key] - b[key]) < 1e-5, (engine, rid, key, a[key], b[key])
