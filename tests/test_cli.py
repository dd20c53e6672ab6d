"""The command line end to end, as a user runs it (subprocesses, real engines)."""

import json
import shutil

import orjson
import pytest

from fastscore.data.formats import to_samples
from fastscore.data.readers import read_records
from fastscore.rendering.renderer import Renderer
from fastscore.scoring.arithmetic import mean_nll
from tests.helpers import MULTI_TURN, cli
from tests.helpers.reference import transformers_logprobs


@pytest.mark.engine
def test_demo_end_to_end(tmp_path, demo_assets):
    out = tmp_path / "demo"
    p = cli("demo", "--output-dir", out, "--no-progress", fresh=True)  # the demo runs vLLM
    assert "terminate called" not in p.stderr  # its engines shut down cleanly
    # other libraries' notices and bars stay in vLLM's log (issue 31: 18 of 35 lines were)
    for noise in ("Triton", "FutureWarning", "NUMA", "Loading safetensors", "Loading weights"):
        assert noise not in p.stderr, p.stderr
    assert "vLLM's log in " in p.stderr
    # where the models are, and every file written, the explorer included
    assert f"demo models and data: {demo_assets.root} (base/, ref/, sft.jsonl" in p.stdout
    assert f"wrote in {out.resolve()}/: scores.jsonl, manifest.json, selected.jsonl" in p.stdout
    assert f"wrote in {out.resolve() / 'report'}/: report.html, explorer.html, " in p.stdout
    lines = {ln.split()[0]: ln.split()[1:] for ln in p.stdout.splitlines() if ln.strip()}
    assert lines["kind"] == ["in_data", "selected", "lobass", "rho", "random_expected"]
    in_data, selected, by_lobass, by_rho, random_exp = (float(x) for x in lines["learnable"])
    # The embedded world is built so that only "learnable" samples are learnable: LoBaSS's
    # plain ranking must prefer them well beyond chance.
    assert in_data == 200 and by_lobass > 2 * random_exp
    # the default selection (selected.jsonl) spreads the 120 over the world's three prompt
    # families, each kind a family of its own here
    assert sum(float(lines[k][1]) for k in ("learnable", "known", "noise")) == 120
    assert "selected: the default selection, top 20% by lobass within" in p.stdout
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["records"] == 600 and m["selection"]["selected"] == 120
    assert len((out / "selected.jsonl").read_bytes().splitlines()) == 120
    assert len((out / "scores.jsonl").read_bytes().splitlines()) == 600
    # run writes the report of its own selection
    page = (out / "report" / "report.html").read_text()
    assert m["report"] == str((out / "report" / "report.html").resolve())
    assert "fraction 0.2 by <b>lobass</b>" in page and "<b>120</b>" in page


def test_run_multi_turn_matches_transformers(tmp_path, demo_assets, tokenizer):
    """(the vLLM engine's multi-turn logprobs: tests/engines/test_engine.py)"""
    data = tmp_path / "chat.jsonl"
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in MULTI_TURN) + b"{not json\n")
    out = tmp_path / "out"
    p = cli(
        "run",
        data,
        "--base",
        demo_assets.base,
        "--ref",
        demo_assets.ref,
        "--output-dir",
        out,
        "--top-k",
        1,
        "--dtype",
        "float32",
        "--max-length",
        100,
        "--engine",
        "torch",
        "--no-progress",
    )
    # its last lines: the records not scored by their lines, the report, every file written
    assert "  line 6 (record 5): bad_record: invalid JSON" in p.stderr
    report = (out / "report").resolve()
    assert f"report: {report / 'report.html'} (and the explorer: {report / 'explorer.html'})" in (
        p.stderr
    )
    wrote = [ln for ln in p.stderr.splitlines() if ln.startswith("wrote in ")]
    assert wrote[0] == (
        f"wrote in {out.resolve()}/: scores.jsonl, scores.features.npy, manifest.json, "
        "selected.jsonl"
    )
    assert wrote[1].startswith(f"wrote in {report}/: report.html, explorer.html, losses.png")
    assert sorted(wrote[1].split(": ", 1)[1].split(", ")) == sorted(
        f.name for f in report.iterdir()
    )
    rows = [orjson.loads(x) for x in (out / "scores.jsonl").read_bytes().splitlines()]
    assert [r["id"] for r in rows] == ["mt-1", "mt-2", "no-reply", "long", "bad-role", None]
    assert [r["status"] for r in rows] == [
        "ok",
        "ok",
        "no_response",
        "too_long",
        "bad_record",
        "bad_record",
    ]
    assert "line 6: invalid JSON" in rows[5]["reason"]
    for r in rows[2:]:
        assert r["loss_base"] is None and r["lobass"] is None and r["reason"]

    rendered = list(
        Renderer(tokenizer, "auto").render_all(to_samples(read_records(data), "messages"))
    )[:2]
    for model, key in ((demo_assets.base, "loss_base"), (demo_assets.ref, "loss_ref")):
        for s, lp in zip(rendered, transformers_logprobs(model, rendered), strict=True):
            assert abs(rows[s.index][key] - mean_nll(lp)) < 1e-4
            assert rows[s.index]["n_response_tokens"] == s.n_response_tokens
    best = max(rows[:2], key=lambda r: r["lobass"])
    selected = (out / "selected.jsonl").read_bytes().splitlines(keepends=True)
    assert selected == [data.read_bytes().splitlines(keepends=True)[best["index"]]]
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["by_status"] == {"ok": 2, "bad_record": 2, "no_response": 1, "too_long": 1}
    # which rule found the scored tokens, in the manifest and the summary
    assert m["template"]["rule"] == "sentinel"  # the demo's ChatML: no markers, not TRL's
    assert m["template"]["masks"].startswith("the fallback rule: the model template has no")
    assert f"scored tokens: {m['template']['masks']}" in p.stderr
    assert (
        m["models"]["base"]["weights_sample_sha256"] != m["models"]["ref"]["weights_sample_sha256"]
    )
    assert m["options"]["engine"]["dtype"] == "float32" and m["max_length"] == 100
    assert {"engine_base", "engine_ref", "read_render"} <= set(m["seconds"])


def test_select_cli_and_config_file(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_bytes(
        b"".join(orjson.dumps({"prompt": "p", "response": str(i)}) + b"\n" for i in range(5))
    )
    scores = tmp_path / "s.jsonl"  # (ids as positions: how older scores files named them)
    scores.write_bytes(
        b"".join(
            orjson.dumps({"id": i, "index": i, "status": "ok", "lobass": i / 10}) + b"\n"
            for i in range(5)
        )
    )
    cfg = tmp_path / "sel.yaml"
    cfg.write_text(f"scores: {scores}\ninput: {data}\noutput: {tmp_path / 'x.jsonl'}\ntop_k: 1\n")
    out = tmp_path / "sub.jsonl"
    cli("select", scores, "--input", data, "--output", out, "--fraction", 0.4, "--coverage", "none")
    assert [orjson.loads(x)["response"] for x in out.read_bytes().splitlines()] == ["3", "4"]
    cfg.write_text(cfg.read_text().replace("top_k: 1", "top_k: 2"))
    cli("select", "--config", cfg, "--output", out)  # the CLI's --output beats the file's
    assert len(out.read_bytes().splitlines()) == 2 and not (tmp_path / "x.jsonl").exists()


def test_cli_errors_are_one_clear_line(tmp_path, demo_assets):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("score:\n  engine:\n    dtpye: float32\n")
    p = cli("run", "--config", cfg, check=False)
    assert p.returncode == 1 and "unknown key(s) ['dtpye']" in p.stderr
    assert "Traceback" not in p.stderr
    p = cli(
        "score",
        tmp_path / "none.jsonl",
        "--base",
        demo_assets.base,
        "--ref",
        demo_assets.ref,
        "--output",
        tmp_path / "s.jsonl",
        check=False,
    )
    assert p.returncode == 1 and "does not exist" in p.stderr
    p = cli("select", tmp_path / "s.jsonl", check=False)
    assert p.returncode == 1 and "'input' is required" in p.stderr
    assert "Examples:" in cli("--help").stdout


def test_mismatched_tokenizers_stop_before_scoring(tmp_path, demo_assets):
    import fastscore
    from fastscore.errors import ModelError

    ref = tmp_path / "ref"
    shutil.copytree(demo_assets.ref, ref)
    tc = json.loads((ref / "tokenizer.json").read_text())
    vocab = tc["model"]["vocab"]
    a, b = sorted(vocab)[100:102]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (ref / "tokenizer.json").write_text(json.dumps(tc))
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "p", "response": "r"}\n')
    with pytest.raises(ModelError, match="tokenizers differ: vocabularies differ"):
        fastscore.score(
            input=str(data),
            base=str(demo_assets.base),
            ref=str(ref),
            output=str(tmp_path / "s.jsonl"),
        )
