"""One precision for the pair: a float32 reference fine-tuned from a bfloat16 base scores
in bfloat16, as the base does, and the manifest says so."""

from __future__ import annotations

import json
import shutil

import fastscore
from fastscore.config import EngineConfig
from fastscore.engines.models import checkpoint_dtype, pair_dtype


def _config(path, **c):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(c))
    return path


def test_the_pairs_dtype(tmp_path):
    bf16 = _config(tmp_path / "b", dtype="bfloat16")
    fp32 = _config(tmp_path / "r", torch_dtype="float32")  # (older transformers' key)
    assert checkpoint_dtype(bf16) == "bfloat16" and checkpoint_dtype(fp32) == "float32"
    assert checkpoint_dtype(_config(tmp_path / "n")) is None
    auto = EngineConfig(kind="torch")
    cfg, note = pair_dtype(auto, bf16, fp32)
    assert cfg.dtype == "bfloat16" and "both score in bfloat16" in note
    assert pair_dtype(auto, bf16, bf16) == (auto, None)  # each its own: the same
    asked = EngineConfig(kind="torch", dtype="float32")
    assert pair_dtype(asked, bf16, fp32) == (asked, None)  # what the user asked for
    assert pair_dtype(auto, bf16, tmp_path / "adapter") == (auto, None)  # no config: adapter


def test_a_float32_reference_over_a_bfloat16_base_scores_in_bfloat16(tmp_path, demo_assets):
    import torch
    from transformers import AutoModelForCausalLM

    base = tmp_path / "base"
    AutoModelForCausalLM.from_pretrained(demo_assets.base, dtype=torch.bfloat16).save_pretrained(
        base
    )
    for f in demo_assets.base.iterdir():
        if f.name.startswith("tokenizer") or f.name == "chat_template.jinja":
            shutil.copy(f, base / f.name)
    assert checkpoint_dtype(base) == "bfloat16" and checkpoint_dtype(demo_assets.ref) == "float32"
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"".join(demo_assets.data.read_bytes().splitlines(True)[:8]))
    fastscore.score(input=str(data), output=str(tmp_path / "s.jsonl"), base=str(base),
                        ref=str(demo_assets.ref), progress=False,
                        engine=EngineConfig(kind="torch"))  # fmt: skip
    engines = json.loads((tmp_path / "s.manifest.json").read_text())["engines"]
    assert engines["base"]["dtype"] == engines["ref"]["dtype"] == "bfloat16", engines
    assert "both score in bfloat16" in engines["dtype_note"]
