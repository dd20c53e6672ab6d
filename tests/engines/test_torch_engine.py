import json

import numpy as np
import orjson

from fastscore.engines.torch_engine import length_batches, pack_groups
from fastscore.records import RenderedSample
from fastscore.scoring.arithmetic import mean_nll
from tests.helpers.reference import transformers_logprobs


def _s(n):
    return RenderedSample(0, 0, np.zeros(n, dtype=np.int32), np.array([n - 1], dtype=np.int32))


def test_length_batches_longest_first_within_budget():
    samples = [_s(n) for n in (5, 40, 10, 30, 10)]
    batches = length_batches(samples, forward_tokens=60)
    # lengths 40 | 30, 10 (padded to 2 x 30 = 60) | 10, 5
    assert batches == [[1], [3, 2], [4, 0]]
    assert sorted(i for b in batches for i in b) == list(range(5))
    assert length_batches([_s(100)], forward_tokens=10) == [[0]]  # too long alone still runs


def test_pack_groups_in_order_within_budget():
    samples = [_s(n) for n in (5, 40, 10, 30, 10, 100)]
    assert pack_groups(samples, forward_tokens=50) == [[0, 1], [2, 3, 4], [5]]


def test_auto_engine_on_cpu_is_torch_and_matches_transformers(tmp_path, demo_assets, tokenizer):
    import fastscore
    from fastscore.data.formats import to_samples
    from fastscore.data.readers import read_records
    from fastscore.rendering.renderer import Renderer

    data = tmp_path / "d.jsonl"
    data.write_bytes(
        b"".join(
            orjson.dumps(x) + b"\n"
            for x in [
                orjson.loads(line) for line in demo_assets.data.read_bytes().splitlines()[:40]
            ]
        )
    )
    out = tmp_path / "s.jsonl"
    m = fastscore.score(
        input=str(data),
        base=str(demo_assets.base),
        ref=str(demo_assets.ref),
        output=str(out),
        progress=False,
        engine=fastscore.EngineConfig(dtype="float32"),
    )
    assert m["engines"]["base"]["engine"] == "torch"
    assert m["engines"]["base"]["batching"] == "packed"  # the demo model is a Llama
    assert json.loads((tmp_path / "s.manifest.json").read_text())["counts"]["records"] == 40
    rows = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    rendered = list(Renderer(tokenizer).render_all(to_samples(read_records(data))))
    for s, lp in zip(rendered, transformers_logprobs(demo_assets.base, rendered), strict=True):
        assert abs(rows[s.index]["loss_base"] - mean_nll(lp)) < 1e-5
