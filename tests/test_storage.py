"""Object storage against a real S3-compatible server on loopback (moto's server mode,
IAM enforced): the store's objects and segments, readers over ranges, and the errors a
bad URL, a missing bucket or refused credentials get."""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st_

from fastscore import storage
from fastscore.config import ScoreConfig, plain, set_path
from fastscore.data import ranges
from fastscore.data.readers import (
    count_records,
    detect_file_kind,
    jsonl_starts,
    read_record_range,
    read_records,
)
from fastscore.errors import ConfigError, InputError
from fastscore.storage.staging import Store, store_for

LINES = [orjson.dumps({"id": f"r{i}", "prompt": f"q{i}", "response": "a" * i}) for i in range(40)]
JSONL = b"\xef\xbb\xbf" + b"\n".join(LINES[:5]) + b"\n\n" + b"\n".join(LINES[5:]) + b"\n"


def test_urls_are_told_from_paths_and_shown_without_userinfo():
    assert storage.is_url("s3://b/k") and storage.is_url("memory://x")
    assert not storage.is_url("/tmp/x") and not storage.is_url("file:///tmp/x")
    assert not storage.is_url("C:/data/x.jsonl")
    assert storage.shown("s3://AKIA:secret@bucket/k.jsonl") == "s3://bucket/k.jsonl"
    loc = storage.Location("s3://AKIA:secret@b/a/c.jsonl")
    assert str(loc) == "s3://b/a/c.jsonl" and "secret" not in repr(loc)
    assert loc.parent == storage.Location("s3://AKIA:secret@b/a") and str(loc.parent) == "s3://b/a"
    assert loc.name == "c.jsonl" and loc.suffix == ".jsonl"
    assert loc.parent / "d.jsonl" == loc.with_name("d.jsonl")
    local = storage.Location("out/x.jsonl")
    assert str(local) == "out/x.jsonl" and local.parent == storage.Location("out")
    assert storage.locate(local) is local and storage.locate(None) is None
    assert local == Path("out/x.jsonl") and hash(local) == hash(Path("out/x.jsonl"))
    assert pickle.loads(pickle.dumps(loc)) == loc  # (a Ray worker gets the credentials)
    with pytest.raises(ConfigError, match=r"s3://b/a/c.jsonl: must be a local path"):
        os.fspath(loc)
    # every config field that names a file is a Location however it is set
    cfg = ScoreConfig(input="s3://b/d.jsonl", output=Path("o.jsonl"))
    assert cfg.input == storage.Location("s3://b/d.jsonl") and cfg.output == Path("o.jsonl")
    set_path(cfg, "output", "s3://b/o.jsonl")
    assert isinstance(cfg.output, storage.Location) and cfg.output.name == "o.jsonl"
    assert dataclasses.replace(cfg, input=None).input is None
    assert ScoreConfig(output="").output is None  # (no path given: "is required" says so)
    # a path as it was typed is what a manifest records (a run record compares it)
    assert plain(ScoreConfig(input="./d/"))["input"] == "./d/" == str(storage.locate("./d/"))
    assert storage.Location("s3://k:pw@b/x/") == storage.Location("s3://b/x")  # one object
    with pytest.raises(ConfigError, match=r"s3://b: name a file inside a bucket"):
        storage.Location("s3://k:pw@b").with_name("x.jsonl")
    opts = {"input": "s3://k:pw@b/d.jsonl", "output": "out.jsonl", "engine": {"x": "s3://u@b/m"}}
    assert storage.without_userinfo(opts) == {
        "input": "s3://b/d.jsonl",
        "output": "out.jsonl",
        "engine": {"x": "s3://b/m"},
    }
    opts = {"input": storage.Location("s3://k:pw@b/d.jsonl"), "output": local}
    assert storage.without_userinfo(opts) == {"input": "s3://b/d.jsonl", "output": "out/x.jsonl"}


def test_an_unknown_scheme_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"unknown storage scheme 'nosuch'"):
        storage.locate("nosuch://bucket/x.jsonl").open()


def test_readers_give_the_same_records_from_a_store(tmp_path, s3):
    local = tmp_path / "d.jsonl"
    local.write_bytes(JSONL)
    s3.fs.pipe_file(f"{s3.bucket}/d.jsonl", JSONL)
    url = f"{s3.url}/d.jsonl"
    assert detect_file_kind(url) == "jsonl" and count_records(url) == 40
    assert list(read_records(url)) == list(read_records(local))
    starts = jsonl_starts(url, [17])
    assert starts == jsonl_starts(local, [17])
    got = list(read_record_range(url, "jsonl", lo=17, hi=23, start=starts[17]))
    assert [r.data["id"] for r in got] == [f"r{i}" for i in range(17, 23)]
    # the surveys of byte ranges add up as a local file's do
    parts = ranges.byte_ranges(len(JSONL), 4)
    for fmt_path in (url, local):
        p = ranges.plan([ranges.survey_jsonl(fmt_path, "auto", a, b) for a, b in parts])
        assert p.records == 40 and not p.duplicates
    assert ranges.plan([ranges.survey_jsonl(url, "auto", a, b) for a, b in parts]).starts == (
        ranges.plan([ranges.survey_jsonl(local, "auto", a, b) for a, b in parts]).starts
    )
    # Parquet and a JSON array too, the Parquet file read by row groups
    table = pa.Table.from_pylist([orjson.loads(x) for x in LINES])
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=8)
    s3.fs.put_file(str(tmp_path / "d.parquet"), f"{s3.bucket}/d.parquet")
    s3.fs.pipe_file(f"{s3.bucket}/d.json", b"[" + b",".join(LINES) + b"]")
    for name in ("d.parquet", "d.json"):
        assert [r.data for r in read_records(f"{s3.url}/{name}")] == [
            orjson.loads(x) for x in LINES
        ]
    rows = read_record_range(f"{s3.url}/d.parquet", "parquet", lo=9, hi=12)
    assert [r.index for r in rows] == [9, 10, 11]


def test_a_datasets_directory_is_read_from_a_store(tmp_path, s3):
    datasets = pytest.importorskip("datasets")
    recs = [orjson.loads(x) for x in LINES]
    datasets.Dataset.from_list(recs).save_to_disk(str(tmp_path / "ds"))
    s3.fs.put(str(tmp_path / "ds"), f"{s3.bucket}/ds", recursive=True)
    url = f"{s3.url}/ds"
    assert detect_file_kind(url) == "hf_disk"
    assert [r.data for r in read_records(url)] == recs


def test_missing_objects_and_buckets_are_named(s3):
    with pytest.raises(InputError, match=r"does not exist"):
        detect_file_kind(f"{s3.url}/nothing.jsonl")
    with pytest.raises(ConfigError, match=r"bucket"):
        storage.locate("s3://no-such-bucket-here/x.jsonl").check_readable()
    with pytest.raises(ConfigError, match=r"output s3://no-such-bucket-here/run: the bucket does"):
        storage.locate("s3://no-such-bucket-here/run").check_writable(directory=True)
    storage.locate(f"{s3.url}/run").check_writable(directory=True)  # the writer may
    assert s3.fs.ls(s3.bucket) == []  # and the probe is gone


def test_refused_credentials_are_said_without_the_secret(tmp_path, s3):
    """A child process with the read-only keys, then with keys nobody has: the secret is
    in its environment and never in what it prints."""
    s3.fs.pipe_file(f"{s3.bucket}/d.jsonl", JSONL)
    code = (
        "from fastscore import storage\n"
        "from fastscore.errors import FastscoreError\n"
        "import sys\n"
        "try:\n"
        f"    storage.locate({s3.url + '/d.jsonl'!r}).check_readable()\n"
        "    print('read ok')\n"
        f"    storage.locate({s3.url + '/out'!r}).check_writable(directory=True)\n"
        "except FastscoreError as e:\n"
        "    print(e)\n"
    )
    ro = s3.server.read_only
    env = {**s3.env, "AWS_ACCESS_KEY_ID": ro.key, "AWS_SECRET_ACCESS_KEY": ro.secret}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert p.stdout.startswith("read ok\noutput s3://"), p.stdout + p.stderr
    assert "access denied" in p.stdout and ro.secret not in p.stdout + p.stderr
    # keys that may put objects but not list them: a run could not find its own partials
    nl = s3.server.no_list
    env = {**s3.env, "AWS_ACCESS_KEY_ID": nl.key, "AWS_SECRET_ACCESS_KEY": nl.secret}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "may write but not list" in p.stdout and "s3:ListBucket" in p.stdout, p.stdout
    env = {**s3.env, "AWS_ACCESS_KEY_ID": "AKIANOBODY", "AWS_SECRET_ACCESS_KEY": "s3cr3t-x"}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert p.stdout.startswith("input s3://") and "access denied" in p.stdout, p.stdout
    assert "s3cr3t-x" not in p.stdout + p.stderr


def test_a_store_puts_whole_objects_and_growing_files_as_segments(s3):
    st = Store(f"{s3.url}/run")
    f = st.local / "scores.jsonl.partial"
    f.write_bytes(b"a\n")
    st.sync(f)
    with open(f, "ab") as h:
        h.write(b"b\nc\n")
    st.sync(f)
    st.sync(f)  # nothing new: no segment
    st.drain()  # (the uploader puts them in order, beside the scoring)
    segs = s3.fs.ls(f"{s3.bucket}/run/scores.jsonl.partial.segments", detail=False)
    assert len(segs) == 2
    # another process (a resume, a retried shard elsewhere) puts it together again
    other = Store(f"{s3.url}/run")
    other.local = other.local.with_name(other.local.name + "-other")
    g = other.local / "scores.jsonl.partial"
    assert other.restore(g) and g.read_bytes() == b"a\nb\nc\n"
    assert other.last_synced(g) is not None
    # a cut (a torn line dropped) starts a new generation, whole, and drops the old one
    g.write_bytes(b"a\nb\n")
    other.sync(g)
    with open(g, "ab") as h:
        h.write(b"d\n")
    other.sync(g)
    other.drain()
    assert st.restore(f) and f.read_bytes() == b"a\nb\nd\n"
    assert all(k.rpartition("/")[2].startswith("000001-") for k in s3.fs.ls(
        f"{s3.bucket}/run/scores.jsonl.partial.segments", detail=False, refresh=True))  # fmt: skip
    # whole objects: put, pulled, removed with their segments
    m = st.local / "scores.manifest.json"
    m.write_bytes(b"{}")
    st.push(m)
    m.unlink()
    assert st.exists(m) and st.pull(m) and m.read_bytes() == b"{}"
    st.remove(f)
    st.remove(m)
    assert not st.exists(m) and not st.restore(f)
    assert s3.fs.ls(s3.bucket, refresh=True) == []
    assert not st.pull(m) and not m.exists()
    st.close()
    assert not st.local.exists()


def test_a_store_that_fails_mid_run_stops_it_at_the_next_chunk(s3):
    """The uploader's failure (here the bucket is deleted under the run) is raised in the
    scoring thread, as one line naming the object, and nothing after it goes out."""
    st = store_for(f"{s3.url}/run")
    f = st.local / "scores.jsonl.partial"
    f.write_bytes(b"a\n")
    st.sync(f)
    st.drain()
    s3.fs.rm(s3.bucket, recursive=True)
    with open(f, "ab") as h:
        h.write(b"b\n")
    st.sync(f)
    with pytest.raises(ConfigError, match=r"output s3://.*/run/scores.jsonl.partial: .*bucket"):
        st.drain()
    # the store is done for: a later run in this process starts from a new one
    assert store_for(f"{s3.url}/run") is not st


def test_a_cut_after_a_restore_that_grows_back_is_put_whole(s3):
    """A resume cuts a torn tail and writes on; the store must hold what the file holds
    even when it grows back to its old length before the next sync."""
    st = Store(f"{s3.url}/run")
    f = st.local / "x.partial"
    f.write_bytes(b"A" * 100 + b"B" * 20)
    st.sync(f)
    st.drain()
    other = Store(f"{s3.url}/run")
    other.local = other.local.with_name(other.local.name + "-other")
    g = other.local / "x.partial"
    assert other.restore(g)
    g.write_bytes(b"A" * 60 + b"C" * 60)  # cut at 60, then 60 more: the same length
    other.sync(g)
    other.sync(other.local / "gone.partial")  # a file that is not there: nothing to put
    other.drain()
    assert st.restore(f) and f.read_bytes() == b"A" * 60 + b"C" * 60


def test_a_staging_path_is_known_as_its_store(s3):
    """What a run removes through its staging copy's path goes from the store too (an
    earlier run's features must not outlive a run that writes none)."""
    from fastscore.scoring.features import remove_features

    st = store_for(f"{s3.url}/out")
    feats = st.local / "s.features.npy"
    feats.write_bytes(b"old")
    st.push(feats)
    assert store_for(st.local) is st and store_for(st.local / "sub") is st
    remove_features(st.local / "s.jsonl")
    assert not s3.fs.exists(f"{s3.bucket}/out/s.features.npy")


_GROWTH = st_.lists(
    st_.one_of(
        st_.tuples(st_.just("append"), st_.binary(min_size=1, max_size=40)),
        st_.tuples(st_.just("sync"), st_.none()),
        # a resume elsewhere, which cuts what it restored to this fraction (a torn line)
        st_.tuples(st_.just("resume"), st_.floats(0, 1)),
    ),
    max_size=25,
)


def _staged(url: str, tag: str) -> Store:
    """A Store of ``url`` with a staging copy of its own (another process's, as it were)."""
    s = Store(url)
    s.local = s.local.with_name(f"{s.local.name}-{tag}")
    s.local.mkdir(parents=True, exist_ok=True)
    return s


@settings(max_examples=150, deadline=None)
@given(ops=_GROWTH)
def test_a_growing_file_in_a_store_is_always_one_complete_chain(ops):
    """The growing-file protocol's invariants (storage.staging), whatever the appends,
    syncs and resumes in another process that cut what they restored and write on (to the
    old length or past it): the store gives back exactly the file as it was at its last
    sync, never a mix of two states."""
    url = f"memory://fastscore-chain-{uuid.uuid4().hex}/run"
    writer = _staged(url, "w0")
    stores = [writer]
    f = writer.local / "s.partial"
    f.write_bytes(b"")
    synced = b""  # what the store must give back
    put: dict[str, bytes] = {}  # every segment seen, as it was first seen
    try:
        for k, (op, arg) in enumerate(ops):
            if op == "append":
                with open(f, "ab") as h:
                    h.write(arg)
            elif op == "sync":
                writer.sync(f)
                writer.drain()
                synced = f.read_bytes()
            else:
                writer = _staged(url, f"w{k}")
                stores.append(writer)
                f = writer.local / "s.partial"
                if not writer.restore(f):
                    f.write_bytes(b"")
                assert f.read_bytes() == synced
                f.write_bytes(synced[: int(len(synced) * arg)])
            reader = _staged(url, f"r{k}")
            stores.append(reader)
            g = reader.local / "s.partial"
            assert (g.read_bytes() if reader.restore(g) else b"") == synced
            for key in reader.fs.find(reader._root):  # a segment is put once, never again
                assert put.setdefault(key, reader.fs.cat_file(key)) == reader.fs.cat_file(key)
    finally:
        for s in stores:
            s.close()
