"""`fastscore report`: the page's content, checked against the scores, and the page as a
browser draws it (headless Chromium, screenshot not blank)."""

from __future__ import annotations

import html
import re
import subprocess

import numpy as np
import orjson

from fastscore.selection.table import ScoresTable
from tests.helpers import cli


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


def test_report_draws_in_a_browser(scored, chromium):
    from PIL import Image

    tmp, data, _, scores = scored
    out = tmp / "rep-browser"
    cli("report", scores, "--input", data, "--output-dir", out)
    shot = tmp / "shot.png"
    p = subprocess.run(
        [
            chromium,
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


def test_report_refuses_an_input_that_does_not_fit(scored, tmp_path):
    tmp, data, _, scores = scored
    lines = data.read_bytes().splitlines(keepends=True)
    for name, body, says in (
        ("short", lines[:100], f"has 100 records but the scores file has {len(lines)}"),
        ("long", lines + lines[:1], f"has more records than the scores file ({len(lines)})"),
    ):
        wrong = tmp_path / f"{name}.jsonl"
        wrong.write_bytes(b"".join(body))
        p = cli("report", scores, "--input", wrong, "--output-dir", tmp_path / name, check=False)
        assert p.returncode != 0 and says in p.stderr, p.stderr[-2000:]
    p = cli("report", scores, "--input", data, "--output-dir", tmp_path / "p", "--points", 0,
            check=False)  # fmt: skip
    assert p.returncode != 0 and "points must be >= 1, got 0" in p.stderr
