"""--resume after a SIGKILL: finished records kept, none scored twice, none lost."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

import fastscore
from fastscore.config import EngineConfig
from fastscore.errors import ConfigError

from .test_cli import fastscore_cmd

pytestmark = pytest.mark.engine


def _data(tmp_path, demo_assets, copies=4):
    recs = [orjson.loads(x) for x in demo_assets.data.read_bytes().splitlines()]
    path = tmp_path / "d.jsonl"
    with open(path, "wb") as f:
        for i in range(copies * len(recs)):
            f.write(orjson.dumps(dict(recs[i % len(recs)], id=f"r{i}")) + b"\n")
    return path


def _cmd(data, out, demo_assets, *extra):
    return fastscore_cmd() + [
        "score",
        str(data),
        "--base",
        str(demo_assets.base),
        "--ref",
        str(demo_assets.ref),
        "--output",
        str(out),
        "--engine",
        "torch",
        "--dtype",
        "float32",
        "--batch-tokens",
        "300",
        "--no-progress",
        *extra,
    ]


def _rows(path):
    return [orjson.loads(x) for x in Path(path).read_bytes().splitlines()]


def _kill_when(cmd, ready, timeout=300):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not ready() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.poll() is None, "the run ended before the kill point: " + p.stderr.read().decode()
    p.send_signal(signal.SIGKILL)
    p.wait()


@pytest.fixture(scope="module")
def clean(tmp_path_factory, demo_assets):
    tmp = tmp_path_factory.mktemp("clean")
    data = _data(tmp, demo_assets)
    out = tmp / "clean.jsonl"
    subprocess.run(_cmd(data, out, demo_assets), check=True, capture_output=True)
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
    p = subprocess.run(_cmd(data, out, demo_assets, "--resume"), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    got = _rows(out)
    assert [r["index"] for r in got] == list(range(len(want)))  # none lost, none twice
    for a, b in zip(got, want):
        assert a["id"] == b["id"] and a["status"] == b["status"]
        assert abs(a["loss_base"] - b["loss_base"]) < 1e-6
        assert abs(a["loss_ref"] - b["loss_ref"]) < 1e-6
    m = orjson.loads((tmp_path / "s.manifest.json").read_bytes())
    assert m["counts"]["records"] == len(want)
    assert m["counts"]["by_status"] == {"ok": len(want)}


def test_torn_last_line_is_scored_again(tmp_path, demo_assets, clean):
    data, want = clean
    out = tmp_path / "s.jsonl"
    _kill_when(_cmd(data, out, demo_assets), lambda: _partial_bytes(out) >= 5_000)
    partial = tmp_path / "s.jsonl.partial"
    blob = partial.read_bytes()
    partial.write_bytes(blob[: blob.rfind(b"\n") - 10])  # cut mid-line, as a crash might
    subprocess.run(_cmd(data, out, demo_assets, "--resume"), check=True, capture_output=True)
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
