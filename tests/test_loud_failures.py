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
