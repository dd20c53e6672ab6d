"""The FLOPs exact scoring needs, and model FLOP utilisation (MFU) against a measured rate.

Exact scoring runs the trunk on every token, causal attention within each sample, and the
output head on the response tokens only. That is the useful work of every way a benchmark
compares: a way that also runs the head at every position (lm-eval's, the one-sample loop)
does more arithmetic for the same scores, and its MFU says so. Embedding look-ups, norms,
rotary and activations are elementwise and left out (well under 1% at the shapes measured).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int

    @classmethod
    def from_config(cls, c) -> ModelShape:
        """From a transformers Llama-style config (``head_dim`` defaults to hidden / heads)."""
        heads = c.num_attention_heads
        return cls(
            hidden=c.hidden_size,
            layers=c.num_hidden_layers,
            heads=heads,
            kv_heads=getattr(c, "num_key_value_heads", None) or heads,
            head_dim=getattr(c, "head_dim", None) or c.hidden_size // heads,
            intermediate=c.intermediate_size,
            vocab=c.vocab_size,
        )


def trunk_flops_per_token(s: ModelShape) -> int:
    """The linear layers of every decoder layer, one token: q, k, v, o and the gated MLP."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    return (
        s.layers
        * 2
        * (s.hidden * q + 2 * s.hidden * kv + q * s.hidden + 3 * s.hidden * s.intermediate)
    )


def attention_flops(s: ModelShape, n_tokens: int) -> int:
    """Causal attention over one sample: query i meets i + 1 keys, each costing a score and
    a weighted sum of ``head_dim`` multiply-adds per head."""
    return s.layers * 4 * s.heads * s.head_dim * n_tokens * (n_tokens + 1) // 2


def head_flops(s: ModelShape, rows: int) -> int:
    """The output head on ``rows`` positions."""
    return 2 * s.hidden * s.vocab * rows


def scoring_flops(s: ModelShape, lengths: Iterable[tuple[int, int]]) -> int:
    """One model's exact-scoring FLOPs over samples given as (tokens, response tokens)."""
    per_token = trunk_flops_per_token(s)
    return sum(per_token * n + attention_flops(s, n) + head_flops(s, r) for n, r in lengths)


def head_share(s: ModelShape, mean_len: float) -> float:
    """The output head's share of one token's forward FLOPs in a sample of ``mean_len``
    tokens (the trunk, its share of the causal attention, the head)."""
    n = max(1, round(mean_len))
    per_token = trunk_flops_per_token(s) + attention_flops(s, n) / n + head_flops(s, 1)
    return head_flops(s, 1) / per_token


def mfu(flops: float, seconds: float, peak_flops_per_s: float) -> float:
    """Useful FLOPs per second as a share of the measured matmul rate."""
    if seconds <= 0 or peak_flops_per_s <= 0:
        raise ValueError(f"seconds ({seconds}) and peak rate ({peak_flops_per_s}) must be > 0")
    return flops / seconds / peak_flops_per_s
