"""Shared prefixes computed once: the plan by hand, the kept states' budget, and the
engine's logprobs and pooled features with sharing against without it and against an
independent transformers computation, on every format (pairs included), on CPU."""

from __future__ import annotations

import numpy as np
import torch

from fastscore.config import EngineConfig
from fastscore.engines.packed import (
    pack_samples,
    sdpa_per_sequence,
    to_device,
    varlen_attention,
)
from fastscore.engines.prefixes import (
    PrefixCache,
    PrefixState,
    fit_budget,
    plan_prefixes,
    prefix_key,
)
from fastscore.engines.torch_engine import TorchEngine
from fastscore.records import RenderedSample
from tests.helpers.format_records import rendered
from tests.helpers.reference import transformers_logprobs

A = list(range(100, 140))  # a 40-token system prompt
B = list(range(100, 120)) + list(range(500, 520))  # another, sharing A's first 20 tokens


def _ids(*parts):
    return np.asarray([t for p in parts for t in p], dtype=np.int32)


def test_each_group_gets_its_own_longest_prefix():
    ids = [_ids(A, [1, 2, 3]), _ids(B, [4, 5]), _ids(A, [7, 8, 9, 10]), _ids(B, [6]), _ids([9] * 3)]
    p = plan_prefixes(ids)
    # A's two samples share 40 tokens, B's two another 40: 80 run once, not 20 shared by 4
    assert p.lengths == [40, 40, 40, 40, 0]
    assert p.keys[0] == p.keys[2] == prefix_key(ids[0], 40) != p.keys[1] == p.keys[3]
    assert set(p.build) == {prefix_key(ids[0], 40), prefix_key(ids[1], 40)}
    assert p.build[prefix_key(ids[1], 40)].tolist() == B and p.keys[4] is None


def test_a_shorter_common_prefix_wins_when_the_longer_ones_do_not_pay():
    # all four share 20 tokens, each pair 2 more: one prefix of 20 runs 20 + 4 * 22 = 108
    # tokens, two of 22 would run 44 + 4 * 20 = 124
    a = list(range(100, 120))
    ids = [_ids(a, [1, 2], [7] * 20), _ids(a, [1, 2], [8] * 20), _ids(a, [3, 4], [9] * 20),
           _ids(a, [3, 4], [6] * 20)]  # fmt: skip
    p = plan_prefixes(ids)
    assert p.lengths == [20, 20, 20, 20] and len(p.build) == 1


def test_a_prefix_leaves_a_token_and_short_ones_are_not_shared():
    ids = [_ids(A), _ids(A, [5])]  # the first is all prefix: one token must be left to it
    p = plan_prefixes(ids)
    assert p.lengths == [39, 39] and p.build[p.keys[0]].tolist() == A[:39]
    short = [_ids(A[:10], [1]), _ids(A[:10], [2])]
    assert plan_prefixes(short).lengths == [0, 0]  # under MIN_PREFIX_TOKENS
    assert plan_prefixes([]).lengths == [] and plan_prefixes([_ids(A)]).lengths == [0]


def test_a_kept_prefix_is_used_by_a_single_sample_and_not_built_again():
    key = prefix_key(_ids(A), 40)
    ids = [_ids(A, [1, 2])]
    p = plan_prefixes(ids, cached=lambda k: k == key, cached_lengths=[40])
    assert p.lengths == [40] and p.keys == [key] and p.build == {}
    # under the kept one, a longer prefix is built only when it saves more than it runs:
    # two samples 20 tokens past it (2 * 22 with the kept one, 60 + 2 * 2 built) do not
    ids = [_ids(A, [1] * 20, [2]), _ids(A, [1] * 20, [3])]
    p = plan_prefixes(ids, cached=lambda k: k == key, cached_lengths=[40])
    assert p.lengths == [40, 40] and p.build == {}
    ids = [_ids(A, [1] * 60, [k]) for k in (2, 3, 4, 5)]  # 4 * 62 against 100 + 4 * 2
    p = plan_prefixes(ids, cached=lambda k: k == key, cached_lengths=[40])
    assert p.lengths == [100] * 4 and len(p.build) == 1


def test_new_prefixes_past_the_budget_are_dropped_least_sparing_first():
    c = list(range(300, 330))  # a 30-token prompt of one pair
    ids = [_ids(A, [1]), _ids(A, [2]), _ids(A, [3]), _ids(c, [4]), _ids(c, [5])]
    p = plan_prefixes(ids)
    assert p.lengths == [40, 40, 40, 30, 30] and len(p.build) == 2
    # room for 40 tokens: A (sparing 2 * 40) stays, the pair's prompt (1 * 30) goes
    q = fit_budget(p, 45)
    assert q.lengths == [40, 40, 40, 0, 0] and list(q.build) == [p.keys[0]]
    assert q.keys[3] is None and fit_budget(p, 70) is p


def _state(key, length, nbytes_each=100):
    t = torch.zeros(nbytes_each // 4, dtype=torch.float32)
    return PrefixState(key, length, [t], [t.clone()], t.clone())


def test_the_cache_evicts_the_least_recently_used_within_its_budget():
    c = PrefixCache(budget_bytes=700)
    for k in (b"a", b"b"):
        c.put(_state(k, 3))  # 300 bytes each
    assert c.get(b"a") is not None  # a is now the most recent
    c.put(_state(b"c", 5))
    assert b"b" not in c and b"a" in c and b"c" in c and c.counts["evictions"] == 1
    assert c.lengths() == [5, 3] and c.bytes == 600
    c.put(_state(b"huge", 9, nbytes_each=400))  # 1,200 bytes: more than the whole budget
    assert b"huge" not in c and c.counts["too_large"] == 1 and c.bytes == 600


# ------------------------------------------------------------------ the engine


def _sample(i, ids, positions):
    return RenderedSample(i, str(i), np.asarray(ids, np.int32), np.asarray(positions, np.int32))


def _preamble_samples(n=24, seed=0):
    """Samples under two long shared prefixes (sharing a first part), and some with none;
    some scored inside the prefix (a shared earlier assistant turn)."""
    rng = np.random.default_rng(seed)
    sys_a = rng.integers(5, 200, 60)
    sys_b = np.concatenate([sys_a[:25], rng.integers(5, 200, 40)])
    out = []
    for i in range(n):
        pre = (sys_a, sys_b, rng.integers(5, 200, 3))[i % 3]
        ids = np.concatenate([[1], pre, rng.integers(5, 200, rng.integers(6, 30))])
        pos = np.arange(len(ids) - 6, len(ids))
        if i % 4 == 0:
            pos = np.concatenate([[4, 5, 6], pos])
        out.append(_sample(i, ids, pos))
    return out


def test_sharing_gives_the_same_logprobs_and_features(demo_assets, tokenizer):
    samples = _preamble_samples() + rendered(tokenizer, "model")  # every format, pairs too

    def engine(**kw):
        cfg = EngineConfig(dtype="float32", forward_tokens=200, **kw)
        return TorchEngine(demo_assets.base, cfg, name="base", pool="prompt")

    off = engine(share_prefixes=False)
    want, want_pooled = off.response_logprobs(samples), off.pooled
    # a budget of a few prefixes' states: kept ones are evicted, some not shared
    on, tight = engine(), engine(prefix_cache_gb=3e-4)
    for e in (on, tight):
        for _ in range(2):  # the second call reuses what the first kept
            got = e.response_logprobs(samples)
            for a, b in zip(want, got, strict=True):
                np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)
            # the features pooled over prompt tokens, most of them inside a prefix
            np.testing.assert_allclose(e.pooled, want_pooled, atol=1e-5, rtol=0)
    ps, pt = on.info()["prefix_sharing"], tight.info()["prefix_sharing"]
    assert ps["tokens_skipped"] > ps["tokens_computed"] / 2 and ps["prefixes_reused"] > 0
    # the tight budget evicts, and builds no more a call than it can keep: it shares less
    assert ps["evictions"] == 0 and pt["evictions"] > 0
    assert 0 < pt["tokens_skipped"] < ps["tokens_skipped"]
    total = sum(s.n_tokens for s in samples) * 2
    assert ps["tokens_computed"] + ps["tokens_skipped"] == total
    assert "prefix_sharing" not in off.info()


def test_sharing_equals_an_independent_transformers_computation(demo_assets):
    samples = _preamble_samples(n=12, seed=1)
    e = TorchEngine(demo_assets.ref, EngineConfig(dtype="float32"), name="ref")
    got = e.response_logprobs(samples)
    assert e.info()["prefix_sharing"]["tokens_skipped"] > 0
    for a, b in zip(transformers_logprobs(demo_assets.ref, samples), got, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)


def _flash_varlen(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None,
                  window_size=(-1, -1), enable_gqa=False, **_):  # fmt: skip
    """flash attention's semantics for fewer queries than keys: causal aligned at the
    bottom right, sequence by sequence of ``cu_seq_q`` and ``cu_seq_k``."""
    out = torch.empty_like(query)
    cq, ck = cu_seq_q.tolist(), cu_seq_k.tolist()
    for j in range(len(cq) - 1):
        q = query[cq[j] : cq[j + 1]].transpose(0, 1)
        k, v = (x[ck[j] : ck[j + 1]].transpose(0, 1) for x in (key, value))
        lq, lk = q.shape[1], k.shape[1]
        mask = torch.ones((lq, lk), dtype=torch.bool).tril(diagonal=lk - lq)
        if window_size != (-1, 0):
            mask[:] = True
        o = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=scale, enable_gqa=enable_gqa
        )
        out[cq[j] : cq[j + 1]] = o.transpose(0, 1)
    return out


def test_one_varlen_call_over_prefixes_and_remainders_equals_sdpa_per_sample():
    """The CUDA path's layout (each prefix's keys ahead of its remainder's, one call),
    against a stand-in with flash attention's alignment, on CPU."""
    torch.manual_seed(0)
    heads, kv, d = 4, 2, 8

    def state(key, n):
        return PrefixState(key, n, [torch.randn(n, kv, d)], [torch.randn(n, kv, d)], None)

    pre = [state(b"p", 5), None, state(b"q", 3)]
    samples = [_sample(0, np.arange(9), [8]), _sample(1, np.arange(4), [3]),
               _sample(2, np.arange(7), [6])]  # fmt: skip
    b = to_device(pack_samples(samples, pre), torch.device("cpu"))
    t = b.token_ids.shape[0]
    assert t == 4 + 4 + 4 and b.cu_k.tolist() == [0, 9, 13, 20] and b.max_len_k == 9
    assert b.positions.tolist() == [5, 6, 7, 8, 0, 1, 2, 3, 3, 4, 5, 6]
    q, k, v = torch.randn(t, heads, d), torch.randn(t, kv, d), torch.randn(t, kv, d)
    want = sdpa_per_sequence(q, k, v, batch=b, scale=d**-0.5)
    got = varlen_attention(q, k, v, batch=b, scale=d**-0.5, fn=_flash_varlen)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    # and the prefix is attended to: without it the first sample's output differs
    plain = pack_samples([_sample(0, np.arange(4), [3])] + samples[1:])
    alone = sdpa_per_sequence(q, k, v, batch=to_device(plain, torch.device("cpu")), scale=d**-0.5)
    assert not torch.allclose(alone[:4], want[:4])


def test_score_counts_what_sharing_spared_and_scores_as_without(tmp_path, demo_assets):
    """The CLI with sharing (the default) and ``--no-share-prefixes``: the same scores,
    and the manifest says what was computed and what a shared prefix spared."""
    import orjson

    from tests.helpers import cli, score_args

    system = {"role": "system", "content": "you answer in the old tongue, " * 5}
    recs = [orjson.loads(x) for x in demo_assets.data.read_bytes().splitlines()[:30]]
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"".join(
        orjson.dumps({"id": r["id"], "messages": [system, *r["messages"]]}) + b"\n" for r in recs
    ))  # fmt: skip
    rows, shared = {}, {}
    for name, extra in (("on", ()), ("off", ("--no-share-prefixes",))):
        out = tmp_path / f"{name}.jsonl"
        cli(*score_args(data, out, demo_assets.base, demo_assets.ref, *extra))
        rows[name] = [orjson.loads(x) for x in out.read_bytes().splitlines()]
        m = orjson.loads((tmp_path / f"{name}.manifest.json").read_bytes())
        shared[name] = m["engines"]["base"].get("prefix_sharing")
    for a, b in zip(rows["on"], rows["off"], strict=True):
        assert a["status"] == b["status"] == "ok"
        assert abs(a["loss_base"] - b["loss_base"]) < 1e-5
        assert abs(a["loss_ref"] - b["loss_ref"]) < 1e-5
    assert shared["off"] is None
    s = shared["on"]
    assert s["tokens_skipped"] > s["tokens_computed"] and s["prefixes_run"] >= 1


def test_a_deep_tree_is_walked_without_recursion():
    """Samples each one token longer than the last nest 300 deep: the planner walks them
    with its own stacks, under a recursion limit too low for a recursive walk, and leaves
    the limit as it was."""
    import sys

    from fastscore.engines.prefixes import plan_prefixes

    ids = [np.arange(k + 2) for k in range(300)]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(120)
    try:
        plan = plan_prefixes(ids, min_tokens=1)
        assert sys.getrecursionlimit() == 120
    finally:
        sys.setrecursionlimit(limit)
    for x, n, key in zip(ids, plan.lengths, plan.keys, strict=True):
        assert 0 <= n < len(x) and (n == 0) == (key is None)
        if key is not None:  # a prefix of this very sample, built here
            assert np.array_equal(plan.build[key], x[:n])
    run = sum(len(x) - n for x, n in zip(ids, plan.lengths, strict=True))
    run += sum(len(v) for v in plan.build.values())
    assert run < sum(len(x) for x in ids) / 5  # 45,450 tokens alone; shared, 7,940
    # past the walk's depth cap (200) the deepest samples share the last prefix it took
    assert plan.lengths[-1] == plan.lengths[-50] > 150
