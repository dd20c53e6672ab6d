"""What the report's tests share: the demo's records scored once (with two bad records and
one whose text must be escaped), and the browser that draws the pages."""

from __future__ import annotations

import orjson
import pytest

from tests.helpers import cli
from tests.reporting.browser import chromium_path


def _data(tmp_path, demo_assets):
    """The demo's records, two bad ones and one whose text must be escaped, with a group."""
    recs = [orjson.loads(x) for x in demo_assets.data.read_bytes().splitlines()][:150]
    recs.append({"id": "no-reply", "kind": "bad", "messages": [{"role": "user", "content": "hi"}]})
    recs.append({"id": "robot", "kind": "bad", "messages": [{"role": "robot", "content": "x"}]})
    recs.append(
        {
            "id": "html",
            "kind": "learnable",
            "messages": [
                {"role": "user", "content": "<script>alert(1)</script> & what is the rega?"},
                {"role": "assistant", "content": "the rega is <b>black</b>."},
            ],
        }
    )
    data = tmp_path / "data.jsonl"
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    return data, recs


@pytest.fixture(scope="session")
def scored(tmp_path_factory, demo_assets):
    """(directory, input, its records, scores file): the records scored by the demo models."""
    tmp = tmp_path_factory.mktemp("report")
    data, recs = _data(tmp, demo_assets)
    scores = tmp / "scores.jsonl"
    a = demo_assets
    cli(
        "score",
        data,
        "--base",
        a.base,
        "--ref",
        a.ref,
        "--output",
        scores,
        "--engine",
        "torch",
        "--no-progress",
    )
    return tmp, data, recs, scores


@pytest.fixture(scope="session")
def chromium() -> str:
    return chromium_path()
