"""Coverage: features written beside the scores, clusters, quotas per cluster, the diverse
filter; select with --coverage on hand-made files and on the demo's torch-engine scores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from fastscore.config import SelectConfig
from fastscore.errors import ConfigError, InputError
from fastscore.records import RenderedSample
from fastscore.scoring.features import (
    FEATURE_DIM,
    FeatureWriter,
    chunk_feature_rows,
    features_partial_path,
    features_path,
    finish_features,
    merge_features,
    project_pooled,
    read_features,
    remove_features,
)
from fastscore.selection.budget import spread_quotas
from fastscore.selection.coverage import (
    auto_clusters,
    choose_diverse,
    kmeans,
    lexical_features,
    normalise,
)
from fastscore.selection.selector import select


def test_project_pooled_is_fixed_and_keeps_distances():
    rng = np.random.default_rng(1)
    h = rng.standard_normal((50, 512)).astype(np.float32)
    a, b = project_pooled(h), project_pooled(h[::-1].copy())
    assert a.dtype == np.float16 and a.shape == (50, FEATURE_DIM)
    # a row's projection does not depend on its chunk (up to the GEMM's rounding)
    assert np.allclose(a.astype(np.float32), b[::-1].astype(np.float32), rtol=2e-3, atol=2e-3)
    assert not np.allclose(a, project_pooled(h, seed=1), atol=0.1)
    # pairwise distances survive the projection within ~30% (64 dimensions)
    d_in = np.linalg.norm(h[:25] - h[25:], axis=1)
    d_out = np.linalg.norm(a[:25].astype(np.float32) - a[25:].astype(np.float32), axis=1)
    assert np.all(np.abs(d_out / d_in - 1) < 0.35)
    h[3, 7] = np.nan
    h[4, 0] = 1e30  # beyond float16: clipped, still finite
    out = project_pooled(h)
    assert np.isnan(out[3]).all() and np.isfinite(out[4]).all()


def _rs(index, status="ok", side=None):
    return RenderedSample(index, f"r{index}", np.zeros(3, np.int32), np.array([2], np.int32),
                          status=status, side=side)  # fmt: skip


def test_chunk_feature_rows_one_per_record():
    # records 0 (ok), 1 (too long), 2 (a pair: chosen ok, rejected ok), 3 (a pair whose
    # chosen side failed), 4 (ok)
    chunk = [
        _rs(0),
        _rs(1, "too_long"),
        _rs(2, side="chosen"),
        _rs(2, side="rejected"),
        _rs(3, "too_long", "chosen"),
        _rs(3, side="rejected"),
        _rs(4),
    ]
    pooled = np.arange(5 * 8, dtype=np.float32).reshape(5, 8)  # the 5 ok samples
    rows = chunk_feature_rows(chunk, pooled)
    proj = project_pooled(pooled)
    assert rows.shape == (5, FEATURE_DIM) and rows.dtype == np.float16
    assert np.array_equal(rows[0], proj[0]) and np.isnan(rows[1]).all()
    assert np.array_equal(rows[2], proj[1])  # the pair's first ok side
    assert np.array_equal(rows[3], proj[3])  # its chosen side failed: the rejected one
    assert np.array_equal(rows[4], proj[4])
    assert np.isnan(chunk_feature_rows(chunk, None)).all()  # an engine without features
    with pytest.raises(ValueError, match="4 pooled rows for 5 ok samples"):
        chunk_feature_rows(chunk, pooled[:4])


def test_feature_writer_resume_and_finish(tmp_path):
    scores = tmp_path / "scores.jsonl"
    rows = project_pooled(np.random.default_rng(0).standard_normal((10, 32)))
    w = FeatureWriter(scores)
    w.write(rows[:4])
    w.write(rows[4:7])  # a chunk whose scores lines were never written: the kill
    w.close()
    assert features_partial_path(scores).name == "scores.features.npy.partial"
    # resume after 4 scores lines: the partial is cut to 4 rows, then goes on
    with FeatureWriter(scores, resume_rows=4) as w:
        assert w.enabled
        w.write(rows[4:])
    # a run killed between the scores' rename and finish_features: the partial serves when
    # it holds exactly the scores' rows
    assert np.array_equal(read_features(scores, 10), rows, equal_nan=True)
    assert read_features(scores, 11) is None and read_features(scores) is None
    assert finish_features(scores) == features_path(scores)
    assert not features_partial_path(scores).exists()
    got = read_features(scores, 10)
    assert np.array_equal(got, rows, equal_nan=True) and got.dtype == np.float16
    assert finish_features(scores) == features_path(scores)  # idempotent
    with pytest.raises(InputError, match="has 10 rows but the scores file has 11"):
        read_features(scores, 11)
    # a resume with fewer feature rows than scores lines turns features off
    FeatureWriter(scores).close()  # a fresh run (removes the old final file too)
    assert not features_path(scores).exists()
    w = FeatureWriter(scores, resume_rows=3)
    assert not w.enabled and "holds 0 feature rows for 3" in w.note
    w.write(rows)  # ignored
    assert not features_partial_path(scores).exists()
    with FeatureWriter(scores) as w:
        w.write(rows)
    finish_features(scores)
    remove_features(scores)  # a fresh run whose engine writes none
    assert read_features(scores) is None and not features_path(scores).exists()


def test_merge_features_of_shards(tmp_path):
    rows = project_pooled(np.random.default_rng(0).standard_normal((9, 16)))
    parts = []
    for k, (a, b) in enumerate(((0, 4), (4, 9))):
        p = tmp_path / f"shard-{k}.jsonl"
        with FeatureWriter(p) as w:
            w.write(rows[a:b])
        finish_features(p)
        parts.append(p)
    out = tmp_path / "scores.jsonl"
    assert merge_features(parts, out)
    finish_features(out)
    assert np.array_equal(read_features(out), rows)
    assert not merge_features([*parts, tmp_path / "none.jsonl"], tmp_path / "o.jsonl")


def test_spread_quotas():
    sizes = {"a": 60, "b": 30, "c": 10}
    assert spread_quotas(10, sizes) == {"a": 6, "b": 3, "c": 1}
    assert spread_quotas(30, sizes, "balanced") == {"a": 10, "b": 10, "c": 10}
    # c has 10: its share beyond that goes to the others, evenly
    assert spread_quotas(45, sizes, "balanced") == {"a": 18, "b": 17, "c": 10}
    assert spread_quotas(95, sizes, "balanced") == {"a": 55, "b": 30, "c": 10}
    assert spread_quotas(500, sizes) == sizes  # never more than a cluster holds
    assert spread_quotas(0, sizes) == {"a": 0, "b": 0, "c": 0}
    with pytest.raises(ConfigError, match="spread must be"):
        spread_quotas(3, sizes, "even")


def test_auto_clusters():
    assert auto_clusters(1200, 60) == 24  # sqrt(600)
    assert auto_clusters(1200, 20) == 10  # half the budget
    assert auto_clusters(1_000_000, 60_000) == 256
    assert auto_clusters(3, 1) == 1


def _blobs(n_per=(50, 30, 20), seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(8, dtype=np.float32)[: len(n_per)] * 5
    x = np.concatenate(
        [c + rng.normal(0, 0.3, (n, 8)) for c, n in zip(centres, n_per, strict=True)]
    )
    truth = np.repeat(np.arange(len(n_per)), n_per)
    return x.astype(np.float32), truth


def test_kmeans_finds_blobs_numbered_by_size():
    x, truth = _blobs()
    x[7] = np.nan
    labels = kmeans(normalise(x), 3, seed=0)
    assert labels[7] == -1
    keep = np.arange(len(x)) != 7
    assert np.array_equal(labels[keep], truth[keep])  # the largest blob is c0
    assert (kmeans(normalise(x), 1)[keep] == 0).all()


def test_normalise_centres_and_scales():
    x = np.array([[10.0, 1.0], [10.0, -1.0], [np.nan, 0.0]], dtype=np.float32)
    out = normalise(x)
    assert np.allclose(out[:2], [[0, 1], [0, -1]]) and np.isnan(out[2]).all()
    raw = normalise(x, centre=False)
    assert np.allclose(raw[0], np.array([10, 1]) / np.sqrt(101)) and np.isnan(raw[2]).all()


def test_choose_diverse_skips_near_copies_then_tops_up():
    x = normalise(np.array([[1, 0], [0.99, 0.05], [0, 1], [-1, 0], [0.98, -0.02]], np.float32))
    ranked = [0, 1, 4, 2, 3]  # best first; 1 and 4 are near copies of 0
    assert choose_diverse(ranked, x, 3, min_distance=0.1) == ([0, 2, 3], 0)
    # 4 asked for, 3 distinct: the best left (record 1) tops it up
    assert choose_diverse(ranked, x, 4, min_distance=0.1) == ([0, 1, 2, 3], 1)
    assert choose_diverse(ranked, x, 2, min_distance=0.0) == ([0, 1], 0)  # no filter: the top 2


def _family_files(tmp_path, n=40):
    """Two families, a and b; every a scores above every b, so the plain top-k takes a
    only. Prompts name no family outright but share their words within one."""
    recs, rows = [], []
    for i in range(n):
        fam = "a" if i % 4 else "b"  # 30 a, 10 b
        prompt = (
            f"which digit is the largest of {i % 7} {i % 5} {i % 3}"
            if fam == "a"
            else f"spell the word number {i} backwards please"
        )
        recs.append({"id": f"r{i}", "family": fam, "prompt": prompt, "response": "x"})
        score = (1.0 if fam == "a" else 0.0) + i / 1000
        rows.append(
            {"id": f"r{i}", "index": i, "status": "ok", "n_response_tokens": 1, "lobass": score}
        )
    inp, sc = tmp_path / "in.jsonl", tmp_path / "scores.jsonl"
    inp.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    sc.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return inp, sc, [r["family"] for r in recs]


def test_lexical_features_separate_the_families(tmp_path):
    inp, _, fam = _family_files(tmp_path)
    x = lexical_features(inp, 40, fmt="prompt-response")
    assert x.shape == (40, FEATURE_DIM) and np.isfinite(x).all()
    labels = kmeans(normalise(x), 2)
    fam = np.array(fam)
    assert len(set(labels[fam == "a"])) == 1 and len(set(labels[fam == "b"])) == 1
    assert labels[fam == "a"][0] == 0  # the bigger family is c0
    # fitted on a sample of the records, applied to all, the same split
    y = lexical_features(inp, 40, sample=20, fmt="prompt-response")
    assert np.isfinite(y).all()
    assert np.array_equal(kmeans(normalise(y), 2), labels)
    with pytest.raises(InputError, match="more records than the scores file"):
        lexical_features(inp, 39, fmt="prompt-response")


def _picked(out):
    return [orjson.loads(x)["family"] for x in out.read_bytes().splitlines()]


def test_select_with_coverage_clusters(tmp_path):
    inp, sc, _ = _family_files(tmp_path)
    out = tmp_path / "o.jsonl"
    kw = dict(scores=str(sc), input=str(inp), output=str(out), top_k=8, within="none")
    s = select(**kw, coverage="none")
    assert _picked(out) == ["a"] * 8  # the plain ranking: one family
    assert "coverage" not in s and s["method"].endswith(
        "plain ranking (coverage none: the paper's top-k)"
    )
    s = select(**kw, coverage="clusters", clusters=2)
    assert sorted(_picked(out)) == ["a"] * 6 + ["b"] * 2  # in proportion, 30:10
    cov = s["coverage"]
    assert cov["features"] == "lexical" and cov["clusters"] == 2 and not cov["clusters_auto"]
    c0, c1 = cov["by_cluster"]["c0"], cov["by_cluster"]["c1"]
    assert (c0["records"], c0["quota"], c0["selected"]) == (30, 6, 6)
    assert (c1["records"], c1["quota"], c1["selected"]) == (10, 2, 2)
    assert c0["score_mean"] > 1.0 > c1["score_mean"]
    # the best of each cluster: b's two best are its last two
    ids = [orjson.loads(x)["id"] for x in out.read_bytes().splitlines()]
    assert "r36" in ids and "r32" in ids and "r28" not in ids
    s = select(**kw, coverage="clusters", clusters=2, spread="balanced")
    assert sorted(_picked(out)) == ["a"] * 4 + ["b"] * 4
    # the automatic number: sqrt(40 / 2) = 4, at most half the budget: 4
    s = select(**kw, coverage="clusters")
    assert s["coverage"]["clusters"] == 4 and s["coverage"]["clusters_auto"]
    assert "b" in _picked(out)
    # the field's values as the clusters
    s = select(**kw, coverage="clusters", group_field="family")
    assert s["coverage"]["features"] == "field:family"
    assert set(s["coverage"]["by_cluster"]) == {"a", "b"}
    assert sorted(_picked(out)) == ["a"] * 6 + ["b"] * 2


def test_select_with_coverage_diverse(tmp_path):
    inp, sc, _ = _family_files(tmp_path)
    out = tmp_path / "o.jsonl"
    s = select(
        scores=str(sc), input=str(inp), output=str(out), top_k=8, coverage="diverse",
        min_distance=0.8,
    )  # fmt: skip
    assert "b" in _picked(out) and len(_picked(out)) == 8
    # the filter by hand: in score order, a record is kept when it is at least 0.8 away
    # (cosine) from every record kept; the rest of the 8 is topped up
    x = normalise(lexical_features(inp, 40, fmt="prompt-response"), centre=False)
    scores = [orjson.loads(line)["lobass"] for line in sc.read_bytes().splitlines()]
    kept: list[int] = []
    for i in sorted(range(40), key=lambda i: -scores[i]):
        if len(kept) < 8 and all(1 - float(x[i] @ x[j]) >= 0.8 for j in kept):
            kept.append(i)
    assert 2 <= len(kept) < 8  # both families, and not every record passes
    assert s["coverage"]["topped_up"] == 8 - len(kept)
    ids = {orjson.loads(line)["id"] for line in out.read_bytes().splitlines()}
    assert {f"r{i}" for i in kept} <= ids


def test_coverage_option_errors(tmp_path):
    inp, sc, _ = _family_files(tmp_path)
    kw = dict(scores=str(sc), input=str(inp), output=str(tmp_path / "o.jsonl"))
    with pytest.raises(ConfigError, match="need a budget"):
        select(**kw, threshold=0.5, coverage="clusters")
    with pytest.raises(ConfigError, match="not several"):
        select(**kw, top_k=4, coverage="clusters", length_bins=2)
    with pytest.raises(ConfigError, match="--clusters needs --coverage clusters"):
        select(**kw, top_k=4, clusters=3, coverage="none")
    with pytest.raises(ConfigError, match="--clusters needs --coverage clusters"):
        select(**kw, threshold=0.5, clusters=3)  # auto: no coverage without a budget
    with pytest.raises(ConfigError, match="--within needs --coverage clusters"):
        select(**kw, top_k=4, coverage="none", within="responses")
    with pytest.raises(ConfigError, match="coverage must be one of"):
        select(**kw, top_k=4, coverage="kmeans")
    with pytest.raises(ConfigError, match="needs --quota"):
        select(**kw, top_k=4, group_field="family", coverage="diverse")
    with pytest.raises(InputError, match="has no engine features"):
        select(**kw, top_k=4, coverage="clusters", features="engine")


def test_config_file_keys_map_onto_select_config():
    from fastscore.config import from_dict

    cfg = from_dict(SelectConfig, {"coverage": "clusters", "clusters": 5, "spread": "balanced"})
    assert (cfg.coverage, cfg.clusters, cfg.spread, cfg.features) == (
        "clusters",
        5,
        "balanced",
        "auto",
    )


@pytest.fixture(scope="module")
def demo_scored(tmp_path_factory, demo_assets):
    """The demo's first 200 records scored by the torch engine, whose stream writes the
    engine features beside the scores (the tests on it read those, as select does)."""
    import fastscore
    from fastscore.config import EngineConfig
    from fastscore.scoring.features import read_features

    tmp = tmp_path_factory.mktemp("coverage")
    data = tmp / "data.jsonl"
    data.write_bytes(b"".join(demo_assets.data.read_bytes().splitlines(keepends=True)[:200]))
    scores = tmp / "scores.jsonl"
    fastscore.score(
        input=str(data),
        base=str(demo_assets.base),
        ref=str(demo_assets.ref),
        output=str(scores),
        progress=False,
        engine=EngineConfig(kind="torch", dtype="float32"),
    )
    assert read_features(scores, 200).shape == (200, 64)
    return tmp, data, scores


@pytest.mark.parametrize("batching", ["packed", "single", "padded"])
def test_torch_engine_pools_what_transformers_computes(demo_assets, tokenizer, batching):
    import torch
    from transformers import AutoModelForCausalLM

    from fastscore.config import EngineConfig
    from fastscore.data.formats import to_samples
    from fastscore.data.readers import read_records
    from fastscore.engines.torch_engine import TorchEngine, pool_rows
    from fastscore.rendering.renderer import Renderer

    rendered = [
        r
        for r in Renderer(tokenizer).render_all(to_samples(read_records(demo_assets.data)))
        if r.status == "ok"
    ][:12]
    model = AutoModelForCausalLM.from_pretrained(demo_assets.base, dtype=torch.float32).eval()
    eng = TorchEngine(
        model, EngineConfig(dtype="float32", batching=batching, forward_tokens=150), name="b",
        pool="prompt",
    )  # fmt: skip
    lp = eng.response_logprobs(rendered)
    assert len(lp) == 12 and eng.pooled.shape == (12, model.config.hidden_size)
    with torch.no_grad():
        for s, got in zip(rendered, eng.pooled, strict=True):
            h = model.model(input_ids=torch.tensor(s.token_ids[None].astype(np.int64)))
            pos, _ = pool_rows([s], "prompt")
            want = h.last_hidden_state[0][pos].mean(0).numpy()
            assert np.abs(got - want).max() < 1e-4
    eng.response_logprobs([])
    assert eng.pooled is None
    off = TorchEngine(model, EngineConfig(dtype="float32"), name="b")
    off.response_logprobs(rendered[:2])
    assert off.pooled is None


def test_cli_select_with_coverage_on_demo_scores(demo_scored):
    from click.testing import CliRunner

    from fastscore.cli import main

    tmp, data, scores = demo_scored
    base = ["select", str(scores), "--input", str(data), "--top-k", "30"]
    for n, extra in enumerate((
        ["clusters"],  # auto: the engine features file beside the scores
        ["clusters", "--features", "lexical"],
        ["clusters", "--features", "engine", "--spread", "balanced", "--clusters", "4"],
        ["diverse", "--min-distance", "0.2"],
    )):  # fmt: skip
        out = tmp / f"sub{n}.jsonl"  # each call its own file: none passes on another's
        r = CliRunner().invoke(main, [*base, "--output", str(out), "--coverage", *extra])
        assert r.exit_code == 0, r.output
        assert len(out.read_bytes().splitlines()) == 30
    out = tmp / "sub.jsonl"
    s = select(scores=str(scores), input=str(data), output=str(out), top_k=30, coverage="clusters")
    by = s["coverage"]["by_cluster"]
    assert s["coverage"]["features"] == "engine" and s["coverage"]["clusters"] == 10
    assert sum(c["records"] for c in by.values()) == 200
    assert sum(c["selected"] for c in by.values()) == s["selected"] == 30


def test_report_shows_the_clusters(demo_scored):
    from fastscore.reporting.page import report

    tmp, data, scores = demo_scored
    sel = SelectConfig(top_k=30, coverage="clusters", clusters=3, features="lexical")
    s = report(scores=str(scores), input=str(data), output_dir=str(tmp / "rep"), select=sel)
    page = (tmp / "rep" / "report.html").read_text()
    assert '<table id="clusters">' in page and "clusters.png" in page
    for name, c in s["coverage"]["by_cluster"].items():
        assert f'<td class="l">{name}</td><td>{c["records"]}</td>' in page
    assert sum(c["selected"] for c in s["coverage"]["by_cluster"].values()) == s["selected"]


def test_cli_run_and_report_take_the_coverage_options(demo_scored, demo_assets):
    from click.testing import CliRunner

    from fastscore.cli import main

    tmp, data, scores = demo_scored
    out = tmp / "run"
    args = ["run", str(data), "--base", str(demo_assets.base), "--ref", str(demo_assets.ref)]
    args += ["--output-dir", str(out), "--engine", "torch", "--dtype", "float32"]
    args += ["--no-progress", "--fraction", "0.1", "--coverage", "clusters", "--clusters", "3"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    # a torch run writes the engine features, which --features auto then takes
    assert "within 3 clusters of engine features (proportional), varied responses" in r.output
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    cov = manifest["selection"]["coverage"]
    assert cov["clusters"] == 3 and sum(c["selected"] for c in cov["by_cluster"].values()) == 20
    method = (
        "top 10% by lobass within 3 clusters of engine features (proportional), varied responses"
    )
    assert manifest["selection"]["method"] == method
    page = (out / "report" / "report.html").read_text()
    assert '<table id="clusters">' in page and f'<span id="method">{method}</span>' in page
    # report: the field's values as the clusters, balanced
    rep = tmp / "rep-field"
    r = CliRunner().invoke(
        main,
        ["report", str(scores), "--input", str(data), "--output-dir", str(rep), "--top-k", "20"]
        + ["--coverage", "clusters", "--group-field", "kind", "--spread", "balanced"],
    )
    assert r.exit_code == 0, r.output
    page = (rep / "report.html").read_text()
    kinds = {orjson.loads(x)["kind"] for x in data.read_bytes().splitlines()}
    assert all(f'<td class="l">{k}</td>' in page for k in kinds)
    assert "field:kind features (balanced)" in page


def test_coverage_edges(tmp_path):
    inp, sc, _ = _family_files(tmp_path)
    rows = [orjson.loads(x) for x in sc.read_bytes().splitlines()]
    rows[3]["status"], rows[3]["lobass"] = "too_long", None  # never eligible
    inp.write_bytes(inp.read_bytes() + b'{"id": "bad", "prompt": 3}\n')  # unreadable prompt
    rows.append({"id": "bad", "index": 40, "status": "bad_record", "n_response_tokens": 0})
    sc.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    out = tmp_path / "o.jsonl"
    kw = dict(scores=str(sc), input=str(inp), output=str(out))
    s = select(**kw, top_k=0, coverage="clusters", allow_empty=True)
    assert s["selected"] == 0 and s["coverage"]["clusters"] == 1
    s = select(**kw, top_k=100, coverage="clusters", clusters=2)
    assert s["selected"] == 39 and s["short_by"] == 61  # 39 eligible of 41 records
    by = s["coverage"]["by_cluster"]
    assert by["(no features)"]["records"] == 1 and by["(no features)"]["selected"] == 0
    s = select(**kw, top_k=100, coverage="diverse", min_distance=0.99)
    assert s["selected"] == 39 and s["coverage"]["topped_up"] > 0


@pytest.mark.engine
def test_the_torch_stream_writes_engine_features_in_step_with_the_scores(tmp_path, demo_assets):
    """Scoring with the torch engine writes one feature row per scores line (the base's
    prompt-pooled states, projected), NaN for a record not scored; a resumed run keeps
    them in step; select --features engine clusters them."""

    import fastscore
    from fastscore.config import EngineConfig
    from fastscore.data.formats import to_samples
    from fastscore.data.readers import read_records
    from fastscore.engines.models import load_tokenizer
    from fastscore.engines.torch_engine import TorchEngine
    from fastscore.rendering.renderer import Renderer
    from fastscore.scoring.features import project_pooled, read_features
    from tests.helpers import killed_run

    lines = demo_assets.data.read_bytes().splitlines()[:40]
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"\n".join([*lines[:5], b"{broken", *lines[5:]]) + b"\n")
    out = tmp_path / "s.jsonl"
    killed_run(data, out, demo_assets.base, demo_assets.ref, "--batch-tokens", "200")
    m = fastscore.score(input=str(data), base=str(demo_assets.base), ref=str(demo_assets.ref),
                        output=str(out), resume=True, progress=False, batch_tokens=200,
                        engine=EngineConfig(kind="torch", dtype="float32"))  # fmt: skip
    assert m["counts"]["resumed_after_records"] == 41
    x = np.asarray(read_features(out, 41), dtype=np.float32)
    assert x.shape == (41, 64)
    assert np.isnan(x[5]).all() and np.isfinite(np.delete(x, 5, axis=0)).all()
    tok = load_tokenizer(demo_assets.base)
    rendered = [
        r for r in Renderer(tok).render_all(to_samples(read_records(data))) if r.status == "ok"
    ]
    eng = TorchEngine(demo_assets.base, EngineConfig(kind="torch", dtype="float32"), name="b",
                      pool="prompt")  # fmt: skip
    eng.response_logprobs(rendered)
    want = project_pooled(eng.pooled).astype(np.float32)
    np.testing.assert_allclose(np.delete(x, 5, axis=0), want, rtol=2e-3, atol=2e-3)
    summary = fastscore.select(scores=str(out), input=str(data), output=str(tmp_path / "c.jsonl"),
                               fraction=0.25, coverage="clusters", features="engine")  # fmt: skip
    assert summary["coverage"]["features"] == "engine" and summary["selected"] == 10


def test_within_responses_varies_a_clusters_answers(tmp_path):
    """One family whose best-scored records all give one answer: the plain cluster quota
    takes only those; --within responses spreads it over the answers, in proportion."""
    recs, rows = [], []
    for n in range(20):
        answer = "= nine" if n < 12 else "= two"
        recs.append({"id": f"r{n}", "prompt": f"the max of {n % 7} {n % 5} nine",
                     "response": answer})  # fmt: skip
        score = 2.0 - n / 100 if n < 12 else 1.0 - n / 100
        rows.append({"id": f"r{n}", "index": n, "status": "ok", "n_tokens": 9,
                     "n_response_tokens": 3, "lobass": score})  # fmt: skip
    inp, sc = tmp_path / "in.jsonl", tmp_path / "s.jsonl"
    inp.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    sc.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    out = tmp_path / "o.jsonl"
    kw = dict(scores=str(sc), input=str(inp), output=str(out), top_k=10, coverage="clusters",
              clusters=1)  # fmt: skip
    select(**kw, within="none")
    answers = [orjson.loads(x)["response"] for x in out.read_bytes().splitlines()]
    assert answers == ["= nine"] * 10
    s = select(**kw, within="responses")
    answers = [orjson.loads(x)["response"] for x in out.read_bytes().splitlines()]
    assert sorted(answers) == ["= nine"] * 6 + ["= two"] * 4  # 12:8 of the cluster
    assert s["coverage"]["within"] == "responses"
    ids = [orjson.loads(x)["id"] for x in out.read_bytes().splitlines()]
    assert ids[:6] == [f"r{n}" for n in range(6)]  # the best of each answer
    with pytest.raises(ConfigError, match="--within needs --coverage clusters"):
        select(**{**kw, "coverage": "diverse", "clusters": None}, within="responses")


def test_coverage_scale_benchmark_runs_every_mode(tmp_path):
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "coverage_scale.py"
    p = subprocess.run(
        [sys.executable, str(script), "--records", "3000", "--workdir", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    modes = orjson.loads(p.stdout.strip().splitlines()[-1])["modes"]
    assert set(modes) == {"plain", "clusters", "clusters+within"}
    for m in modes.values():
        assert m["selected"] == 180 and m["peak_rss_mib"] > 0 and m["seconds"] > 0


def test_the_default_selection_resolves_by_hand():
    from fastscore.config import resolve_coverage

    def r(**kw):
        c = resolve_coverage(SelectConfig(**kw))
        return c.coverage, c.within

    assert r(top_k=10) == ("clusters", "responses")  # a budget: clusters, varied answers
    assert r(fraction=0.1) == ("clusters", "responses")
    assert r(threshold=0.5) == ("none", "none")  # no budget to spread
    assert r(top_k=10, quota="proportional", group_field="g") == ("none", "none")
    assert r(top_k=10, length_bins=4) == ("none", "none")
    assert r(top_k=10, coverage="none") == ("none", "none")  # the paper's plain top-k
    assert r(top_k=10, within="none") == ("clusters", "none")
    assert r(top_k=10, coverage="diverse") == ("diverse", "none")
    assert r(top_k=10, coverage=None, within=None) == ("none", "none")  # as YAML's null


def test_select_by_default_spreads_the_budget_and_says_so(tmp_path):
    """Given only a budget, select spreads it over clusters with varied responses (what
    selection_quality measured above random); --coverage none is the plain top-k."""
    from click.testing import CliRunner

    from fastscore.cli import main

    inp, sc, _ = _family_files(tmp_path)
    out = tmp_path / "o.jsonl"
    s = select(scores=str(sc), input=str(inp), output=str(out), top_k=8)
    assert sorted(_picked(out)) == ["a"] * 6 + ["b"] * 2  # 30:10, where plain takes 8 a
    assert s["coverage"]["method"] == "clusters" and s["coverage"]["within"] == "responses"
    assert s["method"] == (
        f"top 8 by lobass within {s['coverage']['clusters']} clusters of lexical features "
        "(proportional), varied responses"
    )
    args = ["select", str(sc), "--input", str(inp), "--output", str(out), "--fraction", "0.2"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "selected 8 of 40 records (40 eligible), top 20% by lobass within" in r.output
    assert "varied responses" in r.output and "b" in _picked(out)
    r = CliRunner().invoke(main, [*args, "--coverage", "none"])
    assert r.exit_code == 0, r.output
    assert "top 20% by lobass, plain ranking (coverage none: the paper's top-k)" in r.output
    assert _picked(out) == ["a"] * 8
