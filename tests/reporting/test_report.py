"""`fastscore report`: the page's content, checked against the scores, and the page as a
browser draws it (headless Chromium, screenshot not blank)."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess

import numpy as np
import orjson
import pytest

from fastscore.selection.table import ScoresTable
from tests.helpers import cli


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


@pytest.fixture(scope="module")
def scored(tmp_path_factory, demo_assets):
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


def test_report_page_says_what_the_scores_say(scored):
    tmp, data, recs, scores = scored
    out = tmp / "rep"
    cli(
        "report",
        scores,
        "--input",
        data,
        "--output-dir",
        out,
        "--top-k",
        20,
        "--coverage",
        "none",
        "--group-field",
        "kind",
        "--samples",
        5,
    )
    page = (out / "report.html").read_text()
    rows = [orjson.loads(x) for x in scores.read_bytes().splitlines()]
    ok = [r for r in rows if r["status"] == "ok"]
    # status counts
    statuses = {s: sum(r["status"] == s for r in rows) for s in {r["status"] for r in rows}}
    assert statuses["ok"] == len(recs) - 2
    for s, c in statuses.items():
        assert f'<td class="l">{s}</td><td>{c}</td>' in page
    # groups: records and the 20 selected, all ok and all counted once
    kinds = [r["kind"] for r in recs]
    top20 = sorted(ok, key=lambda r: (-r["lobass"], r["index"]))[:20]
    for k in set(kinds):
        sel = sum(kinds[r["index"]] == k for r in top20)
        assert f'<td class="l">{k}</td><td>{kinds.count(k)}</td>\n<td>{sel}</td>' in page
    assert "top-k 20 by <b>lobass</b>" in page and "<b>20</b>" in page
    assert '<span id="method">top 20 by lobass, plain ranking (coverage none' in page
    # Spearman with length as the library computes it
    on_page = dict(re.findall(r'<td class="l">(\w+)</td><td>([+-][0-9.]+)</td>', page))
    for c, rho in ScoresTable.read(scores).length_correlations().items():
        if c in ("lobass", "rho", "loss_base"):
            assert abs(float(on_page[c]) - rho) < 6e-4, (c, on_page[c], rho)
    # top and bottom samples, in score order, with their text escaped
    top = page[page.index('<div id="top">') : page.index('<div id="bottom">')]
    shown = re.findall(r"id\n<code>(.*?)</code>", top)
    assert shown == [str(r["id"]) for r in top20[:5]]
    bottom = page[page.index('<div id="bottom">') :]
    worst = sorted(ok, key=lambda r: (r["lobass"], -r["index"]))[:5]
    assert re.findall(r"id\n<code>(.*?)</code>", bottom) == [str(r["id"]) for r in worst]
    # every ok record shown: the one with markup in its text is on the page, escaped
    cli("report", scores, "--input", data, "--output-dir", tmp / "rep-all", "--samples", 1000)
    every = (tmp / "rep-all" / "report.html").read_text()
    assert html.escape("<script>alert(1)</script>") in every and "<script>alert" not in every
    # PNGs beside the page, and embedded in it
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {"losses.png", "length_lobass.png", "hist_lobass.png", "status.png"} <= set(pngs)
    assert page.count("data:image/png;base64,") == len(pngs)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; `make test` installs it (make browser)")
        pytest.skip("chromium is not installed (make browser)")
    return found


def test_report_draws_in_a_browser(scored):
    from PIL import Image

    tmp, data, _, scores = scored
    out = tmp / "rep-browser"
    cli("report", scores, "--input", data, "--output-dir", out)
    shot = tmp / "shot.png"
    p = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp / 'chromium-profile'}",
            "--window-size=1200,1800",
            f"--screenshot={shot}",
            (out / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0 and shot.exists(), p.stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 1800)
    px = np.asarray(img).reshape(-1, 3).astype(int)
    inked = int((px != 255).any(axis=1).sum())
    colours = len(np.unique(px, axis=0))
    # text, tables and the first plots: a blank or broken page is all white, or one colour
    assert inked / len(px) > 0.03, inked
    assert colours > 50, colours
    # coloured points of the plots are drawn (text and tables are grey): the embedded PNGs
    # were decoded
    coloured = int((px.max(axis=1) - px.min(axis=1) > 60).sum())
    assert coloured > 1000, coloured
