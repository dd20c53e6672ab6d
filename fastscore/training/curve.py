"""The loss curve: one point per logged step in the manifest, and ``loss_curve.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CURVE = "loss_curve.png"


# past this many steps the loss curve takes one point per steps/CURVE_POINTS steps
CURVE_POINTS = 500


def loss_curve(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "step": h["step"],
            "loss": round(float(h["loss"]), 6),
            "lr": float(h.get("learning_rate", 0.0)),
        }
        for h in history
        if "loss" in h and "step" in h
    ]


def draw_curve(curve: list[dict[str, Any]], path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot([c["step"] for c in curve], [c["loss"] for c in curve], lw=1.2, color="#4472c4")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss (response tokens)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
