"""Preference pairs (TRL's DPO shapes) end to end: score, select by margin, report; and
tool-calling and reasoning chats scored, not refused.

Each side's losses are held to an independent computation: TRL's DPO tokenization of
the pair (``tests/conversations.trl_dpo``) and plain transformers' logprobs.
"""

from __future__ import annotations

import math
import os

import numpy as np
import orjson
import pytest

from fastscore.records import RenderedSample
from fastscore.scoring.arithmetic import mean_nll
from tests.helpers import cli
from tests.helpers.reference import transformers_logprobs

if os.environ.get("CI") != "true":
    pytest.importorskip("trl")


def _pairs(demo_assets, n=24):
    """Prompts from the demo set as message lists; the chosen side is the set's answer,
    the rejected one the next record's answer."""
    recs = [orjson.loads(x) for x in demo_assets.data.read_bytes().splitlines()[: n + 1]]
    out = []
    for i, (r, other) in enumerate(zip(recs, recs[1:], strict=False)):
        user, answer = r["messages"]
        out.append(
            {
                "id": f"p{i}",
                "prompt": [user],
                "chosen": [answer],
                "rejected": [other["messages"][1]],
            }
        )
    return out


@pytest.fixture(scope="module")
def scored_pairs(tmp_path_factory, demo_assets):
    tmp = tmp_path_factory.mktemp("pref")
    pairs = _pairs(demo_assets)
    data = tmp / "pairs.jsonl"
    data.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in pairs))
    scores = tmp / "scores.jsonl"
    a = demo_assets
    cli("score", data, "--base", a.base, "--ref", a.ref, "--output", scores,
        "--engine", "torch", "--dtype", "float32", "--no-progress")  # fmt: skip
    rows = [orjson.loads(x) for x in scores.read_bytes().splitlines()]
    return tmp, data, pairs, scores, rows


def test_both_sides_are_scored_as_dpo_tokenizes_them(scored_pairs, demo_assets, tokenizer):
    from tests.helpers.conversations import trl_dpo

    _, _, pairs, scores, rows = scored_pairs
    manifest = orjson.loads(scores.with_name("scores.manifest.json").read_bytes())
    assert manifest["input"]["format"] == "preference"
    assert [r["id"] for r in rows] == [p["id"] for p in pairs]
    assert {r["status"] for r in rows} == {"ok"}
    expected = {}
    for side in ("chosen", "rejected"):
        samples = []
        for p in pairs:
            ids, mask = trl_dpo(tokenizer, p)[side]
            pos = np.asarray([i for i, m in enumerate(mask) if m and i >= 1], dtype=np.int32)
            samples.append(RenderedSample(0, p["id"], np.asarray(ids, np.int32), pos))
        for model in ("base", "ref"):
            lps = transformers_logprobs(getattr(demo_assets, model), samples)
            expected[model, side] = [mean_nll(lp) for lp in lps]
    for i, r in enumerate(rows):
        for side in ("chosen", "rejected"):
            lb, lr = expected["base", side][i], expected["ref", side][i]
            assert abs(r[f"loss_base_{side}"] - lb) < 1e-4
            assert abs(r[f"loss_ref_{side}"] - lr) < 1e-4
            assert abs(r[f"lobass_{side}"] - (lb - lr) / lb) < 1e-4
        assert r["loss_base"] == r["loss_base_chosen"] and r["lobass"] == r["lobass_chosen"]
        assert math.isclose(r["margin"], r["lobass_chosen"] - r["lobass_rejected"], abs_tol=1e-12)


def test_pairs_are_selected_by_margin_and_reported(scored_pairs):
    tmp, data, pairs, scores, rows = scored_pairs
    subset = tmp / "subset.jsonl"
    cli("select", scores, "--input", data, "--output", subset, "--score", "margin",
        "--top-k", "5", "--coverage", "none")  # fmt: skip
    best = sorted(range(len(rows)), key=lambda i: (-rows[i]["margin"], i))[:5]
    got = [orjson.loads(x)["id"] for x in subset.read_bytes().splitlines()]
    assert got == [pairs[i]["id"] for i in sorted(best)]  # in input order
    cli("report", scores, "--input", data, "--output-dir", tmp / "report", "--score", "margin",
        "--top-k", "5")  # fmt: skip
    html = (tmp / "report" / "report.html").read_text()
    assert "margin" in html and "rejected" in html  # the pair's sides are shown


def test_tool_calls_and_reasoning_are_scored_not_refused(tmp_path, demo_assets):
    from tests.helpers.conversations import CONVERSATIONS

    data = tmp_path / "d.jsonl"
    data.write_bytes(
        b"".join(orjson.dumps({"id": k, **v}) + b"\n" for k, v in CONVERSATIONS.items())
    )
    out = tmp_path / "s.jsonl"
    a = demo_assets
    cli("score", data, "--base", a.base, "--ref", a.ref, "--output", out, "--engine", "torch",
        "--dtype", "float32", "--no-progress")  # fmt: skip
    rows = {r["id"]: r for r in map(orjson.loads, out.read_bytes().splitlines())}
    assert {r["status"] for r in rows.values()} == {"ok"}, rows
    assert rows["tool_call"]["n_response_tokens"] > rows["one_turn"]["n_response_tokens"]
