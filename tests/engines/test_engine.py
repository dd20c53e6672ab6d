"""The vLLM engine against an independent transformers computation (fp32, within 1e-4)."""

import numpy as np
import pytest

from fastscore.scoring.arithmetic import mean_nll
from tests.helpers.format_records import rendered as _rendered
from tests.helpers.reference import transformers_logprobs

pytestmark = pytest.mark.engine


@pytest.mark.parametrize("template", ["model", "plain"])
def test_vllm_matches_transformers(engines, demo_assets, tokenizer, template):
    samples = _rendered(tokenizer, template)
    assert any(len(s.response_positions) > 12 for s in samples)  # multi-turn is in there
    for engine, model_dir in zip(engines, (demo_assets.base, demo_assets.ref), strict=True):
        got = engine.response_logprobs(samples)
        want = transformers_logprobs(model_dir, samples)
        for s, g, w in zip(samples, got, want, strict=True):
            assert g.shape == w.shape == (s.n_response_tokens,)
            np.testing.assert_allclose(g, w, atol=1e-4, rtol=0)
            assert abs(mean_nll(g) - mean_nll(w)) < 1e-4
        # (test_base_and_ref_differ shows the two models differ, so this is no tautology)
    assert engines[0].info()["logprobs_path"] == "flat"  # CPU has no V2 runner


def test_base_and_ref_differ(engines, tokenizer):
    samples = _rendered(tokenizer, "model")[:1]
    lb, lr = (e.response_logprobs(samples)[0] for e in engines)
    assert np.abs(lb - lr).max() > 1e-2


def test_engine_order_is_kept_for_mixed_lengths(engines, tokenizer):
    samples = _rendered(tokenizer, "model")
    forward = engines[0].response_logprobs(samples)
    backward = engines[0].response_logprobs(samples[::-1])[::-1]
    for a, b in zip(forward, backward, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def torch_engines(demo_assets):
    from fastscore.config import EngineConfig
    from fastscore.engines.torch_engine import TorchEngine

    cfg = EngineConfig(kind="torch", dtype="float32")
    return TorchEngine(demo_assets.base, cfg, name="base"), TorchEngine(
        demo_assets.ref, cfg, name="ref"
    )


@pytest.mark.parametrize("template", ["model", "plain"])
def test_torch_engine_matches_vllm(engines, torch_engines, tokenizer, template):
    samples = _rendered(tokenizer, template)
    for v, t in zip(engines, torch_engines, strict=True):
        for s, a, b in zip(
            samples, v.response_logprobs(samples), t.response_logprobs(samples), strict=True
        ):
            assert b.shape == (s.n_response_tokens,)
            np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "batching,forward_tokens", [("packed", 300), ("padded", 300), ("packed", 1024)]
)
def test_torch_batching_equals_one_per_forward(demo_assets, tokenizer, batching, forward_tokens):
    from fastscore.config import EngineConfig
    from fastscore.engines.torch_engine import TorchEngine

    samples = _rendered(tokenizer, "model") + _rendered(tokenizer, "plain")
    single = TorchEngine(
        demo_assets.ref, EngineConfig(dtype="float32", batching="single"), name="ref"
    )
    other = TorchEngine(
        demo_assets.ref,
        EngineConfig(dtype="float32", batching=batching, forward_tokens=forward_tokens),
        name="ref",
    )
    assert other.info()["batching"] == batching
    for a, b in zip(
        single.response_logprobs(samples), other.response_logprobs(samples), strict=True
    ):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
