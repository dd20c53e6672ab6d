"""--ifd end to end: the response-alone loss equals an independent transformers
computation, on the torch and the vLLM engine; every score selects from the CLI."""

from __future__ import annotations

import orjson
import pytest

from fastscore.config import EngineConfig, ScoreConfig
from fastscore.data.formats import to_samples
from fastscore.data.readers import read_records
from fastscore.executors.local import score_file
from fastscore.rendering.renderer import Renderer
from fastscore.scoring.arithmetic import mean_nll
from fastscore.scoring.stream import alone_sample
from tests.helpers.reference import transformers_logprobs

pytestmark = pytest.mark.engine


@pytest.mark.parametrize("engine", ["torch", "vllm"])
def test_ifd_matches_transformers(tmp_path, demo_assets, tokenizer, engines, engine):
    lines = demo_assets.data.read_bytes().splitlines()
    data = tmp_path / "d.jsonl"
    multi = {
        "id": "multi",
        "messages": [
            {"role": "user", "content": "hello, i am kobu."},
            {"role": "assistant", "content": "hello kobu."},
            {"role": "user", "content": "what color is the rega?"},
            {"role": "assistant", "content": "the rega is black."},
        ],
    }
    data.write_bytes(b"\n".join(lines[:10] + lines[300:310] + [orjson.dumps(multi)]) + b"\n")
    out = tmp_path / "s.jsonl"
    cfg = ScoreConfig(
        input=str(data),
        output=str(out),
        base=str(demo_assets.base),
        ref=str(demo_assets.ref),
        progress=False,
        ifd=True,
        engine=EngineConfig(kind=engine, dtype="float32"),
    )
    m, _ = score_file(cfg, engines=engines if engine == "vllm" else None)
    rows = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    rendered = list(Renderer(tokenizer).render_all(to_samples(read_records(data))))
    alone = [alone_sample(r, tokenizer.bos_token_id) for r in rendered]
    for a, lp, row in zip(alone, transformers_logprobs(demo_assets.base, alone), rows, strict=True):
        assert a.n_response_tokens == row["n_response_tokens"]  # BOS + every response token
        assert abs(row["loss_alone"] - mean_nll(lp)) < 1e-4
        assert abs(row["ifd"] - row["loss_base"] / row["loss_alone"]) < 1e-12
    assert "engine_base_alone" in m["seconds"] and "ifd" in m["length_spearman"]


def test_every_score_selects_from_the_cli(tmp_path, demo_assets):
    from tests.helpers import cli

    data = tmp_path / "d.jsonl"
    data.write_bytes(b"\n".join(demo_assets.data.read_bytes().splitlines()[::20]) + b"\n")
    out = tmp_path / "run"
    cli("run", data, "--base", demo_assets.base, "--ref", demo_assets.ref, "--output-dir", out,
        "--engine", "torch", "--ifd", "--top-k", 5, "--no-progress")  # fmt: skip
    for score in ("lobass", "rho", "loss_base", "perplexity", "ifd", "length", "random"):
        sub = tmp_path / f"{score}.jsonl"
        cli("select", out / "scores.jsonl", "--input", data, "--output", sub,
            "--score", score, "--top-k", 5)  # fmt: skip
        assert len(sub.read_bytes().splitlines()) == 5, score
    m = orjson.loads((out / "manifest.json").read_bytes())
    assert set(m["length_spearman"]) >= {"lobass", "rho", "ifd", "perplexity", "random"}
