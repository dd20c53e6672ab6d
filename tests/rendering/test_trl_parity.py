"""The scored tokens are what TRL trains on, for every chat template pair TRL ships.

For each (original, training variant) pair in ``trl.chat_template_utils``, the test
tokenizer (the demo's, with every special token of those templates added) is given the
*original* template, as a user's checkpoint would carry it; fastscore must then render
each conversation of ``tests/conversations.py`` to TRL's token ids and score exactly the
tokens of TRL's loss mask (``SFTTrainer(assistant_only_loss=True)``'s tokenize step, and
one real ``SFTTrainer`` to show that step is what the trainer does). Prompt-completion
and preference records are held to SFTTrainer's and DPOTrainer's own steps.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastscore.data.formats import to_sample
from fastscore.records import OK, RawRecord
from fastscore.rendering.renderer import Renderer
from tests.helpers.conversations import (
    COMPLETIONS,
    CONVERSATIONS,
    FIXED_DATE,
    PREFERENCES,
    mismatch,
    parity_failures,
    parity_tokenizer,
    trl_dpo,
    trl_sft,
    trl_template_pairs,
    trl_text_completion,
    with_template,
)

PAIRS = trl_template_pairs()
FAMILIES = [f for f, _, _ in PAIRS]


@pytest.fixture(scope="module")
def tok(tokenizer):
    return parity_tokenizer(tokenizer)


def test_trl_ships_the_template_pairs_we_test():
    assert len(PAIRS) >= 31, FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
def test_every_conversation_matches_trl(tok, family):
    result = parity_failures(tok, family)
    assert (result["rule"], result["variant"]) == ("trl", family)
    assert result["renders_training_variant"]
    assert not result["failures"], result["failures"]
    assert result["multi_turn_ok"] and result["rendered_ok"] >= 3


def test_text_completion_matches_sft_trainer(tok):
    record = COMPLETIONS["completion_text"]
    (got,) = Renderer(tok).render_sides(to_sample(RawRecord(0, record), "prompt-completion"))
    assert mismatch(got, trl_text_completion(tok, record)) is None


@pytest.mark.parametrize("family", ["qwen3", "llama3", "gemma3", "gptoss"])
def test_preference_pairs_match_dpo_trainer(tok, family):
    _, original, _ = next(p for p in PAIRS if p[0] == family)
    t = with_template(tok, original)
    renderer = Renderer(t, date=FIXED_DATE)
    for name, record in PREFERENCES.items():
        sides = renderer.render_sides(to_sample(RawRecord(0, record), "preference"))
        expected = trl_dpo(t, record)
        assert [s.side for s in sides] == ["chosen", "rejected"]
        for s in sides:
            assert mismatch(s, expected[s.side]) is None, (name, s.side, s.reason)


def test_the_reference_is_what_sft_trainer_does(tmp_path, demo_assets, tok):
    """trl_sft reproduces the labels of a real SFTTrainer(assistant_only_loss=True)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    model = AutoModelForCausalLM.from_pretrained(demo_assets.base)
    for family in ("qwen3", "gptoss"):
        _, original, training = next(p for p in PAIRS if p[0] == family)
        t = with_template(tok, original)
        # records whose messages share their keys: datasets would fill the others with nulls
        for name in ("two_turns", "reasoning_field", "reasoning_inline"):
            record = CONVERSATIONS[name]
            trainer = SFTTrainer(
                model=model,
                args=SFTConfig(
                    output_dir=str(tmp_path / family),
                    assistant_only_loss=True,
                    report_to=[],
                    max_length=None,
                    use_cpu=True,
                    bf16=False,
                ),
                train_dataset=Dataset.from_list([record]),
                processing_class=t,
            )
            row = trainer.train_dataset[0]
            ids, mask = trl_sft(t, record, training, fixed_date=False)  # the trainer's today
            assert row["input_ids"] == ids, (family, name)
            assert [x != -100 for x in row["labels"]] == [bool(m) for m in mask], (family, name)


def test_fallback_locates_every_assistant_turn_of_every_original(tok, monkeypatch):
    """Without TRL's variants (rule sentinel) each original template still renders
    multi-turn records, and every reply's own tokens are scored."""
    import fastscore.rendering.renderer as render

    monkeypatch.setattr(render, "trl_training_variant", lambda tokenizer, source: None)
    for family, original, _ in PAIRS:
        t = with_template(tok, original)
        renderer = Renderer(t, date=FIXED_DATE)
        assert renderer.chat.rule == "sentinel"
        record = CONVERSATIONS["two_turns"]
        r = renderer.render(to_sample(RawRecord(0, record), "messages"))
        assert r.status == OK, (family, r.reason)
        scored = np.zeros(r.n_tokens + 1, dtype=bool)
        scored[r.response_positions] = True
        text = "".join(t.decode([i]) for i, s in zip(r.token_ids, scored, strict=False) if s)
        for m in record["messages"]:
            if m["role"] == "assistant":
                assert m["content"] in text, (family, m["content"], text)
            else:
                assert m["content"] not in text, (family, m["content"], text)


def test_fallback_scores_a_tool_call_turn_without_content(tok, monkeypatch):
    """OpenAI's shape of a tool-call turn (content None): the fallback locates it where its
    content would be and scores the call the template writes, up to the end of the turn."""
    import copy

    import fastscore.rendering.renderer as render

    monkeypatch.setattr(render, "trl_training_variant", lambda tokenizer, source: None)
    record = copy.deepcopy(CONVERSATIONS["tool_call"])
    record["messages"][1]["content"] = None
    originals = {family: original for family, original, _ in PAIRS}
    for family in ("qwen2_5", "qwen3", "qwen3_5_nothink", "lfm2_v2", "nemotron_3_nano"):
        t = with_template(tok, originals[family])
        r = Renderer(t, date=FIXED_DATE).render(to_sample(RawRecord(0, record), "messages"))
        assert r.status == OK, (family, r.reason)
        scored = np.zeros(r.n_tokens + 1, dtype=bool)
        scored[r.response_positions] = True
        text = "".join(t.decode([i]) for i, s in zip(r.token_ids, scored, strict=False) if s)
        assert "get_weather" in text and "Paris" in text, (family, text)
        assert "Yes, it is raining in Paris, 12 degrees." in text, (family, text)
        assert "Is it raining" not in text and "temp_c" not in text, (family, text)
