"""train-ref: the reference is trained on exactly the scorer's response tokens, and what it
saves is a reference `score` accepts (full fine-tuning and LoRA)."""

from __future__ import annotations

import json

import orjson
import pytest

import fastscore
from fastscore.config import EngineConfig, TrainConfig
from fastscore.errors import ConfigError
from fastscore.train import rendered_examples, train_ref
from tests.helpers import cli

pytestmark = pytest.mark.engine


def _data(tmp_path, demo_assets, n=64):
    lines = demo_assets.data.read_bytes().splitlines()[:n]
    lines.insert(3, b"{not json")
    lines.insert(5, orjson.dumps({"messages": [{"role": "user", "content": "no reply"}]}))
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _score(data, ref, out, demo_assets):
    fastscore.score(
        input=str(data),
        output=str(out),
        base=str(demo_assets.base),
        ref=str(ref),
        progress=False,
        engine=EngineConfig(kind="torch", dtype="float32"),
    )
    return [orjson.loads(x) for x in out.read_bytes().splitlines()]


def test_training_loss_is_the_scorers_loss(tmp_path, demo_assets, tokenizer):
    """Before any step, the training loss of a sample equals the scorer's loss_base for it:
    the same tokens, the same targets."""
    import torch
    from transformers import AutoModelForCausalLM

    data = _data(tmp_path, demo_assets, 8)
    rows = _score(data, demo_assets.ref, tmp_path / "s.jsonl", demo_assets)
    cfg = TrainConfig(input=str(data), base=str(demo_assets.base), output_dir="unused")
    examples, counts, _ = rendered_examples(cfg, tokenizer, 255)
    assert counts == {"ok": 8, "bad_record": 1, "no_response": 1}
    model = AutoModelForCausalLM.from_pretrained(demo_assets.base, torch_dtype=torch.float32)
    ok_rows = [r for r in rows if r["status"] == "ok"]
    for (ids, targets), row in zip(examples, ok_rows, strict=True):
        labels = torch.full((1, len(ids)), -100)
        labels[0, targets] = torch.tensor(ids)[targets]
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([ids]), labels=labels).loss.item()
        assert abs(loss - row["loss_base"]) < 1e-5
        assert len(targets) == row["n_response_tokens"]


def test_full_fine_tune_gives_a_reference_that_scores(tmp_path, demo_assets):
    data = _data(tmp_path, demo_assets)
    m = train_ref(
        input=str(data),
        base=str(demo_assets.base),
        output_dir=str(tmp_path / "ref"),
        epochs=2,
        lr=1e-3,
        batch_size=8,
        progress=False,
    )
    assert m["trained_samples"] == 64 and m["steps"] == 16
    assert m["counts"]["by_status"] == {"ok": 64, "bad_record": 1, "no_response": 1}
    saved = json.loads((tmp_path / "ref" / "train_manifest.json").read_text())
    assert saved["schedule"]["warmup_steps"] == 1  # 3% of 16 steps, rounded up
    rows = _score(data, tmp_path / "ref", tmp_path / "s.jsonl", demo_assets)
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 64
    # the reference learnt the data: its loss on it is well below the base's
    mean_base = sum(r["loss_base"] for r in ok) / len(ok)
    mean_ref = sum(r["loss_ref"] for r in ok) / len(ok)
    assert mean_ref < 0.8 * mean_base, (mean_base, mean_ref)


def test_lora_from_the_cli_saves_a_merged_reference_and_the_adapter(tmp_path, demo_assets):
    pytest.importorskip("peft", reason="pip install 'fastscore[lora]'")
    data = _data(tmp_path, demo_assets)
    out = tmp_path / "ref"
    p = cli(
        "train-ref",
        str(data),
        "--base",
        str(demo_assets.base),
        "--output-dir",
        str(out),
        "--lora",
        "--lora-r",
        "8",
        "--lr",
        "3e-3",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--keep-adapter",
        "--no-progress",
    )
    assert "trained on 64 of 66 records, 16 steps" in p.stderr
    assert (out / "adapter" / "adapter_config.json").exists()
    assert not (out / "adapter_config.json").exists()  # the reference itself is plain
    rows = _score(data, out, tmp_path / "s.jsonl", demo_assets)
    ok = [r for r in rows if r["status"] == "ok"]
    mean_base = sum(r["loss_base"] for r in ok) / len(ok)
    mean_ref = sum(r["loss_ref"] for r in ok) / len(ok)
    assert mean_ref < 0.9 * mean_base, (mean_base, mean_ref)


def test_nothing_to_train_on_is_an_error(tmp_path, demo_assets):
    data = tmp_path / "bad.jsonl"
    data.write_bytes(b"{not json\n" + orjson.dumps({"prompt": "x", "response": ""}) + b"\n")
    with pytest.raises(ConfigError, match="no record of .* can be trained on"):
        train_ref(input=str(data), base=str(demo_assets.base), output_dir=str(tmp_path / "r"))
    with pytest.raises(ConfigError, match="must not be the base"):
        train_ref(input=str(data), base=str(demo_assets.base), output_dir=str(demo_assets.base))
