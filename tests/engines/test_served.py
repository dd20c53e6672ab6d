"""--engine served against real vLLM servers (CPU build) started on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import orjson
import pytest

import fastscore
from fastscore.config import EngineConfig
from fastscore.engines.served import PROBES, parse_prompt_logprobs
from fastscore.engines.servers import Server
from fastscore.errors import EngineError, ModelError
from fastscore.records import RenderedSample
from fastscore.scoring.arithmetic import mean_nll
from tests.helpers.reference import transformers_logprobs

KEY = "test-key-not-to-be-written"


@pytest.fixture(scope="module")
def servers(demo_assets):
    base = Server(demo_assets.base, "base", api_key=KEY).start()
    ref = Server(demo_assets.ref, "ref", api_key=KEY).start()
    try:
        yield base.wait(), ref.wait()
    finally:
        base.kill()
        ref.kill()


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("FASTSCORE_API_KEY", KEY)


def _data(tmp_path, demo_assets, n):
    lines = demo_assets.data.read_bytes().splitlines()[:n]
    multi = {
        "id": "multi",
        "messages": [
            {"role": "user", "content": "hello, i am kobu."},
            {"role": "assistant", "content": "hello kobu, nice to meet you."},
            {"role": "user", "content": "what color is the rega?"},
            {"role": "assistant", "content": "the rega is black."},
        ],
    }
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n" + orjson.dumps(multi) + b"\n")
    return path


def _rows(path):
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


pytestmark = pytest.mark.engine


def test_served_matches_transformers(tmp_path, demo_assets, tokenizer, servers, api_key):
    from fastscore.data.formats import to_samples
    from fastscore.data.readers import read_records
    from fastscore.rendering.renderer import Renderer

    base, ref = servers
    data = _data(tmp_path, demo_assets, 30)
    out = tmp_path / "s.jsonl"
    m = fastscore.score(
        input=str(data),
        output=str(out),
        base_url=base.url,
        ref_url=ref.url,
        progress=False,
        engine=EngineConfig(kind="served"),
    )
    rows = _rows(out)
    rendered = list(Renderer(tokenizer).render_all(to_samples(read_records(data))))
    for model, key in ((demo_assets.base, "loss_base"), (demo_assets.ref, "loss_ref")):
        for s, lp in zip(rendered, transformers_logprobs(model, rendered), strict=True):
            assert abs(rows[s.index][key] - mean_nll(lp)) < 1e-4
    # one request per distinct sample: the demo set repeats some records word for word
    distinct = {(r.token_ids.tobytes(), r.response_positions.tobytes()) for r in rendered}
    assert m["counts"]["identical_samples"] == 31 - len(distinct)
    assert m["engines"]["base"]["endpoints"][0]["requests"] == len(distinct)
    assert m["models"]["base"]["root"] == str(demo_assets.base)  # tokenizer found there
    text = (tmp_path / "s.manifest.json").read_text() + out.read_text()
    assert KEY not in text


def test_server_killed_mid_run_is_retried_and_nothing_is_lost(
    tmp_path, demo_assets, servers, api_key
):
    # the module's base server is the one killed and restarted (a start is ~40 s here)
    flaky, ref = servers
    data = _data(tmp_path, demo_assets, 120)
    out = tmp_path / "s.jsonl"
    partial = tmp_path / "s.jsonl.partial"

    scoring_over = threading.Event()

    def kill_and_restart():
        while not scoring_over.is_set():  # wait until some chunks are written
            if partial.exists() and partial.stat().st_size > 2000:
                break
            time.sleep(0.05)
        flaky.kill()
        flaky.start()

    t = threading.Thread(target=kill_and_restart)
    t.start()
    try:
        m = fastscore.score(
            input=str(data),
            output=str(out),
            base_url=flaky.url,
            ref_url=ref.url,
            progress=False,
            batch_tokens=200,
            engine=EngineConfig(kind="served", concurrency=2, retry_seconds=240),
        )
    finally:
        scoring_over.set()
        t.join()
        flaky.wait()  # up again for the module's other tests
    assert m["engines"]["base"]["endpoints"][0]["retries"] > 0  # the kill was felt
    rows = _rows(out)
    assert [r["index"] for r in rows] == list(range(121)) and {r["status"] for r in rows} == {"ok"}
    clean = tmp_path / "clean.jsonl"
    fastscore.score(
        input=str(data),
        output=str(clean),
        base=str(demo_assets.base),
        ref=str(demo_assets.ref),
        progress=False,
        engine=EngineConfig(kind="torch", dtype="float32"),
    )
    for a, b in zip(rows, _rows(clean), strict=True):
        assert abs(a["loss_base"] - b["loss_base"]) < 1e-4
        assert abs(a["loss_ref"] - b["loss_ref"]) < 1e-4


def test_missing_api_key_is_a_clear_error(tmp_path, demo_assets, servers, monkeypatch):
    monkeypatch.delenv("FASTSCORE_API_KEY", raising=False)
    base, ref = servers
    with pytest.raises(EngineError, match="401 Unauthorized.*FASTSCORE_API_KEY"):
        fastscore.score(
            input=str(_data(tmp_path, demo_assets, 2)),
            output=str(tmp_path / "s"),
            base_url=base.url,
            ref_url=ref.url,
            progress=False,
            engine=EngineConfig(kind="served"),
        )


def test_a_server_with_another_tokenizer_is_refused(
    tmp_path, demo_assets, tokenizer, servers, api_key
):
    base, ref = servers
    other = tmp_path / "tok"
    shutil.copytree(demo_assets.base, other)
    tc = json.loads((other / "tokenizer.json").read_text())
    vocab = tc["model"]["vocab"]
    # swap the ids of two tokens the first probe text is made of
    ids = tokenizer(PROBES[0], add_special_tokens=False)["input_ids"]
    x, y = tokenizer.convert_ids_to_tokens(sorted(set(ids))[:2])
    vocab[x], vocab[y] = vocab[y], vocab[x]
    (other / "tokenizer.json").write_text(json.dumps(tc))
    with pytest.raises(ModelError, match="tokenizes .* but the local tokenizer gives"):
        fastscore.score(
            input=str(_data(tmp_path, demo_assets, 2)),
            output=str(tmp_path / "s"),
            base_url=base.url,
            ref_url=ref.url,
            tokenizer=str(other),
            progress=False,
            engine=EngineConfig(kind="served"),
        )


def test_unreachable_server_fails_at_start(tmp_path, demo_assets):
    from fastscore.engines.servers import free_port

    with pytest.raises(EngineError, match="failed on /v1/models"):
        fastscore.score(
            input=str(_data(tmp_path, demo_assets, 2)),
            output=str(tmp_path / "s"),
            base_url=f"http://127.0.0.1:{free_port()}",
            ref_url=f"http://127.0.0.1:{free_port()}",
            progress=False,
            engine=EngineConfig(kind="served"),
        )


def _sample():
    return RenderedSample(
        0, "s", np.array([5, 6, 7, 8], dtype=np.int32), np.array([2, 3], dtype=np.int32)
    )


def test_parse_prompt_logprobs_by_hand():
    choice = {
        "prompt_token_ids": [5, 6, 7, 8],
        "prompt_logprobs": [
            None,
            {"6": {"logprob": -1.0}},
            {"7": {"logprob": -0.5}, "9": {"logprob": -0.1}},
            {"8": {"logprob": -2.0}},
        ],
    }
    np.testing.assert_array_equal(parse_prompt_logprobs(_sample(), choice), [-0.5, -2.0])


def test_parse_prompt_logprobs_takes_vllms_stand_in_for_minus_inf_as_minus_inf():
    """vLLM's server writes a -inf logprob as -9999.0 (JSON has no -inf): that is no loss
    of 4999 but a token the model rules out, as the in-process engines report it."""
    from vllm.entrypoints.generate.base.serving import clamp_prompt_logprobs
    from vllm.logprobs import Logprob

    plp = [None, {6: Logprob(-1.0)}, {7: Logprob(float("-inf"))}, {8: Logprob(-2.0)}]
    plp = clamp_prompt_logprobs(plp)  # what the server does before writing its answer
    choice = {
        "prompt_token_ids": [5, 6, 7, 8],
        "prompt_logprobs": [
            None if e is None else {str(t): {"logprob": lp.logprob} for t, lp in e.items()}
            for e in plp
        ],
    }
    assert choice["prompt_logprobs"][2] == {"7": {"logprob": -9999.0}}
    got = parse_prompt_logprobs(_sample(), choice)
    assert got[0] == -np.inf and got[1] == -2.0
    assert not np.isfinite(mean_nll(got))


@pytest.mark.parametrize(
    "choice,match",
    [
        ({"prompt_token_ids": [1, 5, 6, 7, 8], "prompt_logprobs": [None] * 5}, "re-tokenize"),
        ({"prompt_token_ids": [5, 6, 7, 8]}, "no prompt_logprobs"),
        (
            {
                "prompt_token_ids": [5, 6, 7, 8],
                "prompt_logprobs": [None, {}, {"9": {"logprob": -1}}, {}],
            },
            "no entry for token 7",
        ),
    ],
)
def test_parse_prompt_logprobs_refuses_wrong_answers(choice, match):
    with pytest.raises(ValueError, match=match):
        parse_prompt_logprobs(_sample(), choice)


def test_cli_run_served(tmp_path, demo_assets, servers):
    import os

    from tests.helpers import cli

    base, ref = servers
    data = _data(tmp_path, demo_assets, 20)
    out = tmp_path / "out"
    env = dict(os.environ, MY_KEY=KEY)
    p = cli(
        "run",
        str(data),
        "--engine",
        "served",
        "--base-url",
        base.url,
        "--ref-url",
        ref.url,
        "--base-model",
        "base",
        "--ref-model",
        "ref",
        "--api-key-env",
        "MY_KEY",
        "--output-dir",
        str(out),
        "--top-k",
        "5",
        "--no-progress",
        env=env,
    )
    assert KEY not in p.stderr + p.stdout + (out / "manifest.json").read_text()
    assert len((out / "selected.jsonl").read_bytes().splitlines()) == 5
    assert len(_rows(out / "scores.jsonl")) == 21


def _score_through(proxy, ref, data, out, **engine):
    return fastscore.score(
        input=str(data),
        output=str(out),
        base_url=proxy.url,
        ref_url=ref.url,
        base_model="base",
        progress=False,
        engine=EngineConfig(kind="served", concurrency=2, **engine),
    )


def test_faults_are_retried_and_the_scores_are_the_servers(tmp_path, demo_assets, servers, api_key):
    """503s, an answer slower than the timeout, a truncated body and a dropped connection:
    each is retried, and the scores equal those from the server without the proxy."""
    from tests.helpers.fault_proxy import FaultProxy

    base, ref = servers
    data = _data(tmp_path, demo_assets, 12)
    direct = tmp_path / "direct.jsonl"
    _score_through(base, ref, data, direct)
    faults = ["503", "503", "503", "slow", "truncated", "cut"]
    with FaultProxy(base.url, slow_seconds=6) as proxy:
        proxy.faults = list(faults)
        out = tmp_path / "s.jsonl"
        m = _score_through(proxy, ref, data, out, request_timeout=3, retry_seconds=120)
    assert proxy.faults == [] and proxy.seen[: len(faults)] == faults  # every fault was met
    assert m["engines"]["base"]["endpoints"][0]["retries"] == len(faults)
    assert _rows(out) == _rows(direct)  # same values to the last bit, nothing from a fault


@pytest.mark.parametrize(
    "storm,match",
    [
        ("503", r"kept failing for 4s \(retry_seconds\): .*HTTP 503"),
        ("slow", r"kept failing for 4s \(retry_seconds\): .*TimeoutError"),
        ("truncated", r"kept failing for 4s \(retry_seconds\): .*malformed answer"),
        ("wrong_prompt", r"re-tokenize"),
    ],
)
def test_faults_that_do_not_pass_stop_the_run_without_a_score(
    tmp_path, demo_assets, servers, api_key, storm, match
):
    from tests.helpers.fault_proxy import FaultProxy

    base, ref = servers
    data = _data(tmp_path, demo_assets, 4)
    out = tmp_path / "s.jsonl"
    with FaultProxy(base.url, slow_seconds=3) as proxy:
        proxy.storm = storm
        with pytest.raises(EngineError, match=match):
            _score_through(proxy, ref, data, out, request_timeout=1, retry_seconds=4)
    assert not out.exists()  # no scores file, so nothing can be selected from it
    assert (tmp_path / "s.jsonl.partial").read_bytes() == b""  # and no line was written


def test_a_minus_inf_logprob_from_the_server_is_nonfinite_not_a_top_score(
    tmp_path, demo_assets, servers, api_key
):
    """Issue 31, case 2: a record whose logprobs the server sent as -9999.0 (vLLM's -inf)
    got status ok, loss_base 4999 and ranked first; it is nonfinite_loss, never selected."""
    from tests.helpers.fault_proxy import FaultProxy

    base, ref = servers
    data = _data(tmp_path, demo_assets, 3)
    out = tmp_path / "s.jsonl"
    with FaultProxy(base.url) as proxy:
        proxy.faults = ["neg_inf"]  # one request's answer: one record's base logprobs
        _score_through(proxy, ref, data, out)
    assert proxy.seen.count("neg_inf") == 1
    rows = _rows(out)
    bad = [r for r in rows if r["status"] != "ok"]
    assert len(bad) == 1 and bad[0]["status"] == "nonfinite_loss"
    assert bad[0]["lobass"] is None and "base loss is inf" in bad[0]["reason"]
    sub = tmp_path / "top.jsonl"
    fastscore.select(scores=str(out), input=str(data), output=str(sub), top_k=4,
                     coverage="none")  # fmt: skip
    assert len(sub.read_bytes().splitlines()) == 3  # all but the broken one


def test_connections_the_server_closed_while_idle_are_not_errors(
    tmp_path, demo_assets, tokenizer, servers, api_key
):
    """vLLM's server (uvicorn) closes a connection idle for 5 s. A pause longer than that
    at start (before the tokenizer probe) and between chunks must cost neither an error
    nor a retry with its backoff."""
    from fastscore.data.formats import to_samples
    from fastscore.data.readers import read_records
    from fastscore.engines.served import ServedEngine
    from fastscore.rendering.renderer import Renderer

    base, _ = servers
    idle = 7.0  # > the server's keep-alive (VLLM_HTTP_TIMEOUT_KEEP_ALIVE, 5 s)
    data = _data(tmp_path, demo_assets, 8)
    renderer = Renderer(tokenizer)
    samples = [renderer.render(s) for s in to_samples(read_records(data), "messages")]
    e = ServedEngine([base.url], EngineConfig(kind="served", concurrency=4), model="base", name="b")
    try:
        time.sleep(idle)  # the connection of GET /v1/models is now closed by the server
        e.check_tokenizer(tokenizer)  # the probe at start
        first = e.response_logprobs(samples)
        time.sleep(idle)  # a chunk of the other model, slower than the keep-alive
        t0 = time.perf_counter()
        again = e.response_logprobs(samples)
        seconds = time.perf_counter() - t0
        info = e.info()
    finally:
        e.close()
    assert info["endpoints"][0]["retries"] == 0, info
    assert seconds < 5.0  # no backoff was slept
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
