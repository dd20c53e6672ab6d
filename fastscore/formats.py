"""Record formats: turn one raw record into a conversation (a list of messages).

- ``messages``: ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}``
  (OpenAI style; ``content`` may also be a list of ``{"type": "text", "text": ...}`` parts).
- ``alpaca``: ``{"instruction": str, "input": str (optional), "output": str}``; the user
  turn is the instruction, then a blank line and the input when the input is not empty.
- ``sharegpt``: ``{"conversations": [{"from": "human"|"gpt"|"system", "value": str}, ...]}``.
- ``prompt-response``: ``{"prompt": str, "response": str}``.

``auto`` picks the format from the first record that fits one, then holds every record of
the file to it, so a record that does not fit is reported rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .errors import InputError
from .records import BAD_RECORD, Message, RawRecord, Sample

FORMATS = ("messages", "alpaca", "sharegpt", "prompt-response")
ROLES = ("system", "user", "assistant")
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


def _from_messages(data: dict) -> list[Message]:
    msgs = data["messages"]
    if not isinstance(msgs, list):
        raise RecordError(f"'messages' must be a list, got {type(msgs).__name__}")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise RecordError(f"messages[{i}] must be an object with 'role' and 'content'")
        role = m["role"]
        if role not in ROLES:
            raise RecordError(f"messages[{i}].role is {role!r}; expected one of {ROLES}")
        out.append(Message(role, _text(m["content"], f"messages[{i}].content")))
    return out


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


_PARSERS = {
    "messages": _from_messages,
    "sharegpt": _from_sharegpt,
    "alpaca": _from_alpaca,
    "prompt-response": _from_prompt_response,
}


def _check_turns(messages: list[Message]) -> list[Message]:
    """Roles must alternate after an optional leading system turn: many chat templates
    refuse anything else, and two replies in a row have no prompt between them."""
    for i in range(1, len(messages)):
        if messages[i].role == messages[i - 1].role:
            raise RecordError(
                f"turns {i - 1} and {i} are both {messages[i].role!r}; roles must "
                "alternate (merge the two turns)"
            )
        if messages[i].role == "system":
            raise RecordError(f"turn {i} is a system turn; only the first turn may be one")
    return messages


def record_id(raw: RawRecord) -> Any:
    """The record's ``id`` field when present (and not null), else its 0-based position."""
    if isinstance(raw.data, dict) and raw.data.get("id") is not None:
        return raw.data["id"]
    return raw.index


def to_sample(raw: RawRecord, fmt: str) -> Sample:
    """One raw record in a known format -> a Sample (status bad_record if it does not fit)."""
    rid = record_id(raw)
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
        messages = _check_turns(_PARSERS[fmt](raw.data))
    except RecordError as e:
        return Sample(raw.index, rid, status=BAD_RECORD, reason=f"{fmt}: {e}")
    except KeyError as e:
        return Sample(raw.index, rid, status=BAD_RECORD, reason=f"{fmt}: record has no {e} field")
    return Sample(raw.index, rid, messages=messages)


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
            record_id(p),
            status=BAD_RECORD,
            reason=p.error
            or "record fits no known format (messages, conversations, instruction/output, "
            "prompt/response)",
        )
