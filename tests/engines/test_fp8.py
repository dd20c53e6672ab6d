"""FP8 scoring's arithmetic on CPU: the e4m3 quantisation against hand-made cases (scales
per row and per channel, zero rows, outliers), the layer's ``torch._scaled_mm`` product
(torch's CPU kernel) against the same product emulated in float32 (padding included), the
model's trunk converted, the losses it gives against bf16, the agreement figures, and
each refusal (a device without FP8, served models, other dtypes)."""

import numpy as np
import pytest
import torch

from fastscore.benchmarks.agreement import agreement, top_overlap
from fastscore.config import EngineConfig, ScoreConfig, validate_score
from fastscore.engines import fp8
from fastscore.engines.torch_engine import TorchEngine
from fastscore.errors import ConfigError, ModelError
from fastscore.scoring.arithmetic import mean_nll

BF16 = EngineConfig(kind="torch", device="cpu", dtype="bfloat16")


def test_a_rows_largest_magnitude_maps_onto_448():
    codes, scales = fp8.quantize_rows(torch.tensor([[1.0, -2.0, 4.0], [0.5, 0.25, -0.125]]))
    assert codes.dtype == torch.float8_e4m3fn
    assert scales[:, 0].tolist() == pytest.approx([4 / 448, 0.5 / 448])
    assert codes.float().tolist() == [[112.0, -224.0, 448.0], [448.0, 224.0, -112.0]]
    # each row on its own scale: these values are exact in e4m3
    back = fp8.dequantize(codes, scales)
    assert back.flatten().tolist() == pytest.approx([1.0, -2.0, 4.0, 0.5, 0.25, -0.125], rel=1e-6)


def test_a_zero_row_and_an_outlier():
    codes, scales = fp8.quantize_rows(torch.tensor([[0.0, 0.0], [1000.0, 0.001]]))
    assert scales[0, 0] == 1.0 and codes[0].float().tolist() == [0.0, 0.0]  # no 0/0
    back = fp8.dequantize(codes, scales)
    assert back[1, 0] == pytest.approx(1000.0, rel=1e-6)
    # 0.001 is under the row's smallest step (1000/448 * 2^-9): it flushes to 0
    assert back[1, 1] == 0.0


def test_rounding_stays_within_e4m3s_step():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 256, generator=g) * torch.logspace(-2, 2, 64)[:, None]  # rows of all scales
    codes, scales = fp8.quantize_rows(w)
    rel = (fp8.dequantize(codes, scales) - w).abs() / w.abs().amax(1, keepdim=True)
    # 3 mantissa bits: half a step of at most 2^-3 of the value, and the value <= the row max
    assert float(rel.max()) <= 2**-4 + 1e-7


@pytest.mark.parametrize("shape", [(5, 64), (2, 7, 64), (16, 64), (33, 64)])
def test_the_layers_kernel_product_is_the_emulated_one(shape):
    """torch._scaled_mm (row-wise scales, bf16 out) on rows that need padding to 16 and
    on 3-D input, against the float32 emulation of the same quantised product."""
    g = torch.Generator().manual_seed(1)
    lin = torch.nn.Linear(64, 48, bias=False).to(torch.bfloat16)
    x = torch.randn(*shape, generator=g).to(torch.bfloat16)
    layer = fp8.Fp8Linear(lin)
    got = layer(x)
    assert got.shape == (*shape[:-1], 48) and got.dtype == torch.bfloat16
    want = fp8.emulated_product(x.reshape(-1, 64), layer.weight_codes, layer.scales.T)
    want = want.reshape(*shape[:-1], 48)
    err = (got.float() - want).abs().max() / want.abs().max()
    assert float(err) < 2**-7, float(err)  # the bf16 output's rounding, no more
    exact = x.float() @ lin.weight.float().T
    assert float((got.float() - exact).abs().max() / exact.abs().max()) < 0.1


def test_a_dtype_cast_leaves_the_codes_scales_and_bias_alone():
    """The engine casts a model it is handed to its dtype: an FP8 layer's codes, scales
    (float32) and bias (bf16, as the kernel takes it) must come through unrounded."""
    lin = torch.nn.Linear(64, 32).to(torch.bfloat16)
    layer = fp8.Fp8Linear(lin)
    codes, scales, bias = layer.codes.clone(), layer.scales.clone(), layer.bias.clone()
    for dtype in (torch.bfloat16, torch.float32, torch.float16):
        layer.to(dtype)
        assert torch.equal(layer.codes, codes) and torch.equal(layer.scales, scales)
        assert layer.bias.dtype == torch.bfloat16 and torch.equal(layer.bias, bias)
    x = torch.randn(3, 64).to(torch.bfloat16)
    want = fp8.emulated_product(x, layer.weight_codes, layer.scales.T) + bias.float()
    assert float((layer(x).float() - want).abs().max() / want.abs().max()) < 2**-7


def test_the_trunk_is_converted_and_scores_near_bf16(demo_assets, tokenizer):
    """The demo's pair with its trunk in FP8 (torch's CPU kernel: the number format, not
    the speed) against bf16: every decoder linear converted, the head and embeddings not,
    losses within the measured tolerance and the ranking kept."""
    from transformers import AutoModelForCausalLM

    from tests.helpers.format_records import demo_samples

    samples = demo_samples(demo_assets.data, tokenizer, n=60)
    losses, scales = {}, {}
    for way in ("bf16", "fp8", "fp8-ends"):
        out = {}
        for side, path in (("base", demo_assets.base), ("ref", demo_assets.ref)):
            m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
            if way != "bf16":
                done = fp8.quantize_model(m, keep_ends=way == "fp8-ends")
                scales[side] = m.get_decoder().layers[1].mlp.down_proj.scales.clone()
                assert done["linears"] == (28 if way == "fp8" else 14)  # 4 layers x 7
                assert not isinstance(m.get_output_embeddings(), fp8.Fp8Linear)
            e = TorchEngine(m, BF16, name=side)
            if way != "bf16":  # the engine's dtype cast left the codes and scales as they were
                layer = m.get_decoder().layers[1].mlp.down_proj
                assert layer.weight_codes.dtype == torch.float8_e4m3fn
                assert layer.scales.dtype == torch.float32
                assert torch.equal(layer.scales, scales[side])
            out[f"loss_{side}"] = np.array([mean_nll(lp) for lp in e.response_logprobs(samples)])
        out["lobass"] = (out["loss_base"] - out["loss_ref"]) / out["loss_base"]
        losses[way] = out
    for way in ("fp8", "fp8-ends"):
        a = agreement(losses["bf16"], losses[way])
        # measured on this CPU (benchmarks/fp8_agreement.py, 600 samples): max |delta
        # loss| 0.086 (fp8) and 0.026 (the ends bf16), Spearman of lobass 0.9996 and 0.9998;
        # a layer left unscaled or a weight read as another's moves the losses by nats
        assert a["loss_base"]["max_abs_delta"] < 0.15, a
        assert a["loss_ref"]["max_abs_delta"] < 0.15, a
        assert a["lobass"]["spearman"] > 0.99, a


def test_fp8_is_refused_where_it_cannot_run(demo_assets):
    with pytest.raises(ModelError, match="compute capability >= 8.9.*this is cpu"):
        TorchEngine(demo_assets.base, EngineConfig(kind="torch", device="cpu", quantize="fp8"),
                    name="base")  # fmt: skip
    base = dict(input="d.jsonl", base="b", ref="r", output="o.jsonl")
    for engine, said in (
        (EngineConfig(kind="served", quantize="fp8"), "the server's"),
        (EngineConfig(kind="torch", quantize="fp8", dtype="float32"), "drop --dtype float32"),
        (EngineConfig(kind="torch", fp8_keep_ends=True), "goes with --quantize fp8"),
    ):
        served = engine.kind == "served"
        fields = dict(base, base_url="http://x", ref_url="http://y") if served else base
        with pytest.raises(ConfigError, match=said):
            validate_score(ScoreConfig(**fields, engine=engine))


def test_score_with_fp8_on_cpu_stops_before_writing_anything(tmp_path, demo_assets):
    from tests.helpers import cli

    data = tmp_path / "d.jsonl"
    data.write_bytes(b"".join(demo_assets.data.read_bytes().splitlines(keepends=True)[:4]))
    out = tmp_path / "out" / "s.jsonl"
    args = ["score", data, "--base", demo_assets.base, "--ref", demo_assets.ref, "--output",
            out, "--engine", "torch", "--quantize", "fp8", "--no-progress"]  # fmt: skip
    p = cli(*args, check=False)
    assert p.returncode == 1 and "--quantize fp8: FP8 scoring is for CUDA" in p.stderr, p.stderr
    assert not (tmp_path / "out").exists()  # no run record, no lock, no partial


def test_vllm_fp8_is_refused_on_cpu(demo_assets):
    pytest.importorskip("vllm")
    from fastscore.engines.vllm_engine import VllmEngine
    from fastscore.errors import EngineError

    cfg = EngineConfig(kind="vllm", quantize="fp8")
    with pytest.raises(EngineError, match="online fp8.*needs a GPU"):
        VllmEngine(demo_assets.base, cfg, max_model_len=256, name="base")


def test_agreement_on_hand_made_scores():
    a = {"loss_base": [2.0, 2.0, 2.0, 2.0], "lobass": [0.4, 0.3, 0.2, 0.1]}
    b = {"loss_base": [2.0, 2.5, 2.0, 1.0], "lobass": [0.3, 0.4, 0.1, 0.2]}
    got = agreement(a, b, top=0.5)
    assert got["samples"] == 4
    assert got["loss_base"] == {"mean_abs_delta": 0.375, "max_abs_delta": 1.0}
    assert got["lobass"]["spearman"] == pytest.approx(0.6)
    assert got["lobass"]["top_0.5_overlap"] == 1.0  # {0, 1} both times
    assert top_overlap(np.array([3.0, 2, 1, 0]), np.array([0.0, 1, 2, 3]), 0.5) == 0.0
    with pytest.raises(ValueError, match="not the same samples"):
        agreement({"lobass": [1, 2]}, {"lobass": [1, 2, 3]})
