"""--executor ray on real local Ray clusters (the torch engine on the demo models)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import fastscore
from fastscore.config import EngineConfig, RayConfig
from fastscore.executors.ray_shards import plan_shards
from tests.helpers import score_cmd

ray = pytest.importorskip("ray", reason="pip install 'fastscore[ray]'")
pytestmark = pytest.mark.engine


def test_plan_shards_cover_every_record_once():
    assert plan_shards(10, 4) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert plan_shards(3, 8) == [(0, 1), (1, 2), (2, 3)]
    assert plan_shards(0, 4) == [(0, 0)]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _data(tmp_path, demo_assets, n=150):
    lines = demo_assets.data.read_bytes().splitlines()[:n]
    lines.insert(7, b"{broken json")
    lines.append(lines[3])  # an id first seen in another shard
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _rows(path):
    return [orjson.loads(x) for x in Path(path).read_bytes().splitlines()]


def _same_scores(a, b, tol=1e-6):
    assert [(r["id"], r["index"], r["status"]) for r in a] == [
        (r["id"], r["index"], r["status"]) for r in b
    ]
    for x, y in zip(a, b, strict=True):
        for k in ("loss_base", "loss_ref", "lobass"):
            if x[k] is None:
                assert y[k] is None
            else:
                assert abs(x[k] - y[k]) < tol, (x, y)


def _score(data, out, demo_assets, ray_opts, **fields):
    return fastscore.score(
        input=str(data),
        output=str(out),
        base=str(demo_assets.base),
        ref=str(demo_assets.ref),
        progress=False,
        executor="ray",
        engine=EngineConfig(kind="torch", dtype="float32"),
        ray=RayConfig(**ray_opts),
        **fields,
    )


def test_ray_equals_local_and_resumes_by_shard(tmp_path, demo_assets, cluster):
    data = _data(tmp_path, demo_assets)
    local = tmp_path / "local.jsonl"
    fastscore.score(
        input=str(data),
        output=str(local),
        base=str(demo_assets.base),
        ref=str(demo_assets.ref),
        progress=False,
        engine=EngineConfig(kind="torch", dtype="float32"),
    )
    out = tmp_path / "ray.jsonl"
    m = _score(data, out, demo_assets, {"workers": 2, "shards": 5})
    _same_scores(_rows(out), _rows(local))
    ex = m["executor"]
    assert ex["workers"] == 2 and len(ex["shards"]) == 5 and ex["reused_shards"] == []
    assert m["counts"]["records"] == 152 and m["counts"]["by_status"]["bad_record"] == 1
    assert m["counts"]["by_status"]["duplicate_id"] == 1 and _rows(out)[-1]["reason"].startswith(
        'id "demo-0003" is already record 3\'s'
    )

    # a crash that lost one shard: only that shard is scored again
    shard_dir = tmp_path / "ray.jsonl.shards"
    (shard_dir / "shard-00002.jsonl").unlink()
    m2 = _score(data, out, demo_assets, {"workers": 2, "shards": 5})
    assert m2["executor"]["reused_shards"] == [0, 1, 3, 4]
    _same_scores(_rows(out), _rows(local))

    # an option that changes scores makes the old shards unusable
    cfg_changed = _score(data, out, demo_assets, {"workers": 2, "shards": 5}, max_length=60)
    assert cfg_changed["executor"]["reused_shards"] == []


def test_ray_rescores_the_shards_of_a_reference_retrained_in_place(tmp_path, demo_assets, cluster):
    """A restarted run keeps no shard scored with the old reference, and shards it does
    keep do not count towards its tokens/s."""
    import shutil
    from types import SimpleNamespace

    from tests.helpers import retrain_in_place

    ref = tmp_path / "sft"
    shutil.copytree(demo_assets.ref, ref)
    assets = SimpleNamespace(base=demo_assets.base, ref=ref, data=demo_assets.data)
    data = _data(tmp_path, demo_assets, n=60)
    out = tmp_path / "ray.jsonl"
    first = _score(data, out, assets, {"workers": 1, "shards": 3})
    again = _score(data, out, assets, {"workers": 1, "shards": 3})
    assert again["executor"]["reused_shards"] == [0, 1, 2]
    assert again["throughput"]["tokens_per_second"] == 0  # nothing was scored this time
    assert first["throughput"]["tokens_per_second"] > 0
    retrain_in_place(ref)
    retrained = _score(data, out, assets, {"workers": 1, "shards": 3})
    assert retrained["executor"]["reused_shards"] == []
    fresh = tmp_path / "fresh.jsonl"
    _score(data, fresh, assets, {"workers": 1, "shards": 2})
    _same_scores(_rows(out), _rows(fresh))


def test_cli_against_a_cluster_given_by_ray_address(tmp_path, demo_assets):
    ray_bin = Path(sys.executable).with_name("ray")
    port = 6390
    env = dict(os.environ)
    subprocess.run(
        [
            str(ray_bin),
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    try:
        data = _data(tmp_path, demo_assets, n=60)
        out = tmp_path / "cli.jsonl"
        p = subprocess.run(
            score_cmd(data, out, demo_assets.base, demo_assets.ref)
            + ["--executor", "ray", "--shards", "3"],
            capture_output=True,
            text=True,
            env=dict(env, RAY_ADDRESS=f"127.0.0.1:{port}"),
        )
        assert p.returncode == 0, p.stderr[-3000:]
        m = json.loads((tmp_path / "cli.manifest.json").read_text())
        assert m["executor"]["kind"] == "ray" and len(m["executor"]["shards"]) == 3
        assert len(_rows(out)) == 62
    finally:
        subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True)
        shutil.rmtree(tmp_path / "cli.jsonl.shards", ignore_errors=True)
