"""fastscore.selection.table: a scores file read once into columns, by hand."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from fastscore.errors import InputError
from fastscore.selection.table import ScoresTable


def _write(path, rows):
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


ROWS = [
    {"id": "a", "index": 0, "status": "ok", "n_response_tokens": 4, "lobass": 0.5, "rho": 1.0},
    {"id": "b", "index": 1, "status": "too_long", "n_response_tokens": 0, "lobass": None},
    {"id": "c", "index": 2, "status": "ok", "n_response_tokens": 2, "lobass": 0.25, "ifd": 2},
]


def test_columns_lengths_and_eligible_records(tmp_path):
    t = ScoresTable.read(_write(tmp_path / "s.jsonl", ROWS))
    assert len(t) == 3 and t.ids == ["a", "b", "c"] and t.status == ["ok", "too_long", "ok"]
    assert t.length.tolist() == [4.0, 0.0, 2.0]
    np.testing.assert_array_equal(t.columns["lobass"], [0.5, math.nan, 0.25])
    np.testing.assert_array_equal(t.columns["rho"], [1.0, math.nan, math.nan])  # absent: NaN
    np.testing.assert_array_equal(t.columns["ifd"], [math.nan, math.nan, 2.0])  # first seen late
    assert t.eligible("lobass") == [(0, 0.5), (2, 0.25)]  # never a record that was not scored
    assert t.eligible("length") == [(0, 4.0), (2, 2.0)]
    with pytest.raises(InputError, match="'margin' is not in"):
        t.values("margin")


def test_a_reordered_or_foreign_file_is_refused(tmp_path):
    with pytest.raises(InputError, match="has index 2, expected 1"):
        ScoresTable.read(_write(tmp_path / "r.jsonl", [ROWS[0], ROWS[2]]))
    with pytest.raises(InputError, match="is not a fastscore scores row"):
        ScoresTable.read(_write(tmp_path / "f.jsonl", [{"id": 1}]))


def test_the_input_format_comes_from_the_manifest_else_is_detected_once(tmp_path):
    scores = _write(tmp_path / "s.jsonl", ROWS)
    data = _write(tmp_path / "d.jsonl", [{"prompt": "p", "response": "r"}] * 3)
    t = ScoresTable.read(scores)
    assert t.fmt is None  # no manifest beside it
    assert t.input_format(data) == "prompt-response" and t.fmt == "prompt-response"
    data.unlink()  # kept: the input is not read again
    assert t.input_format(data) == "prompt-response"
    (tmp_path / "s.manifest.json").write_bytes(orjson.dumps({"input": {"format": "messages"}}))
    assert ScoresTable.read(scores).input_format(data) == "messages"


def test_the_input_kind_is_found_once_per_input(tmp_path):
    t = ScoresTable.read(_write(tmp_path / "s.jsonl", ROWS))
    data = _write(tmp_path / "d.jsonl", [{"prompt": "p", "response": "r"}] * 3)
    assert t.input_kind(data) == "jsonl"
    data.unlink()  # kept: the input is not looked at again
    assert t.input_kind(data) == "jsonl"
    other = tmp_path / "d.parquet"  # another input (a table reused): its own kind
    other.write_bytes(b"PAR1")
    assert t.input_kind(other) == "parquet"
