"""Nothing lost, nothing silent: each case a new user met (issue 31), as they meet it, in
real CLI processes on the demo models. Each test failed on the code before the issue."""

from __future__ import annotations

import signal
import socket
import time

import orjson
import pytest

from tests.helpers import cli, forked, score_args


def _chats(n: int, *, ids=True) -> list[dict]:
    return [
        {
            **({"id": f"c{i}"} if ids else {}),
            "messages": [
                {"role": "user", "content": f"what color is the rega {i}?"},
                {"role": "assistant", "content": "the rega is black."},
            ],
        }
        for i in range(n)
    ]


def _write(path, records) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def _rows(path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def test_a_position_never_collides_with_an_explicit_id(tmp_path, demo_assets):
    """Case 5: {"id": 2} first and an id-less record at position 2 are two records."""
    data, out = tmp_path / "d.jsonl", tmp_path / "s.jsonl"
    first, middle, last = _chats(3, ids=False)
    _write(data, [{**first, "id": 2}, middle, last])
    cli(*score_args(data, out, demo_assets.base, demo_assets.ref))
    rows = _rows(out)
    assert [(r["index"], r["id"], r["status"]) for r in rows] == [
        (0, 2, "ok"),
        (1, None, "ok"),
        (2, None, "ok"),  # was a duplicate_id of record 0, never scored
    ]
    sub = tmp_path / "sub.jsonl"
    cli("select", out, "--input", data, "--output", sub, "--top-k", 3, "--coverage", "none")
    assert len(sub.read_bytes().splitlines()) == 3


def test_proportional_quotas_share_the_budget_over_what_can_be_chosen(tmp_path, demo_assets):
    """Case 8: a group whose records are all too long kept half the budget, unfilled."""
    data, out = tmp_path / "d.jsonl", tmp_path / "s.jsonl"
    short = [{**r, "src": "a"} for r in _chats(20)]
    long = [
        {**r, "id": f"long{i}", "src": "b", "messages": [
            {"role": "user", "content": "hello " * 60}, r["messages"][1]]}
        for i, r in enumerate(_chats(20))
    ]  # fmt: skip
    _write(data, short + long)
    cli(*score_args(data, out, demo_assets.base, demo_assets.ref, "--max-length", 50))
    assert [r["status"] for r in _rows(out)] == ["ok"] * 20 + ["too_long"] * 20
    sub = tmp_path / "sub.jsonl"
    p = cli("select", out, "--input", data, "--output", sub, "--top-k", 20,
            "--group-field", "src", "--quota", "proportional")  # fmt: skip
    assert len(sub.read_bytes().splitlines()) == 20  # was 10: b's quota of 10 went unfilled
    assert "selected 20 of 40 records (20 eligible)" in p.stderr and "short" not in p.stderr
    # explicit shares are the mix asked for: b's share stays unfilled, and the line says so
    p = cli("select", out, "--input", data, "--output", sub, "--top-k", 20,
            "--group-field", "src", "--quota", "a:0.5,b:0.5")  # fmt: skip
    assert len(sub.read_bytes().splitlines()) == 10
    assert "selected 10 of 40 records (20 eligible)" in p.stderr
    assert "10 short of the budget" in p.stderr


def _one_line_error(p) -> str:
    """The run failed with one line of error and no traceback."""
    assert p.returncode != 0, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), p.stderr
    return lines[0]


def test_no_output_may_be_what_the_command_reads(tmp_path, demo_assets):
    """Case 1: select --output its own scores file exited 0 and left 30 data records in
    scores.jsonl; any spelling of a file it reads is refused before any work."""
    data, out = tmp_path / "d.jsonl", tmp_path / "out1" / "scores.jsonl"
    _write(data, _chats(10))
    cli(*score_args(data, out, demo_assets.base, demo_assets.ref))
    before = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    (tmp_path / "link.jsonl").symlink_to(out)
    for target, role in [
        (out, "scores file"),
        (tmp_path / "out1" / ".." / "out1" / "scores.jsonl", "scores file"),
        (tmp_path / "link.jsonl", "scores file"),
        (out.with_name("scores.manifest.json"), "scores manifest"),
        (data, "input"),
    ]:
        p = cli("select", out, "--input", data, "--output", target, "--fraction", 0.1,
                check=False)  # fmt: skip
        line = _one_line_error(p)
        assert f"the {role} it reads" in line and "Choose another output" in line, line
    assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == before
    # run: the input inside the run directory, where its selection would be written
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    subset = run_dir / "selected.jsonl"
    subset.write_bytes(data.read_bytes())
    p = cli("run", subset, "--base", demo_assets.base, "--ref", demo_assets.ref,
            "--output-dir", run_dir, "--top-k", 2, "--engine", "torch", "--no-progress",
            check=False)  # fmt: skip
    assert "the input it reads" in _one_line_error(p) and "subset output" in p.stderr
    assert subset.read_bytes() == data.read_bytes() and sorted(run_dir.iterdir()) == [subset]


@pytest.mark.parametrize(
    "args,where",
    [
        (["score", "{data}", "--output", "/sys/scores.jsonl"], "/sys"),
        (["run", "{data}", "--output-dir", "/proc/x"], "/proc/x"),
        (["score", "{data}", "--output", "{a_dir}"], "{a_dir}: it is a directory"),
    ],
)
def test_an_output_that_cannot_be_written_is_one_line_before_any_model(
    tmp_path, demo_assets, args, where
):
    """Case 7: --output /sys/scores.jsonl and --output-dir /proc/x gave tracebacks (45
    lines ending in FileNotFoundError, or PermissionError after the models loaded)."""
    data = tmp_path / "d.jsonl"
    _write(data, _chats(3))
    (tmp_path / "a_dir").mkdir()
    fill = {"data": data, "a_dir": tmp_path / "a_dir"}
    args = [a.format(**fill) for a in args]
    # a base that is no checkpoint: the check comes first, or this would be the error
    p = (
        cli(*args, "--base", tmp_path, "--ref", tmp_path, "--top-k", 1, check=False)
        if (args[0] == "run")
        else cli(*args, "--base", tmp_path, "--ref", tmp_path, check=False)
    )
    line = _one_line_error(p)
    assert "cannot write the" in line and where.format(**fill) in line, line


def _held(lock, child, what: str) -> None:
    """Wait until ``child`` holds ``lock`` (its holder written in it), failing if it ends."""
    while not (lock.exists() and b'"pid"' in lock.read_bytes()):
        assert child.poll() is None, f"{what} ended before it took its lock"
        time.sleep(0.05)


def test_a_second_run_into_an_output_is_refused_naming_the_first(tmp_path, demo_assets):
    """Case 4: the second run's start unlinked the first's partial, and whichever ended
    first renamed the other's incomplete partial into scores.jsonl."""
    data, out = tmp_path / "d.jsonl", tmp_path / "s.jsonl"
    _write(data, _chats(40))
    lock = tmp_path / "s.jsonl.lock"
    first = forked.Child(score_args(data, out, demo_assets.base, demo_assets.ref))
    _held(lock, first, "the first run")
    first.send_signal(signal.SIGSTOP)  # held mid-run while the second one starts
    try:
        p = cli(*score_args(data, out, demo_assets.base, demo_assets.ref), check=False)
        line = _one_line_error(p)
        assert f"{out} is being written by another run (fastscore score" in line
        assert f"pid {first.pid}," in line and socket.gethostname() in line
        # run and select into files the first holds are refused alike
        p = cli("select", out, "--input", data, "--output", out, "--top-k", 1, check=False)
        assert "Error: " in p.stderr and p.returncode != 0
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.result().returncode == 0
    rows = _rows(out)
    assert [r["index"] for r in rows] == list(range(40)) and {r["status"] for r in rows} == {"ok"}
    assert not lock.exists()  # let go of at the end
    # a run killed outright holds nothing: the next one goes on from its partial
    out, lock = tmp_path / "s2.jsonl", tmp_path / "s2.jsonl.lock"
    killed = forked.Child(score_args(data, out, demo_assets.base, demo_assets.ref))
    _held(lock, killed, "the run to kill")
    killed.send_signal(signal.SIGKILL)
    assert killed.result().returncode == -signal.SIGKILL and lock.exists()
    cli(*score_args(data, out, demo_assets.base, demo_assets.ref, "--resume"))
    assert len(_rows(out)) == 40 and not lock.exists()


def test_resume_refuses_a_partial_of_another_rendering(tmp_path, demo_assets):
    """Case 3: the fingerprint covered options, models and the input's size and mtime, so
    --resume after an edited --chat-template, tokenizer or fastscore/TRL version appended
    records rendered another way to the old ones."""
    from tests.helpers import killed_run

    data, out = tmp_path / "d.jsonl", tmp_path / "s.jsonl"
    _write(data, _chats(20))
    template, tok = tmp_path / "chat.jinja", tmp_path / "tok"
    tok.mkdir()
    for f in demo_assets.base.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            (tok / f.name).write_bytes(f.read_bytes())
    template.write_text((demo_assets.base / "chat_template.jinja").read_text())
    opts = ("--chat-template", template, "--tokenizer", tok)
    args = score_args(data, out, demo_assets.base, demo_assets.ref, *opts, "--resume")

    def refused(why: str) -> None:
        p = cli(*args, check=False)
        line = _one_line_error(p)
        assert "cannot resume" in line and why in line, line

    killed_run(data, out, demo_assets.base, demo_assets.ref, *opts)
    template.write_text(template.read_text().replace("<|im_start|>", "<|im_start|> "))
    refused("the chat template's text (file: edited since the run started")
    killed_run(data, out, demo_assets.base, demo_assets.ref, *opts)
    cfg = orjson.loads((tok / "tokenizer_config.json").read_bytes())
    (tok / "tokenizer_config.json").write_bytes(orjson.dumps({**cfg, "model_max_length": 77}))
    refused(f"the tokenizer files {tok} (its contents changed since the run started")
    killed_run(data, out, demo_assets.base, demo_assets.ref, *opts)
    record = tmp_path / "s.jsonl.run.json"  # as a run of an older fastscore and TRL wrote it
    r = orjson.loads(record.read_bytes())
    r["rendering"]["versions"].update(fastscore="0.0.9", trl="1.15.0")
    record.write_bytes(orjson.dumps(r))
    refused("fastscore 0.0.9 -> ")
    assert "trl 1.15.0 -> " in cli(*args, check=False).stderr
    cli(*args[:-1])  # without --resume: scored anew with what is there now
    assert [r["status"] for r in _rows(out)] == ["ok"] * 20


def test_nothing_to_score_or_select_is_an_error_that_writes_nothing(tmp_path, demo_assets):
    """Case 6: score on an empty file exited 0 ('scored 0 records'); a CSV named .jsonl
    gave 'selected 0 of 41 records', exit 0; run on an empty file left an empty
    selected.jsonl and report/."""
    base, ref = demo_assets.base, demo_assets.ref
    empty, csv = tmp_path / "empty.jsonl", tmp_path / "table.jsonl"
    empty.write_bytes(b"")
    csv.write_bytes(b"".join(f"{i},{i * i},x\n".encode() for i in range(41)))
    out = tmp_path / "out"
    p = cli(*score_args(empty, out / "s.jsonl", base, ref), check=False)
    assert p.returncode == 1 and f"nothing to score: {empty} has no records" in p.stderr
    p = cli(*score_args(csv, out / "s.jsonl", base, ref), check=False)
    assert p.returncode == 1, p.stderr
    assert f"none of the 41 records of {csv} can be scored (bad_record=41)" in p.stderr
    assert "  line 1 (record 0): bad_record: invalid JSON" in p.stderr
    assert "  line 5 (record 4): bad_record: invalid JSON" in p.stderr
    assert "... and 36 more" in p.stderr and "--allow-empty" in p.stderr
    p = cli("run", empty, "--base", base, "--ref", ref, "--output-dir", out / "run",
            "--top-k", 3, "--engine", "torch", "--no-progress", check=False)  # fmt: skip
    assert p.returncode == 1 and "nothing to score" in p.stderr
    assert not out.exists()  # no scores, no empty selected.jsonl, no report/, no directory
    # a pipeline that wants the scores of such a file anyway, and exit 0
    cli(*score_args(csv, out / "s.jsonl", base, ref, "--allow-empty"))
    assert [r["status"] for r in _rows(out / "s.jsonl")] == ["bad_record"] * 41
    sub = tmp_path / "sub.jsonl"
    p = cli("select", out / "s.jsonl", "--input", csv, "--output", sub, "--fraction", 0.5,
            check=False)  # fmt: skip
    assert p.returncode == 1 and "nothing to select: none of the 41 records is eligible" in p.stderr
    assert "  line 2 (record 1): bad_record" in p.stderr and not sub.exists()
    cli("select", out / "s.jsonl", "--input", csv, "--output", sub, "--fraction", 0.5,
        "--allow-empty")  # fmt: skip
    assert sub.read_bytes() == b""


def test_the_summary_names_the_records_not_scored_by_their_lines(tmp_path, demo_assets):
    """Case 9: a broken line showed only as a count (bad_record=1)."""
    data, out = tmp_path / "d.jsonl", tmp_path / "s.jsonl"
    _write(data, _chats(3))
    with open(data, "ab") as f:
        f.write(b"\n{broken\n" + orjson.dumps({"id": "q", "messages": [
            {"role": "user", "content": "hi"}]}) + b"\n")  # fmt: skip
    p = cli(*score_args(data, out, demo_assets.base, demo_assets.ref))
    assert "not scored: 2 records" in p.stderr
    assert "  line 5 (record 3): bad_record: invalid JSON" in p.stderr
    assert "  line 6 (record 4), id 'q': no_response: no assistant turn" in p.stderr
    m = orjson.loads((tmp_path / "s.manifest.json").read_bytes())
    assert [(x["index"], x["where"]) for x in m["problems"]] == [
        (3, "line 5 (record 3)"),
        (4, "line 6 (record 4)"),
    ]


def test_a_dry_run_times_a_bounded_sample(tmp_path, demo_assets):
    """Case 11: run --dry-run on 300 records timed 277 of them (25.6 s, against 21.4 s for
    the real run)."""
    from fastscore.executors.local import DRY_RUN_RECORDS

    data = tmp_path / "d.jsonl"
    data.write_bytes(b"".join(demo_assets.data.read_bytes().splitlines(True)[:300]))
    p = cli("run", data, "--base", demo_assets.base, "--ref", demo_assets.ref, "--output-dir",
            tmp_path / "out", "--top-k", 3, "--dry-run")  # fmt: skip
    assert "  records            300 (ok=300)" in p.stdout
    assert f"  timed sample       {DRY_RUN_RECORDS} records, " in p.stdout, p.stdout
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_the_python_api_keeps_other_libraries_quiet(tmp_path, demo_assets):
    """Case 9: the Python API printed transformers' 'Loading weights' bar twice a call;
    FASTSCORE_VERBOSE=1 shows it again."""
    import os
    import subprocess
    import sys

    data = tmp_path / "d.jsonl"
    _write(data, _chats(3))
    code = (
        "import fastscore; fastscore.score("
        f"input={str(data)!r}, base={str(demo_assets.base)!r}, ref={str(demo_assets.ref)!r}, "
        f"output={str(tmp_path / 's.jsonl')!r}, progress=False)"
    )
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert quiet.returncode == 0 and "Loading weights" not in quiet.stderr, quiet.stderr
    env = dict(os.environ, FASTSCORE_VERBOSE="1")
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert loud.returncode == 0 and "Loading weights" in loud.stderr, loud.stderr


def test_nothing_to_score_is_found_for_pairs_and_fresh_resumes(tmp_path, demo_assets):
    """A pair is scorable only when both its sides are; a --resume with nothing to resume
    is a fresh start, checked alike; neither starts the engines or leaves a file."""
    pairs = tmp_path / "pairs.jsonl"
    _write(pairs, [{"id": f"p{i}", "prompt": [{"role": "user", "content": "hi"}],
                    "chosen": [{"role": "assistant", "content": "ok."}],
                    "rejected": [{"role": "assistant", "content": "no " * 80}]}
                   for i in range(3)])  # fmt: skip
    out = tmp_path / "s.jsonl"
    args = score_args(pairs, out, demo_assets.base, demo_assets.ref, "--max-length", 40)
    for extra in ((), ("--resume",)):
        p = cli(*args, *extra, check=False)
        assert p.returncode == 1, p.stderr
        assert "none of the 3 records" in p.stderr and "(too_long=3)" in p.stderr
        assert "engine up" not in p.stderr and "Nothing was written" in p.stderr
        assert sorted(f.name for f in tmp_path.iterdir()) == ["pairs.jsonl"]
