"""Every kind of bad input gets a status and a reason, the run goes on; --strict stops."""

from __future__ import annotations

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fastscore
from fastscore.config import EngineConfig
from fastscore.errors import InputError
from tests.helpers.bad_inputs import CORPUS, GOOD, GOOD_2


@pytest.fixture(scope="module")
def score(demo_assets):
    def run(path, out, **fields):
        return fastscore.score(
            input=str(path),
            output=str(out),
            base=str(demo_assets.base),
            ref=str(demo_assets.ref),
            progress=False,
            engine=EngineConfig(kind="torch", dtype="float32"),
            **fields,
        )

    return run


def _rows(path):
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def test_corpus_has_twenty_kinds_or_more():
    assert len({kind for kind, *_ in CORPUS}) >= 20


def test_each_bad_record_gets_its_status_and_reason(tmp_path, score):
    data = tmp_path / "bad.jsonl"
    # a BOM, CRLF endings and blank lines around the records change nothing
    lines = [b"\xef\xbb\xbf" + GOOD] + [raw for _, raw, _, _ in CORPUS] + [GOOD_2]
    data.write_bytes(b"\r\n".join(lines) + b"\r\n\r\n")
    out = tmp_path / "s.jsonl"
    m = score(data, out)
    rows = _rows(out)
    assert len(rows) == len(CORPUS) + 2  # nothing dropped
    assert rows[0]["status"] == rows[-1]["status"] == "ok"
    for (kind, _, status, reason), row in zip(CORPUS, rows[1:-1], strict=True):
        assert row["status"] == status, (kind, row)
        assert reason in row["reason"], (kind, row)
        assert row["lobass"] is None and row["loss_base"] is None, kind  # no made-up score
    assert m["counts"]["records"] == len(CORPUS) + 2
    assert sum(m["counts"]["by_status"].values()) == len(CORPUS) + 2


def test_strict_stops_at_the_first_with_its_line(tmp_path, score):
    data = tmp_path / "bad.jsonl"
    data.write_bytes(GOOD + b"\n\n" + GOOD_2 + b"\n" + CORPUS[6][1] + b"\n" + GOOD + b"\n")
    with pytest.raises(
        InputError,
        match=r"line 4 \(record 2\): bad_record: messages: "
        r"'messages' must be a list",
    ):
        score(data, tmp_path / "s.jsonl", strict=True)


def test_empty_file_and_whitespace_file(tmp_path, score):
    for name, content in (("empty.jsonl", b""), ("blank.jsonl", b"\n \n\t\n")):
        data = tmp_path / name
        data.write_bytes(content)
        out = tmp_path / (name + ".scores.jsonl")
        with pytest.raises(InputError, match="nothing to score: .* has no records"):
            score(data, out)
        assert not out.exists() and not out.with_name(out.name + ".partial").exists()
        m = score(data, out, allow_empty=True)  # what a pipeline asks for
        assert out.read_bytes() == b"" and m["counts"]["records"] == 0


def test_parquet_of_another_schema(tmp_path, score):
    data = tmp_path / "other.parquet"
    pq.write_table(pa.Table.from_pylist([{"x": 1, "y": "a"}, {"x": 2, "y": "b"}]), data)
    out = tmp_path / "s.jsonl"
    with pytest.raises(InputError, match=r"(?s)none of the 2 records .* record 0: bad_record"):
        score(data, out)
    score(data, out, allow_empty=True)
    rows = _rows(out)
    assert [r["status"] for r in rows] == ["bad_record", "bad_record"]
    assert "fits no known format" in rows[0]["reason"]


def test_json_file_that_is_not_an_array(tmp_path, score):
    data = tmp_path / "x.json"
    data.write_bytes(b'["not", "records"')
    with pytest.raises(InputError, match="not valid JSON"):
        score(data, tmp_path / "s.jsonl")
