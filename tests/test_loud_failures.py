"""Nothing lost, nothing silent: each case a new user met (issue 31), as they meet it, in
real CLI processes on the demo models. Each test failed on the code before the issue."""

from __future__ import annotations

import orjson

from tests.helpers import cli, score_args


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
