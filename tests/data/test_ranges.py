"""Parts of an input surveyed apart add up to what a whole-file pass finds: record
indices, line numbers, where each part starts, and every duplicate id."""

from __future__ import annotations

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from fastscore.data.ids import duplicate_records
from fastscore.data.ranges import byte_ranges, plan, survey_jsonl, survey_rows
from fastscore.data.readers import count_records, read_record_range, read_records


def _rec(rid):
    r = {"prompt": "p", "response": "r"}
    if rid is not None:
        r["id"] = rid
    return orjson.dumps(r)


LINE = st.one_of(
    st.sampled_from([None, 0, 1, 2, 3, 5, "a", "b", "3", 2.0, True]).map(_rec),
    st.just(b""),  # a blank line
    st.just(b"   "),
    st.just(b"{not json"),
    st.just(b"[1, 2]"),  # parses, not a record
)


def _write(path, lines, *, bom, last_newline):
    blob = b"\n".join(lines) + (b"\n" if last_newline else b"")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + blob)


def _surveyed(path, n_parts):
    size = path.stat().st_size
    return plan(
        [survey_jsonl(path, "prompt-response", a, b) for a, b in byte_ranges(size, n_parts)]
    )


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(LINE, min_size=1, max_size=25),
    n_parts=st.integers(1, 40),
    bom=st.booleans(),
    last_newline=st.booleans(),
)
def test_jsonl_parts_add_up_to_the_whole_file(tmp_path_factory, lines, n_parts, bom, last_newline):
    path = tmp_path_factory.mktemp("r") / "d.jsonl"
    _write(path, lines, bom=bom, last_newline=last_newline)
    p = _surveyed(path, n_parts)
    assert p.records == count_records(path, "jsonl")
    assert p.duplicates == duplicate_records(path, "jsonl", "prompt-response")
    want = list(read_records(path, "jsonl"))
    got = []
    for lo, hi in p.ranges:  # each part read from its start alone gives the same records
        got += list(read_record_range(path, "jsonl", lo=lo, hi=hi, start=p.starts.get(lo)))
    assert [(r.index, r.data, r.error) for r in got] == [(r.index, r.data, r.error) for r in want]


def test_byte_ranges_cover_the_file_once():
    assert byte_ranges(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert byte_ranges(2, 5) == [(0, 1), (1, 2)]
    assert byte_ranges(0, 4) == [(0, 0)]


def test_positions_are_a_namespace_apart_from_explicit_ids(tmp_path):
    path = tmp_path / "d.jsonl"
    # record 1 has no id (known by its position 1); record 3 says id 1, record 5 too;
    # record 4 says "1", another id
    _write(path, [_rec("x"), _rec(None), _rec("y"), _rec(1), _rec("1"), _rec(1)], bom=False,
           last_newline=True)  # fmt: skip
    for n in (1, 2, 6):
        assert _surveyed(path, n).duplicates == {5: 3}


def test_parquet_row_groups_add_up(tmp_path):
    path = tmp_path / "d.parquet"
    rows = [{"id": f"r{i % 7}", "prompt": "p", "response": "r"} for i in range(20)]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=6)
    parts = [survey_rows(path, "parquet", "prompt-response", lo, min(lo + 8, 20))
             for lo in range(0, 20, 8)]  # fmt: skip
    p = plan(parts)
    assert p.records == 20 and p.ranges == [(0, 8), (8, 16), (16, 20)]
    assert p.duplicates == duplicate_records(path, "parquet", "prompt-response")
