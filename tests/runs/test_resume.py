"""--resume after a SIGKILL: finished records kept, none scored twice, none lost."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import orjson
import pytest

import fastscore
from fastscore.config import EngineConfig
from fastscore.errors import ConfigError
from tests.helpers import cli, forked, score_args

pytestmark = pytest.mark.engine


def _data(tmp_path, demo_assets, copies=4, distinct_ids=None):
    recs = [orjson.loads(x) for x in demo_assets.data.read_bytes().splitlines()]
    path = tmp_path / "d.jsonl"
    n = copies * len(recs)
    with open(path, "wb") as f:
        for i in range(n):
            f.write(
                orjson.dumps(dict(recs[i % len(recs)], id=f"r{i % (distinct_ids or n)}")) + b"\n"
            )
    return path


def _cmd(data, out, demo_assets, *extra):
    return score_args(data, out, demo_assets.base, demo_assets.ref, "--batch-tokens", 300, *extra)


def _rows(path):
    return [orjson.loads(x) for x in Path(path).read_bytes().splitlines()]


def _kill_when(args, ready):
    """SIGKILL the run ``fastscore ARGS`` once ``ready()``; fails if the run ends first."""
    p = forked.Child(args)
    while not ready() and p.poll() is None:
        time.sleep(0.01)
    assert p.poll() is None, "the run ended before the kill point: " + p.result().stderr
    p.send_signal(signal.SIGKILL)
    assert p.result().returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def clean(tmp_path_factory, demo_assets):
    tmp = tmp_path_factory.mktemp("clean")
    data = _data(tmp, demo_assets)
    out = tmp / "clean.jsonl"
    cli(*_cmd(data, out, demo_assets))
    return data, _rows(out)


def _partial_bytes(out):
    p = out.with_name(out.name + ".partial")
    return p.stat().st_size if p.exists() else 0


@pytest.mark.parametrize("kill_at", ["before_first_flush", 3_000, 40_000, 90_000])
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, demo_assets, clean, kill_at):
    data, want = clean
    out = tmp_path / "s.jsonl"
    run_json = tmp_path / "s.jsonl.run.json"
    if kill_at == "before_first_flush":
        _kill_when(_cmd(data, out, demo_assets), run_json.exists)
        assert _partial_bytes(out) == 0
    else:
        _kill_when(_cmd(data, out, demo_assets), lambda: _partial_bytes(out) >= kill_at)
    assert not out.exists()
    p = cli(*_cmd(data, out, demo_assets, "--resume"), check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    got = _rows(out)
    assert [r["index"] for r in got] == list(range(len(want)))  # none lost, none twice
    for a, b in zip(got, want, strict=True):
        assert a["id"] == b["id"] and a["status"] == b["status"]
        assert abs(a["loss_base"] - b["loss_base"]) < 1e-6
        assert abs(a["loss_ref"] - b["loss_ref"]) < 1e-6
    m = orjson.loads((tmp_path / "s.manifest.json").read_bytes())
    assert m["counts"]["records"] == len(want)
    assert m["counts"]["by_status"] == {"ok": len(want)}


def test_a_job_that_always_passes_resume_keeps_its_work(tmp_path, demo_assets, clean):
    """The first run of a preemptible job already has --resume: it records the run, so
    the next --resume continues instead of starting again."""
    data, want = clean
    out = tmp_path / "s.jsonl"
    cmd = _cmd(data, out, demo_assets, "--resume")
    _kill_when(cmd, lambda: _partial_bytes(out) >= 40_000)
    kept = len(_rows(out.with_name(out.name + ".partial")))
    assert kept > 0
    cli(*cmd)
    assert [r["id"] for r in _rows(out)] == [r["id"] for r in want]
    m = orjson.loads((tmp_path / "s.manifest.json").read_bytes())
    assert kept - 1 <= m["counts"]["resumed_after_records"] <= kept


def test_torn_last_line_is_scored_again(tmp_path, demo_assets, clean):
    data, want = clean
    out = tmp_path / "s.jsonl"
    _kill_when(_cmd(data, out, demo_assets), lambda: _partial_bytes(out) >= 5_000)
    partial = tmp_path / "s.jsonl.partial"
    blob = partial.read_bytes()
    partial.write_bytes(blob[: blob.rfind(b"\n") - 10])  # cut mid-line, as a crash might
    cli(*_cmd(data, out, demo_assets, "--resume"))
    assert [r["id"] for r in _rows(out)] == [r["id"] for r in want]


def test_resume_with_other_options_or_when_complete_is_refused(tmp_path, demo_assets, clean):
    data, _ = clean
    out = tmp_path / "s.jsonl"
    _kill_when(_cmd(data, out, demo_assets), lambda: _partial_bytes(out) >= 3_000)
    kw = dict(
        input=str(data),
        output=str(out),
        base=str(demo_assets.base),
        ref=str(demo_assets.ref),
        progress=False,
        resume=True,
    )
    with pytest.raises(ConfigError, match=r"other settings \(max_length\)"):
        fastscore.score(**kw, max_length=100, engine=EngineConfig(kind="torch", dtype="float32"))
    fastscore.score(**kw, engine=EngineConfig(kind="torch", dtype="float32"))
    with pytest.raises(ConfigError, match="already complete"):
        fastscore.score(**kw, engine=EngineConfig(kind="torch", dtype="float32"))


@pytest.mark.parametrize("point", ["final:manifest", "final:rename", "final:cleanup"])
def test_sigkill_during_the_final_write(tmp_path, demo_assets, clean, point):
    """Killed between the final writes (manifest, rename, run-record removal): a scores file
    never exists without its manifest, and --resume finishes without scoring again."""
    data, want = clean
    out = tmp_path / "s.jsonl"
    manifest = tmp_path / "s.manifest.json"
    env = {**os.environ, "FASTSCORE_KILL_AT": point}
    p = cli(*_cmd(data, out, demo_assets), env=env, check=False)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert manifest.exists() == (point != "final:manifest")
    assert out.exists() == (point == "final:cleanup")
    p = cli(*_cmd(data, out, demo_assets, "--resume"), check=False)
    if point == "final:cleanup":  # all was written; only the run record was left behind
        assert p.returncode != 0 and "already complete" in p.stderr
    else:
        assert p.returncode == 0, p.stderr[-3000:]
        m = orjson.loads(manifest.read_bytes())
        assert m["counts"]["resumed_after_records"] == len(want)  # nothing scored again
    got = _rows(out)
    assert [(r["id"], r["status"], r["loss_ref"]) for r in got] == [
        (r["id"], r["status"], r["loss_ref"]) for r in want
    ]
    assert orjson.loads(manifest.read_bytes())["counts"]["records"] == len(want)
    assert not (tmp_path / "s.jsonl.partial").exists()


def test_duplicate_ids_found_across_a_resume(tmp_path, demo_assets):
    """Ids of records scored before the kill still count after it."""
    data = _data(tmp_path, demo_assets, copies=2, distinct_ids=900)  # 900..1199 repeat 0..299
    clean = tmp_path / "clean.jsonl"
    cli(*_cmd(data, clean, demo_assets))
    want = _rows(clean)
    assert [r["status"] for r in want] == ["ok"] * 900 + ["duplicate_id"] * 300
    assert want[950]["reason"].startswith('id "r50" is already record 50\'s')
    out = tmp_path / "s.jsonl"
    _kill_when(_cmd(data, out, demo_assets), lambda: _partial_bytes(out) >= 20_000)
    kept = len((tmp_path / "s.jsonl.partial").read_bytes().splitlines())
    assert 0 < kept < 900
    cli(*_cmd(data, out, demo_assets, "--resume"))
    got = _rows(out)
    assert [(r["status"], r.get("reason")) for r in got] == [
        (r["status"], r.get("reason")) for r in want
    ]


def test_run_resume_after_scoring_ended_only_selects(tmp_path, demo_assets):
    """`run` killed after its scores were complete: --resume selects without scoring again,
    and refuses scores made with other settings."""
    from fastscore.config import RunConfig, ScoreConfig, SelectConfig

    data = _data(tmp_path, demo_assets, copies=1)

    def cfg(**score):
        return RunConfig(
            output_dir=str(tmp_path / "run"),
            score=ScoreConfig(
                input=str(data),
                base=str(demo_assets.base),
                ref=str(demo_assets.ref),
                progress=False,
                resume=True,
                engine=EngineConfig(kind="torch", dtype="float32"),
                **score,
            ),
            select=SelectConfig(top_k=7),
        )

    fastscore.run(cfg())
    scores = tmp_path / "run" / "scores.jsonl"
    before = scores.stat().st_mtime_ns
    (tmp_path / "run" / "selected.jsonl").unlink()  # as if killed while selecting
    m = fastscore.run(cfg())
    assert scores.stat().st_mtime_ns == before  # not scored again
    assert m["selection"]["selected"] == 7
    assert len((tmp_path / "run" / "selected.jsonl").read_bytes().splitlines()) == 7
    with pytest.raises(ConfigError, match="other settings, models or another input"):
        fastscore.run(cfg(max_length=100))
