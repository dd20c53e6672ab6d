"""Coverage: spread a selection's budget over what the records are about.

LoBaSS ranks records one at a time. When task families differ in learnability, the plain
top-k fills the budget from the most learnable families and leaves the others out
(``benchmarks/selection_quality.py``: lobass picked the purest subsets yet lost to random
at every budget, because it took two of four skills). Xia et al. (arXiv 2410.09335) saw
the same at scale: diversity mattered more than per-sample quality. The remedies here
follow S2L (cluster, then a quota per cluster) and DEITA (a record joins only if it is far
enough from those already kept):

- ``coverage="clusters"``: the records are clustered (mini-batch k-means) and the budget is
  split across the clusters, in proportion to each cluster's eligible records (or evenly,
  ``spread="balanced"``); each cluster gives its best records by the score.
- ``coverage="diverse"``: records in score order, each kept only if its cosine distance to
  every record kept so far is at least ``min_distance``; a budget the filter leaves short
  is topped up with the best records left (counted in the report).

What the records are about (their features), one row per record:
- ``engine``: the base model's pooled final hidden states, written beside the scores as
  they are scored (``scoring.features``).
- ``lexical``: engines that cannot return hidden states (vLLM's prompt-logprob path, a
  served model) fall back to the prompt's text: its words hashed (scikit-learn's
  ``HashingVectorizer``, no vocabulary held), tf-idf, and a truncated SVD
  to ``FEATURE_DIM`` dimensions, fitted on a seeded sample of at most ``LEXICAL_SAMPLE``
  records and applied chunk by chunk.
- or the groups a field of the input records names (``group_field``): no clustering.

Memory is bounded at a million records: features are ``n x 64`` (256 MB in float32 at
1M), k-means is fitted on a sample of at most ``KMEANS_SAMPLE`` rows and assigns the rest
in chunks.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np

from fastscore.errors import ConfigError, InputError
from fastscore.scoring.features import FEATURE_DIM, features_path, read_features
from fastscore.selection.budget import choose_grouped, rank, spread_quotas

LEXICAL_SAMPLE = 50_000  # records the tf-idf weights and the SVD are fitted on


KMEANS_SAMPLE = 100_000  # rows k-means is fitted on; the rest are assigned to its centres


AUTO_CLUSTERS_MAX = 256


CHUNK = 8192  # records transformed / assigned at a time


MIN_DISTANCE = 0.1  # diverse: DEITA's cosine similarity of at most 0.9


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError as e:  # pragma: no cover - a core dependency
        raise ConfigError("coverage needs scikit-learn: pip install 'scikit-learn>=1.5'") from e


def prompt_text(sample) -> str | None:
    """What a record asks: its non-assistant turns (system, user, tool...), or a raw-text
    prompt. None for a record that could not be read."""
    if sample.status == "bad_record":
        return None
    parts = [sample.text] if sample.text else []
    parts += [m.text for m in sample.messages if m.role != "assistant" and m.text]
    return "\n".join(parts)


def response_text(sample) -> str | None:
    """What a record answers: its assistant turns and completions. None for a record that
    could not be read."""
    if sample.status == "bad_record":
        return None
    parts = [m.text for m in sample.messages if m.role == "assistant" and m.text]
    for cont in (sample.completions or {}).values():
        parts += [cont] if isinstance(cont, str) else [m.text for m in cont if m.text]
    return "\n".join(parts)


def record_texts(
    path, fmt: str, indices: set[int] | None = None, *, part: str = "prompt", kind=None
) -> Iterator[tuple]:
    """(index, text) of the input's records, ``part`` "prompt" or "response" (None for an
    unreadable record); only the ``indices`` given, when given; ``kind``: the input's,
    when known."""
    from fastscore.data.formats import to_sample
    from fastscore.data.readers import read_records

    text_of = prompt_text if part == "prompt" else response_text
    for raw in read_records(path, kind):
        if indices is None or raw.index in indices:
            yield raw.index, text_of(to_sample(raw, fmt))


def lexical_features(
    path: str | os.PathLike,
    n_rows: int,
    *,
    dim: int = FEATURE_DIM,
    seed: int = 0,
    sample: int = LEXICAL_SAMPLE,
    fmt: str,
    part: str = "prompt",
    kind: str | None = None,
) -> np.ndarray:
    """float32 ``[n_rows, dim]``: each record's prompt (or, ``part="response"``, what it
    answers; read in the record format ``fmt``) as hashed words, tf-idf weighted,
    reduced by a truncated SVD (LSA); both fitted on a seeded sample of at most ``sample``
    records, then applied chunk by chunk (NaN rows for unreadable records).

    Words, not word pairs: on the benchmark's short prompts bigrams of the arguments
    ("3 5") outweighed the words that say what is asked, and the clusters followed the
    arguments (homogeneity against the planted families 0.80 and 0.90 with bigrams, 0.93
    and 1.00 without, at 24 clusters, seed 0)."""
    _sklearn()
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

    hasher = HashingVectorizer(
        n_features=1 << 20,
        alternate_sign=False,
        norm=None,
        token_pattern=r"(?u)\b\w+\b",  # single characters too: digits, one-letter words
    )
    rng = np.random.default_rng(seed)
    whole = n_rows <= sample
    fit_on = None if whole else set(rng.choice(n_rows, sample, replace=False).tolist())
    fit_texts = [
        t for _, t in record_texts(path, fmt, fit_on, part=part, kind=kind) if t is not None
    ]
    out = np.full((n_rows, dim), np.nan, dtype=np.float32)
    if not fit_texts:
        return out
    tfidf = TfidfTransformer(sublinear_tf=True).fit(hasher.transform(fit_texts))
    x_fit = tfidf.transform(hasher.transform(fit_texts))
    # the words the sample has (the SVD's basis spans no others): 2^20 hashed columns
    # become the sample's vocabulary, so the randomized solver's dense [columns, k + 10]
    # matrix stays small
    cols = np.unique(x_fit.indices)
    x_fit = x_fit[:, cols]
    k = min(dim, x_fit.shape[0] - 1, x_fit.shape[1] - 1)
    if k < 1:
        return out
    svd = TruncatedSVD(n_components=k, random_state=seed).fit(x_fit)
    idx: list[int] = []
    texts: list[str] = []

    def flush() -> None:
        if texts:
            out[idx, :k] = svd.transform(tfidf.transform(hasher.transform(texts))[:, cols])
            out[idx, k:] = 0.0
            idx.clear()
            texts.clear()

    for i, t in record_texts(path, fmt, None, part=part, kind=kind):
        if i >= n_rows:
            raise InputError(
                f"{path} has more records than the scores file ({n_rows}); the scores were "
                "computed on another input"
            )
        if t is not None:
            idx.append(i)
            texts.append(t)
        if len(texts) >= CHUNK:
            flush()
    flush()
    return out


def normalise(x: np.ndarray, centre: bool = True, *, inplace: bool = False) -> np.ndarray:
    """float32 rows scaled to unit length (cosine geometry), first centred on the mean of
    the finite rows when ``centre``: hidden states share a large common direction (every
    prompt's template, the model's anisotropy) that would make every pair look alike.
    Lexical features are not centred (the usual LSA: tf-idf, SVD, unit length). Rows
    with a non-finite number become NaN. Read a chunk at a time (a float16 memmap is never
    converted whole); ``inplace`` reuses a float32 array's memory for the result."""
    n, step = x.shape[0], CHUNK * 8
    own = inplace and isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.writeable
    out = x if own else np.empty(x.shape, dtype=np.float32)
    fin = np.zeros(n, dtype=bool)
    total = np.zeros(x.shape[1], dtype=np.float64)
    for a in range(0, n, step):
        part = np.asarray(x[a : a + step], dtype=np.float32)
        fin[a : a + step] = ok = np.isfinite(part).all(axis=1)
        total += part[ok].sum(axis=0, dtype=np.float64)
    if not fin.any():
        out[:] = np.nan
        return out
    mean = (total / fin.sum()).astype(np.float32) if centre else np.zeros(x.shape[1], np.float32)
    for a in range(0, n, step):
        part = np.asarray(x[a : a + step], dtype=np.float32) - mean
        norm = np.linalg.norm(part, axis=1, keepdims=True)
        out[a : a + step] = part / np.maximum(norm, 1e-12)
    out[~fin] = np.nan
    return out


def auto_clusters(n_eligible: int, budget: int) -> int:
    """The number of clusters when none is given: sqrt(eligible / 2), at most
    ``AUTO_CLUSTERS_MAX`` and half the budget, at least 1.

    It errs towards too many: a family split over several clusters still gets its share
    of the budget in total, while two families merged into one cluster let the more
    learnable one take the whole quota, the failure coverage is for. Half the budget keeps
    about two picks per cluster. 1,200 records at a budget of 60: 24 clusters."""
    n = round(math.sqrt(max(n_eligible, 0) / 2))
    return max(1, min(n, AUTO_CLUSTERS_MAX, budget // 2))


def kmeans(x: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """int32 cluster of each row of normalised features (-1 for NaN rows), clusters
    numbered by size, largest first. Mini-batch k-means fitted on a seeded sample of at
    most ``KMEANS_SAMPLE`` rows; every row then goes to its nearest centre, a chunk at a
    time."""
    _sklearn()
    from sklearn.cluster import MiniBatchKMeans

    fin = np.flatnonzero(np.isfinite(x).all(axis=1))
    labels = np.full(x.shape[0], -1, dtype=np.int32)
    n_clusters = min(n_clusters, len(fin))
    if n_clusters <= 1:
        labels[fin] = 0
        return labels
    rng = np.random.default_rng(seed)
    fit = fin if len(fin) <= KMEANS_SAMPLE else np.sort(rng.choice(fin, KMEANS_SAMPLE, False))
    km = MiniBatchKMeans(
        n_clusters=n_clusters,
        random_state=seed,
        batch_size=min(4096, len(fit)),
        n_init=3,
        max_iter=200,
    ).fit(np.ascontiguousarray(x[fit]))
    for a in range(0, len(fin), CHUNK * 8):
        rows = fin[a : a + CHUNK * 8]
        labels[rows] = km.predict(np.ascontiguousarray(x[rows]))
    # renumber by size, largest first (ties: the lower old number), so that c0 is the
    # biggest cluster whatever k-means numbered it
    sizes = np.bincount(labels[fin], minlength=n_clusters)
    order = sorted(range(n_clusters), key=lambda c: (-sizes[c], c))
    remap = np.empty(n_clusters, dtype=np.int32)
    remap[order] = np.arange(n_clusters, dtype=np.int32)
    labels[fin] = remap[labels[fin]]
    return labels


def choose_diverse(
    ranked: list[int], x: np.ndarray, k: int, *, min_distance: float
) -> tuple[list[int], int]:
    """Greedy: walk ``ranked`` (best first) and keep a record when its cosine distance to
    every record kept so far is >= ``min_distance`` (``x``: normalised features), until
    ``k`` are kept; a shortfall is topped up with the best records left, in rank order.
    Records without features are left to the top-up. Returns (chosen indices in input
    order, how many were topped up)."""
    k = min(k, len(ranked))
    dim = x.shape[1]
    kept = np.empty((max(k, 1), dim), dtype=np.float32)
    m = 0
    chosen: list[int] = []
    limit = 1.0 - min_distance
    for a in range(0, len(ranked), 1024):
        if m >= k:
            break
        block = ranked[a : a + 1024]
        xb = np.asarray(x[block], dtype=np.float32)
        fin = np.isfinite(xb).all(axis=1)
        near = (xb @ kept[:m].T).max(axis=1) if m else np.full(len(block), -np.inf)
        start = m
        for j, i in enumerate(block):
            if m >= k:
                break
            if not fin[j] or near[j] > limit:
                continue
            if m > start and float((kept[start:m] @ xb[j]).max()) > limit:
                continue
            kept[m] = xb[j]
            m += 1
            chosen.append(i)
    taken = set(chosen)
    topped = 0
    for i in ranked:
        if len(chosen) >= k:
            break
        if i not in taken:
            chosen.append(i)
            topped += 1
    return sorted(chosen), topped


def record_features(cfg, n_rows: int, fmt: str, kind=None) -> tuple[np.ndarray, str]:
    """(features ``[n_rows, d]``, their source) as ``cfg.features`` asks: the scores' engine
    features file; lexical features of the input's prompts; auto: the first that exists."""
    if cfg.features in ("auto", "engine"):
        x = read_features(cfg.scores, n_rows)
        if x is not None:
            return x, "engine"
        if cfg.features == "engine":
            raise InputError(
                f"{cfg.scores} has no engine features ({features_path(cfg.scores).name}): "
                "they are written by the torch engine; use --features lexical (or auto)"
            )
    return lexical_features(cfg.input, n_rows, seed=cfg.seed, fmt=fmt, kind=kind), "lexical"


def choose_covered(
    cfg, table, eligible: list[tuple[int, float]], *, target: int
) -> tuple[list[int], dict[str, Any], list[str]]:
    """The records ``cfg.coverage`` picks from ``eligible`` (of the scores ``table``) at a
    budget of ``target``, its report (the clusters: records, eligible, quota, selected,
    mean score) and each record's cluster, named as the report names it."""
    import time

    from fastscore.selection.inputs import input_facts

    t0 = time.perf_counter()
    n = len(table)
    report: dict[str, Any] = {"method": cfg.coverage}
    quotas = None
    if cfg.coverage == "clusters" and cfg.group_field:
        fmt = table.input_format(cfg.input)
        kind = table.input_kind(cfg.input)
        names = input_facts(
            cfg.input, n_rows=n, fmt=fmt, group_field=cfg.group_field, kind=kind
        ).groups
        report["features"] = f"field:{cfg.group_field}"
        values = sorted(set(names))
        code = {v: c for c, v in enumerate(values)}
        labels = np.array([code[g] for g in names], dtype=np.int32)
        cluster_names = values
        x = None
    else:
        fmt, kind = table.input_format(cfg.input), table.input_kind(cfg.input)
        feats, source = record_features(cfg, n, fmt, kind)
        x = normalise(feats, centre=source == "engine", inplace=source == "lexical")
        report["features"] = source
        cluster_names = None
    if cfg.coverage == "diverse":
        ranked = [i for i, _ in rank(eligible, cfg.order)]
        chosen, topped = choose_diverse(ranked, x, target, min_distance=cfg.min_distance)
        report.update(min_distance=cfg.min_distance, topped_up=topped)
        # clusters only to describe the subset in the report
        labels = kmeans(x, auto_clusters(len(eligible), max(2 * target, 4)), cfg.seed)
        report["clusters"] = int(labels.max()) + 1 if (labels >= 0).any() else 0
        report["clusters_auto"] = True
    else:
        if x is not None:
            auto = cfg.clusters is None
            n_clusters = auto_clusters(len(eligible), target) if auto else cfg.clusters
            labels = kmeans(x, n_clusters, cfg.seed)
            report["clusters"] = int(labels.max()) + 1 if (labels >= 0).any() else 0
            report["clusters_auto"] = auto
        else:
            report["clusters"] = len(cluster_names)
        report["spread"] = cfg.spread
        elig_sizes = Counter(int(labels[i]) for i, _ in eligible)
        quotas = spread_quotas(target, dict(elig_sizes), cfg.spread)
        if cfg.within == "responses":
            chosen = _varied_in_responses(cfg, table, eligible, labels=labels, quotas=quotas)
            report["within"] = "responses"
        else:
            chosen = choose_grouped(eligible, labels.tolist(), quotas, order=cfg.order)
    report["by_cluster"] = _by_cluster(
        labels, eligible, chosen, quotas=quotas, x=x, names=cluster_names
    )
    report["seconds"] = round(time.perf_counter() - t0, 3)
    name_of = {c: _cluster_name(c, cluster_names) for c in np.unique(labels).tolist()}
    return chosen, report, [name_of[c] for c in labels.tolist()]


def _varied_in_responses(cfg, table, eligible, *, labels, quotas) -> list[int]:
    """Each cluster's quota spread, in proportion, over sub-clusters of its eligible
    records' responses (lexical features), the best of each: the picks of a family vary in
    what they answer instead of repeating the answer the reference learnt best."""
    resp = normalise(
        lexical_features(
            cfg.input,
            len(table),
            seed=cfg.seed,
            fmt=table.input_format(cfg.input),
            part="response",
            kind=table.input_kind(cfg.input),
        ),
        centre=False,
        inplace=True,
    )
    members: dict[int, list[tuple[int, float]]] = {}
    for i, v in eligible:
        members.setdefault(int(labels[i]), []).append((i, v))
    chosen: list[int] = []
    for c, rows in members.items():
        q = quotas.get(c, 0)
        if q <= 0:
            continue
        idx = np.asarray([i for i, _ in rows])
        sub = kmeans(resp[idx], auto_clusters(len(rows), q), cfg.seed)
        sub_of = dict(zip(idx.tolist(), sub.tolist(), strict=True))
        subq = spread_quotas(q, dict(Counter(sub.tolist())), "proportional")
        chosen += choose_grouped(rows, sub_of, subq, order=cfg.order)
    return sorted(chosen)


def _by_cluster(labels, eligible, chosen, *, quotas, x, names) -> dict[str, dict[str, Any]]:
    records = Counter(labels.tolist())
    elig = Counter(int(labels[i]) for i, _ in eligible)
    picked = set(chosen)
    sums: dict[int, list[float]] = {}
    sel_sums: dict[int, list[float]] = {}
    for i, v in eligible:
        c = int(labels[i])
        sums.setdefault(c, []).append(v)
        if i in picked:
            sel_sums.setdefault(c, []).append(v)
    example = _examples(labels, eligible, x)
    out = {}
    for c in sorted(records, key=lambda c: (c < 0, c)):
        name = _cluster_name(c, names)
        s, ss = sums.get(c, []), sel_sums.get(c, [])
        out[name] = {
            "records": records[c],
            "eligible": elig.get(c, 0),
            **({"quota": quotas.get(c, 0)} if quotas is not None else {}),
            "selected": len(ss),
            "score_mean": round(float(np.mean(s)), 6) if s else None,
            "score_mean_selected": round(float(np.mean(ss)), 6) if ss else None,
            "example_index": example.get(c),
        }
    return out


def _cluster_name(c: int, names: list[str] | None) -> str:
    return "(no features)" if c < 0 else names[c] if names else f"c{c}"


def _examples(labels, eligible, x) -> dict[int, int]:
    """Per cluster, the eligible record nearest its mean (the first one without
    features)."""
    by: dict[int, list[int]] = {}
    for i, _ in eligible:
        by.setdefault(int(labels[i]), []).append(i)
    out = {}
    for c, idx in by.items():
        if x is None or c < 0:
            out[c] = idx[0]
            continue
        v = np.asarray(x[idx], dtype=np.float32)
        centre = v.mean(axis=0)
        out[c] = idx[int(np.argmax(v @ centre))]
    return out
