"""Property-based tests (hypothesis) of the readers, the parser and the renderer."""

from __future__ import annotations

import os

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastscore.data.formats import to_samples
from fastscore.data.readers import read_records
from fastscore.records import BAD_RECORD, NO_RESPONSE, OK, TOO_LONG, Message, RawRecord, Sample
from fastscore.rendering.renderer import Renderer

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)  # what JSON writers (orjson) can write
    | st.floats(allow_nan=False)
    | st.text(),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
# CI: a fixed set of examples, so a run is reproducible; FASTSCORE_HYPOTHESIS=thorough
# explores 1,000 fresh examples per test.
settings.register_profile(
    "fastscore",
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("FASTSCORE_HYPOTHESIS", "fastscore"))


@given(st.lists(st.one_of(json_values.map(orjson.dumps), st.binary(max_size=30)), max_size=20))
def test_jsonl_reader_yields_one_record_per_nonblank_line(tmp_path_factory, lines):
    lines = [ln.replace(b"\n", b" ").replace(b"\r", b" ") for ln in lines]
    path = tmp_path_factory.mktemp("p") / "x.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    records = list(read_records(path, "jsonl"))
    if lines:  # a UTF-8 BOM opening the file is not content
        lines[0] = lines[0].removeprefix(b"\xef\xbb\xbf")
    nonblank = [ln for ln in lines if ln.strip()]
    assert [r.index for r in records] == list(range(len(nonblank)))
    for r, ln in zip(records, nonblank, strict=True):
        assert (r.error is None) == _parses(ln)


def _parses(line: bytes) -> bool:
    try:
        orjson.loads(line)
        return True
    except orjson.JSONDecodeError:
        return False


@given(
    st.lists(json_values, max_size=15),
    st.sampled_from(["auto", "messages", "alpaca", "sharegpt", "prompt-response"]),
)
def test_parser_gives_every_record_a_status_never_an_exception(values, fmt):
    samples = list(to_samples([RawRecord(i, v) for i, v in enumerate(values)], fmt))
    assert [s.index for s in samples] == list(range(len(values)))
    for s in samples:
        assert s.status in (OK, BAD_RECORD)
        assert (s.status == OK) == (s.reason is None)


# Text without the special tokens' spelling, starting with a non-space character (a
# reply that starts with whitespace may merge with the template's newline before it).
text = st.text(st.characters(codec="utf-8", exclude_characters="<>"), max_size=40)
reply = st.builds(
    lambda a, b: a + b,
    st.characters(codec="utf-8", exclude_categories=["Z", "C"], exclude_characters="<>"),
    text,
)


@given(
    st.booleans(),
    st.lists(st.tuples(text, reply), min_size=1, max_size=4),
    st.sampled_from(["model", "plain"]),
)
def test_every_reply_is_scored_exactly(tokenizer, system, turns, template):
    msgs = [Message("system", "be brief")] if system else []
    for user, assistant in turns:
        msgs += [Message("user", user), Message("assistant", assistant)]
    r = Renderer(tokenizer, template, max_length=4096).render(Sample(0, 0, msgs))
    assert r.status in (OK, NO_RESPONSE, TOO_LONG)
    pos = r.response_positions.tolist()
    assert pos == sorted(set(pos)) and all(1 <= p < r.n_tokens for p in pos)
    eot = "<|im_end|>" if template == "model" else tokenizer.eos_token
    runs, cur, prev = [], [], None
    for p in pos:
        if prev is not None and p != prev + 1:
            runs.append(cur)
            cur = []
        cur.append(int(r.token_ids[p]))
        prev = p
    if cur:
        runs.append(cur)
    assert [tokenizer.decode(run) for run in runs] == [a + eot for _, a in turns]
