"""A peft LoRA adapter directory as --ref: one set of base weights, the merged model's
scores, and every adapter the engines would score wrongly refused with its reason."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import orjson
import pytest

import fastscore
from fastscore.config import EngineConfig
from fastscore.engines.adapters import check_adapter, torch_pair
from fastscore.engines.torch_engine import TorchEngine
from fastscore.errors import ModelError
from tests.helpers import cli, score_args

peft = pytest.importorskip("peft", reason="pip install 'fastscore[lora]'")

FP32 = EngineConfig(kind="torch", dtype="float32")


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, demo_assets):
    """A LoRA adapter over the demo base with random (not zero) B matrices, so it moves
    every layer, and the same adapter merged into a full checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("adapter")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(demo_assets.base, dtype=torch.float32)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                          init_lora_weights=False, task_type="CAUSAL_LM")  # fmt: skip
    pm = peft.get_peft_model(model, cfg)
    pm.save_pretrained(root / "adapter")
    merged = pm.merge_and_unload()
    merged.save_pretrained(root / "merged")
    for d in ("merged",):  # a full checkpoint carries the tokenizer
        for f in demo_assets.base.iterdir():
            if f.name.startswith("tokenizer") or f.name == "chat_template.jinja":
                shutil.copy(f, root / d / f.name)
    return root


def _rows(path):
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def test_adapter_scores_are_the_merged_models(tmp_path, demo_assets, adapter):
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"".join(demo_assets.data.read_bytes().splitlines(True)[:40]))
    got = {}
    for name in ("adapter", "merged"):
        out = tmp_path / f"{name}.jsonl"
        fastscore.score(input=str(data), output=str(out), base=str(demo_assets.base),
                        ref=str(adapter / name), progress=False, engine=FP32)  # fmt: skip
        got[name] = _rows(out)
    assert len(got["adapter"]) == 40
    moved = 0
    for a, m in zip(got["adapter"], got["merged"], strict=True):
        assert a["status"] == m["status"] == "ok"
        assert abs(a["loss_ref"] - m["loss_ref"]) < 1e-4, (a, m)
        assert a["loss_base"] == pytest.approx(m["loss_base"], abs=1e-6)
        moved += abs(a["loss_ref"] - a["loss_base"]) > 1e-3
    assert moved == 40  # the adapter changed every record's loss
    manifest = json.loads((tmp_path / "adapter.manifest.json").read_text())
    assert manifest["engines"]["ref"]["adapter"] == "on"
    assert manifest["engines"]["base"]["adapter"] == "off"
    assert "adapter_model.safetensors" in manifest["models"]["ref"]["files"]


def test_one_set_of_base_weights_and_the_adapter_off_is_the_base(demo_assets, adapter):
    from fastscore.data.formats import to_samples
    from fastscore.data.readers import read_records
    from fastscore.engines.models import load_tokenizer
    from fastscore.rendering.renderer import Renderer

    tok = load_tokenizer(demo_assets.base)
    samples = list(to_samples(read_records(demo_assets.data, "jsonl"), "messages"))[:12]
    rendered = list(Renderer(tok, "auto", 255).render_all(samples))
    base, ref = torch_pair(demo_assets.base, adapter / "adapter", FP32)
    plain = TorchEngine(demo_assets.base, FP32, name="plain")
    try:
        assert base.model is ref.model  # one copy of the weights
        # alternating calls: each side's state is its own, whatever ran before it
        for _ in range(2):
            with_adapter = ref.response_logprobs(rendered)
            without = base.response_logprobs(rendered)
        for a, b, c in zip(without, plain.response_logprobs(rendered), with_adapter, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)
            assert not np.allclose(a, c, atol=1e-4)
    finally:
        for e in (base, ref, plain):
            e.close()


def _variant(adapter, tmp_path, **changes):
    d = tmp_path / "variant"
    shutil.copytree(adapter / "adapter", d)
    c = json.loads((d / "adapter_config.json").read_text())
    c.update(changes)
    (d / "adapter_config.json").write_text(json.dumps(c))
    return d


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"bias": "all"}, "trains biases (bias='all')"),
        ({"modules_to_save": ["lm_head"]}, "replaces whole modules"),
        ({"target_modules": ["q_proj", "lm_head"]}, "adapts ['lm_head']"),
        ({"peft_type": "IA3"}, "is a IA3 adapter; only LoRA"),
    ],
)
def test_adapters_that_would_score_wrongly_are_refused(tmp_path, adapter, demo_assets,
                                                       changes, said):  # fmt: skip
    with pytest.raises(ModelError, match=re.escape(said)):
        check_adapter(_variant(adapter, tmp_path, **changes), demo_assets.base, "torch")


def test_refusals_reach_the_user_before_a_model_loads(tmp_path, adapter, demo_assets, caplog):
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"".join(demo_assets.data.read_bytes().splitlines(True)[:4]))
    bad = _variant(adapter, tmp_path, bias="lora_only")
    p = cli(*score_args(data, tmp_path / "s.jsonl", demo_assets.base, bad), check=False)
    assert p.returncode == 1 and "trains biases (bias='lora_only')" in p.stderr, p.stderr
    assert not (tmp_path / "s.jsonl").exists()
    with pytest.raises(ModelError, match="the vllm engine does not score yet; use --engine torch"):
        check_adapter(adapter / "adapter", demo_assets.base, "vllm")
    (adapter / "noweights").mkdir(exist_ok=True)
    shutil.copy(adapter / "adapter" / "adapter_config.json", adapter / "noweights")
    with pytest.raises(ModelError, match="has adapter_config.json but no adapter_model"):
        check_adapter(adapter / "noweights", demo_assets.base, "torch")
    # trained over another base: said, and scored over the one given
    other = _variant(adapter, tmp_path / "o", base_model_name_or_path="/elsewhere/base")
    check_adapter(other, demo_assets.base, "torch")
    assert "was trained over /elsewhere/base, not over the base given" in caplog.text


def test_the_adapters_weights_are_in_the_fingerprint(tmp_path, adapter):
    """--resume and the stale-reference guard compare fingerprints: an adapter retrained
    in place is another reference."""
    from safetensors.torch import load_file, save_file

    from fastscore.engines.models import fingerprint

    d = tmp_path / "a"
    shutil.copytree(adapter / "adapter", d)
    before = fingerprint(d)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(before["files"])
    weights = load_file(d / "adapter_model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] * 1.01
    save_file(weights, d / "adapter_model.safetensors")
    assert fingerprint(d)["weights_sample_sha256"] != before["weights_sample_sha256"]
