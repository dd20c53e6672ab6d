"""Runs whose input and outputs are in object storage (a real S3-compatible server on
loopback, ``helpers.s3``): the same scores as a local run, a kill and ``--resume`` there,
``run`` and ``select`` into a bucket, and bad stores refused before any model loads."""

from __future__ import annotations

import signal
import time

import orjson
import pytest

from tests.helpers import cli, forked, score_args

pytestmark = pytest.mark.engine


def _data(demo_assets, copies=4):
    recs = [orjson.loads(x) for x in demo_assets.data.read_bytes().splitlines()]
    n = copies * len(recs)
    return b"".join(orjson.dumps(dict(recs[i % len(recs)], id=f"r{i}")) + b"\n" for i in range(n))


def _cmd(data, out, demo_assets, *extra):
    return score_args(data, out, demo_assets.base, demo_assets.ref, "--batch-tokens", 300, *extra)


def _rows(blob: bytes):
    return [orjson.loads(x) for x in blob.splitlines()]


def _same(got, want):
    assert [(r["index"], r["id"], r["status"]) for r in got] == [
        (r["index"], r["id"], r["status"]) for r in want
    ]
    for a, b in zip(got, want, strict=True):
        assert abs(a["loss_base"] - b["loss_base"]) < 1e-6
        assert abs(a["loss_ref"] - b["loss_ref"]) < 1e-6


@pytest.fixture(scope="module")
def clean(tmp_path_factory, demo_assets):
    """The input written locally and its scores by an uninterrupted local run."""
    tmp = tmp_path_factory.mktemp("clean")
    data = tmp / "d.jsonl"
    data.write_bytes(_data(demo_assets))
    cli(*_cmd(data, tmp / "clean.jsonl", demo_assets))
    return data, _rows((tmp / "clean.jsonl").read_bytes())


def _keys(s3, prefix=""):
    return sorted(k.removeprefix(s3.bucket + "/") for k in s3.fs.find(f"{s3.bucket}/{prefix}"))


def test_scores_from_and_into_a_bucket_equal_a_local_run(demo_assets, clean, s3):
    data, want = clean
    s3.fs.put_file(str(data), f"{s3.bucket}/in/d.jsonl")
    cli(*_cmd(f"{s3.url}/in/d.jsonl", f"{s3.url}/out/s.jsonl", demo_assets), env=s3.env)
    _same(_rows(s3.fs.cat_file(f"{s3.bucket}/out/s.jsonl")), want)
    # the scores, their manifest and features; no partial, segment or run record left
    assert _keys(s3, "out") == ["out/s.features.npy", "out/s.jsonl", "out/s.manifest.json"]
    m = orjson.loads(s3.fs.cat_file(f"{s3.bucket}/out/s.manifest.json"))
    assert m["input"]["path"] == f"{s3.url}/in/d.jsonl" and m["output"] == f"{s3.url}/out/s.jsonl"
    assert s3.env["AWS_SECRET_ACCESS_KEY"] not in orjson.dumps(m).decode()


def test_a_run_killed_while_writing_to_a_bucket_resumes_there(demo_assets, clean, s3):
    """SIGKILL once the store holds some flushed lines: nothing is in place, the segments
    are; ``--resume`` in a new process (an empty staging copy) continues from them."""
    data, want = clean
    out = f"{s3.url}/out/s.jsonl"
    segs = f"{s3.bucket}/out/s.jsonl.partial.segments"

    def flushed() -> int:
        try:
            return sum(i["size"] for i in s3.fs.ls(segs, detail=True, refresh=True))
        except FileNotFoundError:
            return 0

    p = forked.Child(_cmd(data, out, demo_assets), env=s3.env)
    while flushed() < 20_000 and p.poll() is None:
        time.sleep(0.02)
    assert p.poll() is None, "the run ended before the kill: " + p.result().stderr
    p.send_signal(signal.SIGKILL)
    assert p.result().returncode == -signal.SIGKILL
    kept = flushed()
    assert kept > 0 and not s3.fs.exists(f"{s3.bucket}/out/s.jsonl")
    r = cli(*_cmd(data, out, demo_assets, "--resume"), env=s3.env)
    _same(_rows(s3.fs.cat_file(f"{s3.bucket}/out/s.jsonl")), want)
    m = orjson.loads(s3.fs.cat_file(f"{s3.bucket}/out/s.manifest.json"))
    assert 0 < m["counts"]["resumed_after_records"] < len(want), r.stderr
    assert _keys(s3, "out") == ["out/s.features.npy", "out/s.jsonl", "out/s.manifest.json"]


def test_run_and_select_write_into_a_bucket(tmp_path, demo_assets, clean, s3):
    data, _ = clean
    s3.fs.put_file(str(data), f"{s3.bucket}/d.jsonl")
    run = ["run", f"{s3.url}/d.jsonl", "--base", demo_assets.base, "--ref", demo_assets.ref,
           "--output-dir", f"{s3.url}/run", "--engine", "torch", "--dtype", "float32",
           "--no-progress", "--fraction", "0.2"]  # fmt: skip
    cli(*run, env=s3.env)
    keys = _keys(s3, "run")
    for k in ("run/scores.jsonl", "run/selected.jsonl", "run/manifest.json",
              "run/report/report.html"):  # fmt: skip
        assert k in keys, keys
    m = orjson.loads(s3.fs.cat_file(f"{s3.bucket}/run/manifest.json"))
    assert m["selection"]["output"] == f"{s3.url}/run/selected.jsonl"
    assert m["report"] == f"{s3.url}/run/report/report.html"
    subset = s3.fs.cat_file(f"{s3.bucket}/run/selected.jsonl")
    assert len(subset.splitlines()) == m["selection"]["selected"] > 0
    # `select` alone, from the bucket's scores into the bucket, picks what `run` picked
    cli("select", f"{s3.url}/run/scores.jsonl", "--input", f"{s3.url}/d.jsonl",
        "--output", f"{s3.url}/again.jsonl", "--fraction", "0.2", env=s3.env)  # fmt: skip
    assert s3.fs.cat_file(f"{s3.bucket}/again.jsonl") == subset
    # and a resumed run whose scoring had ended selects again without scoring
    cli(*run, "--resume", env=s3.env)
    m2 = orjson.loads(s3.fs.cat_file(f"{s3.bucket}/run/manifest.json"))
    assert m2["fingerprint"] == m["fingerprint"] and m2["seconds"] == m["seconds"]


@pytest.mark.parametrize("case", ["scheme", "bucket", "read-only", "unknown-keys", "input"])
def test_a_bad_store_is_refused_before_any_model_loads(tmp_path, demo_assets, clean, s3, case):
    data, _ = clean
    env, out, inp = dict(s3.env), f"{s3.url}/out/s.jsonl", str(data)
    if case == "scheme":
        out, want = "nosuch://x/s.jsonl", "unknown storage scheme 'nosuch'"
    elif case == "bucket":
        out, want = "s3://no-such-bucket/s.jsonl", "the bucket does not exist"
    elif case == "input":
        inp, want = f"{s3.url}/missing.jsonl", "does not exist"
    else:
        keys = s3.server.read_only if case == "read-only" else None
        env["AWS_ACCESS_KEY_ID"] = keys.key if keys else "AKIANOBODY"
        env["AWS_SECRET_ACCESS_KEY"] = keys.secret if keys else "not-a-secret-anyone-has"
        want = "access denied"
    # the base given is no checkpoint: a run that got as far as the models would say so
    p = cli(*score_args(inp, out, tmp_path / "no-model", demo_assets.ref), check=False,
            env=env)  # fmt: skip
    assert p.returncode == 1 and want in p.stderr, p.stderr
    assert "checkpoint" not in p.stderr and env["AWS_SECRET_ACCESS_KEY"] not in p.stderr


def test_dry_run_and_inspect_read_a_bucket(demo_assets, clean, s3):
    data, want = clean
    s3.fs.put_file(str(data), f"{s3.bucket}/d.jsonl")
    url = f"{s3.url}/d.jsonl"
    p = cli(*score_args(url, f"{s3.url}/x.jsonl", demo_assets.base, demo_assets.ref),
            "--dry-run", env=s3.env)  # fmt: skip
    assert f"dry run of {url} " in p.stdout
    assert f"records            {len(want):,} (ok={len(want)})" in p.stdout, p.stdout
    assert s3.fs.find(s3.bucket) == [f"{s3.bucket}/d.jsonl"]  # a dry run writes nothing
    p = cli("inspect", url, "--base", demo_assets.base, "--id", want[5]["id"], "--json",
            env=s3.env)  # fmt: skip
    assert orjson.loads(p.stdout)["id"] == want[5]["id"]


def test_an_output_in_a_bucket_is_held_by_a_lease(demo_assets, clean, s3):
    """Issue 31, case 4 on a store: the lease object beside the scores (its holder's host
    and pid) refuses a second run while the first lives; a lease whose holder is dead on
    this host, or not renewed for LEASE_SECONDS elsewhere, is taken over."""
    import socket

    from fastscore.storage.locks import LEASE_SECONDS

    data, want = clean
    out, lease = f"{s3.url}/out/s.jsonl", f"{s3.bucket}/out/s.jsonl.lock"
    first = forked.Child(_cmd(data, out, demo_assets), env=s3.env)
    while not s3.fs.exists(lease):
        assert first.poll() is None, first.result().stderr
        time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)
    try:
        p = cli(*_cmd(data, out, demo_assets), check=False, env=s3.env)
        assert p.returncode == 1 and f"{out} is being written by another run" in p.stderr
        assert f"pid {first.pid}," in p.stderr and socket.gethostname() in p.stderr
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.result().returncode == 0
    _same(_rows(s3.fs.cat_file(f"{s3.bucket}/out/s.jsonl")), want)
    assert not s3.fs.exists(lease)  # removed at the end
    # another machine's lease, renewed a moment ago: refused; one it stopped renewing: taken
    holder = {"host": "elsewhere", "pid": 1, "command": "score", "started": "then"}
    out2 = f"{s3.url}/out2/s.jsonl"
    s3.fs.pipe_file(
        f"{s3.bucket}/out2/s.jsonl.lock", orjson.dumps({**holder, "renewed": time.time()})
    )
    p = cli(*_cmd(data, out2, demo_assets), check=False, env=s3.env)
    assert p.returncode == 1 and "host elsewhere, pid 1" in p.stderr, p.stderr
    stale = {**holder, "renewed": time.time() - LEASE_SECONDS - 5}
    s3.fs.pipe_file(f"{s3.bucket}/out2/s.jsonl.lock", orjson.dumps(stale))
    p = cli(*_cmd(data, out2, demo_assets), env=s3.env)
    assert "taking over the lease" in p.stderr
    assert _keys(s3, "out2") == ["out2/s.features.npy", "out2/s.jsonl", "out2/s.manifest.json"]


def test_two_runs_taking_over_a_stale_lease_cannot_both_hold_it(s3):
    """Both read the same lapsed lease before either writes: the takeover is a write
    conditional on the version read, so one of them gets it and the other is refused."""
    import threading

    from fastscore.errors import ConfigError
    from fastscore.storage.locks import LEASE_SECONDS, _Lease

    out = f"{s3.url}/x/s.jsonl"
    stale = {"host": "elsewhere", "pid": 1, "command": "score", "started": "then",
             "renewed": time.time() - LEASE_SECONDS - 5, "token": "old"}  # fmt: skip
    s3.fs.pipe_file(f"{s3.bucket}/x/s.jsonl.lock", orjson.dumps(stale))
    both_read = threading.Barrier(2)
    leases = [_Lease(out + ".lock", out, "score") for _ in range(2)]
    for lease in leases:
        first_read = lease._read

        def read(first_read=first_read, calls=[]):  # noqa: B006 (one list per lease)
            calls.append(1)
            got = first_read()
            if len(calls) == 1:
                both_read.wait(30)  # each has seen the stale lease before either writes
            return got

        lease._read = read
    outcome: list = [None, None]

    def take(k: int) -> None:
        try:
            leases[k].acquire()
            outcome[k] = "held"
        except ConfigError as e:
            outcome[k] = str(e)

    threads = [threading.Thread(target=take, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(o == "held" for o in outcome) == [False, True], outcome
    winner = leases[outcome.index("held")]
    loser = next(o for o in outcome if o != "held")
    assert "is being written by another run (fastscore score" in loser
    assert (
        orjson.loads(s3.fs.cat_file(f"{s3.bucket}/x/s.jsonl.lock"))["token"] == (winner.me["token"])
    )
    winner.release()
    assert not s3.fs.exists(f"{s3.bucket}/x/s.jsonl.lock")


def test_a_run_whose_lease_was_taken_stops_at_its_next_chunk(s3, monkeypatch):
    from fastscore.errors import ConfigError
    from fastscore.storage import locks

    monkeypatch.setattr(locks, "LEASE_SECONDS", 0.4)  # renewed every 0.1 s
    monkeypatch.setattr(locks, "_LOST", [])
    out = f"{s3.url}/y/s.jsonl"
    lease = locks._Lease(out + ".lock", out, "score")
    lease.acquire()
    try:
        locks.raise_if_lease_lost()  # held: nothing to say
        other = {"host": "elsewhere", "pid": 7, "command": "score", "started": "now",
                 "renewed": time.time(), "token": "theirs"}  # fmt: skip
        s3.fs.pipe_file(f"{s3.bucket}/y/s.jsonl.lock", orjson.dumps(other))
        deadline = time.monotonic() + 30
        while not locks._LOST and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(ConfigError, match="was taken over by another run .*host elsewhere"):
            locks.raise_if_lease_lost()
    finally:
        lease.release()
    # what it let go of was not its own: the other run's lease stays
    assert orjson.loads(s3.fs.cat_file(f"{s3.bucket}/y/s.jsonl.lock"))["token"] == "theirs"
