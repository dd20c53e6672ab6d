"""``inspect``'s formatting and token texts, by hand-made results (the command itself runs
against the demo models in test_everyday.py)."""

from __future__ import annotations

from fastscore.reporting.inspection import format_inspect, token_texts


def _tok(pos, text, scored, **lp):
    return {"position": pos, "text": text, "scored": scored, "computed": True, **lp}


def _result(**over):
    view = {
        "tokens": [
            _tok(0, "Q:", False),
            _tok(1, " hi", False),
            _tok(2, " A:", True, logprob_base=-2.0, logprob_ref=-0.5),
            _tok(3, " yo", True, logprob_base=-1.0, logprob_ref=-0.5),
            _tok(4, "\n", False),
        ],
        "n_tokens": 5,
        "n_response_tokens": 2,
        "loss_base": 1.5,
        "loss_ref": 0.5,
    }
    return {
        "index": 3,
        "id": "r3",
        "status": "ok",
        "reason": None,
        "template": {"name": "chatml", "rule": "generation", "trl_variant": None},
        **view,
        **over,
    }


def test_scored_runs_are_bracketed_and_listed_with_their_logprobs():
    text = format_inspect(_result(), color=False)
    head, blank, body, *table = text.splitlines()
    assert head == (
        "record 3 (id 'r3'), template chatml (rule generation): status ok, "
        "5 tokens, 2 scored (between ⟦ and ⟧)"
    )
    assert body == "Q: hi⟦ A: yo⟧"
    rows = [r for r in table if r.strip() and r.split()[0] in ("2", "3")]
    assert [r.split() for r in rows] == [
        ["2", '"', 'A:"', "-2.0000", "-0.5000", "+1.5000"],
        ["3", '"', 'yo"', "-1.0000", "-0.5000", "+0.5000"],
    ]
    # lobass = (1.5 - 0.5) / 1.5
    assert table[-1] == "mean loss: base 1.5000, ref 0.5000, lobass 0.6667"


def test_colour_marks_the_scored_tokens_and_dims_those_not_computed():
    r = _result()
    r["tokens"][0]["computed"] = False
    text = format_inspect(r, color=True)
    assert "\x1b[42;30m A: yo\x1b[0m" in text
    assert "\x1b[2mQ:\x1b[0m" in text


def test_a_preference_record_shows_each_side_and_the_scores_row():
    side = {k: v for k, v in _result().items() if k in ("n_tokens", "n_response_tokens")}
    side["tokens"] = [  # inspected without a reference: no logprobs
        {k: v for k, v in t.items() if not k.startswith("logprob")} for t in _result()["tokens"]
    ]
    r = _result(tokens=[], sides={"chosen": side, "rejected": side})
    r["scores_row"] = {"status": "ok", "margin": 0.25, "id": "r3"}
    lines = format_inspect(r, color=False).splitlines()
    assert lines[0].endswith("status ok")  # the counts go under each side's heading
    assert "== chosen: 5 tokens, 2 scored (between ⟦ and ⟧) ==" in lines
    assert "== rejected: 5 tokens, 2 scored (between ⟦ and ⟧) ==" in lines
    assert not any(ln.startswith("mean loss") for ln in lines)  # no logprobs: no losses
    assert lines[-1] == "scores file: status ok, margin 0.25"


def test_a_refused_record_says_why_and_has_no_tokens():
    r = _result(status="too_long", reason="512 tokens > --max-length 256", tokens=[])
    assert format_inspect(r, color=False) == (
        "record 3 (id 'r3'), template chatml (rule generation): status too_long "
        "(512 tokens > --max-length 256)"
    )


def test_a_zero_base_loss_prints_no_lobass():
    r = _result(loss_base=0.0, loss_ref=0.0)
    assert format_inspect(r, color=False).splitlines()[-1] == "mean loss: base 0.0000, ref 0.0000"


def test_token_texts_add_up_to_the_decoded_text(tokenizer):
    text = "hello kobu — the rega is black. ünïcode"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = token_texts(tokenizer, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == tokenizer.decode(ids)
