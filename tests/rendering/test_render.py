"""Response masks, token by token, on the demo's ChatML template and the plain template.

Each test states the exact text every assistant turn must contribute to the loss (its
content plus the end-of-turn marker) and checks each token's membership against it.
"""

import numpy as np
import pytest

from fastscore.errors import ModelError
from fastscore.records import NO_RESPONSE, OK, TEMPLATE_ERROR, TOO_LONG, Message, Sample
from fastscore.rendering.renderer import Renderer, response_positions

MULTI = [
    Message("system", "you are terse."),
    Message("user", "what color is the rega?"),
    Message("assistant", "the rega is black."),
    Message("user", "and the lumupa?"),
    Message("assistant", " blue,\nsurely "),
    Message("user", "thanks"),
]


def _runs(rendered, tokenizer):
    """Decoded text of each maximal run of response tokens, and of everything else."""
    ids, pos = rendered.token_ids, set(rendered.response_positions.tolist())
    runs, other, cur = [], [], []
    for i, t in enumerate(ids.tolist()):
        piece = tokenizer.decode([t])
        if i in pos:
            cur.append(piece)
        else:
            if cur:
                runs.append("".join(cur))
                cur = []
            other.append(piece)
    if cur:
        runs.append("".join(cur))
    return runs, "".join(other)


def test_chatml_masks_token_by_token(tokenizer):
    r = Renderer(tokenizer, "model").render(Sample(0, "a", MULTI))
    assert r.status == OK
    runs, other = _runs(r, tokenizer)
    assert runs == ["the rega is black.<|im_end|>", " blue,\nsurely <|im_end|>"]
    # The prompt side: every role header and user turn, the newline after each <|im_end|>,
    # and nothing after the last response token (the trailing user turn is cut).
    assert other == (
        "<|im_start|>system\nyou are terse.<|im_end|>\n<|im_start|>user\nwhat color is the "
        "rega?<|im_end|>\n<|im_start|>assistant\n\n<|im_start|>user\nand the lumupa?"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    # Each token is one or the other; the ids are the full rendering's, in order.
    full = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in MULTI], tokenize=False
    )
    assert tokenizer.decode(r.token_ids.tolist()) == full.split("\n<|im_start|>user\nthanks")[0]
    assert r.token_ids[r.response_positions[-1]] == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_plain_template_masks_token_by_token(tokenizer):
    r = Renderer(tokenizer, "plain").render(Sample(0, "a", MULTI))
    assert r.status == OK
    runs, other = _runs(r, tokenizer)
    assert runs == ["the rega is black.</s>", " blue,\nsurely </s>"]
    assert other == (
        "<s>you are terse.\n\n### Instruction:\nwhat color is the rega?\n\n### Response:\n"
        "\n\n### Instruction:\nand the lumupa?\n\n### Response:\n"
    )


def test_auto_template_falls_back_to_plain_without_chat_template(tokenizer):
    import copy

    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    assert Renderer(bare, "auto").template_name == "plain"
    assert Renderer(tokenizer, "auto").template_name == "model"


def test_statuses(tokenizer):
    rr = Renderer(tokenizer, "model", max_length=12)
    no_assistant = rr.render(Sample(0, 0, [Message("user", "hi")]))
    assert no_assistant.status == NO_RESPONSE
    blank = rr.render(Sample(1, 1, [Message("user", "hi"), Message("assistant", "  \n")]))
    assert blank.status == NO_RESPONSE
    long = rr.render(
        Sample(2, 2, [Message("user", "hi " * 20), Message("assistant", "what color")])
    )
    assert long.status == TOO_LONG and "max_length 12" in long.reason


def test_a_reply_that_opens_the_conversation_is_trained_as_trl_would(tokenizer):
    """TRL's assistant mask covers every assistant turn, an opening one included; only
    position 0, which nothing predicts, is left out."""
    rr = Renderer(tokenizer, "model")
    only = rr.render(Sample(0, 0, [Message("assistant", "hello there.")]))
    assert only.status == OK
    assert _runs(only, tokenizer)[0] == ["hello there.<|im_end|>"]
    r = rr.render(
        Sample(
            1,
            1,
            [
                Message("assistant", "hi, ask me."),
                Message("user", "what color?"),
                Message("assistant", "blue."),
            ],
        )
    )
    assert _runs(r, tokenizer)[0] == ["hi, ask me.<|im_end|>", "blue.<|im_end|>"]


def test_a_template_that_is_not_prefix_stable_is_located_in_the_full_render(tokenizer):
    import copy

    odd = copy.deepcopy(tokenizer)
    # Writes the number of turns up front: no rendering of a prefix is a prefix.
    odd.chat_template = (
        "{{ messages|length }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
        "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    )
    rr = Renderer(odd, "model")
    assert rr.chat.rule == "sentinel"
    conv = [Message("user", "hi"), Message("assistant", "yo"), Message("user", "and?")]
    r = rr.render(Sample(0, 0, [*conv, Message("assistant", "so it goes.")]))
    assert r.status == OK
    # each reply: after the generation prompt ("assistant: "), up to its end (no marker);
    # the token " yo" straddles the prompt's last space and the reply, and is in
    assert _runs(r, odd)[0] == [" yo", " so it goes."]


def test_template_that_raises(tokenizer):
    import copy

    strict = copy.deepcopy(tokenizer)
    strict.chat_template = "{{ raise_exception('roles must alternate') }}"
    r = Renderer(strict, "model").render(
        Sample(0, 0, [Message("user", "hi"), Message("assistant", "yo")])
    )
    assert r.status == TEMPLATE_ERROR and "roles must alternate" in r.reason


@pytest.mark.parametrize(
    "offsets,spans,expected",
    [
        # tokens [0,3) [3,5) [5,9) [9,12) [12,14); a token starting at the end is outside
        ([(0, 3), (3, 5), (5, 9), (9, 12), (12, 14)], [(5, 12)], [2, 3]),
        # a token straddling a span's start or end is in
        ([(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)], [(1, 3), (6, 9)], [0, 1, 3, 4]),
        ([(0, 4), (4, 8)], [], []),
        ([(0, 1), (1, 2), (2, 3)], [(0, 1)], [0]),
        # empty offsets (special tokens in some tokenizers) overlap nothing
        ([(0, 2), (2, 2), (2, 4)], [(2, 4)], [2]),
    ],
)
def test_response_positions_overlap_rule(offsets, spans, expected):
    o = np.asarray(offsets)
    got = response_positions(o[:, 0], o[:, 1], spans)
    assert got.tolist() == expected


def test_a_turn_without_content_is_located_by_the_fallback(tokenizer):
    """An OpenAI tool-call turn has content None: on a template without markers (rule
    sentinel) its tool call is scored, through the end-of-turn marker, not refused."""
    import copy

    odd = copy.deepcopy(tokenizer)
    odd.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['content'] %}{{ m['content'] }}{% endif %}{% if m.get('tool_calls') %}"
        "<tool_call>{{ m['tool_calls'][0]['function']['name'] }}</tool_call>{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    rr = Renderer(odd, "model")
    assert rr.chat.rule == "sentinel"
    call = {"type": "function", "function": {"name": "f", "arguments": {}}}
    turns = [Message("user", "go"), Message("assistant", None, {"tool_calls": [call]}),
             Message("tool", "3"), Message("assistant", "three.")]  # fmt: skip
    r = rr.render(Sample(0, 0, turns))
    assert r.status == OK, r.reason
    assert _runs(r, odd)[0] == ["<tool_call>f</tool_call><|im_end|>", "three.<|im_end|>"]
    # a last turn the template writes nothing for: its end-of-turn marker, the stop (as
    # TRL's training variants mark it)
    r = rr.render(Sample(0, 0, [*turns[:3], Message("assistant", None)]))
    assert r.status == OK
    assert _runs(r, odd)[0] == ["<tool_call>f</tool_call><|im_end|>", "<|im_end|>"]


def test_the_rule_is_said_in_words(tokenizer):
    from fastscore.rendering.renderer import PLAIN_TEMPLATE, ChatTemplate

    trl = ChatTemplate("t", "o", "model", "trl", "qwen3")
    assert trl.info()["masks"] == "TRL's training template for qwen3 (what SFTTrainer trains on)"
    marked = ChatTemplate(PLAIN_TEMPLATE, PLAIN_TEMPLATE, "plain", "markers")
    assert marked.info()["masks"] == "the plain template's {% generation %} markers"
    assert Renderer(tokenizer).info()["masks"].startswith("the fallback rule: the model template")


def test_without_trl_an_unmarked_template_is_refused_not_guessed(tokenizer, monkeypatch):
    """TRL is a core dependency; a broken install that lacks it is told so, instead of
    scoring other tokens than SFT trains on."""
    import fastscore.rendering.renderer as render

    monkeypatch.setattr(render, "_trl_template_dir", lambda: None)
    with pytest.raises(ModelError, match=r"TRL is not installed.*pip install 'trl>=1.16'"):
        Renderer(tokenizer)
    assert Renderer(tokenizer, "plain").chat.rule == "markers"  # markers need no TRL
