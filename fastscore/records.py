"""The dataclasses that cross stage boundaries.

raw record (``RawRecord``) -> conversation (``Sample``) -> tokens with a response mask
(``RenderedSample``) -> per-model response-token logprobs (numpy arrays) -> ``ScoredSample``.
A record that fails at any stage keeps flowing with a ``status`` other than ``ok`` and a
``reason``, so every input record reaches the scores file exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Statuses a record can end with. Only "ok" carries losses.
OK = "ok"
BAD_RECORD = "bad_record"  # unreadable JSON or a record that does not fit its format
NO_RESPONSE = "no_response"  # no assistant turn, or only empty ones
TOO_LONG = "too_long"  # more tokens than --max-length
TEMPLATE_ERROR = "template_error"  # the chat template failed or is not prefix-stable
NONFINITE = "nonfinite_loss"  # an engine returned -inf/nan for a response token
DUPLICATE_ID = "duplicate_id"  # the id of an earlier record; only the first one is scored
STATUSES = (OK, BAD_RECORD, NO_RESPONSE, TOO_LONG, TEMPLATE_ERROR, NONFINITE, DUPLICATE_ID)


@dataclass(slots=True)
class Message:
    """One message as the chat template takes it: ``role``, ``content`` and whatever else
    the record gave it (``tool_calls``, ``reasoning_content``, ``name``, ...), passed on
    untouched since templates test for those keys."""

    role: str  # "system" | "developer" | "user" | "assistant" | "tool" | "ipython"
    content: str | None
    extra: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content, **(self.extra or {})}

    @property
    def text(self) -> str:
        return self.content or ""


@dataclass(slots=True)
class RawRecord:
    """One record as read from the input file, before any interpretation."""

    index: int  # 0-based position in the input file
    data: Any  # the parsed JSON object (None when it could not be parsed)
    error: str | None = None  # why it could not be parsed

    @property
    def id(self) -> Any:
        """The record's ``id`` field when present and not null, else None: a record
        without one is known by its ``index`` alone, a namespace of its own, so no
        explicit id can collide with a position (``data.ids``)."""
        if isinstance(self.data, dict):
            return self.data.get("id")
        return None


def record_label(index: int, rid: Any) -> str:
    """A record as messages name it: ``id 'a-7'`` or ``record 5`` (no id)."""
    return f"record {index}" if rid is None else f"id {rid!r}"


@dataclass(slots=True)
class Sample:
    """A record turned into a conversation; ``messages`` is empty when ``status`` is not ok.

    A chat (``completions`` None) is scored where SFT trains on it: every assistant turn.
    A prompt-completion record has ``completions={"completion": ...}`` and a preference
    record ``{"chosen": ..., "rejected": ...}``: ``messages`` is then the prompt, and each
    continuation (a list of messages, or a string when the prompt is the raw ``text``,
    with no chat template) is scored after it.
    """

    index: int
    id: Any  # the record's id field; None when it has none (known by its index)
    messages: list[Message] = field(default_factory=list)
    status: str = OK
    reason: str | None = None
    tools: list | None = None  # the record's tool schemas, handed to the template
    template_kwargs: dict[str, Any] | None = None  # the record's chat_template_kwargs
    completions: dict[str, Any] | None = None
    text: str | None = None  # raw-text prompt of a prompt-completion or preference record

    @property
    def kind(self) -> str:
        if self.completions is None:
            return "chat"
        return "preference" if "chosen" in self.completions else "completion"


@dataclass(slots=True)
class RenderedSample:
    """Token ids of the fully rendered conversation and the positions that are scored.

    ``token_ids`` stops at the last response token: nothing after it changes a score, so
    it is not computed. ``response_positions`` are sorted indices into ``token_ids``, all
    >= 1 (position 0 has no context to be predicted from). A preference record renders to
    two of these in a row, one per ``side``.
    """

    index: int
    id: Any
    token_ids: np.ndarray  # int32 [n_tokens]
    response_positions: np.ndarray  # int32 [n_response_tokens]
    status: str = OK
    reason: str | None = None
    side: str | None = None  # "chosen" | "rejected" for a preference record

    @property
    def n_tokens(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def label(self) -> str:
        return record_label(self.index, self.id)

    @property
    def n_response_tokens(self) -> int:
        return int(self.response_positions.shape[0])


@dataclass(slots=True)
class ScoredSample:
    """One line of the scores file."""

    index: int
    id: Any
    status: str
    reason: str | None
    n_tokens: int
    n_response_tokens: int
    loss_base: float | None = None
    loss_ref: float | None = None
    lobass: float | None = None
    rho: float | None = None
    # with --ifd only: the base's loss on the response without its prompt, and their ratio
    loss_alone: float | None = None
    ifd: float | None = None
    # preference records: each side's columns (loss_base_chosen, ..., lobass_rejected) and
    # margin; the columns above then describe the chosen side
    pair: dict[str, Any] | None = None
    # a cross-fitted reference: the fold whose reference (the one that never saw the
    # record) scored it
    fold: int | None = None

    def to_json(self, with_ifd: bool = False) -> dict[str, Any]:
        out = {
            "id": self.id,
            "index": self.index,
            "status": self.status,
            "n_tokens": self.n_tokens,
            "n_response_tokens": self.n_response_tokens,
            "loss_base": self.loss_base,
            "loss_ref": self.loss_ref,
            "lobass": self.lobass,
            "rho": self.rho,
        }
        if with_ifd:
            out["loss_alone"] = self.loss_alone
            out["ifd"] = self.ifd
        if self.pair is not None:
            out.update(self.pair)
        if self.fold is not None:
            out["fold"] = self.fold
        if self.reason is not None:
            out["reason"] = self.reason
        return out
