"""The Python API's input as a datasets.Dataset or a list of records (issue 31, case 10):
read where it is, with the scores, subset and report of the same records in a file."""

from __future__ import annotations

import datasets
import orjson
import pyarrow.parquet as pq
import pytest

import fastscore
from fastscore.config import EngineConfig
from fastscore.data.memory import InMemory
from fastscore.errors import ConfigError, InputError

TORCH = EngineConfig(kind="torch", dtype="float32")


def _records(demo_assets, n=24):
    return [orjson.loads(x) for x in demo_assets.data.read_bytes().splitlines()[:n]]


def _rows(path):
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def _score(demo_assets, data, out, **fields):
    return fastscore.score(input=data, base=str(demo_assets.base), ref=str(demo_assets.ref),
                           output=str(out), progress=False, engine=TORCH, **fields)  # fmt: skip


def test_a_dataset_and_a_list_score_as_their_file(tmp_path, demo_assets):
    """A fastscore.score(input=datasets.Dataset) failed: 'expected str, bytes or
    os.PathLike object, not Dataset'."""
    recs = _records(demo_assets)
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    ds = datasets.Dataset.from_list(recs)
    assert ds.cache_files == []  # in memory: there is no file it could be read from
    _score(demo_assets, str(path), tmp_path / "f.jsonl")
    want = _rows(tmp_path / "f.jsonl")
    m = _score(demo_assets, ds, tmp_path / "ds.jsonl")
    assert _rows(tmp_path / "ds.jsonl") == want  # the same lines, to the last bit
    assert m["input"] == {"path": str(InMemory(ds)), "kind": "dataset", "format": "messages"}
    # a list of records, with one that is no record: a bad_record, as in a file
    listed = [*recs, "not a record"]
    _score(demo_assets, listed, tmp_path / "list.jsonl")
    got = _rows(tmp_path / "list.jsonl")
    assert got[:-1] == want and got[-1]["status"] == "bad_record" and got[-1]["id"] is None
    # a shuffled dataset (an indices mapping) is read in its own order
    shuffled = ds.shuffle(seed=3)
    _score(demo_assets, shuffled, tmp_path / "shuffled.jsonl")
    assert [r["id"] for r in _rows(tmp_path / "shuffled.jsonl")] == shuffled["id"]


def test_select_report_and_inspect_take_a_dataset(tmp_path, demo_assets):
    recs = _records(demo_assets)
    ds = datasets.Dataset.from_list(recs)
    scores = tmp_path / "s.jsonl"
    _score(demo_assets, ds, scores)
    sub = tmp_path / "sub.parquet"
    s = fastscore.select(scores=str(scores), input=ds, output=str(sub), top_k=5,
                         coverage="none")  # fmt: skip
    table = pq.read_table(sub)
    assert s["selected"] == 5 == table.num_rows and table.schema == ds.data.schema
    listed = tmp_path / "sub.jsonl"
    fastscore.select(scores=str(scores), input=recs, output=str(listed), top_k=5, coverage="none")
    assert [orjson.loads(x) for x in listed.read_bytes().splitlines()] == table.to_pylist()
    rep = fastscore.report(scores=str(scores), input=ds, output_dir=str(tmp_path / "rep"))
    assert rep["records"] == len(recs) and (tmp_path / "rep" / "report.html").exists()
    assert fastscore.inspect(input=ds, base=str(demo_assets.base), index=3)["id"] == recs[3]["id"]
    # a scores file of another input is told apart, as with files
    other = datasets.Dataset.from_list(recs[:-1])
    with pytest.raises(InputError, match="has 23 records but the scores file has 24"):
        fastscore.select(scores=str(scores), input=other, output=str(sub), top_k=5)


def test_inputs_that_cannot_be_read_again_are_refused(tmp_path, demo_assets):
    recs = _records(demo_assets, 4)
    ds = datasets.Dataset.from_list(recs)
    with pytest.raises(InputError, match="can be read only once .* pass list"):
        _score(demo_assets, iter(recs), tmp_path / "s.jsonl")
    with pytest.raises(InputError, match=r"DatasetDict with splits \['train'\]; give one split"):
        _score(demo_assets, datasets.DatasetDict(train=ds), tmp_path / "s.jsonl")
    with pytest.raises(InputError, match="IterableDataset: it streams once"):
        _score(demo_assets, ds.to_iterable_dataset(), tmp_path / "s.jsonl")
    with pytest.raises(ConfigError, match="Ray's workers cannot read"):
        _score(demo_assets, ds, tmp_path / "s.jsonl", executor="ray")
    assert not (tmp_path / "s.jsonl").exists()


def test_in_memory_inputs_are_named_by_their_content():
    a = InMemory([{"id": 1}, {"id": 2}])
    assert InMemory([{"id": 1}, {"id": 2}]) == a  # the same records, the same name
    assert InMemory([{"id": 1}, {"id": 3}]) != a and a.signature()[0] == 2
    ds = datasets.Dataset.from_list([{"id": 1}, {"id": 2}])
    assert InMemory(ds).signature() != InMemory(ds.map(lambda r: {"id": r["id"] + 1})).signature()
    assert InMemory(a) is a
