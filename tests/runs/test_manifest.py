"""The run manifest by hand-made counts, and the final write's order and files."""

from __future__ import annotations

import dataclasses

import orjson
import pyarrow.parquet as pq

from fastscore.config import ScoreConfig
from fastscore.data.source import find_source
from fastscore.runs.manifest import build_manifest, finish, write_manifest
from fastscore.runs.outputs import OutputPaths
from fastscore.runs.stats import Stats
from fastscore.scoring.session import SessionFacts

FACTS = SessionFacts(
    source=None,  # the input's, found by _manifest
    fmt="messages",
    models={"base": {"root": "/m/base"}, "ref": {"root": "/m/ref"}},
    template={"name": "chatml", "rule": "generation"},
    max_length=256,
)


def _manifest(tmp_path, counts, scoring_seconds=2.0, facts=FACTS):
    data = tmp_path / "d.jsonl"
    if not data.exists():  # written once: the fingerprint covers its size and mtime
        data.write_bytes(b'{"messages": []}\n')
    cfg = ScoreConfig(input=str(data), output=str(tmp_path / "s.jsonl"))
    facts = dataclasses.replace(facts, source=find_source(data))
    stats = Stats()
    stats.counts.update(counts)
    stats.seconds["render"] = 0.123456
    return build_manifest(
        cfg,
        facts,
        engine_info={"base": "torch"},
        stats=stats,
        scoring_seconds=scoring_seconds,
        total_seconds=3.0,
    )


def test_counts_by_status_hold_only_statuses_that_occurred(tmp_path):
    m = _manifest(tmp_path, {"records": 5, "status:ok": 3, "status:too_long": 2})
    assert m["counts"]["by_status"] == {"ok": 3, "too_long": 2}
    assert m["counts"]["records"] == 5
    assert m["input"]["format"] == "messages" and m["input"]["kind"] == "jsonl"
    assert m["template"] == FACTS.template and m["max_length"] == 256
    assert m["seconds"] == {"render": 0.1235, "scoring": 2.0, "total": 3.0}


def test_the_pace_leaves_out_what_a_resume_kept(tmp_path):
    m = _manifest(
        tmp_path,
        {
            "records": 100,
            "resumed_after_records": 60,
            "tokens_scored_samples": 1000,
            "resumed_tokens": 600,
        },
        scoring_seconds=4.0,
    )
    assert m["throughput"] == {"samples_per_second": 10.0, "tokens_per_second": 100.0}


def test_the_fingerprint_follows_the_models(tmp_path):
    other = dataclasses.replace(FACTS, models={"base": {"root": "/m/other"}, "ref": {}})
    a, b = (_manifest(tmp_path, {}, facts=f)["fingerprint"] for f in (FACTS, other))
    assert a != b and a == _manifest(tmp_path, {})["fingerprint"]


def test_write_manifest_replaces_the_file_whole(tmp_path):
    path = tmp_path / "m.json"
    write_manifest(path, {"a": 1})
    write_manifest(path, {"b": [1, 2]})
    assert orjson.loads(path.read_bytes()) == {"b": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary left


def _partial(paths):
    rows = [{"index": i, "id": f"r{i}", "status": "ok", "loss_base": 1.0} for i in range(3)]
    paths.partial.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    paths.run_record.write_bytes(b"{}")
    return rows


def test_finish_puts_the_scores_in_place_after_the_manifest(tmp_path):
    paths = OutputPaths.of(tmp_path / "s.jsonl")
    rows = _partial(paths)
    finish(paths, {"fastscore_manifest": 1})
    assert [orjson.loads(x) for x in paths.scores.read_bytes().splitlines()] == rows
    assert orjson.loads(paths.manifest.read_bytes()) == {"fastscore_manifest": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl", "s.manifest.json"]


def test_finish_writes_parquet_scores_from_the_jsonl_partial(tmp_path):
    paths = OutputPaths.of(tmp_path / "s.parquet")
    rows = _partial(paths)
    finish(paths, {"fastscore_manifest": 1})
    got = pq.read_table(paths.scores).to_pylist()
    assert [(r["index"], r["id"], r["loss_base"]) for r in got] == [
        (r["index"], r["id"], r["loss_base"]) for r in rows
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.manifest.json", "s.parquet"]
