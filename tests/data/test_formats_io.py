import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fastscore.data.formats import to_samples
from fastscore.data.readers import count_records, detect_file_kind, read_records
from fastscore.errors import InputError
from fastscore.records import BAD_RECORD, OK, RawRecord

MESSAGES = {
    "id": "m1",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}],
        },
    ],
}
ALPACA = {"instruction": "add", "input": "1 2", "output": "3"}
SHAREGPT = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
PR = {"prompt": "p", "response": "r"}


def _one(data, fmt="auto"):
    return next(to_samples([RawRecord(0, data)], fmt))


def test_each_format_and_auto_detection():
    m = _one(MESSAGES)
    assert m.status == OK and m.id == "m1"
    assert [(x.role, x.content) for x in m.messages] == [
        ("system", "be brief"),
        ("user", "hi"),
        ("assistant", "hello"),
    ]
    a = _one(ALPACA)
    assert [(x.role, x.content) for x in a.messages] == [("user", "add\n\n1 2"), ("assistant", "3")]
    assert _one({"instruction": "x", "input": "  ", "output": "y"}).messages[0].content == "x"
    s = _one(SHAREGPT)
    assert [(x.role, x.content) for x in s.messages] == [("user", "q"), ("assistant", "a")]
    p = _one(PR)
    assert [(x.role, x.content) for x in p.messages] == [("user", "p"), ("assistant", "r")]
    assert p.id is None and p.index == 0  # no id field: known by its position


@pytest.mark.parametrize(
    "data,fmt,reason",
    [
        ({"messages": "nope"}, "messages", "must be a list"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages", "role is 'robot'"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages", "must be a string"),
        ({"instruction": "x"}, "alpaca", "no 'output' field"),
        ({"conversations": [{"from": "alien", "value": "x"}]}, "sharegpt", "from is 'alien'"),
        ({"prompt": "x"}, "prompt-response", "no 'response' field"),
        ([1, 2], "messages", "must be a JSON object"),
    ],
)
def test_bad_records_get_a_reason(data, fmt, reason):
    s = _one(data, fmt)
    assert s.status == BAD_RECORD and reason in s.reason


def test_tool_calls_reasoning_and_record_extras_reach_the_template_untouched():
    call = {"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}
    s = _one(
        {
            "tools": '[{"type": "function", "function": {"name": "f"}}]',
            "chat_template_kwargs": {"enable_thinking": False},
            "messages": [
                {"role": "user", "content": "go"},
                {"role": "assistant", "tool_calls": [call]},  # no content at all
                {"role": "tool", "name": "f", "content": "3"},
                {"role": "assistant", "content": "3.", "reasoning_content": "f said 3"},
            ],
        }
    )
    assert s.status == OK and s.kind == "chat"
    assert s.tools == [{"type": "function", "function": {"name": "f"}}]
    assert s.template_kwargs == {"enable_thinking": False}
    assert [m.to_dict() for m in s.messages] == [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "3", "name": "f"},
        {"role": "assistant", "content": "3.", "reasoning_content": "f said 3"},
    ]


def test_trl_prompt_completion_and_preference_shapes():
    pc = _one({"prompt": [{"role": "user", "content": "q"}], "completion": [
        {"role": "assistant", "content": "a"}]})  # fmt: skip
    assert pc.kind == "completion" and [m.role for m in pc.messages] == ["user"]
    assert [m.content for m in pc.completions["completion"]] == ["a"]
    text = _one({"prompt": "The sky is", "completion": " blue."})
    assert text.text == "The sky is" and text.completions == {"completion": " blue."}
    pref = _one({"prompt": "2+2=", "chosen": "4", "rejected": "5"})
    assert pref.kind == "preference" and pref.completions == {"chosen": "4", "rejected": "5"}
    u = {"role": "user", "content": "2+2?"}
    implicit = _one(
        {
            "chosen": [u, {"role": "assistant", "content": "4"}],
            "rejected": [u, {"role": "assistant", "content": "5"}],
        }
    )
    # TRL's extract_prompt: the longest common prefix of the two conversations
    assert [m.to_dict() for m in implicit.messages] == [u]
    assert [m.content for m in implicit.completions["rejected"]] == ["5"]
    mixed = _one({"prompt": "x", "chosen": [u], "rejected": "y"}, "preference")
    assert mixed.status == BAD_RECORD and "all strings or all message lists" in mixed.reason


def test_auto_holds_the_file_to_its_format():
    raws = [RawRecord(0, {"x": 1}), RawRecord(1, PR), RawRecord(2, ALPACA)]
    out = list(to_samples(raws))
    assert [s.index for s in out] == [0, 1, 2]
    assert [s.status for s in out] == [BAD_RECORD, OK, BAD_RECORD]
    assert "no 'prompt' field" in out[2].reason


def test_auto_with_no_recognisable_record_reports_every_one():
    out = list(to_samples([RawRecord(0, {"x": 1}), RawRecord(1, None, error="line 2: bad")]))
    assert [s.status for s in out] == [BAD_RECORD, BAD_RECORD]
    assert out[1].reason == "line 2: bad"


def test_readers(tmp_path):
    recs = [PR, ALPACA, SHAREGPT]
    jl = tmp_path / "a.jsonl"
    jl.write_bytes(
        b"".join(orjson.dumps(r) + b"\n" for r in recs[:2]) + b"\n{broken\n" + orjson.dumps(recs[2])
    )
    got = list(read_records(jl))
    assert [r.index for r in got] == [0, 1, 2, 3]  # the blank line is not a record
    assert got[2].data is None and "line 4: invalid JSON" in got[2].error
    assert got[3].data == SHAREGPT
    assert count_records(jl) == 4

    js = tmp_path / "b.json"
    js.write_bytes(orjson.dumps(recs))
    assert detect_file_kind(js) == "json"
    assert [r.data for r in read_records(js)] == recs

    pqf = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist([PR, {"prompt": "p2", "response": "r2"}]), pqf)
    assert [r.data for r in read_records(pqf)][1] == {"prompt": "p2", "response": "r2"}
    assert count_records(pqf) == 2


def test_reader_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        detect_file_kind(tmp_path / "missing.jsonl")
    bad = tmp_path / "obj.json"
    bad.write_text('{"a": 1}\n{"a": 2}')  # JSONL under a .json name is read as JSONL
    assert detect_file_kind(bad) == "jsonl"
    notarr = tmp_path / "x.json"
    notarr.write_text("[1, ")
    with pytest.raises(InputError, match="not valid JSON"):
        list(read_records(notarr))
