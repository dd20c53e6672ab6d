"""On a CUDA GPU (``pytest -m gpu``): the torch engine's packed varlen path against the CPU
fp32 engine and against padded batches, on the demo models and every record format, and
its attention and trunk against independent computations. Skipped without CUDA.

Tolerances come from a CPU bf16 run of the same code: bf16 moved the demo's per-sample
mean losses (0.7 to 10 nats) by at most 0.018 and the trunk's hidden states by at most
1.6% (relative norm); a wrong attention (one causal sequence over the whole stream)
moves the hidden states by 50-140%.
"""

import dataclasses

import numpy as np
import pytest
import torch

from fastscore.config import EngineConfig
from fastscore.engines.packed import (
    DeviceBatch,
    pack_samples,
    packed_hidden,
    sdpa_per_sequence,
    stream_layout,
    to_device,
    varlen_attention,
)
from fastscore.engines.torch_engine import TorchEngine
from fastscore.records import OK, RenderedSample
from fastscore.scoring.arithmetic import mean_nll
from tests.helpers.format_records import demo_samples, rendered

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
LOSS_TOL = 0.05  # per-sample mean loss, bf16 on the GPU against fp32 on the CPU
HIDDEN_TOL = 0.05  # relative norm of the hidden states' difference
CUDA = EngineConfig(kind="torch", device="cuda", dtype="bfloat16")


@pytest.fixture(scope="module")
def cuda_engines(demo_assets):
    # the demo checkpoints are float32: loaded as bf16, as a real model would come
    return {
        "base": TorchEngine(demo_assets.base, CUDA, name="base"),
        "ref": TorchEngine(demo_assets.ref, CUDA, name="ref"),
    }


@pytest.fixture(scope="module")
def cpu_engines(demo_assets):
    cfg = EngineConfig(kind="torch", device="cpu", dtype="float32", batching="single")
    return {
        "base": TorchEngine(demo_assets.base, cfg, name="base"),
        "ref": TorchEngine(demo_assets.ref, cfg, name="ref"),
    }


def _assert_losses_close(samples, a, b, tol=LOSS_TOL):
    worst = 0.0
    for s, x, y in zip(samples, a, b, strict=True):
        assert x.shape == y.shape == (s.n_response_tokens,)
        assert np.isfinite(y).all()
        worst = max(worst, abs(mean_nll(x) - mean_nll(y)))
    assert worst < tol, f"a per-sample mean loss differs by {worst:.4f} (tolerance {tol})"


def test_cuda_auto_is_packed_varlen_bf16(cuda_engines):
    info = cuda_engines["base"].info()
    assert info["device"].startswith("cuda") and info["dtype"] == "bfloat16"
    assert info["batching"] == "packed" and info["attention"] == "varlen-flash"
    assert info["forward_tokens"] == 16384 and "note" not in info


def test_cuda_fp32_auto_falls_back_to_padded_and_says_why(demo_assets):
    e = TorchEngine(demo_assets.ref, EngineConfig(device="cuda", dtype="float32"), name="ref")
    info = e.info()
    assert info["batching"] == "padded" and "bfloat16" in info["note"]


@pytest.mark.parametrize("template", ["model", "plain"])
def test_every_format_on_cuda_equals_cpu_fp32(cuda_engines, cpu_engines, tokenizer, template):
    samples = rendered(tokenizer, template)
    assert any(s.n_response_tokens > 12 for s in samples)  # multi-turn is in there
    for name in ("base", "ref"):
        want = cpu_engines[name].response_logprobs(samples)
        _assert_losses_close(samples, want, cuda_engines[name].response_logprobs(samples))


def test_demo_data_on_cuda_equals_cpu_fp32_across_several_streams(
    demo_assets, tokenizer, cpu_engines
):
    samples = demo_samples(demo_assets.data, tokenizer)
    cfg = EngineConfig(kind="torch", device="cuda", dtype="bfloat16", forward_tokens=2048)
    for name, path in (("base", demo_assets.base), ("ref", demo_assets.ref)):
        cuda = TorchEngine(path, cfg, name=name)
        want = cpu_engines[name].response_logprobs(samples)
        _assert_losses_close(samples, want, cuda.response_logprobs(samples))


def test_packed_equals_padded_on_cuda(demo_assets, tokenizer):
    samples = rendered(tokenizer, "model") + demo_samples(demo_assets.data, tokenizer)
    padded_cfg = dataclasses.replace(CUDA, batching="padded")
    padded = TorchEngine(demo_assets.ref, padded_cfg, name="r")
    packed = TorchEngine(demo_assets.ref, CUDA, name="r")
    assert padded.info()["batching"] == "padded"
    _assert_losses_close(
        samples, padded.response_logprobs(samples), packed.response_logprobs(samples)
    )
    # the order of the samples does not change what each gets (beyond bf16 rounding: other
    # neighbours make other GEMM shapes)
    back = packed.response_logprobs(samples[::-1])[::-1]
    _assert_losses_close(samples, packed.response_logprobs(samples), back, tol=0.02)


@pytest.mark.parametrize("heads,kv_heads,head_dim", [(8, 2, 64), (32, 8, 128), (4, 4, 64)])
def test_varlen_attention_equals_sdpa_per_sample(heads, kv_heads, head_dim):
    torch.manual_seed(0)
    lengths = np.array([1, 17, 300, 64, 5, 1000])
    cu, _ = stream_layout(lengths)
    dev = torch.device("cuda")
    batch = DeviceBatch(
        None, None, torch.from_numpy(cu).to(dev), None, None, cu, int(lengths.max())
    )
    t = int(lengths.sum())
    q = torch.randn(t, heads, head_dim, device=dev, dtype=torch.bfloat16)
    k = torch.randn(t, kv_heads, head_dim, device=dev, dtype=torch.bfloat16)
    v = torch.randn(t, kv_heads, head_dim, device=dev, dtype=torch.bfloat16)
    scale = head_dim**-0.5
    got = varlen_attention(q, k, v, batch=batch, scale=scale).float()
    want = sdpa_per_sequence(q.float(), k.float(), v.float(), batch=batch, scale=scale)
    torch.testing.assert_close(got, want, atol=3e-2, rtol=3e-2)


def test_varlen_attention_over_shared_prefixes_equals_sdpa_per_sample():
    """Flash attention's alignment for fewer queries than keys (bottom right), which the
    shared-prefix call relies on: one varlen call over prefixes and remainders."""
    from fastscore.engines.prefixes import PrefixState

    torch.manual_seed(0)
    dev, heads, kv, d = torch.device("cuda"), 8, 2, 64

    def state(key, n):
        k, v = (torch.randn(n, kv, d, device=dev, dtype=torch.bfloat16) for _ in range(2))
        return PrefixState(key, n, [k], [v], None)

    pre = [state(b"a", 300), None, state(b"b", 17), state(b"a", 300)]
    samples = [RenderedSample(0, 0, np.zeros(n, np.int32), np.array([n - 1], np.int32))
               for n in (340, 64, 18, 1300)]  # fmt: skip
    b = to_device(pack_samples(samples, pre), dev)
    t = b.token_ids.shape[0]
    q = torch.randn(t, heads, d, device=dev, dtype=torch.bfloat16)
    k, v = (torch.randn(t, kv, d, device=dev, dtype=torch.bfloat16) for _ in range(2))
    got = varlen_attention(q, k, v, batch=b, scale=d**-0.5).float()
    f32 = dataclasses.replace(b, prefixes=tuple(
        None if s is None else PrefixState(s.key, s.length, [s.k[0].float()], [s.v[0].float()],
                                           None) for s in pre))  # fmt: skip
    want = sdpa_per_sequence(q.float(), k.float(), v.float(), batch=f32, scale=d**-0.5)
    torch.testing.assert_close(got, want, atol=3e-2, rtol=3e-2)


def test_sharing_prefixes_on_cuda_equals_no_sharing(demo_assets, tokenizer):
    """The packed varlen engine with shared prefixes (every format, pairs included, and
    chats under one long system prompt) against itself without them, in bf16."""
    from tests.engines.test_prefixes import _preamble_samples

    samples = rendered(tokenizer, "model") + _preamble_samples(n=60)
    on = TorchEngine(demo_assets.base, CUDA, name="base")
    off = TorchEngine(demo_assets.base, dataclasses.replace(CUDA, share_prefixes=False),
                      name="base")  # fmt: skip
    want = off.response_logprobs(samples)
    got = on.response_logprobs(samples)
    assert on.info()["prefix_sharing"]["tokens_skipped"] > 0
    for s, a, b in zip(samples, want, got, strict=True):
        assert abs(mean_nll(a) - mean_nll(b)) < LOSS_TOL, s.index


def _gqa_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=1024, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2, head_dim=64, max_position_embeddings=2048,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("which", ["demo", "gqa"])
def test_packed_trunk_on_cuda_equals_each_sample_in_fp32(which, demo_assets):
    import copy

    from transformers import AutoModelForCausalLM

    m32 = AutoModelForCausalLM.from_pretrained(demo_assets.ref) if which == "demo" else _gqa_llama()
    m32 = m32.eval()
    m16 = copy.deepcopy(m32).to("cuda", torch.bfloat16)
    rng = np.random.default_rng(0)
    n_pos = m32.config.max_position_embeddings
    lengths = (2, 40, 130, 77, min(n_pos, 250), 64, 3)
    ids = [rng.integers(0, m32.config.vocab_size, n).astype(np.int32) for n in lengths]
    samples = [RenderedSample(0, 0, x, np.array([x.shape[0] - 1])) for x in ids]
    b = to_device(pack_samples(samples), torch.device("cuda"))
    with torch.inference_mode():
        got = packed_hidden(m16, b, varlen_attention).float().cpu()
        for i, s in enumerate(samples):
            one = torch.from_numpy(s.token_ids.astype(np.int64))[None]
            want = m32.get_decoder()(input_ids=one).last_hidden_state[0]
            seg = got[b.cu_host[i] : b.cu_host[i + 1]]
            rel = ((seg - want).norm() / want.norm()).item()
            assert rel < HIDDEN_TOL, f"sample {i} ({s.n_tokens} tokens): relative error {rel:.4f}"


def _score_64(tmp_path, demo_assets, engine: EngineConfig):
    """``score`` of the demo's first 64 records with ``engine``: (the data, the manifest)."""
    import fastscore

    data = tmp_path / "d.jsonl"
    data.write_bytes(b"".join(demo_assets.data.read_bytes().splitlines(keepends=True)[:64]))
    m = fastscore.score(
        input=str(data),
        base=str(demo_assets.base),
        ref=str(demo_assets.ref),
        output=str(tmp_path / "s.jsonl"),
        progress=False,
        engine=engine,
    )
    return data, m


def test_score_on_cuda_end_to_end(tmp_path, demo_assets, tokenizer, cpu_engines):
    import orjson

    data, m = _score_64(tmp_path, demo_assets, EngineConfig(device="cuda", dtype="bfloat16"))
    for name in ("base", "ref"):
        info = m["engines"][name]
        assert info["engine"] == "torch"  # auto takes torch on a GPU until vLLM is verified
        assert info["batching"] == "packed" and info["attention"] == "varlen-flash"
    rows = [orjson.loads(x) for x in (tmp_path / "s.jsonl").read_bytes().splitlines()]
    samples = demo_samples(data, tokenizer)
    assert len(rows) == 64 and sum(r["status"] == OK for r in rows) == len(samples) > 50
    for name in ("base", "ref"):
        want = cpu_engines[name].response_logprobs(samples)
        worst = max(
            abs(rows[s.index][f"loss_{name}"] - mean_nll(w))
            for s, w in zip(samples, want, strict=True)
        )
        assert worst < LOSS_TOL, f"{name}: a per-sample mean loss differs by {worst:.4f}"


@pytest.mark.parametrize(
    "extra", [["--dtype", "bfloat16"], ["--fsdp"], ["--lora", "--gradient-checkpointing"]]
)
def test_train_ref_on_cuda_gives_a_reference_that_scores(tmp_path, demo_assets, extra):
    """train-ref on the GPU under torchrun (one process: FSDP2 shards over one rank):
    bf16 mixed precision, FSDP's full state dict saved as one checkpoint, LoRA's adapter
    (scored over the base on CUDA);
    the reference has a lower loss than the base on its data."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import orjson

    import fastscore

    data = tmp_path / "d.jsonl"
    data.write_bytes(b"\n".join(demo_assets.data.read_bytes().splitlines()[:64]) + b"\n")
    out = tmp_path / "ref"
    torchrun = Path(sys.executable).with_name("torchrun")
    p = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "1", "-m", "fastscore", "train-ref",
         str(data), "--base", str(demo_assets.base), "--output-dir", str(out), "--lr", "1e-3",
         "--batch-size", "8", "--epochs", "2", "--device", "cuda", "--no-progress", *extra],
        capture_output=True, text=True, env=dict(os.environ),
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((out / "train_manifest.json").read_text())
    assert m["device"] == "cuda" and m["fsdp"] == ("--fsdp" in extra)
    fastscore.score(
        input=str(data), output=str(tmp_path / "s.jsonl"), base=str(demo_assets.base),
        ref=str(out), progress=False, engine=CUDA,
    )  # fmt: skip
    rows = [orjson.loads(x) for x in (tmp_path / "s.jsonl").read_bytes().splitlines()]
    assert sum(r["loss_ref"] for r in rows) < 0.8 * sum(r["loss_base"] for r in rows)
    assert m["held_out"]["verdict"] == "learned", m["held_out"]
    if "--lora" in extra:  # the adapter over the base, on CUDA: one copy of the weights
        assert (out / "adapter_config.json").is_file()
        engines = json.loads((tmp_path / "s.manifest.json").read_text())["engines"]
        assert engines["ref"]["adapter"] == "on" and engines["base"]["adapter"] == "off"


def test_train_ref_loss_on_cuda_is_the_scorers(tmp_path, demo_assets, tokenizer):
    """TRL's own loss (its fused LM head, on the GPU) before any step equals the scorer's
    loss_base averaged over the batch's response tokens (fp32 both)."""
    import orjson

    import fastscore
    from fastscore.config import TrainConfig
    from fastscore.training.examples import rendered_examples
    from fastscore.training.schedule import Launch, plan
    from fastscore.training.trainer import build_trainer

    data = tmp_path / "d.jsonl"
    data.write_bytes(b"\n".join(demo_assets.data.read_bytes().splitlines()[:8]) + b"\n")
    fastscore.score(
        input=str(data), output=str(tmp_path / "s.jsonl"), base=str(demo_assets.base),
        ref=str(demo_assets.ref), progress=False,
        engine=EngineConfig(kind="torch", device="cpu", dtype="float32"),
    )  # fmt: skip
    rows = [orjson.loads(x) for x in (tmp_path / "s.jsonl").read_bytes().splitlines()]
    cfg = TrainConfig(input=str(data), base=str(demo_assets.base), output_dir="-",
                      batch_size=8, device="cuda", dtype="float32")  # fmt: skip
    examples = rendered_examples(cfg, tokenizer, 255)
    trainer = build_trainer(cfg, examples, plan(cfg, 255, Launch()), tokenizer, tmp_path / "c")
    (batch,) = list(trainer.get_train_dataloader())
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch)).item()
    n = sum(r["n_response_tokens"] for r in rows)
    expected = sum(r["loss_base"] * r["n_response_tokens"] for r in rows) / n
    assert abs(loss - expected) < 1e-4, (loss, expected)


FP8_LOSS_TOL = 0.2  # CPU run of the same layers on the demo pair: at most 0.086 (600 samples)


def _fp8_or_skip():
    from fastscore.engines.fp8 import unavailable

    why = unavailable(torch.device("cuda"))
    if why:
        pytest.skip(why)


def test_fp8_engine_on_cuda_scores_near_bf16(demo_assets, tokenizer, cuda_engines):
    """--quantize fp8 on the GPU (the trunk's linears e4m3 through torch._scaled_mm)
    against the bf16 engine on the demo's trained pair: losses within the tolerance, the
    lobass ranking kept (Spearman), the head and embeddings left bf16."""
    _fp8_or_skip()
    from fastscore.benchmarks.agreement import agreement
    from fastscore.engines.fp8 import Fp8Linear

    samples = demo_samples(demo_assets.data, tokenizer, n=600)
    cfg = dataclasses.replace(CUDA, quantize="fp8")
    got, want = {}, {}
    for name, path in (("base", demo_assets.base), ("ref", demo_assets.ref)):
        e = TorchEngine(path, cfg, name=name)
        assert e.info()["quantize"]["fp8"]["linears"] == 28  # 4 layers x 7
        assert e.info()["attention"] == "varlen-flash"
        assert not isinstance(e.model.get_output_embeddings(), Fp8Linear)
        got[f"loss_{name}"] = np.array([mean_nll(x) for x in e.response_logprobs(samples)])
        want[f"loss_{name}"] = np.array(
            [mean_nll(x) for x in cuda_engines[name].response_logprobs(samples)]
        )
        e.close()
    for d in (got, want):
        d["lobass"] = (d["loss_base"] - d["loss_ref"]) / d["loss_base"]
    a = agreement(want, got)
    print("fp8 against bf16 on CUDA:", a)
    for col in ("loss_base", "loss_ref"):
        assert a[col]["max_abs_delta"] < FP8_LOSS_TOL, a
    assert a["lobass"]["spearman"] > 0.99, a


def test_fp8_score_on_cuda_end_to_end(tmp_path, demo_assets):
    _fp8_or_skip()
    engine = EngineConfig(device="cuda", quantize="fp8", fp8_keep_ends=True)
    _, m = _score_64(tmp_path, demo_assets, engine)
    for name in ("base", "ref"):
        q = m["engines"][name]["quantize"]["fp8"]
        assert q["linears"] == 14 and q["bf16_layers"] == [0, 3]
    assert m["counts"]["by_status"]["ok"] > 50
