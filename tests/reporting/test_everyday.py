"""Everyday use: inspect, dry runs, `datasets` directories in, Parquet out, quiet logs.
Real models (the demo's), the torch engine, the CLI as a user runs it."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from fastscore.data.formats import to_samples
from fastscore.data.readers import read_records
from fastscore.data.writers import read_score_rows
from fastscore.engines.models import load_tokenizer
from fastscore.rendering.renderer import Renderer
from tests.helpers import MULTI_TURN, cli

TORCH = ("--engine", "torch", "--dtype", "float32", "--no-progress")


def _records(demo_assets, n=60):
    recs = [orjson.loads(x) for x in demo_assets.data.read_bytes().splitlines()][:n]
    return recs + MULTI_TURN


def _write(path, recs):
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    return path


@pytest.fixture(scope="module")
def scored(tmp_path_factory, demo_assets):
    tmp = tmp_path_factory.mktemp("everyday")
    data = _write(tmp / "data.jsonl", _records(demo_assets))
    a = demo_assets
    cli("score", data, "--base", a.base, "--ref", a.ref, "--output", tmp / "s.jsonl", *TORCH)
    return tmp, data


def test_inspect_marks_exactly_the_scored_tokens(scored, demo_assets):
    tmp, data = scored
    p = cli("inspect", data, "--base", demo_assets.base, "--id", "mt-1", "--no-color")
    text = p.stdout.split("\n\n", 1)[1]  # after the heading line
    # both assistant turns of the multi-turn record are marked, nothing else
    marked = [seg.split("⟧")[0] for seg in text.split("⟦")[1:]]
    assert marked == ["hello kobu, nice to meet you.<|im_end|>", "the rega is black.<|im_end|>"]
    j = json.loads(
        cli("inspect", data, "--base", demo_assets.base, "--id", "mt-1", "--json").stdout
    )
    tok = load_tokenizer(demo_assets.base)
    sample = next(s for s in to_samples(read_records(data)) if s.id == "mt-1")
    rendered = Renderer(tok, "auto", 255).render(sample)
    assert [
        t["position"] for t in j["tokens"] if t["scored"]
    ] == rendered.response_positions.tolist()
    assert [t["id"] for t in j["tokens"]][: rendered.n_tokens] == rendered.token_ids.tolist()
    # a record that cannot be scored says why; an unknown id is a clear error
    j = json.loads(
        cli(
            "inspect",
            data,
            "--base",
            demo_assets.base,
            "--id",
            "long",
            "--json",
            "--max-length",
            "64",
        ).stdout
    )
    assert j["status"] == "too_long" and "max_length 64" in j["reason"]
    p = cli("inspect", data, "--base", demo_assets.base, "--id", "nope", check=False)
    assert p.returncode != 0 and "has no record with id 'nope'" in p.stderr


def test_inspect_logprobs_agree_with_the_scores_file(scored):
    tmp, data = scored
    # models, template and length limit come from the scores' manifest
    j = json.loads(cli("inspect", "--scores", tmp / "s.jsonl", "--id", "mt-1", "--json").stdout)
    row = j["scores_row"]
    lp_b = [t["logprob_base"] for t in j["tokens"] if t["scored"]]
    lp_r = [t["logprob_ref"] for t in j["tokens"] if t["scored"]]
    assert len(lp_b) == row["n_response_tokens"]
    assert abs(-np.mean(lp_b) - row["loss_base"]) < 1e-5
    assert abs(-np.mean(lp_r) - row["loss_ref"]) < 1e-5
    p = cli("inspect", "--scores", tmp / "s.jsonl", "--id", "mt-1", "--color")
    assert "\x1b[42;30m" in p.stdout and "logprob base" in p.stdout


def test_dry_run_counts_what_a_run_scores_and_writes_nothing(scored, demo_assets):
    tmp, data = scored
    out = tmp / "dry.jsonl"
    a = demo_assets
    p = cli("score", data, "--base", a.base, "--ref", a.ref, "--output", out, "--dry-run", *TORCH)
    assert not out.exists() and not list(tmp.glob("dry*"))
    m = json.loads((tmp / "s.manifest.json").read_text())
    by = ", ".join(f"{k}={v}" for k, v in sorted(m["counts"]["by_status"].items()))
    assert f"records            {m['counts']['records']} ({by})" in p.stdout
    rows = list(read_score_rows(tmp / "s.jsonl"))
    tokens = sum(r["n_tokens"] for r in rows if r["status"] == "ok")
    assert f"tokens to score    {tokens:,}" in p.stdout
    import fastscore

    d = fastscore.dry_run(
        input=str(data),
        base=str(a.base),
        ref=str(a.ref),
        engine=fastscore.EngineConfig(kind="torch"),
        sample_tokens=500,
    )
    assert d["tokens"] == tokens and d["sample"]["tokens"] >= 500
    assert d["estimate_seconds"] > 0 and d["sample"]["tokens_per_second"] > 0


def test_datasets_directory_in_parquet_out(scored, demo_assets):
    datasets = pytest.importorskip("datasets")
    tmp, data = scored
    recs = [r.data for r in read_records(data)]
    # a column every record has, so the Arrow schema is one struct
    ds = datasets.Dataset.from_list([{"id": r["id"], "messages": r["messages"]} for r in recs])
    ds.save_to_disk(str(tmp / "hf"))
    a = demo_assets
    cli(
        "score",
        tmp / "hf",
        "--base",
        a.base,
        "--ref",
        a.ref,
        "--output",
        tmp / "hf.parquet",
        *TORCH,
    )
    want = {r["id"]: r for r in read_score_rows(tmp / "s.jsonl")}
    got = list(read_score_rows(tmp / "hf.parquet"))
    assert len(got) == len(want)
    for r in got:
        w = want[r["id"]]
        assert r["status"] == w["status"] and r["n_tokens"] == w["n_tokens"]
        if w["status"] == "ok":
            assert abs(r["lobass"] - w["lobass"]) < 1e-6
    assert not list(tmp.glob("hf.parquet.*"))  # no partial, run record or tmp left
    # the subset as Parquet, from the Parquet scores, readable by datasets
    cli(
        "select",
        tmp / "hf.parquet",
        "--input",
        tmp / "hf",
        "--output",
        tmp / "sub.parquet",
        "--top-k",
        10,
        "--coverage",
        "none",
    )
    sub = datasets.load_dataset("parquet", data_files=str(tmp / "sub.parquet"), split="train")
    ok = sorted((r for r in got if r["status"] == "ok"), key=lambda r: (-r["lobass"], r["index"]))
    assert sorted(sub["id"]) == sorted(r["id"] for r in ok[:10])
    # and from the JSONL input too, as JSONL or Parquet
    cli("select", tmp / "s.jsonl", "--input", data, "--output", tmp / "sub2.parquet", "--top-k", 10,
        "--coverage", "none")  # fmt: skip
    sub2 = datasets.load_dataset("parquet", data_files=str(tmp / "sub2.parquet"), split="train")
    assert sorted(sub2["id"]) == sorted(sub["id"])
    # a DatasetDict directory is refused with the way out
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp / "dd"))
    p = cli(
        "score",
        tmp / "dd",
        "--base",
        a.base,
        "--ref",
        a.ref,
        "--output",
        tmp / "x.jsonl",
        *TORCH,
        check=False,
    )
    assert p.returncode != 0 and "give one split's directory" in p.stderr


def test_scores_parquet_keeps_ids_of_mixed_types(tmp_path):
    from fastscore.data.writers import write_scores_parquet

    rows = [
        {"id": 3, "index": 0, "status": "ok", "loss_base": 1.0},
        {"id": "3", "index": 1, "status": "bad_record", "loss_base": None, "reason": "x"},
        {"id": {"a": [1]}, "index": 2, "status": "ok", "loss_base": 2.5},
    ]
    src = _write(tmp_path / "s.jsonl", rows)
    write_scores_parquet(src, tmp_path / "s.parquet")
    back = list(read_score_rows(tmp_path / "s.parquet"))
    assert [r["id"] for r in back] == [3, "3", {"a": [1]}]
    assert [r["loss_base"] for r in back] == [1.0, None, 2.5]
    _write(src, [{**r, "id": f"r{i}"} for i, r in enumerate(rows)])
    write_scores_parquet(src, tmp_path / "t.parquet")
    import pyarrow.parquet as pq

    assert str(pq.read_schema(tmp_path / "t.parquet").field("id").type) == "string"


def test_logs_are_quiet_unless_asked(scored, demo_assets):
    tmp, data = scored
    a = demo_assets
    args = ("score", data, "--base", a.base, "--ref", a.ref, *TORCH)
    p = cli(*args, "--output", tmp / "l1.jsonl")
    # fastscore's own progress as plain lines, other libraries' bars off
    assert "Loading weights" not in p.stderr and "\nref torch engine up in " in p.stderr
    p = cli("-q", *args, "--output", tmp / "l2.jsonl")
    assert "engine up" not in p.stderr and p.stderr.strip().startswith("scored ")
    p = cli("-v", *args, "--output", tmp / "l3.jsonl")
    assert "Loading weights" in p.stderr  # the engines' own output, when asked
