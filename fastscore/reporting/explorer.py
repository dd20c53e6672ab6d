"""``explorer.html``: the report's scatter plots to explore, one self-contained file that
works offline (its script and its data are inlined; it makes no request).

- Hovering a point shows its record: id, prompt and response (truncated), every score,
  status, cluster and group.
- A budget (a fraction or a top-k) shows what it keeps: the count over all records and
  the kept points highlighted, under one of two rules, both exact: the plain top by the
  score (what ``select --coverage none`` keeps), and, after a ``--coverage clusters``
  selection, the best of each of its clusters by their quotas (``--within none`` with the
  clusters held as they are). The selection the report's own rule made is drawn as made.
- Colour by cluster, group (``--group-field``), status, or kept; find a record by id.

Drawn: the seeded sample of ``ReportConfig.points`` records the static plots draw, and
the report's selection in full (up to ``SELECTED_POINTS``, else a seeded sample of it).
Counts are exact over all records whatever is drawn: a budget keeps min(k, eligible)
records (per cluster: its quota, from the clusters' eligible counts), and a drawn point
is kept when its rank among the eligible records (in its cluster) is below that, the rank
computed here over every record and embedded per point.

Embedded per drawn point, little-endian, base64: its record's index (uint32), each score
column and the length (float32), status, cluster and group codes (the smallest unsigned
integer that holds them), selected (uint8), rank and rank in its cluster (int32). Its
texts (id, prompt up to ``PROMPT_CHARS``, response up to ``RESPONSE_CHARS``) as gzipped
JSON, base64, which the browser inflates (``DecompressionStream``). The file is bounded by
the number of drawn points whatever the input's size (``benchmarks/explorer_size.py``
measures it at a million records).

Drawn by a script of our own on 2D canvases (``templates/explorer.js``) rather than by a
plotting library: plotly's inlined script alone is 4.8 MB (plotly.min.js of plotly
7.1.0) and its scatter for 10^5 points needs WebGL, which headless browsers, VMs and
remote desktops often lack; the 2D canvas is everywhere and only two plots are needed.
"""

from __future__ import annotations

import base64
import gzip
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from fastscore.reporting.render import asset

if TYPE_CHECKING:
    from fastscore.config import ReportConfig
    from fastscore.selection.selector import Plan
    from fastscore.selection.table import ScoresTable

SELECTED_POINTS = 100_000  # of the report's selection drawn; a seeded sample beyond
PROMPT_CHARS = 300  # of a drawn record's prompt embedded (whitespace runs made one)
RESPONSE_CHARS = 300  # of its response


@dataclass(frozen=True)
class ExplorerContext:
    """What the explorer template (``templates/explorer.html.j2``) shows after the
    ``render.Heading``."""

    drawn: int  # points drawn (the sample and the selection)
    sample: int  # of which the seeded sample
    selection_drawn: int  # of the selection drawn (all of it up to SELECTED_POINTS)
    colourings: list[str]  # what the points may be coloured by, the first at the start
    quota_rule: str | None  # the cluster rule in words, when there is one
    meta: str  # JSON, "<" escaped: what the script needs besides the arrays
    arrays: str  # base64 of the packed per-point arrays
    texts: str  # base64 of gzipped JSON: [id, prompt, response] per point
    script: str  # templates/explorer.js


def drawn_records(
    shown: np.ndarray, chosen: list[int], *, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(the records drawn, in input order; those of the selection among them): the
    sample ``shown`` and the selection ``chosen``, a seeded sample of it past
    ``SELECTED_POINTS``."""
    sel = np.asarray(chosen, dtype=np.int64)
    if len(sel) > SELECTED_POINTS:
        rng = np.random.default_rng(seed)
        sel = np.sort(rng.choice(sel, SELECTED_POINTS, replace=False))
    return np.union1d(shown, sel), sel


def point_texts(sample) -> tuple[str, str]:
    """(prompt, response) of a record as the explorer shows them: whitespace runs made one
    (a blank line kept as a line break), cut at ``PROMPT_CHARS`` / ``RESPONSE_CHARS``."""
    from fastscore.selection.coverage import prompt_text, response_text

    prompt, response = prompt_text(sample), response_text(sample)
    if prompt is None:
        return "(unreadable record)", ""
    return _cut(prompt, PROMPT_CHARS), _cut(response or "", RESPONSE_CHARS)


def _cut(text: str, most: int) -> str:
    text = re.sub(r"\s*\n\s*", "\n", re.sub(r"[^\S\n]+", " ", text)).strip()
    return text if len(text) <= most else text[: most - 1] + "…"


def explorer_context(
    cfg: ReportConfig,
    table: ScoresTable,
    plan: Plan,
    *,
    columns: dict[str, np.ndarray],
    picked: np.ndarray,
    drawn: np.ndarray,
    selection_drawn: int,
    sample: int,
    texts: dict[int, tuple[str, str]],
    groups: list[str] | None,
) -> ExplorerContext:
    """The explorer of the records ``drawn`` (``drawn_records``; ``texts``: their prompt
    and response, ``point_texts``) of the scores ``table`` and the selection ``plan``
    made. ``columns``: the score columns shown, the rule's score among them; ``picked``:
    bool [n], the selection; ``groups``: each record's ``cfg.group_field`` value, or
    None."""
    sel = cfg.select
    score, order = sel.score, sel.order
    ids, eligible, coverage = table.ids, plan.eligible, plan.extra.get("coverage")
    n, selected = len(ids), int(picked.sum())
    # the control starts at the report's own budget (a threshold's: its count as a top-k)
    if sel.fraction is not None:
        budget = {"unit": "fraction", "value": sel.fraction}
    else:
        budget = {"unit": "top_k", "value": selected if sel.top_k is None else sel.top_k}
    idx = np.fromiter((i for i, _ in eligible), dtype=np.int64, count=len(eligible))
    val = np.fromiter((v for _, v in eligible), dtype=np.float64, count=len(eligible))
    key = -val if order == "desc" else val  # best first, ties to the earlier record
    arrays: dict[str, np.ndarray] = {"index": drawn.astype("<u4")}
    for c, v in columns.items():
        arrays[f"score:{c}"] = v[drawn].astype("<f4")
    arrays["length"] = table.length[drawn].astype("<f4")
    arrays["selected"] = picked[drawn].astype("u1")
    arrays["rank"] = _ranks(n, idx, key)[drawn].astype("<i4")
    categories = {}
    fields = {"cluster": plan.clusters, "group": groups, "status": table.status}
    codes_of = {}
    for field, values in fields.items():
        if values is None:
            continue
        categories[field], codes = _categories(values, drawn)
        arrays[field] = codes[drawn].astype(_uint_for(len(categories[field]["names"])))
        codes_of[field] = codes
    quota = None
    if coverage and coverage["method"] == "clusters":
        labels = codes_of["cluster"]
        arrays["cluster_rank"] = _ranks(n, idx, key, labels=labels[idx])[drawn].astype("<i4")
        quota = {"spread": coverage["spread"], "clusters": _eligible_per_cluster(labels[idx])}
    plots = []
    if "loss_base" in columns and "loss_ref" in columns:
        plots.append({"x": "score:loss_base", "y": "score:loss_ref", "diagonal": True})
    plots.append({"x": "length", "y": f"score:{score}", "diagonal": False})
    packed, layout = _pack(arrays)
    meta = {
        "n": n,
        "eligible": len(eligible),
        "selected": selected,
        "score": score,
        "order": order,
        "columns": list(columns),
        "arrays": layout,
        "categories": categories,
        "group_field": cfg.group_field,
        "quota": quota,
        "plots": plots,
        "budget": budget,
        "sampled": len(drawn) < n,
    }
    points = [[ids[i], *texts[i]] for i in drawn.tolist()]
    return ExplorerContext(
        drawn=len(drawn),
        sample=sample,
        selection_drawn=selection_drawn,
        # kept first: the selection stands out as in the static plot, whatever the number
        # of clusters (a palette tells apart 20)
        colourings=["kept"] + [f for f in fields if fields[f] is not None],
        quota_rule=_quota_rule(coverage, score) if quota else None,
        # "<" escaped: a group's name could end the script element ("</script>")
        meta=orjson.dumps(meta).decode().replace("<", "\\u003c"),
        arrays=base64.b64encode(packed).decode(),
        # gzip's level 9 (its default): at a million records (benchmarks/explorer_size.py)
        # 17.6 MiB in 11 s, where level 6 took 6 s for 18.3 MiB and level 1 0.6 s for 22.3
        texts=base64.b64encode(gzip.compress(orjson.dumps(points), mtime=0)).decode(),
        script=asset("explorer.js"),
    )


def _ranks(n: int, idx: np.ndarray, key: np.ndarray, labels: np.ndarray | None = None):
    """int32 [n]: each eligible record's 0-based rank by ``key`` (ascending, ties to the
    lower index; within its label's records when ``labels`` is given), -1 for the rest.
    ``idx``, ``key``, ``labels``: per eligible record."""
    out = np.full(n, -1, dtype=np.int32)
    if not len(idx):
        return out
    if labels is None:
        order = np.lexsort((idx, key))
        out[idx[order]] = np.arange(len(idx), dtype=np.int32)
        return out
    order = np.lexsort((idx, key, labels))
    lab = labels[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, len(lab)]))
    out[idx[order]] = (np.arange(len(idx)) - first).astype(np.int32)
    return out


def _eligible_per_cluster(labels: np.ndarray) -> list[list[int]]:
    """[[cluster code, eligible records], ...] in the order the coverage selection splits
    its budget in (a cluster's first eligible record; the order breaks ties in the
    largest-remainder shares). ``labels``: the eligible records' codes, in input order."""
    if not len(labels):
        return []
    codes, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.argsort(first)
    return [[int(codes[j]), int(counts[j])] for j in order]


def _categories(values: list[str], drawn: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """({"names", "records", "total"}, each record's code, int64 [n]) of one field's
    values: codes from 0 for the values the ``drawn`` records have, most records first
    (ties by name), then the others'; only the first have their names and counts embedded
    (a field of a million distinct values would otherwise outweigh the points)."""
    counts = Counter(values)
    present = {values[i] for i in drawn.tolist()}
    names = sorted(counts, key=lambda k: (k not in present, -counts[k], str(k)))
    code = {k: c for c, k in enumerate(names)}
    codes = np.fromiter((code[v] for v in values), dtype=np.int64, count=len(values))
    shown = names[: len(present)]
    return {
        "names": [str(k) for k in shown],
        "records": [counts[k] for k in shown],
        "total": len(names),
    }, codes


def _uint_for(count: int) -> str:
    return "u1" if count <= 1 << 8 else "<u2" if count <= 1 << 16 else "<u4"


# numpy's dtypes by the typed array the script reads them into
_JS_TYPES = {"u1": "Uint8", "<u2": "Uint16", "<u4": "Uint32", "<i4": "Int32", "<f4": "Float32"}


def _pack(arrays: dict[str, np.ndarray]) -> tuple[bytes, dict[str, dict[str, Any]]]:
    """The arrays in one buffer, each at an offset a multiple of 8 (a typed array's view
    must be aligned to its element size), and where each one is."""
    parts, layout, offset = [], {}, 0
    for name, a in arrays.items():
        data = a.tobytes()
        layout[name] = {"type": _JS_TYPES[a.dtype.str.replace("|", "")], "offset": offset,
                        "length": len(a)}  # fmt: skip
        pad = -len(data) % 8
        parts += [data, b"\0" * pad]
        offset += len(data) + pad
    return b"".join(parts), layout


def _quota_rule(coverage: dict[str, Any], score: str) -> str:
    spread = coverage["spread"]
    n = coverage["clusters"]
    held = (
        "select would choose their number from the budget (sqrt(eligible / 2), at most "
        "half the budget); here they are held"
        if coverage.get("clusters_auto")
        else "held as they are"
    )
    within = (
        "; the report's selection also spread each cluster's share over sub-clusters of its "
        "responses (--within responses), which this rule does not repeat"
        if coverage.get("within") == "responses"
        else ""
    )
    return (
        f"the best by {score} of each of the report's {n} clusters, the budget split "
        f"{spread} to their eligible records, as select --coverage clusters --within none "
        f"--spread {spread} does with these clusters ({held}){within}"
    )
