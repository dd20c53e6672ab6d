"""The packed path's pieces on CPU: the stream layout by hand, the varlen call against
stand-ins with torch 2.11's and 2.13's signatures, and the whole packed forward (one SDPA
call per sample here) against one sample per forward and padded batches, in fp32."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastscore.config import EngineConfig
from fastscore.engines.packed import (
    DeviceBatch,
    pack_samples,
    sdpa_per_sequence,
    stream_layout,
    to_device,
    varlen_attention,
    varlen_call,
    varlen_unavailable,
)
from fastscore.engines.torch_engine import TorchEngine, pack_groups
from fastscore.records import RenderedSample
from tests.helpers.format_records import rendered


def _sample(ids, positions):
    return RenderedSample(0, 0, np.asarray(ids, np.int32), np.asarray(positions, np.int32))


def test_stream_layout_by_hand():
    cu, pos = stream_layout(np.array([3, 1, 2]))
    assert cu.dtype == np.int32 and cu.tolist() == [0, 3, 4, 6]
    assert pos.tolist() == [0, 1, 2, 0, 0, 1]


def test_pack_samples_rows_and_targets_by_hand():
    b = pack_samples([_sample([7, 8, 9], [1, 2]), _sample([4, 5], [1]), _sample([1, 2, 3, 6], [3])])
    assert b.token_ids.tolist() == [7, 8, 9, 4, 5, 1, 2, 3, 6]
    assert b.positions.tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 3]
    assert b.cu_seqlens.tolist() == [0, 3, 5, 9] and b.max_len == 4
    # the hidden state one row before a response token predicts it
    assert b.rows.tolist() == [0, 1, 3, 7]
    assert b.targets.tolist() == [8, 9, 5, 6]


def test_to_device_splits_one_copy_back_into_the_arrays():
    b = pack_samples([_sample([7, 8, 9], [1, 2]), _sample([4, 5], [1])])
    d = to_device(b, torch.device("cpu"))
    assert d.token_ids.tolist() == [7, 8, 9, 4, 5] and d.positions.tolist() == [0, 1, 2, 0, 1]
    assert d.cu_seqlens.dtype == torch.int32 and d.cu_seqlens.tolist() == [0, 3, 5]
    assert d.rows.tolist() == [0, 1, 3] and d.targets.tolist() == [8, 9, 5]
    assert d.max_len == 3 and d.cu_host.tolist() == [0, 3, 5]


def test_pack_groups_balanced_in_order_within_budget():
    s = [_sample(np.zeros(n), [n - 1]) for n in (30, 30, 30, 30, 10)]
    # 130 tokens, budget 100: two groups of about 65, not 90 and a sliver of 40
    assert pack_groups(s, forward_tokens=100) == [[0, 1, 2], [3, 4]]
    assert pack_groups(s, forward_tokens=1000) == [[0, 1, 2, 3, 4]]
    assert pack_groups([_sample(np.zeros(50), [1])], forward_tokens=10) == [[0]]


# ------------------------------------------------------------------ varlen_attn stand-ins


def _reference(q, k, v, cu, causal, gqa):
    out = torch.empty_like(q)
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
        qs, ks, vs = (x[s:e].transpose(0, 1) for x in (q, k, v))
        o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal, enable_gqa=gqa)
        out[s:e] = o.transpose(0, 1)
    return out


def varlen_2_11(
    query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
    window_size=(-1, -1),
):  # fmt: skip
    """torch 2.11's signature and its causal test; no GQA there."""
    assert query.shape[1] == key.shape[1], "torch 2.11's varlen_attn has no enable_gqa"
    assert cu_seq_q.dtype == torch.int32 and isinstance(max_q, int) and query.dim() == 3
    return _reference(query, key, value, cu_seq_q, window_size == (-1, 0), False)


def varlen_2_13(
    query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
    window_size=(-1, -1), enable_gqa=False, seqused_k=None, block_table=None, num_splits=None,
):  # fmt: skip
    assert enable_gqa or query.shape[1] == key.shape[1]
    return _reference(query, key, value, cu_seq_q, window_size == (-1, 0), enable_gqa)


def varlen_old(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, scale=None):
    return _reference(query, key, value, cu_seq_q, is_causal, False)


def test_varlen_call_reads_each_signature():
    a, b, c = varlen_call(varlen_2_11), varlen_call(varlen_2_13), varlen_call(varlen_old)
    assert a.causal == {"window_size": (-1, 0)} and not a.gqa
    assert b.causal == {"window_size": (-1, 0)} and b.gqa
    assert c.causal == {"is_causal": True} and not c.gqa
    assert varlen_call(lambda q, k, v, window_size=(-1, -1): q) is None  # no scale


@pytest.mark.parametrize("fn", [varlen_2_11, varlen_2_13, varlen_old])
def test_varlen_attention_equals_sdpa_per_sequence(fn):
    torch.manual_seed(0)
    cu, _ = stream_layout(np.array([5, 1, 7]))
    batch = DeviceBatch(None, None, torch.from_numpy(cu), None, None, cu, 7)
    q = torch.randn(13, 4, 8)
    k, v = torch.randn(13, 2, 8), torch.randn(13, 2, 8)  # 2 KV heads for 4 query heads
    want = sdpa_per_sequence(q, k, v, batch=batch, scale=8**-0.5)
    got = varlen_attention(q, k, v, batch=batch, scale=8**-0.5, fn=fn)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    # and not by accident: attention across samples would differ
    assert not torch.allclose(_reference(q, k, v, np.array([0, 13]), True, True), want)


def test_varlen_unavailable_says_why():
    assert "CUDA" in varlen_unavailable(torch.device("cpu"), torch.bfloat16, 64)
    why = varlen_unavailable(torch.device("cuda"), torch.float32, 64)
    assert "bfloat16" in why and "--dtype" in why
    assert "head_dim" in varlen_unavailable(torch.device("cuda"), torch.bfloat16, 12)


# ------------------------------------------------------------------ the whole packed forward


def _gqa_llama():
    """A random Llama with grouped KV heads (the demo's have none), in memory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
    )  # fmt: skip
    return LlamaForCausalLM(cfg)


def _check_batchings(model, samples, forward_tokens=300):
    def engine(batching):
        cfg = EngineConfig(dtype="float32", batching=batching, forward_tokens=forward_tokens)
        return TorchEngine(model, cfg, name="m")

    packed = engine("packed")
    assert packed.info()["attention"] == "sdpa-per-sample"
    single = engine("single").response_logprobs(samples)
    assert packed.response_logprobs([]) == []
    for other in (packed, engine("padded")):
        got = other.response_logprobs(samples)
        for s, a, b in zip(samples, single, got, strict=True):
            assert b.shape == (s.n_response_tokens,) and b.dtype == np.float64
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_packed_equals_single_and_padded_on_the_demo_model(demo_assets, tokenizer):
    samples = rendered(tokenizer, "model") + rendered(tokenizer, "plain")
    assert any(s.n_response_tokens > 12 for s in samples)  # multi-turn is in there
    from transformers import AutoModelForCausalLM

    _check_batchings(AutoModelForCausalLM.from_pretrained(demo_assets.ref), samples)


def test_packed_equals_single_and_padded_with_grouped_kv_heads():
    rng = np.random.default_rng(0)
    samples = []
    for n in (40, 3, 130, 77, 2, 64):
        pos = np.sort(rng.choice(np.arange(1, n), size=max(1, n // 3), replace=False))
        samples.append(_sample(rng.integers(0, 1024, n), pos))
    _check_batchings(_gqa_llama(), samples, forward_tokens=128)


def test_engine_takes_an_in_memory_model_and_auto_packs_on_cpu():
    e = TorchEngine(_gqa_llama(), EngineConfig(), name="base")
    info = e.info()
    assert info["model"] == "<in-memory LlamaForCausalLM>" and info["device"] == "cpu"
    assert info["batching"] == "packed" and info["attention"] == "sdpa-per-sample"
    assert info["forward_tokens"] == 1024 and "note" not in info


def test_auto_engine_is_torch_even_with_cuda_and_vllm(monkeypatch):
    import importlib.util

    from fastscore.scoring.session import resolve_engine_kind

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: object() if n == "vllm" else real(n, *a)
    )
    assert resolve_engine_kind(EngineConfig()) == "torch"
    assert resolve_engine_kind(EngineConfig(kind="vllm")) == "vllm"
