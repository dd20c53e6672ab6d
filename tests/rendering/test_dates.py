"""Templates that write today's date render one fixed date per run: the one given, else
the day the run started, kept by --resume and by a restarted Ray run."""

from __future__ import annotations

import copy
import os

import orjson

from fastscore.records import Message, Sample
from tests.helpers import cli

# ChatML with the date up front, as Llama 3.1 and GPT-OSS write it
DATED = (
    "{{ 'Today is ' + strftime_now('%d %B %Y') + '.\\n' }}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\\n{{ m['content'] }}<|im_end|>\\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\\n{% endif %}"
)
CHAT = [Message("user", "what color is the rega?"), Message("assistant", "the rega is black.")]


def test_the_renderer_writes_the_date_it_is_given(tokenizer):
    from fastscore.rendering.renderer import Renderer

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = DATED
    a = Renderer(tok, date="2020-02-29").render(Sample(0, 0, CHAT))
    b = Renderer(tok, date="2020-02-29").render(Sample(0, 0, CHAT))
    c = Renderer(tok, date="2021-03-01").render(Sample(0, 0, CHAT))
    assert a.token_ids.tolist() == b.token_ids.tolist() != c.token_ids.tolist()
    assert "29 February 2020" in tok.decode(a.token_ids)
    assert Renderer(tok, date="2020-02-29").info()["date"] == "2020-02-29"


def test_resume_renders_the_date_the_run_started_with(tmp_path, demo_assets, monkeypatch):
    import fastscore
    import fastscore.executors.local as pipeline
    from fastscore.config import EngineConfig

    template = tmp_path / "dated.jinja"
    template.write_text(DATED)
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"".join(demo_assets.data.read_bytes().splitlines(True)[:30]))
    out = tmp_path / "s.jsonl"
    args = ["score", str(data), "--base", str(demo_assets.base), "--ref", str(demo_assets.ref),
            "--output", str(out), "--chat-template", str(template), "--engine", "torch",
            "--dtype", "float32", "--no-progress"]  # fmt: skip
    # the first run is killed just before its manifest is written
    env = dict(os.environ, FASTSCORE_KILL_AT="final:manifest")
    p = cli(*args, env=env, check=False)
    assert p.returncode != 0 and not out.exists()
    started = orjson.loads(out.with_name("s.jsonl.run.json").read_bytes())["options"]["date"]
    # resumed "on another day"
    monkeypatch.setattr(pipeline, "today", lambda: "1999-12-31")
    m = fastscore.score(
        input=str(data),
        base=str(demo_assets.base),
        ref=str(demo_assets.ref),
        output=str(out),
        chat_template=str(template),
        resume=True,
        progress=False,
        engine=EngineConfig(kind="torch", dtype="float32"),
    )
    assert m["template"]["date"] == started != "1999-12-31"
    assert m["template"]["rule"] == "sentinel" and m["template"]["name"] == "file"
    # the same scores as a run given that date outright
    again = tmp_path / "again.jsonl"
    cli(*args[:7], str(again), *args[8:], "--date", started)
    assert out.read_bytes() == again.read_bytes()


def test_a_restarted_ray_run_takes_the_date_of_its_run_record(tmp_path, monkeypatch):
    import fastscore.executors.local as pipeline
    from fastscore.config import ScoreConfig
    from fastscore.runs.outputs import OutputPaths
    from fastscore.runs.resume import write_run_record
    from fastscore.scoring.session import SessionFacts

    data = tmp_path / "d.jsonl"
    data.write_bytes(b"{}\n")
    out = tmp_path / "s.jsonl"
    cfg = ScoreConfig(input=str(data), output=str(out), executor="ray", date="2024-05-06")
    from fastscore.data.source import find_source

    template = {"name": "model", "rule": "markers", "trl_variant": None, "sha256": "a",
                "original_sha256": "a"}  # fmt: skip
    facts = SessionFacts(
        source=find_source(data), fmt="messages", models={}, max_length=10, template=template
    )
    write_run_record(OutputPaths.of(out), cfg, facts)
    monkeypatch.setattr(pipeline, "today", lambda: "1999-12-31")
    undated = ScoreConfig(input=str(data), output=str(out), executor="ray")
    assert pipeline.resolve_date(undated) == "2024-05-06"  # Ray keeps its shards: and date
    local = ScoreConfig(input=str(data), output=str(out))
    assert pipeline.resolve_date(local) == "1999-12-31"  # a fresh local run starts today
