"""``explorer.html``: what it embeds, checked against the scores file and the selection
`select` writes, and the page in a real browser (Playwright driving Debian's chromium)
with every request but the page's own aborted: hover, budget, colour, search."""

from __future__ import annotations

import base64
import gzip
import math
import re

import numpy as np
import orjson
import pytest

from fastscore.config import SelectConfig
from fastscore.data.formats import to_sample
from fastscore.records import RawRecord
from fastscore.reporting.explorer import PROMPT_CHARS, point_texts
from fastscore.selection.budget import choose_grouped, spread_quotas
from fastscore.selection.selector import plan
from fastscore.selection.table import ScoresTable
from tests.helpers import cli
from tests.reporting.browser import missing

TOP_K = 20  # the report's rule
SAMPLE = 60  # --points for the sampled page: fewer than the 153 records


@pytest.fixture(scope="module")
def pages(scored):
    """The explorer of every record ("all") and of a sample of 60 and the selection
    ("sampled"), both with --top-k 20 (coverage: the default) and --group-field kind."""
    tmp, data, _, scores = scored
    out = {}
    for name, extra in (
        ("all", ()),
        ("sampled", ("--points", SAMPLE)),
        ("balanced", ("--points", SAMPLE, "--spread", "balanced")),
    ):
        d = tmp / f"explorer-{name}"
        cli("report", scores, "--input", data, "--output-dir", d, "--top-k", TOP_K,
            "--group-field", "kind", *extra)  # fmt: skip
        out[name] = d / "explorer.html"
    return out


def _embedded(path):
    """(meta, {name: array}, texts) as the page's script reads them."""
    page = path.read_text(encoding="utf-8")

    def block(name: str) -> str:
        return re.search(rf'<script id="{name}" type="[^"]+">(.*?)</script>', page, re.S)[1]

    meta = orjson.loads(block("fs-meta"))
    buf = base64.b64decode(block("fs-arrays"))
    dtypes = {"Uint8": "u1", "Uint16": "<u2", "Uint32": "<u4", "Int32": "<i4", "Float32": "<f4"}
    arrays = {
        k: np.frombuffer(buf, dtype=dtypes[a["type"]], count=a["length"], offset=a["offset"])
        for k, a in meta["arrays"].items()
    }
    return meta, arrays, orjson.loads(gzip.decompress(base64.b64decode(block("fs-texts"))))


def _ranked(rows) -> dict[int, int]:
    """Each eligible record's rank by lobass (ok, finite; ties to the earlier record)."""
    ok = [r for r in rows if r["status"] == "ok" and math.isfinite(r.get("lobass") or math.nan)]
    ok.sort(key=lambda r: (-r["lobass"], r["index"]))
    return {r["index"]: k for k, r in enumerate(ok)}


@pytest.fixture(scope="module")
def planned(scored):
    """The report's selection as the library plans it (its clusters: the cluster rule's)."""
    _, data, _, scores = scored
    cfg = SelectConfig(scores=str(scores), input=str(data), top_k=TOP_K)
    return plan(cfg, ScoresTable.read(scores))


def _quota_rule(p, k: int, spread: str = "proportional") -> set[int]:
    """What the cluster rule keeps at a top-k of ``k``: the library's quotas and picks over
    the clusters of the report's selection ``p``."""
    sizes: dict[str, int] = {}
    for i, _ in p.eligible:
        sizes[p.clusters[i]] = sizes.get(p.clusters[i], 0) + 1
    quotas = spread_quotas(k, sizes, spread)
    return set(choose_grouped(p.eligible, p.clusters, quotas, order="desc"))


def test_explorer_embeds_what_the_scores_say(pages, scored, planned, tmp_path):
    tmp, data, recs, scores = scored
    rows = [orjson.loads(x) for x in scores.read_bytes().splitlines()]
    meta, a, texts = _embedded(pages["sampled"])
    drawn = a["index"].tolist()
    assert meta["n"] == len(rows) and meta["sampled"] and drawn == sorted(set(drawn))
    # the selection drawn in full: the records `select` writes with the same rule
    cli("select", scores, "--input", data, "--output", tmp_path / "sel.jsonl", "--top-k", TOP_K)
    chosen = {orjson.loads(x)["id"] for x in (tmp_path / "sel.jsonl").read_bytes().splitlines()}
    assert {texts[j][0] for j in np.flatnonzero(a["selected"])} == chosen
    assert meta["selected"] == TOP_K and SAMPLE <= len(drawn) <= SAMPLE + TOP_K
    # each point's rank among all eligible records, its scores, id and texts
    rank = _ranked(rows)
    assert meta["eligible"] == len(rank)
    for j, i in enumerate(drawn):
        r, rec = rows[i], recs[i]
        assert a["rank"][j] == rank.get(i, -1) and texts[j][0] == r["id"]
        for c in ("lobass", "loss_base", "loss_ref"):
            want = math.nan if r.get(c) is None else r[c]
            assert np.isclose(a[f"score:{c}"][j], want, rtol=1e-6, equal_nan=True), (i, c)
        turns = [m for m in rec["messages"] if m["role"] in ("user", "assistant")]
        if r["status"] == "ok":
            assert texts[j][1:] == [turns[0]["content"], turns[1]["content"]]
    # the group and the status of each point
    status = meta["categories"]["status"]["names"]
    kind = meta["categories"]["group"]["names"]
    assert [status[c] for c in a["status"]] == [rows[i]["status"] for i in drawn]
    assert [kind[c] for c in a["group"]] == [recs[i]["kind"] for i in drawn]
    # each point's cluster, and its rank in it: the library's picks at a budget of 30 are
    # the points whose rank is below their cluster's quota
    p = planned
    names = meta["categories"]["cluster"]["names"]
    assert [names[c] for c in a["cluster"]] == [p.clusters[i] for i in drawn]
    assert meta["quota"]["spread"] == "proportional"
    quotas = spread_quotas(30, dict(meta["quota"]["clusters"]), "proportional")
    ranks, codes = a["cluster_rank"], a["cluster"]
    kept = {i for j, i in enumerate(drawn) if 0 <= ranks[j] < quotas[int(codes[j])]}
    assert kept == _quota_rule(p, 30) & set(drawn)


def test_point_texts_are_cut_and_single_spaced():
    raw = RawRecord(0, {"messages": [
        {"role": "user", "content": "say   " + "word " * 200},
        {"role": "assistant", "content": "a \t b\n\n\n c"},
    ]})  # fmt: skip
    prompt, response = point_texts(to_sample(raw, "messages"))
    assert len(prompt) == PROMPT_CHARS and prompt.startswith("say word word") and prompt[-1] == "…"
    assert response == "a b\nc"


def _playwright():
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        missing("playwright (pip install -e '.[dev]')")
    return sync_playwright, expect


def test_explorer_in_a_browser_offline(pages, scored, planned, chromium, tmp_path):
    sync_playwright, expect = _playwright()
    _, _, recs, scores = scored
    rows = [orjson.loads(x) for x in scores.read_bytes().splitlines()]
    n, rank = len(rows), _ranked(rows)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(offline=True, viewport={"width": 1280, "height": 1400})
        urls = {p.as_uri() for p in pages.values()}
        requests, errors, dialogs = [], [], []

        def only_the_page(route):
            requests.append(route.request.url)
            route.continue_() if route.request.url in urls else route.abort()

        context.route("**/*", only_the_page)
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

        # every record drawn: hover a point, find ids, colour
        page.goto(pages["all"].as_uri())
        page.wait_for_selector("body[data-ready]", state="attached")
        i = _hover_loneliest(page, rows)
        expect(page.locator("#record h2")).to_have_text(f"id {rows[i]['id']}")
        user = next(m["content"] for m in recs[i]["messages"] if m["role"] == "user")
        expect(page.locator("#record")).to_contain_text(user)
        assert page.get_attribute("#record", "data-index") == str(i)
        page.fill("#find", "html")
        page.click("#find-go")
        expect(page.locator("#find-result")).to_have_text(f"found: record #{n - 1}")
        # its markup shown as text, never run
        expect(page.locator("#record")).to_contain_text("<script>alert(1)</script> & what")
        page.fill("#find", "nope")
        page.press("#find", "Enter")
        expect(page.locator("#find-result")).to_have_text("no record has id 'nope'")
        page.fill("#find", "#3")  # by index: a record without an id is found so too
        page.press("#find", "Enter")
        expect(page.locator("#find-result")).to_have_text("found: record #3")
        assert page.get_attribute("#record", "data-index") == "3"
        before = _pixels(page)
        page.select_option("#colour", "status")
        statuses = {s: sum(r["status"] == s for r in rows) for s in {r["status"] for r in rows}}
        for s, c in statuses.items():
            expect(page.locator(f'#legend [data-name="{s}"]')).to_have_text(f"{s} ({c} of {c})")
        assert _pixels(page) != before
        page.select_option("#colour", "group")
        expect(page.locator("#legend")).to_contain_text("kind (points drawn of records): ")
        learnable = sum(r["kind"] == "learnable" for r in recs)
        expect(page.locator('#legend [data-name="learnable"]')).to_contain_text(f"of {learnable})")
        page.screenshot(path=tmp_path / "explorer.png", full_page=True)

        # a sample drawn: the counts are over every record, the highlight over the drawn
        page.goto(pages["sampled"].as_uri())
        page.wait_for_selector("body[data-ready]", state="attached")
        drawn = _embedded(pages["sampled"])[1]["index"].tolist()
        expect(page.locator("#kept-count")).to_have_text(str(TOP_K))  # the report's selection
        page.select_option("#unit", "fraction")  # the report's rule was a top-k
        page.fill("#amount", "0.1")
        k = min(math.floor(0.1 * n + 1e-9), len(rank))
        expect(page.locator("#kept-count")).to_have_text(str(k))
        want = {i for i in drawn if rank.get(i, n) < k}
        assert set(page.evaluate("window.fastscoreExplorer.highlighted()")) == want
        expect(page.locator("#kept-drawn")).to_have_text(str(len(want)))
        page.select_option("#unit", "top_k")
        page.fill("#amount", "7")
        expect(page.locator("#kept-count")).to_have_text("7")
        page.select_option("#rule", "clusters")
        page.fill("#amount", "30")
        expect(page.locator("#kept-count")).to_have_text("30")
        want = _quota_rule(planned, 30) & set(drawn)
        assert set(page.evaluate("window.fastscoreExplorer.highlighted()")) == want
        _cluster_rule_at(page, planned, drawn, "proportional", len(rank))
        page.fill("#amount", "2.5")
        expect(page.locator("#budget-error")).to_have_text(
            "a top-k must be a whole number >= 0, got '2.5'"
        )
        expect(page.locator("#kept-count")).to_have_text("")
        hidden = next(r["id"] for r in rows if r["index"] not in set(drawn))
        page.fill("#find", str(hidden))
        page.click("#find-go")
        expect(page.locator("#find-result")).to_contain_text(f"no drawn record has id '{hidden}'")

        # the JS quotas against the library's, both spreads, budgets from 0 to all
        page.goto(pages["balanced"].as_uri())
        page.wait_for_selector("body[data-ready]", state="attached")
        page.select_option("#rule", "clusters")
        page.select_option("#unit", "top_k")
        drawn = _embedded(pages["balanced"])[1]["index"].tolist()
        _cluster_rule_at(page, planned, drawn, "balanced", len(rank))
        browser.close()

    assert requests == [pages["all"].as_uri(), pages["sampled"].as_uri(),
                        pages["balanced"].as_uri()]  # fmt: skip
    assert errors == [] and dialogs == []
    _not_blank(tmp_path / "explorer.png")


def _cluster_rule_at(page, planned, drawn, spread, eligible) -> None:
    """The cluster rule's picks among the drawn points equal the library's quotas and
    picks at budgets that round differently (0, 1, odd, a third, all and more)."""
    from playwright.sync_api import expect

    for k in (0, 1, 7, 13, 30, 51, eligible - 1, eligible, eligible + 5):
        page.fill("#amount", str(k))
        expect(page.locator("#kept-count")).to_have_text(str(min(k, eligible)))
        want = _quota_rule(planned, k, spread) & set(drawn)
        got = set(page.evaluate("window.fastscoreExplorer.highlighted()"))
        assert got == want, (spread, k, sorted(got ^ want))


def _hover_loneliest(page, rows) -> int:
    """Move the pointer onto the loss plane's point farthest from any other (computed from
    the scores file and the axes the canvas says it draws); returns its record's index."""
    canvas = page.locator("#plots canvas.overlay").first
    box = canvas.bounding_box()
    left, top, width, height = orjson.loads(canvas.get_attribute("data-area"))
    x0, x1, y0, y1 = orjson.loads(canvas.get_attribute("data-view"))
    pts = [
        (r["index"], r["loss_base"], r["loss_ref"]) for r in rows if r.get("loss_ref") is not None
    ]
    px = np.array([box["x"] + left + (b - x0) / (x1 - x0) * width for _, b, _ in pts])
    py = np.array([box["y"] + top + (1 - (f - y0) / (y1 - y0)) * height for _, _, f in pts])
    d = np.hypot(px[:, None] - px[None, :], py[:, None] - py[None, :])
    np.fill_diagonal(d, np.inf)
    j = int(d.min(axis=1).argmax())
    page.mouse.move(float(px[j]), float(py[j]))
    return pts[j][0]


def _pixels(page) -> str:
    return page.evaluate("document.querySelector('#plots canvas').toDataURL()")


def _not_blank(shot) -> None:
    from PIL import Image

    px = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    # the plots' coloured points (text and axes are grey)
    coloured = int((px.max(axis=1) - px.min(axis=1) > 60).sum())
    assert coloured > 500, coloured
