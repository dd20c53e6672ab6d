"""The explorer at a million records: the size of explorer.html, what fills it, the
report's time by stage, and (``--browser``) how long Chromium takes to open it.

Writes N synthetic prompt-response records (a `source` field of eight values; prompts
of 8-120 and responses of 5-250 words over 5,000 made-up words, so that most texts are
cut at the explorer's limits, as long real ones are) and a scores file for them (1% not
ok; loss_base, loss_ref, lobass, rho), then runs `report --group-field source` at its
default rule (the top 6% by lobass, coverage clusters with varied responses on lexical
features) in this process, `--repeats` times; prints the sizes, the median time of each
of the report's stages (its summary's `seconds`) and a JSON line last.

    python benchmarks/explorer_size.py --records 1000000 --browser

Most of the report's time is the selection it marks (coverage reads the input four
times; benchmarks/coverage_scale.py times it alone): the explorer's own cost is its stage
(`explorer`: ranks, codes, packing, gzip, the write) and part of `input` (the drawn
records' texts, read in the pass the page's samples need anyway). A run on 1,000 records
comes first, untimed (what a process's first report pays once: imports, fonts, thread
pools); `--warmup N` adds N untimed runs at full size (none by default: at a million
records a run takes minutes, and the first timed run's cold page cache is a fraction of
it). The machine's other load moves the times: compare runs made side by side.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

WARM_RECORDS = 1000


def add_cli_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--browser", action="store_true", help="time Chromium opening it")
    ap.add_argument("--workdir", type=Path, default=None, help="kept; data reused if there")


def write_data(n: int, work: Path) -> tuple[Path, Path]:
    """The input and its scores (written once per size into ``work``)."""
    inp, scores = work / f"in{n}.jsonl", work / f"scores{n}.jsonl"
    if scores.exists():
        return inp, scores
    part_in, part_scores = inp.with_suffix(".partial"), scores.with_suffix(".partial")
    rng = np.random.default_rng(0)
    syll = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "ve", "da", "xo", "bri", "en", "al"]
    words = sorted({"".join(rng.choice(syll, rng.integers(1, 5))) for _ in range(20_000)})
    words = np.array(words[:5000])
    sources = np.array(["chat", "code", "math", "qa", "write", "tool", "safety", "other"])
    lb = rng.uniform(1.0, 4.0, n)
    lr = (lb * rng.uniform(0.3, 1.05, n)).tolist()
    lb, bad = lb.tolist(), (rng.random(n) < 0.01).tolist()
    with open(part_in, "wb") as f, open(part_scores, "wb") as g:
        for a in range(0, n, 10_000):
            m = min(10_000, n - a)
            pl, rl = rng.integers(8, 121, m).tolist(), rng.integers(5, 251, m).tolist()
            w = words[rng.integers(0, len(words), sum(pl) + sum(rl))].tolist()
            src = sources[rng.integers(0, len(sources), m)].tolist()
            at = 0
            for j in range(m):
                i = a + j
                p = " ".join(w[at : at + pl[j]])
                r = " ".join(w[at + pl[j] : at + pl[j] + rl[j]])
                at += pl[j] + rl[j]
                rec = {"id": f"rec-{i}", "source": src[j], "prompt": p, "response": r}
                f.write(orjson.dumps(rec) + b"\n")
                row = {"id": rec["id"], "index": i}
                if bad[i]:
                    row.update(status="too_long", n_response_tokens=None)
                else:
                    row.update(status="ok", n_response_tokens=int(rl[j] * 1.3),
                               loss_base=lb[i], loss_ref=lr[i], lobass=(lb[i] - lr[i]) / lb[i],
                               rho=lb[i] - lr[i])  # fmt: skip
                g.write(orjson.dumps(row) + b"\n")
    part_in.replace(inp)
    part_scores.replace(scores)  # last: its presence says both are whole
    return inp, scores


def run_once(inp: Path, scores: Path, out: Path) -> tuple[float, dict[str, float]]:
    """(seconds, the report's seconds per stage)."""
    from fastscore.reporting.page import report

    t0 = time.perf_counter()
    summary = report(scores=str(scores), input=str(inp), output_dir=str(out),
                     group_field="source")  # fmt: skip
    return time.perf_counter() - t0, summary["seconds"]


def composition(page: Path) -> dict[str, int]:
    """Bytes of the explorer's parts: its three data blocks and the rest (page, script)."""
    text = page.read_text(encoding="utf-8")
    parts = {}
    for name in ("fs-meta", "fs-arrays", "fs-texts"):
        parts[name] = len(re.search(rf'<script id="{name}" type="[^"]+">(.*?)</script>', text,
                                    re.S)[1])  # fmt: skip
    parts["page and script"] = len(text) - sum(parts.values())
    return parts


def open_in_browser(page: Path) -> float:
    """Seconds from navigation to the explorer's ready mark in headless Chromium."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("--browser: chromium is not installed (make browser)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1280, "height": 1300})
        t0 = time.perf_counter()
        tab.goto(page.as_uri())
        tab.wait_for_selector("body[data-ready]", state="attached", timeout=0)
        seconds = time.perf_counter() - t0
        browser.close()
    return seconds


def main(args: argparse.Namespace) -> dict:
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fastscore-explorer-size-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    inp, scores = write_data(args.records, work)
    print(f"data: {args.records:,} records in {time.perf_counter() - t0:.0f} s ({work})")
    run_once(*write_data(WARM_RECORDS, work), work / "report-warm")
    out = work / "report"
    for _ in range(args.warmup):
        run_once(inp, scores, out)
    runs = [run_once(inp, scores, out) for _ in range(args.repeats)]
    total = statistics.median(t for t, _ in runs)
    stages = {k: round(statistics.median(s[k] for _, s in runs), 1) for k in runs[0][1]}
    sizes = {p.name: p.stat().st_size for p in sorted(out.glob("*.html"))}
    parts = composition(out / "explorer.html")
    print(f"report: {total:.1f} s (median of {len(runs)}); by stage: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))  # fmt: skip
    print("files: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sizes.items()))
    print("explorer.html: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in parts.items()))
    line = {"records": args.records, "seconds": round(total, 1), "stages": stages,
            "bytes": sizes, "explorer_parts": parts}  # fmt: skip
    if args.browser:
        line["browser_open_seconds"] = round(open_in_browser(out / "explorer.html"), 2)
        print(f"chromium opens explorer.html in {line['browser_open_seconds']:.1f} s")
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cli_args(ap)
    main(ap.parse_args())
