"""Engine start failures end in one actionable message, not a traceback from deep inside."""

from __future__ import annotations

import pytest

import fastscore
from fastscore.config import EngineConfig
from fastscore.errors import EngineError, ModelError


def _data(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "p", "response": "r"}\n')
    return p


def test_a_model_path_that_is_not_a_checkpoint(tmp_path, demo_assets):
    """Each way a path is not a checkpoint is named as such, with the model's role, before
    transformers is asked to load it."""
    data, out, ref = str(_data(tmp_path)), str(tmp_path / "s.jsonl"), str(demo_assets.ref)
    empty = tmp_path / "empty"
    empty.mkdir()
    no_tok = tmp_path / "no-tokenizer"
    no_tok.mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_tok / name).write_bytes((demo_assets.base / name).read_bytes())
    broken = tmp_path / "broken-tokenizer"
    broken.mkdir()
    for name in ("config.json", "model.safetensors"):
        (broken / name).write_bytes((demo_assets.base / name).read_bytes())
    (broken / "tokenizer.json").write_text("{not json")
    (tmp_path / "a-file").write_text("x")
    cases = [
        (tmp_path / "nope", ref, r"the base model '.*nope' does not exist; give a local Hugging"),
        (tmp_path / "a-file", ref, r"the base model '.*a-file' is not a directory; give a local"),
        (empty, ref, r"base model '.*empty' is not a Hugging Face checkpoint directory: it has "
         r"no config.json, no weights \(\*.safetensors or \*.bin\), no tokenizer"),
        (no_tok, ref, r"base model '.*no-tokenizer' is not a Hugging Face checkpoint directory: "
         r"it has no tokenizer \(tokenizer.json or tokenizer_config.json\)\. Give"),
        (demo_assets.base, empty, r"the reference model '.*empty' is not a Hugging Face"),
        (broken, ref, r"cannot load the tokenizer of '.*broken-tokenizer'"),
    ]  # fmt: skip
    for base, reference, message in cases:
        with pytest.raises(ModelError, match=message):
            fastscore.score(input=data, output=out, base=str(base), ref=str(reference))
    with pytest.raises(ModelError, match=r"the base model '.*empty' is not a Hugging Face"):
        fastscore.train_ref(input=data, base=str(empty), output_dir=str(tmp_path / "r"))


@pytest.mark.engine
def test_vllm_out_of_memory_at_start_names_the_model_and_the_cause(tmp_path, demo_assets):
    with pytest.raises(
        EngineError, match=r"could not start vLLM for the base model .*lower --kv-cache-gb"
    ):
        fastscore.score(
            input=str(_data(tmp_path)),
            output=str(tmp_path / "s.jsonl"),
            base=str(demo_assets.base),
            ref=str(demo_assets.ref),
            progress=False,
            engine=EngineConfig(kind="vllm", dtype="float32", kv_cache_gb=4096),
        )
