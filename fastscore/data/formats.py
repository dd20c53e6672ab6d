"""Record formats: turn one raw record into a conversation (a list of messages).

- ``messages``: ``{"messages": [{"role": ..., "content": ...}, ...]}`` (OpenAI / TRL style).
  Roles: system, developer, user, assistant, tool (and ipython). ``content`` may be a string,
  a list of ``{"type": "text", "text": ...}`` parts (joined), or null/absent on an assistant
  turn that makes ``tool_calls``. Other keys of a message (``tool_calls``,
  ``reasoning_content``, ``name``, ``tool_call_id``, ...) go to the chat template as they
  are, and so do the record's ``tools`` (a list, or a JSON string of one) and
  ``chat_template_kwargs`` (e.g. ``{"enable_thinking": false}``), as TRL passes them.
- ``prompt-completion`` (TRL): ``{"prompt": ..., "completion": ...}``, both strings (raw
  text, no chat template, EOS appended as TRL does) or both message lists.
- ``preference`` (TRL's DPO shapes): ``{"prompt": ..., "chosen": ..., "rejected": ...}``,
  strings or message lists; without ``prompt`` the longest common prefix of the two
  conversations is the prompt (TRL's ``extract_prompt``).
- ``alpaca``: ``{"instruction": str, "input": str (optional), "output": str}``; the user
  turn is the instruction, then a blank line and the input when the input is not empty.
- ``sharegpt``: ``{"conversations": [{"from": "human"|"gpt"|"system", "value": str}, ...]}``.
- ``prompt-response``: ``{"prompt": str, "response": str}``, one user and one assistant turn.

``auto`` picks the format from the first record that fits one, then holds every record of
the file to it, so a record that does not fit is reported rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from fastscore.config import FORMATS
from fastscore.errors import InputError
from fastscore.records import BAD_RECORD, Message, RawRecord, Sample

ROLES = ("system", "developer", "user", "assistant", "tool", "ipython")
_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
}


class RecordError(ValueError):
    """A record does not fit its format; the message is the per-record reason."""


def sniff_format(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    if "messages" in data:
        return "messages"
    if "conversations" in data:
        return "sharegpt"
    if "chosen" in data and "rejected" in data:
        return "preference"
    if "prompt" in data and "completion" in data:
        return "prompt-completion"
    if "instruction" in data and "output" in data:
        return "alpaca"
    if "prompt" in data and "response" in data:
        return "prompt-response"
    return None


def _text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in value
    ):
        return "".join(p["text"] for p in value)
    raise RecordError(f"{where} must be a string, got {type(value).__name__}")


def _message(m: Any, where: str) -> Message:
    if not isinstance(m, dict) or "role" not in m:
        raise RecordError(f"{where} must be an object with 'role' and 'content'")
    role = m["role"]
    if role not in ROLES:
        raise RecordError(f"{where}.role is {role!r}; expected one of {ROLES}")
    extra = {k: v for k, v in m.items() if k not in ("role", "content")} or None
    if m.get("content") is None:
        # a turn that only calls tools may have no content; anything else must have some
        if not (role == "assistant" and m.get("tool_calls")):
            raise RecordError(f"{where} must be an object with 'role' and 'content'")
        return Message(role, m.get("content"), extra)
    return Message(role, _text(m["content"], f"{where}.content"), extra)


def _messages(value: Any, where: str) -> list[Message]:
    if not isinstance(value, list):
        raise RecordError(f"{where!r} must be a list, got {type(value).__name__}")
    return [_message(m, f"{where}[{i}]") for i, m in enumerate(value)]


def _from_messages(data: dict) -> list[Message]:
    return _messages(data["messages"], "messages")


def _from_sharegpt(data: dict) -> list[Message]:
    conv = data["conversations"]
    if not isinstance(conv, list):
        raise RecordError(f"'conversations' must be a list, got {type(conv).__name__}")
    out = []
    for i, m in enumerate(conv):
        if not isinstance(m, dict) or "from" not in m or "value" not in m:
            raise RecordError(f"conversations[{i}] must be an object with 'from' and 'value'")
        role = _SHAREGPT_ROLES.get(m["from"])
        if role is None:
            raise RecordError(
                f"conversations[{i}].from is {m['from']!r}; expected one of "
                f"{sorted(_SHAREGPT_ROLES)}"
            )
        out.append(Message(role, _text(m["value"], f"conversations[{i}].value")))
    return out


def _from_alpaca(data: dict) -> list[Message]:
    for key in ("instruction", "output"):
        if key not in data:
            raise RecordError(f"alpaca record has no {key!r} field")
    instruction = _text(data["instruction"], "instruction")
    extra = data.get("input")
    extra = "" if extra is None else _text(extra, "input")
    user = instruction + ("\n\n" + extra if extra.strip() else "")
    msgs = []
    if data.get("system"):
        msgs.append(Message("system", _text(data["system"], "system")))
    msgs += [Message("user", user), Message("assistant", _text(data["output"], "output"))]
    return msgs


def _from_prompt_response(data: dict) -> list[Message]:
    for key in ("prompt", "response"):
        if key not in data:
            raise RecordError(f"prompt-response record has no {key!r} field")
    return [
        Message("user", _text(data["prompt"], "prompt")),
        Message("assistant", _text(data["response"], "response")),
    ]


def _continuations(data: dict, fmt: str, keys: tuple[str, ...]) -> Sample:
    """prompt-completion and preference records: the prompt and its continuations, all
    strings or all message lists (a Sample without index and id, filled in by the caller)."""
    for key in keys:
        if key not in data:
            raise RecordError(f"{fmt} record has no {key!r} field")
    prompt = data.get("prompt")
    values = [data[k] for k in keys]
    if all(isinstance(v, str) for v in values) and isinstance(prompt, (str, type(None))):
        return Sample(0, None, text=prompt or "", completions=dict(zip(keys, values, strict=True)))
    if not all(isinstance(v, list) for v in values) or not isinstance(prompt, (list, type(None))):
        raise RecordError(
            f"{fmt}: prompt and {'/'.join(keys)} must be all strings or all message lists"
        )
    sides = {k: _messages(data[k], k) for k in keys}
    if prompt is None:  # TRL's extract_prompt: the longest common prefix of the sides
        first, *others = sides.values()
        n = 0
        while n < len(first) and all(
            n < len(o) and o[n].to_dict() == first[n].to_dict() for o in others
        ):
            n += 1
        return Sample(0, None, first[:n], completions={k: v[n:] for k, v in sides.items()})
    return Sample(0, None, _messages(prompt, "prompt"), completions=sides)


_PARSERS = {
    "messages": _from_messages,
    "sharegpt": _from_sharegpt,
    "alpaca": _from_alpaca,
    "prompt-response": _from_prompt_response,
}
_CONTINUATIONS = {"prompt-completion": ("completion",), "preference": ("chosen", "rejected")}


def _record_extras(data: dict) -> tuple[list | None, dict | None]:
    """The record's ``tools`` (a list, or a JSON string of one, as TRL takes it) and
    ``chat_template_kwargs``."""
    tools = data.get("tools")
    if isinstance(tools, str):
        try:
            tools = orjson.loads(tools)
        except orjson.JSONDecodeError as e:
            raise RecordError(f"'tools' is a string but not JSON: {e}") from e
    if tools is not None and not isinstance(tools, list):
        raise RecordError(f"'tools' must be a list of tool schemas, got {type(tools).__name__}")
    kwargs = data.get("chat_template_kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise RecordError(f"'chat_template_kwargs' must be an object, got {type(kwargs).__name__}")
    return tools or None, kwargs or None


def sample_turns(sample: Sample) -> list[tuple[str, str]]:
    """(role, text) of every turn, then of each continuation (labelled by its side), for
    showing a record and for telling duplicates apart."""
    turns = [(m.role, m.text) for m in sample.messages]
    if sample.text:
        turns.insert(0, ("prompt", sample.text))
    for side, cont in (sample.completions or {}).items():
        if isinstance(cont, str):
            turns.append((side, cont))
        else:
            turns += [(f"{side} {m.role}", m.text) for m in cont]
    return turns


def to_sample(raw: RawRecord, fmt: str) -> Sample:
    """One raw record in a known format -> a Sample (status bad_record if it does not fit)."""
    rid = raw.id
    if raw.error is not None:
        return Sample(raw.index, rid, status=BAD_RECORD, reason=raw.error)
    if not isinstance(raw.data, dict):
        return Sample(
            raw.index,
            rid,
            status=BAD_RECORD,
            reason=f"record must be a JSON object, got {type(raw.data).__name__}",
        )
    try:
        tools, kwargs = _record_extras(raw.data)
        if fmt in _CONTINUATIONS:
            sample = _continuations(raw.data, fmt, _CONTINUATIONS[fmt])
            sample.index, sample.id = raw.index, rid
        else:
            sample = Sample(raw.index, rid, _PARSERS[fmt](raw.data))
    except RecordError as e:
        return Sample(raw.index, rid, status=BAD_RECORD, reason=f"{fmt}: {e}")
    except KeyError as e:
        return Sample(raw.index, rid, status=BAD_RECORD, reason=f"{fmt}: record has no {e} field")
    sample.tools, sample.template_kwargs = tools, kwargs
    return sample


def resolve_format(path, kind: str, fmt: str) -> str:
    """The record format of the whole file (``auto`` resolved on its first fitting record,
    within the first 1000), so that shards scored apart parse every record exactly as a
    whole-file run does."""
    from fastscore.data.readers import read_records

    if fmt != "auto":
        return fmt
    for i, raw in enumerate(read_records(path, kind)):
        found = sniff_format(raw.data) if raw.error is None else None
        if found or i >= 1000:
            return found or "auto"
    return "auto"


def to_samples(records: Iterable[RawRecord], fmt: str = "auto") -> Iterator[Sample]:
    """Records -> Samples, resolving ``auto`` on the first record that fits a format."""
    if fmt != "auto" and fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; expected auto or one of {FORMATS}")
    pending: list[RawRecord] = []
    for raw in records:
        if fmt == "auto":
            found = sniff_format(raw.data) if raw.error is None else None
            if found is None:
                pending.append(raw)  # judged once the file's format is known
                if len(pending) > 1000:
                    raise InputError(
                        "could not detect the record format from the first 1000 records; "
                        f"pass --format (one of {FORMATS})"
                    )
                continue
            fmt = found
            for p in pending:
                yield to_sample(p, fmt)
            pending = []
        yield to_sample(raw, fmt)
    for p in pending:  # the file never revealed a format: every record is reported
        yield Sample(
            p.index,
            p.id,
            status=BAD_RECORD,
            reason=p.error
            or "record fits no known format (messages, conversations, prompt/completion, "
            "chosen/rejected, instruction/output, prompt/response)",
        )
