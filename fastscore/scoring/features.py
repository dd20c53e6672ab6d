"""Engine features: what the records are about, from the forward scoring already runs.

One row per record: the base model's final hidden states, mean-pooled over the record's
prompt tokens (every token that is not scored), after a fixed seeded random projection
to ``FEATURE_DIM`` float16 numbers, written by the torch engine's stream beside the
scores as ``<scores stem>.features.npy``. The coverage selection (``selection.coverage``)
clusters records by them.

Writing them, with the base engine built as ``TorchEngine(..., pool="prompt")``:

1. at the start: ``w = FeatureWriter(output, resume_rows=done)`` (``done``: the scores
   lines a ``--resume`` kept, 0 for a fresh run); a fresh run whose engine gives no
   features calls ``remove_features(output)`` instead;
2. per chunk, right after ``base.response_logprobs(ok)`` (before any other call on the
   base, such as ``--ifd``'s, replaces ``base.pooled``), and *before* the chunk's scores
   lines are written: ``w.write(chunk_feature_rows(chunk, base.pooled))``, one row per
   record. A kill then leaves at least as many feature rows as scores lines, and a resume
   cuts the features back to the scores;
3. ``w.close()``; and in ``finish``, after the scores are renamed into place:
   ``finish_features(output)`` (``<stem>.features.npy.partial`` -> ``.features.npy``). A
   kill between the two leaves a partial with exactly the scores' rows, which
   ``read_features`` accepts.

Ray: each shard does the same with its own path; the merge calls ``merge_features(shard
paths, output)`` and then ``finish_features(output)``.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np

from fastscore.errors import InputError

FEATURE_DIM = 64  # numbers per record in the features file


PROJECTION_SEED = 0  # the engine features' random projection


POOLS = ("prompt", "response")


# the raw partial file: this header, then float16 rows of `dim` numbers, little-endian
_MAGIC = b"FSFEAT1\0"


_HEADER = 16


def features_path(scores: str | os.PathLike) -> Path:
    """``scores.jsonl`` -> ``scores.features.npy`` (beside it, as the manifest is)."""
    from fastscore.runs.outputs import OutputPaths

    return OutputPaths.of(scores).features


def _store(scores: str | os.PathLike):
    """Where the scores are kept (``storage.staging.Store``): features are removed there too."""
    from fastscore.runs.outputs import OutputPaths

    return OutputPaths.of(scores).store


def features_partial_path(scores: str | os.PathLike) -> Path:
    from fastscore.runs.outputs import partial_of

    return partial_of(features_path(scores))


@functools.lru_cache(maxsize=4)
def _projection(hidden: int, dim: int, seed: int) -> np.ndarray:
    """A fixed ``[hidden, dim]`` Gaussian matrix scaled by 1/sqrt(dim): distances are kept
    in expectation (Johnson-Lindenstrauss), whatever the model's width."""
    rng = np.random.default_rng([seed, hidden, dim])
    return (rng.standard_normal((hidden, dim)) / math.sqrt(dim)).astype(np.float32)


def project_pooled(
    hidden_mean: np.ndarray, seed: int = PROJECTION_SEED, dim: int = FEATURE_DIM
) -> np.ndarray:
    """Pooled hidden states ``[n, hidden]`` -> float16 ``[n, dim]`` by a random projection
    fixed by (seed, hidden, dim), so that every chunk, shard and resumed run of a model
    projects alike. Non-finite rows stay NaN; values are clipped to float16's range."""
    x = np.asarray(hidden_mean, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"hidden_mean must be [n, hidden], got shape {x.shape}")
    out = x @ _projection(x.shape[1], dim, seed)
    bad = ~np.isfinite(x).all(axis=1)
    out[bad] = np.nan
    f16 = np.finfo(np.float16).max
    return np.clip(out, -f16, f16).astype(np.float16)


def chunk_feature_rows(
    chunk: list,
    pooled: np.ndarray | None,
    *,
    seed: int = PROJECTION_SEED,
    dim: int = FEATURE_DIM,
) -> np.ndarray:
    """One float16 row per record of a stream chunk, in order.

    ``chunk``: the chunk's ``RenderedSample``s (a preference record's two sides come one
    after the other, with the same index); ``pooled``: the base engine's pooled states of
    the chunk's ok samples, in order (``TorchEngine.pooled`` after
    ``response_logprobs(ok)``), or None. A record's row is its first ok sample's projected
    state (a pair's sides share the prompt); NaN for a record with no ok sample."""
    ok_rows = np.full(len(chunk), -1)
    j = 0
    for n, r in enumerate(chunk):
        if r.status == "ok":
            ok_rows[n] = j
            j += 1
    if pooled is not None and len(pooled) != j:
        raise ValueError(f"{len(pooled)} pooled rows for {j} ok samples")
    proj = project_pooled(pooled, seed, dim) if pooled is not None and j else None
    rows: list[np.ndarray] = []
    nan = np.full(dim, np.nan, dtype=np.float16)
    last = None
    for n, r in enumerate(chunk):
        if rows and r.index == last:  # a pair's second side
            if np.isnan(rows[-1][0]) and ok_rows[n] >= 0 and proj is not None:
                rows[-1] = proj[ok_rows[n]]
            continue
        last = r.index
        rows.append(proj[ok_rows[n]] if ok_rows[n] >= 0 and proj is not None else nan)
    return np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float16)


class FeatureWriter:
    """Appends feature rows to ``<stem>.features.npy.partial``, one row per scores line.

    The stream opens it with ``resume_rows`` = the scores lines kept (0 for a fresh run),
    calls ``write(rows)`` for each chunk *before* writing that chunk's scores lines (so a
    kill leaves at least as many feature rows as scores lines), and ``close()`` at the end.
    A resume cuts the partial back to ``resume_rows``; if it holds fewer (it was lost, or
    the run began without features), features are off for the run (``enabled`` False,
    ``note`` says why) and the partial is removed: selection then falls back to the
    lexical features rather than trusting rows that do not line up with the scores."""

    def __init__(self, scores: str | os.PathLike, dim: int = FEATURE_DIM, *, resume_rows: int = 0):
        self.path = features_partial_path(scores)
        self.dim, self.row_bytes = dim, 2 * dim
        self.enabled, self.note, self._f = True, None, None
        # a finished file of an earlier run would be stale once this one writes
        _store(scores).remove(features_path(scores))
        if resume_rows == 0:
            self._f = open(self.path, "wb")  # noqa: SIM115 - kept open across chunks
            self._f.write(_MAGIC + np.array([dim, 0], dtype="<u4").tobytes())
            self._f.flush()
            return
        have = _partial_rows(self.path, dim)
        if have is None or have < resume_rows:
            self.path.unlink(missing_ok=True)
            self.enabled = False
            self.note = (
                f"{self.path} holds {have or 0} feature rows for {resume_rows} scored records; "
                "features are off for this run (selection falls back to lexical features)"
            )
            return
        self._f = open(self.path, "r+b")  # noqa: SIM115 - kept open across chunks
        self._f.truncate(_HEADER + resume_rows * self.row_bytes)
        self._f.seek(0, os.SEEK_END)

    def write(self, rows: np.ndarray) -> None:
        if not self.enabled:
            return
        rows = np.asarray(rows, dtype="<f2")
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"feature rows must be [n, {self.dim}], got {rows.shape}")
        self._f.write(np.ascontiguousarray(rows).tobytes())
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _partial_rows(path: Path, dim: int | None = None) -> int | None:
    """Complete rows in a raw partial (None if it is missing or not one, or of another
    dim)."""
    if not path.exists():
        return None
    with open(path, "rb") as f:
        head = f.read(_HEADER)
    if len(head) < _HEADER or head[:8] != _MAGIC:
        return None
    d = int(np.frombuffer(head[8:12], dtype="<u4")[0])
    if dim is not None and d != dim:
        return None
    return (path.stat().st_size - _HEADER) // (2 * d)


def _partial_array(path: Path) -> np.ndarray | None:
    rows = _partial_rows(path)
    if rows is None:
        return None
    with open(path, "rb") as f:
        d = int(np.frombuffer(f.read(_HEADER)[8:12], dtype="<u4")[0])
    return np.memmap(path, dtype="<f2", mode="r", offset=_HEADER, shape=(rows, d))


def finish_features(scores: str | os.PathLike, n_rows: int | None = None) -> Path | None:
    """``<stem>.features.npy.partial`` -> ``<stem>.features.npy`` (streamed, atomic), the
    partial removed; cut to ``n_rows`` when given. Call it after the scores file is in
    place. Idempotent: with no partial it does nothing and returns the final path if one
    exists."""
    partial, final = features_partial_path(scores), features_path(scores)
    src = _partial_array(partial)
    if src is None:
        return final if final.exists() else None
    rows = src.shape[0] if n_rows is None else n_rows
    if rows > src.shape[0]:
        raise InputError(f"{partial} holds {src.shape[0]} feature rows, fewer than {rows}")
    tmp = final.with_name(final.name + ".tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(rows, src.shape[1]))
    for a in range(0, rows, 1 << 16):
        out[a : a + (1 << 16)] = src[a : a + (1 << 16)]
    out.flush()
    del out, src
    os.replace(tmp, final)
    partial.unlink()
    return final


def remove_features(scores: str | os.PathLike) -> None:
    """Delete a scores file's features (final and partial): a fresh run whose engine
    writes none calls it, so that an earlier run's features are not taken for its own."""
    store = _store(scores)
    store.remove(features_path(scores))
    store.remove(features_partial_path(scores))


def merge_features(parts: list[str | os.PathLike], scores: str | os.PathLike) -> bool:
    """Ray: the shards' features (each shard's scores path, in index order) appended into
    ``scores``' partial, for ``finish_features``. False (and nothing written) when any
    shard has none."""
    arrays = [read_features(p) for p in parts]
    if any(a is None for a in arrays):
        return False
    with FeatureWriter(scores, arrays[0].shape[1]) as w:
        for a in arrays:
            for b in range(0, a.shape[0], 1 << 16):
                w.write(a[b : b + (1 << 16)])
    return True


def read_features(scores: str | os.PathLike, n_rows: int | None = None) -> np.ndarray | None:
    """The engine features of a scores file (memory-mapped float16 ``[n, dim]``), or None
    when it has none. A run killed after its scores were renamed but before the features
    were has only the partial: it is used when it holds exactly ``n_rows`` rows."""
    final = features_path(scores)
    if final.exists() or _store(scores).pull(final):  # (a store's: fetched first)
        x = np.load(final, mmap_mode="r")
    else:
        x = _partial_array(features_partial_path(scores))
        if x is None or n_rows is None or x.shape[0] != n_rows:
            return None
    if n_rows is not None and x.shape[0] != n_rows:
        raise InputError(
            f"{final} has {x.shape[0]} rows but the scores file has {n_rows}; the features "
            "belong to another run: delete them, or use --features lexical"
        )
    return x
