"""The index arithmetic of vLLM's response-only path (GPU, V2 runner), by hand.

This CPU cannot run that path, so the rows we send and the values we read back are
checked against a simulated engine that follows vLLM's documented contract: row i holds
the logprob of its id as the prediction of token ``start + i + 1``; -1 scores -inf.
"""

import numpy as np
import pytest

from fastscore.engines.vllm_engine import pick_token_id_logprobs, token_id_rows
from fastscore.records import RenderedSample


def _simulated_engine(token_ids, full_logprobs, start, rows):
    out = np.full(rows.shape, -np.inf)
    for i, (tid,) in enumerate(rows):
        if tid != -1:
            assert tid == token_ids[start + i + 1]  # the row asks for the real next token
            out[i, 0] = full_logprobs[start + i + 1]
    return out


def test_rows_and_readback_match_the_flat_path():
    ids = np.array([7, 8, 9, 10, 11, 12, 13, 14], dtype=np.int32)
    full = -np.arange(8) / 10.0  # full[t] = logprob of token t given tokens < t
    s = RenderedSample(0, "x", ids, np.array([3, 4, 6, 7], dtype=np.int32))  # two turns
    start, rows = token_id_rows(s)
    assert start == 2
    assert rows[:, 0].tolist() == [10, 11, -1, 13, 14]  # rows for tokens 3..7
    got = pick_token_id_logprobs(s, _simulated_engine(ids, full, start, rows))
    np.testing.assert_array_equal(got, full[[3, 4, 6, 7]])  # what the flat path returns


def test_readback_refuses_a_wrong_shape():
    s = RenderedSample(0, "x", np.arange(5, dtype=np.int32), np.array([4], dtype=np.int32))
    with pytest.raises(ValueError, match=r"expected token-id logprobs of shape \(1, 1\)"):
        pick_token_id_logprobs(s, np.zeros((3, 1)))
    with pytest.raises(ValueError, match="got None"):
        pick_token_id_logprobs(s, None)
