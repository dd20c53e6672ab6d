"""How far two ways of scoring the same samples agree (FP8 against bf16): per column the
mean and largest absolute difference, and for the ranking LoBaSS selects by, Spearman's
rho and the overlap of the two top shares."""

from __future__ import annotations

import numpy as np

from fastscore.scoring.arithmetic import mean_nll, spearman

COLUMNS = ("loss_base", "loss_ref", "lobass")


def mean_losses(logprobs: list) -> np.ndarray:
    """Each sample's mean response loss, from an engine's ``response_logprobs``."""
    return np.array([mean_nll(lp) for lp in logprobs])


def loss_columns(loss_base, loss_ref) -> dict:
    """The ``COLUMNS`` of one way: both losses and lobass, per sample."""
    base, ref = np.asarray(loss_base, dtype=np.float64), np.asarray(loss_ref, dtype=np.float64)
    return {"loss_base": base, "loss_ref": ref, "lobass": (base - ref) / base}


def top_overlap(a: np.ndarray, b: np.ndarray, share: float) -> float:
    """The share of ``a``'s top ``share`` of samples (by value, largest first) that are in
    ``b``'s top ``share`` too (ties broken by index, the same way in both)."""
    k = max(1, round(share * len(a)))
    top_a = set(np.argsort(-a, kind="stable")[:k].tolist())
    top_b = set(np.argsort(-b, kind="stable")[:k].tolist())
    return len(top_a & top_b) / k


def agreement(a: dict, b: dict, *, top: float = 0.1) -> dict:
    """``a`` and ``b``: column -> per-sample values in the same sample order (the columns of
    ``COLUMNS`` they both have)."""
    out: dict = {"samples": None}
    for col in COLUMNS:
        if col not in a or col not in b:
            continue
        x, y = np.asarray(a[col], dtype=np.float64), np.asarray(b[col], dtype=np.float64)
        if x.shape != y.shape:
            raise ValueError(f"{col}: {x.shape} against {y.shape}: not the same samples")
        d = np.abs(x - y)
        out["samples"] = int(x.size)
        out[col] = {"mean_abs_delta": float(d.mean()), "max_abs_delta": float(d.max())}
    if "lobass" in out:
        x, y = np.asarray(a["lobass"], dtype=np.float64), np.asarray(b["lobass"], dtype=np.float64)
        out["lobass"]["spearman"] = spearman(x, y)
        out["lobass"][f"top_{top:g}_overlap"] = top_overlap(x, y, top)
    return out
