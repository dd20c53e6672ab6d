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
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(slots=True)
class RawRecord:
    """One record as read from the input file, before any interpretation."""

    index: int  # 0-based position in the input file
    data: Any  # the parsed JSON object (None when it could not be parsed)
    error: str | None = None  # why it could not be parsed


@dataclass(slots=True)
class Sample:
    """A record turned into a conversation; ``messages`` is empty when ``status`` is not ok."""

    index: int
    id: Any
    messages: list[Message] = field(default_factory=list)
    status: str = OK
    reason: str | None = None


@dataclass(slots=True)
class RenderedSample:
    """Token ids of the fully rendered conversation and the positions that are scored.

    ``token_ids`` stops at the last response token: nothing after it changes a score, so
    it is not computed. ``response_positions`` are sorted indices into ``token_ids``, all
    >= 1 (position 0 has no context to be predicted from).
    """

    index: int
    id: Any
    token_ids: np.ndarray  # int32 [n_tokens]
    response_positions: np.ndarray  # int32 [n_response_tokens]
    status: str = OK
    reason: str | None = None

    @property
    def n_tokens(self) -> int:
        return int(self.token_ids.shape[0])

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
        if self.reason is not None:
            out["reason"] = self.reason
        return out
