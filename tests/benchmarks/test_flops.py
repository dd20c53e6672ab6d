"""The exact-scoring FLOP count and MFU, on a shape small enough to count by hand."""

import pytest

from fastscore.benchmarks.flops import (
    ModelShape,
    attention_flops,
    head_flops,
    mfu,
    scoring_flops,
    trunk_flops_per_token,
)

# hidden 4, one layer, 2 query heads sharing 1 KV head of dim 2, MLP 3, vocabulary 5
S = ModelShape(hidden=4, layers=1, heads=2, kv_heads=1, head_dim=2, intermediate=3, vocab=5)


def test_flops_by_hand():
    # q 4x4, k and v 4x2 each, o 4x4, gate/up/down 4x3 each: 16+8+8+16+36 = 84 MACs
    assert trunk_flops_per_token(S) == 2 * 84
    # 3 tokens: queries meet 1, 2, 3 keys; per key and head a score and a weighted sum of
    # head_dim MACs each: 2 heads * 6 keys * 2 * 2 MACs = 48 MACs
    assert attention_flops(S, 3) == 2 * 48
    assert head_flops(S, 2) == 2 * 2 * 4 * 5
    # one sample of 3 tokens, 2 of them scored; a second of 1 token, 1 scored
    assert scoring_flops(S, [(3, 2), (1, 1)]) == (168 * 3 + 96 + 80) + (168 + 16 + 40)


def test_shape_from_a_transformers_config():
    from transformers import LlamaConfig

    c = LlamaConfig(
        hidden_size=4, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=3, vocab_size=5,
    )  # fmt: skip
    assert ModelShape.from_config(c) == S  # head_dim defaults to hidden / heads


def test_mfu():
    assert mfu(4e14, 2.0, 8e14) == 0.25
    with pytest.raises(ValueError, match="must be > 0"):
        mfu(1.0, 0.0, 1.0)
