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
    with pytest.raises(ModelError, match="is not a directory; give a local Hugging Face"):
        fastscore.score(
            input=str(_data(tmp_path)),
            output=str(tmp_path / "s.jsonl"),
            base=str(tmp_path / "nope"),
            ref=str(demo_assets.ref),
        )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="cannot load the tokenizer of"):
        fastscore.score(
            input=str(_data(tmp_path)),
            output=str(tmp_path / "s.jsonl"),
            base=str(empty),
            ref=str(demo_assets.ref),
        )


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
