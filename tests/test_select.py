import math

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fastscore.config import SelectConfig
from fastscore.errors import ConfigError, InputError
from fastscore.selection import choose, select

VALUES = [(0, 0.5), (1, 0.9), (2, 0.5), (3, 0.1), (5, 0.9)]  # record 4 is not eligible


def test_top_k_ties_go_to_the_earlier_record():
    assert choose(VALUES, 6, SelectConfig(top_k=1)) == [1]
    assert choose(VALUES, 6, SelectConfig(top_k=3)) == [0, 1, 5]
    assert choose(VALUES, 6, SelectConfig(top_k=3, order="asc")) == [0, 2, 3]
    assert choose(VALUES, 6, SelectConfig(top_k=99)) == [0, 1, 2, 3, 5]


def test_fraction_is_of_all_records_floored():
    assert choose(VALUES, 6, SelectConfig(fraction=0.5)) == [0, 1, 5]  # floor(3.0)
    assert choose(VALUES, 6, SelectConfig(fraction=0.49)) == [1, 5]  # floor(2.94)
    assert choose(VALUES, 10, SelectConfig(fraction=0.3)) == [0, 1, 5]  # 0.3*10 is 3, not 2.99


def test_threshold():
    assert choose(VALUES, 6, SelectConfig(threshold=0.5)) == [0, 1, 2, 5]
    assert choose(VALUES, 6, SelectConfig(threshold=0.1, order="asc")) == [3]


def _write(tmp_path, records, scores):
    inp = tmp_path / "in.jsonl"
    # odd spacing and key order: the subset must keep the bytes
    inp.write_bytes(
        b"".join(
            b'{ "z": 1,  "prompt": "p", "response": "r", "id": %s }\n' % orjson.dumps(r)
            for r in records
        )
    )
    sc = tmp_path / "scores.jsonl"
    sc.write_bytes(b"".join(orjson.dumps(s) + b"\n" for s in scores))
    return inp, sc


def _scores(ids, values, statuses=None):
    statuses = statuses or ["ok"] * len(ids)
    return [
        {"id": i, "index": n, "status": st, "lobass": v, "rho": -n}
        for n, (i, v, st) in enumerate(zip(ids, values, statuses))
    ]


def test_select_writes_input_lines_unchanged_and_in_order(tmp_path):
    ids = ["a", "b", "c", "d", "e"]
    inp, sc = _write(
        tmp_path,
        ids,
        _scores(ids, [0.2, math.nan, 0.9, None, 0.5], ["ok", "ok", "ok", "ok", "too_long"]),
    )
    out = tmp_path / "sub.jsonl"
    summary = select(scores=str(sc), input=str(inp), output=str(out), top_k=3)
    lines = inp.read_bytes().splitlines(keepends=True)
    # nan, null and not-ok are never chosen; only 2 are eligible, and that is reported
    assert out.read_bytes() == lines[0] + lines[2]
    assert summary["selected"] == 2 and summary["short_by"] == 1 and summary["eligible"] == 2
    select(scores=str(sc), input=str(inp), output=str(out), top_k=1, score="rho")
    assert out.read_bytes() == lines[0]


def test_select_to_json_and_parquet(tmp_path):
    ids = ["a", "b", "c"]
    inp, sc = _write(tmp_path, ids, _scores(ids, [0.1, 0.3, 0.2]))
    select(scores=str(sc), input=str(inp), output=str(tmp_path / "s.json"), top_k=2)
    assert [r["id"] for r in orjson.loads((tmp_path / "s.json").read_bytes())] == ["b", "c"]
    pin = tmp_path / "in.parquet"
    table = pa.Table.from_pylist([{"id": i, "prompt": "p", "response": "r", "w": 1.5} for i in ids])
    pq.write_table(table, pin)
    select(scores=str(sc), input=str(pin), output=str(tmp_path / "s.parquet"), top_k=2)
    got = pq.read_table(tmp_path / "s.parquet")
    assert got.schema == table.schema and got.column("id").to_pylist() == ["b", "c"]


def test_select_refuses_scores_of_another_input(tmp_path):
    inp, sc = _write(tmp_path, ["a", "b"], _scores(["a", "x"], [0.1, 0.2]))
    with pytest.raises(InputError, match="has id 'b' but the scores file says 'x'"):
        select(scores=str(sc), input=str(inp), output=str(tmp_path / "o.jsonl"), top_k=1)
    inp2, sc2 = _write(tmp_path, ["a", "b", "c"], _scores(["a", "b"], [0.1, 0.2]))
    with pytest.raises(InputError, match="more records than the scores file"):
        select(scores=str(sc2), input=str(inp2), output=str(tmp_path / "o.jsonl"), top_k=1)
    assert not (tmp_path / "o.jsonl").exists()


def test_select_argument_errors(tmp_path):
    inp, sc = _write(tmp_path, ["a"], _scores(["a"], [0.1]))
    with pytest.raises(ConfigError, match="exactly one of"):
        select(scores=str(sc), input=str(inp), output=str(tmp_path / "o.jsonl"))
    with pytest.raises(ConfigError, match="exactly one of"):
        select(
            scores=str(sc), input=str(inp), output=str(tmp_path / "o.jsonl"), top_k=1, fraction=0.1
        )
    with pytest.raises(InputError, match="score column 'ifd' is not in"):
        select(
            scores=str(sc), input=str(inp), output=str(tmp_path / "o.jsonl"), top_k=1, score="ifd"
        )
    with pytest.raises(ConfigError, match="must not be the input"):
        select(scores=str(sc), input=str(inp), output=str(inp), top_k=1)


def test_subset_lines_stay_aligned_after_a_bom_only_first_line(tmp_path):
    from fastscore.io import count_records

    inp = tmp_path / "in.jsonl"
    recs = [
        b'{"id": "a", "prompt": "p", "response": "r"}',
        b'{"id": "b", "prompt": "p", "response": "r"}',
    ]
    inp.write_bytes(b"\xef\xbb\xbf\n" + b"\n".join(recs) + b"\n")
    assert count_records(inp) == 2
    sc = tmp_path / "scores.jsonl"
    sc.write_bytes(b"".join(orjson.dumps(s) + b"\n" for s in _scores(["a", "b"], [0.1, 0.9])))
    out = tmp_path / "sub.jsonl"
    select(scores=str(sc), input=str(inp), output=str(out), top_k=1)
    assert out.read_bytes() == recs[1] + b"\n"


def test_api_functions_stay_callable_after_their_modules_load():
    """``fastscore.select`` / ``fastscore.run`` are functions, whatever was imported before
    (a module of the same name used to replace them after the first call)."""
    import fastscore
    import fastscore.demodata.build  # noqa: F401
    import fastscore.runner  # noqa: F401
    import fastscore.selection  # noqa: F401

    for name in ("score", "select", "run", "demo"):
        assert callable(getattr(fastscore, name)), name
        assert callable(getattr(fastscore, name)), name  # the second look too
