"""Conversations written for the mask-parity tests: one to three exchanges, with and
without a system prompt, with reasoning (as a field and inline), with tool calls.

Shared by ``tests/test_trl_parity.py`` and ``benchmarks/trl_parity.py``.
"""

from __future__ import annotations

import re

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city today.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city."}},
            "required": ["city"],
        },
    },
}


def _u(text):
    return {"role": "user", "content": text}


def _a(text, **extra):
    return {"role": "assistant", "content": text, **extra}


SYSTEM = {"role": "system", "content": "You answer in one short sentence."}

# name -> record (the messages format, with tools where a conversation calls one)
CONVERSATIONS = {
    "one_turn": {"messages": [_u("What colour is the sky?"), _a("It is blue on a clear day.")]},
    "one_turn_system": {
        "messages": [SYSTEM, _u("Name a prime number."), _a("Seven is a prime number.")]
    },
    "two_turns": {
        "messages": [
            _u("Hello, I am Kobu."),
            _a("Hello Kobu, nice to meet you."),
            _u("What did I say my name was?"),
            _a("You said your name is Kobu."),
        ]
    },
    "three_turns_system": {
        "messages": [
            SYSTEM,
            _u("Give me a fruit."),
            _a("An apple."),
            _u("Another one?"),
            _a("A pear."),
            _u("And a vegetable?"),
            _a("A carrot."),
        ]
    },
    "reasoning_field": {
        "messages": [
            _u("What is 12 times 3?"),
            _a("36.", reasoning_content="12 times 3 is 36, since 10*3=30 and 2*3=6."),
            _u("And divided by 4?"),
            _a("9.", reasoning_content="36 / 4 = 9."),
        ]
    },
    "reasoning_inline": {
        "messages": [
            _u("Is 91 prime?"),
            _a("<think>\n91 = 7 * 13, so it is not.\n</think>\n\nNo, 91 = 7 x 13."),
            _u("Is 97?"),
            _a("<think>\nNo divisor up to 9 divides 97.\n</think>\n\nYes, 97 is prime."),
        ]
    },
    "tool_call": {
        "tools": [WEATHER_TOOL],
        "messages": [
            _u("Is it raining in Paris?"),
            _a(
                "",
                tool_calls=[
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                    }
                ],
            ),
            {"role": "tool", "name": "get_weather", "content": '{"rain": true, "temp_c": 12}'},
            _a("Yes, it is raining in Paris, 12 degrees."),
        ],
    },
}

# prompt-completion and preference records, as TRL's shapes
COMPLETIONS = {
    "completion_messages": {
        "prompt": [SYSTEM, _u("What colour is grass?")],
        "completion": [_a("Grass is green.")],
    },
    "completion_text": {"prompt": "The capital of France is", "completion": " Paris."},
}
PREFERENCES = {
    "pref_messages": {
        "prompt": [_u("What colour is the sky?")],
        "chosen": [_a("Blue, on a clear day.")],
        "rejected": [_a("Green.")],
    },
    "pref_implicit_prompt": {
        "chosen": [_u("Two plus two?"), _a("Four.")],
        "rejected": [_u("Two plus two?"), _a("Five, I think, or maybe six.")],
    },
    "pref_text": {"prompt": "Two plus two is", "chosen": " four.", "rejected": " five."},
}

FIXED_DATE = "2026-01-15"

# the special tokens the templates TRL ships write, made single tokens of the test
# tokenizer as they are in the real ones
_SPECIAL = re.compile(
    r"<\|[^<>|\s]{1,40}\|>|<｜[^<>｜]{1,40}｜>|<(?:start|end)_of_turn>|</?think>"
    r"|</?tool_call>|</?tool_response>|\[gMASK\]|<sop>"
)


def special_tokens(templates) -> list[str]:
    found = set()
    for t in templates:
        found.update(_SPECIAL.findall(t))
    return sorted(found)


def trl_template_pairs():
    """(family, original, training variant) for every pair TRL ships."""
    import trl.chat_template_utils as ctu

    out = []
    for name in sorted(dir(ctu)):
        if name.endswith("_training_chat_template") and isinstance(getattr(ctu, name), str):
            family = name.removesuffix("_training_chat_template")
            out.append((family, getattr(ctu, f"{family}_chat_template"), getattr(ctu, name)))
    return out


def parity_tokenizer(base_tokenizer):
    """The demo tokenizer with every special token of TRL's templates added."""
    import copy

    tok = copy.deepcopy(base_tokenizer)
    templates = [t for _, orig, train in trl_template_pairs() for t in (orig, train)]
    tok.add_tokens(special_tokens(templates), special_tokens=True)
    return tok


def fixed_strftime(fmt: str) -> str:
    import datetime

    return datetime.datetime.fromisoformat(FIXED_DATE).strftime(fmt)


def trl_sft(tok, record, chat_template, fixed_date: bool = True):
    """What SFTTrainer(assistant_only_loss=True)'s tokenize step gives for a messages or a
    conversational prompt-completion record: (input_ids, loss mask), or the exception.
    ``fixed_date``: templates that write today's date get FIXED_DATE instead."""
    from trl.data_utils import _tokenize, common_prefix_length

    kw = {"chat_template": chat_template, "tools": record.get("tools")}
    if fixed_date:
        kw["strftime_now"] = fixed_strftime
    try:
        if "messages" in record:
            out = _tokenize(tok, record["messages"], return_assistant_tokens_mask=True, **kw)
            return out["input_ids"], out["assistant_masks"]
        prompt_ids = _tokenize(tok, record["prompt"], add_generation_prompt=True, **kw)
        out = _tokenize(
            tok, record["prompt"] + record["completion"], return_assistant_tokens_mask=True, **kw
        )
        n = common_prefix_length(prompt_ids["input_ids"], out["input_ids"])
        mask = [int(m and i >= n) for i, m in enumerate(out["assistant_masks"])]
        return out["input_ids"], mask
    except Exception as e:
        return e


def trl_text_completion(tok, record):
    """SFT on a non-conversational prompt-completion record (EOS appended, completion
    mask after the common prefix), as SFTTrainer does it."""
    from trl.data_utils import _tokenize, common_prefix_length

    completion = record["completion"]
    if not completion.endswith(tok.eos_token):
        completion += tok.eos_token
    prompt_ids = _tokenize(tok, record["prompt"])["input_ids"]
    ids = _tokenize(tok, record["prompt"] + completion)["input_ids"]
    n = common_prefix_length(prompt_ids, ids)
    return ids, [int(i >= n) for i in range(len(ids))]


def trl_dpo(tok, record):
    """DPOTrainer's tokenize step: {side: (input_ids, mask of the side's tokens)}."""
    from trl.data_utils import _tokenize, common_prefix_length, extract_prompt, is_conversational

    if "prompt" not in record:
        record = extract_prompt(record)
    if is_conversational(record):
        kw = {"strftime_now": fixed_strftime}
        prompt_ids = _tokenize(tok, record["prompt"], add_generation_prompt=True, **kw)
        full = {
            s: _tokenize(tok, record["prompt"] + record[s], **kw)["input_ids"]
            for s in ("chosen", "rejected")
        }
        prompt_ids = prompt_ids["input_ids"]
    else:
        eos = tok.eos_token
        full = {
            s: _tokenize(tok, record["prompt"] + (v if v.endswith(eos) else v + eos))["input_ids"]
            for s, v in ((s, record[s]) for s in ("chosen", "rejected"))
        }
        prompt_ids = _tokenize(tok, record["prompt"])["input_ids"]
    n = min(common_prefix_length(prompt_ids, ids) for ids in full.values())
    return {s: (ids, [int(i >= n) for i in range(len(ids))]) for s, ids in full.items()}


def with_template(tok, template):
    import copy

    t = copy.copy(tok)
    t.chat_template = template
    return t


def as_multimodal(record: dict) -> dict:
    from trl.data_utils import prepare_multimodal_messages

    return {
        k: prepare_multimodal_messages(v) if k in ("messages", "prompt", "completion") else v
        for k, v in record.items()
    }


def mismatch(rendered, expected) -> str | None:
    """Why a rendered sequence differs from TRL's (ids, mask), or None when it does not."""
    from fastscore.records import NO_RESPONSE, OK, TEMPLATE_ERROR

    if isinstance(expected, Exception):
        if rendered.status == TEMPLATE_ERROR:
            return None
        return f"TRL raised {type(expected).__name__}: {expected}; fastscore: {rendered.status}"
    ids, mask = expected
    pos = [i for i, m in enumerate(mask) if m and i >= 1]
    if not pos:
        return None if rendered.status == NO_RESPONSE else f"TRL masks nothing; {rendered.status}"
    if rendered.status != OK:
        return f"{rendered.status}: {rendered.reason}"
    n = pos[-1] + 1
    if rendered.token_ids.tolist() != list(ids[:n]):
        return "token ids differ"
    if rendered.response_positions.tolist() != pos:
        got = set(rendered.response_positions.tolist())
        return f"masks differ at positions {sorted(got ^ set(pos))[:8]}"
    return None


def parity_failures(tok, family: str) -> dict:
    """Render every conversation and conversational prompt-completion record with TRL's
    *original* template of ``family`` given to ``tok`` (as a user's checkpoint carries it),
    the rule fastscore chooses on its own, and compare each with TRL's SFT tokenize step:
    {rule, variant, renders_training_variant, failures {record: why}, rendered_ok,
    multi_turn_ok}."""
    from fastscore.data.formats import to_sample
    from fastscore.records import OK, RawRecord
    from fastscore.rendering.renderer import Renderer

    _, original, training = next(p for p in trl_template_pairs() if p[0] == family)
    t = with_template(tok, original)
    renderer = Renderer(t, date=FIXED_DATE)
    failures, rendered_ok = {}, 0
    for name, record in {**CONVERSATIONS, **COMPLETIONS}.items():
        if name == "completion_text":
            continue  # raw text: no template (test_trl_parity)
        fmt = "messages" if "messages" in record else "prompt-completion"
        (got,) = renderer.render_sides(to_sample(RawRecord(0, record), fmt))
        if renderer.content_parts:  # a VLM template: TRL's processor path gives it parts
            record = as_multimodal(record)
        why = mismatch(got, trl_sft(t, record, training))
        rendered_ok += got.status == OK
        if why:
            failures[name] = why
    (multi,) = renderer.render_sides(
        to_sample(RawRecord(0, CONVERSATIONS["two_turns"]), "messages")
    )
    return {
        "rule": renderer.chat.rule,
        "variant": renderer.chat.variant,
        "renders_training_variant": renderer.chat.source == training,
        "failures": failures,
        "rendered_ok": rendered_ok,
        "multi_turn_ok": multi.status == OK,
    }
