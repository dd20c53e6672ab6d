"""What must hold when a run is resumed, sharded or fed repeats: no stale score, no
needless refusal, no needless work. Each test failed on the code before issue 14."""

from __future__ import annotations

import shutil

import orjson
import pytest

import fastscore
from fastscore.config import EngineConfig
from fastscore.errors import ConfigError
from tests.helpers import killed_run, retrain_in_place

pytestmark = pytest.mark.engine
TORCH = EngineConfig(kind="torch", dtype="float32")


def _data(tmp_path, demo_assets, n=40):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"".join(demo_assets.data.read_bytes().splitlines(True)[:n]))
    return path


def test_resume_refuses_scores_of_a_reference_retrained_in_place(tmp_path, demo_assets):
    ref = tmp_path / "sft"
    shutil.copytree(demo_assets.ref, ref)
    data, out = _data(tmp_path, demo_assets), tmp_path / "s.jsonl"
    killed_run(data, out, demo_assets.base, ref)
    retrain_in_place(ref)
    with pytest.raises(ConfigError, match=r"the ref model .*sft \(its contents changed"):
        fastscore.score(input=str(data), base=str(demo_assets.base), ref=str(ref),
                        output=str(out), resume=True, progress=False, engine=TORCH)  # fmt: skip


def test_options_that_cannot_change_a_score_do_not_block_a_resume(tmp_path, demo_assets):
    data, out = _data(tmp_path, demo_assets), tmp_path / "s.jsonl"
    killed_run(data, out, demo_assets.base, demo_assets.ref, "--batch-tokens", "300")
    m = fastscore.score(
        input=str(data),
        base=str(demo_assets.base),
        ref=str(demo_assets.ref),
        output=str(out),
        resume=True,
        progress=False,
        strict=True,
        batch_tokens=1000,
        engine=EngineConfig(
            kind="torch", dtype="float32", concurrency=3, request_timeout=9.0, retry_seconds=5
        ),
    )
    assert m["counts"]["resumed_after_records"] == 40 and m["counts"]["records"] == 40


def test_identical_samples_are_computed_once(tmp_path, demo_assets):
    lines = demo_assets.data.read_bytes().splitlines()[:20]
    data = tmp_path / "d.jsonl"
    with open(data, "wb") as f:
        for copy in range(3):
            for line in lines:
                rec = orjson.loads(line)
                f.write(orjson.dumps({**rec, "id": f"{rec['id']}-{copy}"}) + b"\n")
    out = tmp_path / "s.jsonl"
    m = fastscore.score(input=str(data), base=str(demo_assets.base), ref=str(demo_assets.ref),
                        output=str(out), progress=False, batch_tokens=200,
                        engine=TORCH)  # fmt: skip
    assert m["counts"]["identical_samples"] == 40  # two repeats of each of 20
    rows = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert m["counts"]["engine_tokens"] * 3 == sum(r["n_tokens"] for r in rows)
    for k in range(20):
        first = rows[k]
        for r in (rows[20 + k], rows[40 + k]):
            assert (r["loss_base"], r["loss_ref"]) == (first["loss_base"], first["loss_ref"])


def test_shards_read_their_records_without_parsing_the_earlier_ones(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    import fastscore.data.readers as io

    recs = [{"id": i, "prompt": f"p{i}", "response": f"r{i}"} for i in range(1000)]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf\n" + b"".join(orjson.dumps(r) + b"\n\n" for r in recs))
    parsed = []
    real = io.parse_line
    monkeypatch.setattr(io, "parse_line", lambda i, n, line: parsed.append(i) or real(i, n, line))
    starts = io.jsonl_starts(jsonl, [700])
    got = list(io.read_record_range(jsonl, "jsonl", lo=700, hi=710, start=starts[700]))
    assert [r.data["id"] for r in got] == list(range(700, 710))
    assert parsed == list(range(700, 710))  # nothing before record 700 was parsed
    assert starts[700][1] == 2 + 2 * 700  # its line number, blank lines counted
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(recs), parquet, row_group_size=100)
    seen = []
    real_iter = pq.ParquetFile.iter_batches

    def spy(self, *a, **kw):
        seen.append(kw.get("row_groups"))
        return real_iter(self, *a, **kw)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    got = list(io.read_record_range(parquet, "parquet", lo=450, hi=520))
    assert [r.data["id"] for r in got] == list(range(450, 520)) and seen == [[4, 5]]


def test_train_ref_flags_duplicate_ids_as_score_does(tmp_path, demo_assets):
    lines = demo_assets.data.read_bytes().splitlines()[:10]
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"\n".join([*lines, lines[2]]) + b"\n")  # record 2's id again
    m = fastscore.train_ref(input=str(data), base=str(demo_assets.base),
                            output_dir=str(tmp_path / "ref"), max_steps=1, batch_size=4,
                            progress=False)  # fmt: skip
    assert m["counts"]["by_status"] == {"ok": 10, "duplicate_id": 1}
    assert m["trained_samples"] == 10


def test_dedup_reads_the_input_in_the_format_the_scores_were_made_with(tmp_path):
    """Records that are duplicates as prompt-response pairs but not as their messages:
    scored with --format prompt-response, select --dedup must drop the repeat."""
    recs = [
        {"id": 0, "prompt": "same q", "response": "same a",
         "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "1"}]},
        {"id": 1, "prompt": "same q", "response": "same a",
         "messages": [{"role": "user", "content": "y"}, {"role": "assistant", "content": "2"}]},
    ]  # fmt: skip
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    scores = tmp_path / "s.jsonl"
    scores.write_bytes(
        b"".join(
            orjson.dumps({"id": i, "index": i, "status": "ok", "n_tokens": 9,
                          "n_response_tokens": 3, "lobass": 0.5 - i / 10}) + b"\n"
            for i in range(2)
        )
    )  # fmt: skip
    manifest = {"input": {"path": str(data), "format": "prompt-response"}}
    (tmp_path / "s.manifest.json").write_bytes(orjson.dumps(manifest))
    summary = fastscore.select(scores=str(scores), input=str(data),
                               output=str(tmp_path / "sub.jsonl"), top_k=2, dedup=True)  # fmt: skip
    assert summary["dedup"]["duplicate_records"] == 1 and summary["selected"] == 1
