"""--executor ray on real local Ray clusters (the torch engine on the demo models)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import fastscore
from fastscore.config import EngineConfig, RayConfig
from fastscore.errors import ConfigError, EngineError
from fastscore.executors.ray_shards import plan_shards
from tests.helpers import score_cmd
from tests.helpers.ray_nodes import first_attempt, killing_first

ray = pytest.importorskip("ray", reason="pip install 'fastscore[ray]'")
pytestmark = pytest.mark.engine


def test_plan_shards_cover_every_record_once():
    assert plan_shards(10, 4) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert plan_shards(3, 8) == [(0, 1), (1, 2), (2, 3)]
    assert plan_shards(0, 4) == [(0, 0)]


@pytest.fixture(scope="module", autouse=True)
def _no_cluster_left():
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def cluster():
    """A local Ray cluster in this process: started once, and again after a test that
    connected to another."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


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


def _one_kill(shards_dir, mid_shard):
    """The first shard attempt seen (once it has flushed some lines, if ``mid_shard``)
    loses its worker process."""
    return killing_first(lambda: first_attempt(shards_dir, flushed_over=3000 if mid_shard else -1))


@pytest.fixture(scope="module")
def chats(tmp_path_factory, demo_assets):
    """600 chats and their scores by the local executor."""
    tmp = tmp_path_factory.mktemp("chats")
    data = _data(tmp, demo_assets, n=600)
    local = tmp / "local.jsonl"
    m = fastscore.score(input=str(data), output=str(local), base=str(demo_assets.base),
                        ref=str(demo_assets.ref), progress=False, batch_tokens=300,
                        engine=EngineConfig(kind="torch", dtype="float32"))  # fmt: skip
    return data, _rows(local), m["counts"]


def test_ray_never_reuses_a_shard_of_another_rendering(tmp_path, demo_assets, cluster):
    """Issue 31, case 3: a shard done with the template before its edit was kept, its
    records rendered the old way beside the others."""
    from fastscore.engines.models import load_tokenizer

    template = tmp_path / "chat.jinja"
    template.write_text(load_tokenizer(demo_assets.base).chat_template)
    data, out = _data(tmp_path, demo_assets, n=40), tmp_path / "ray.jsonl"
    opts = {"workers": 1, "shards": 2}
    _score(data, out, demo_assets, opts, chat_template=str(template))
    again = _score(data, out, demo_assets, opts, chat_template=str(template))
    assert again["executor"]["reused_shards"] == [0, 1]
    template.write_text(template.read_text().replace("<|im_start|>", "<|im_start|> "))
    edited = _score(data, out, demo_assets, opts, chat_template=str(template))
    assert edited["executor"]["reused_shards"] == []


@pytest.mark.parametrize("mid_shard", [False, True], ids=["at-start", "mid-shard"])
def test_a_worker_sigkilled_during_a_shard_does_not_stop_the_run(
    tmp_path, demo_assets, cluster, chats, mid_shard
):
    data, want, counts = chats
    out = tmp_path / "ray.jsonl"
    with _one_kill(tmp_path / "ray.jsonl.shards", mid_shard) as kills:
        m = _score(data, out, demo_assets, {"workers": 2, "shards": 8}, batch_tokens=300)
    assert len(kills) == 1, "the worker was not killed"
    _same_scores(_rows(out), want)  # none lost, none twice, the same scores
    assert m["counts"]["by_status"] == counts["by_status"]
    assert m["counts"]["records"] == counts["records"]
    ex = m["executor"]
    assert ex["workers_lost"] == 1 and ex["shards_retried"] == 1
    (retried,) = [s for s in ex["shards"] if s["lost"]]
    assert retried["attempts"] == 2 and retried["lost"][0]["pid"] == kills[0]["pid"]
    # the retry went on from what the lost attempt had flushed
    kept = retried["kept_from_lost_attempts"]
    assert ex["records_kept_from_lost_attempts"] == kept
    assert kept > 0 if mid_shard else kept == 0
    assert not list((tmp_path / "ray.jsonl.shards").glob("*.attempt.json"))


def test_past_max_failures_the_run_stops_naming_the_shard_and_node(
    tmp_path, demo_assets, cluster, chats
):
    data, want, _ = chats
    out = tmp_path / "ray.jsonl"
    opts = {"workers": 2, "shards": 8, "max_failures": 0}
    with _one_kill(tmp_path / "ray.jsonl.shards", True) as kills, pytest.raises(EngineError) as e:
        _score(data, out, demo_assets, opts, batch_tokens=300)
    assert len(kills) == 1
    msg = str(e.value)
    k = int(kills[0]["shard"].split("-")[1].split(".")[0])
    assert re.search(
        rf"ray: shard {k} \(\d+, \d+\) lost its worker more than --max-failures 0 times; "
        rf"its last attempt ran on node \S+ \(pid {kills[0]['pid']}\)",
        msg,
    ), msg
    n_done = int(re.search(r"(\d+) of 8 shards are done and kept in", msg).group(1))
    assert not out.exists()
    # run again: the finished shards are kept, the rest scored
    m = _score(data, out, demo_assets, {"workers": 2, "shards": 8}, batch_tokens=300)
    _same_scores(_rows(out), want)
    assert len(m["executor"]["reused_shards"]) == n_done and m["executor"]["workers_lost"] == 0


def test_bad_failure_bounds_are_refused(tmp_path, demo_assets):
    data = _data(tmp_path, demo_assets, n=5)
    for opt in ("max_failures", "max_run_failures"):
        with pytest.raises(ConfigError, match=f"--{opt.replace('_', '-')} must be >= 0"):
            _score(data, tmp_path / "o.jsonl", demo_assets, {opt: -1})


def test_cli_against_a_cluster_given_by_ray_address(tmp_path, demo_assets):
    # `ray stop --force` below stops every Ray process on the machine: the cluster of this
    # process first, or its driver exits when it finds its cluster gone
    if ray.is_initialized():
        ray.shutdown()
    ray_bin = Path(sys.executable).with_name("ray")
    port = 6390
    # explicit: `ray start` turns token authentication on when ~/.ray/auth_token exists (a
    # local ray.init() writes one), and a client must then be told so (RAY_AUTH_MODE)
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
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


def test_a_node_removed_mid_run_moves_its_shard_to_a_live_node(tmp_path, demo_assets, chats):
    """A head and three one-CPU worker nodes, each its own raylet, on this machine
    (``ray.cluster_utils.Cluster``); the node of a busy worker is removed mid-shard. In a
    new interpreter (``tests/helpers/ray_nodes.py``): Ray's driver does not connect to a
    second cluster cleanly in a process that ran one."""
    data, want, counts = chats
    out = tmp_path / "ray.jsonl"
    script = Path(__file__).resolve().parents[1] / "helpers" / "ray_nodes.py"
    p = subprocess.run(
        [sys.executable, str(script), str(data), str(out), str(demo_assets.base),
         str(demo_assets.ref)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-4000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    removed, m = got["removed"], got["manifest"]
    assert len(removed) == 1, "no node was removed"
    _same_scores(_rows(out), want)
    assert m["counts"]["by_status"] == counts["by_status"]
    ex = m["executor"]
    assert ex["workers_lost"] == 1
    (retried,) = [s for s in ex["shards"] if s["lost"]]
    assert retried["lost"][0]["ray_node"] == removed[0]["ray_node"]
    assert retried["ray_node"] != removed[0]["ray_node"]  # finished on a live node
    assert retried["kept_from_lost_attempts"] > 0


def test_a_run_on_object_storage_survives_a_killed_worker_and_resumes_there(
    tmp_path, demo_assets, chats, s3
):
    """Input, shards and scores in a bucket of a real S3-compatible server: a worker
    SIGKILLed mid-shard, its shard retried on a restarted worker in a new process (an
    empty staging copy) from the segments it had flushed; a rerun keeps the done shards."""
    from tests.helpers.s3 import first_attempt_in

    data, want, counts = chats
    s3.fs.put_file(str(data), f"{s3.bucket}/d.jsonl")
    if ray.is_initialized():
        ray.shutdown()
    # the workers reach the store as every node of a cluster does: by its own variables
    aws = {k: v for k, v in s3.env.items() if k.startswith("AWS_")}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": aws})  # fmt: skip
    try:
        shards = f"{s3.bucket}/out/s.jsonl.shards"
        find = lambda: first_attempt_in(s3.fs, shards, flushed_over=3000)  # noqa: E731
        with killing_first(find, poll=0.05) as kills:
            m = fastscore.score(input=f"{s3.url}/d.jsonl", output=f"{s3.url}/out/s.jsonl",
                                base=str(demo_assets.base), ref=str(demo_assets.ref),
                                progress=False, executor="ray", batch_tokens=300,
                                engine=EngineConfig(kind="torch", dtype="float32"),
                                ray=RayConfig(workers=2, shards=8))  # fmt: skip
        assert len(kills) == 1, "the worker was not killed"
        got = [orjson.loads(x) for x in s3.fs.cat_file(f"{s3.bucket}/out/s.jsonl").splitlines()]
        _same_scores(got, want)
        assert m["counts"]["by_status"] == counts["by_status"]
        ex = m["executor"]
        assert ex["workers_lost"] == 1 and ex["records_kept_from_lost_attempts"] > 0
        names = [k.rpartition("/")[2] for k in s3.fs.find(shards)]
        assert not [n for n in names if "attempt" in n or "partial" in n], names
        assert sum(n.endswith(".done.json") for n in names) == 8
        # a shard lost from the store: the rerun scores it alone
        s3.fs.rm_file(f"{shards}/shard-00003.jsonl")
        again = fastscore.score(input=f"{s3.url}/d.jsonl", output=f"{s3.url}/out/s.jsonl",
                                base=str(demo_assets.base), ref=str(demo_assets.ref),
                                progress=False, executor="ray", batch_tokens=300,
                                engine=EngineConfig(kind="torch", dtype="float32"),
                                ray=RayConfig(workers=2, shards=8))  # fmt: skip
        assert again["executor"]["reused_shards"] == [0, 1, 2, 4, 5, 6, 7]
        got = [orjson.loads(x) for x in s3.fs.cat_file(f"{s3.bucket}/out/s.jsonl").splitlines()]
        _same_scores(got, want)
    finally:
        ray.shutdown()
