"""The arithmetic: response-token logprobs -> mean loss -> scores. Pure functions only."""

from __future__ import annotations

import math

import numpy as np


def mean_nll(response_logprobs: np.ndarray) -> float:
    """Mean negative log-likelihood of the response tokens (natural log, nats/token).

    Summed in float64 whatever the engine returned, so long responses do not lose
    precision. Returns nan for an empty array; callers treat non-finite as a status.
    """
    lp = np.asarray(response_logprobs, dtype=np.float64)
    if lp.size == 0:
        return math.nan
    return float(-lp.sum() / lp.size)


def rho(loss_base: float, loss_ref: float) -> float:
    """Reducible loss (RHO-LM): how much loss fine-tuning removed, in nats/token."""
    return loss_base - loss_ref


def lobass(loss_base: float, loss_ref: float) -> float | None:
    """LoBaSS / DavIR score: the share of the base loss that fine-tuning removed.

    ``(L_base - L_ref) / L_base``. Undefined (None) when the base loss is 0: the base
    already predicts the response with certainty, and no share can be computed.
    """
    if loss_base == 0.0:
        return None
    return (loss_base - loss_ref) / loss_base


def score_losses(loss_base: float, loss_ref: float) -> dict[str, float | None]:
    """All scores of one sample from its two mean losses."""
    return {"lobass": lobass(loss_base, loss_ref), "rho": rho(loss_base, loss_ref)}


def ifd(loss_with_prompt: float, loss_alone: float) -> float | None:
    """Instruction-following difficulty (Cherry LLM): the response's loss given its prompt
    over its loss without it. Near or above 1: the prompt does not help predict the
    response. None when the loss alone is 0 or not finite."""
    if not math.isfinite(loss_alone) or loss_alone == 0.0:
        return None
    return loss_with_prompt / loss_alone


def response_alone(token_ids: np.ndarray, response_positions: np.ndarray, bos: int | None):
    """The response tokens without their prompt, for ``ifd``: (token ids, positions scored).

    Every assistant turn's response tokens in order, after the BOS token when the tokenizer
    has one; without one, the first token has no context and is not scored.
    """
    resp = np.asarray(token_ids)[response_positions].astype(np.int32)
    if bos is not None:
        ids = np.concatenate([np.array([bos], dtype=np.int32), resp])
        return ids, np.arange(1, len(ids), dtype=np.int32)
    return resp, np.arange(1, len(resp), dtype=np.int32)


def perplexity(loss: float) -> float:
    """exp(mean loss); inf when that overflows a float."""
    return math.exp(loss) if loss < 709.0 else math.inf


def seeded_uniform(seed: int, index: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, index): the ``random`` score, the same
    on every run and independent of the order records are read in."""
    import hashlib

    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average = (ends - counts + 1 + ends) / 2.0
    return average[inverse]


def spearman(x, y) -> float | None:
    """Spearman's rank correlation (ties averaged); None under 3 pairs or for a constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    if denom == 0.0:
        return None
    return float((rx * ry).sum() / denom)
