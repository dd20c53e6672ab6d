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
