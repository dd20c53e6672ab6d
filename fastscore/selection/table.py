"""A scores file read once into columns, for everything that reads scores: ``select``,
``report``, the length diagnostic, the demo. One ``fastscore run`` reads its scores once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from fastscore.data.writers import read_score_rows
from fastscore.errors import InputError
from fastscore.records import OK
from fastscore.runs.outputs import OutputPaths
from fastscore.runs.problems import SHOWN, Problem
from fastscore.scoring.arithmetic import perplexity, seeded_uniform, spearman
from fastscore.storage import Location, locate

# scores computed from a row rather than read from a column
DERIVED = ("perplexity", "length", "random")
# columns whose correlation with response length the summaries report
LENGTH_CHECKED = ("lobass", "rho", "loss_base", "perplexity", "ifd", "margin", "random")
_NOT_SCORES = ("index",)


@dataclass
class ScoresTable:
    path: Path | Location
    ids: list
    status: list[str]
    length: np.ndarray  # float64 [n]: response tokens (NaN where none)
    columns: dict[str, np.ndarray]  # every numeric column, float64 [n], NaN where null
    fmt: str | None = None  # the record format the scores were made with (the manifest's)
    problems: list[Problem] = field(default_factory=list)  # the first rows not ok
    # (an input, its kind), once found (``input_kind``)
    kind: tuple[str, str] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def read(cls, path: str | Path, fmt: str | None = None) -> ScoresTable:
        """One pass over a scores file (JSONL or Parquet); ``fmt`` defaults to the one its
        manifest records."""
        ids, status, length = [], [], []
        problems: list[Problem] = []
        cols: dict[str, list] = {}
        for n, row in enumerate(read_score_rows(path)):
            if "index" not in row or "status" not in row:
                raise InputError(f"{path}: line {n + 1} is not a fastscore scores row")
            if row["index"] != n:
                raise InputError(
                    f"{path}: line {n + 1} has index {row['index']}, expected {n}; the scores "
                    "file is incomplete or reordered"
                )
            ids.append(row.get("id"))
            status.append(row["status"])
            if row["status"] != OK and len(problems) < SHOWN:
                problems.append(Problem(n, row.get("id"), row["status"], row.get("reason")))
            r = row.get("n_response_tokens")
            length.append(float(r) if isinstance(r, int) else math.nan)
            for k, v in row.items():
                if k in _NOT_SCORES or k in ("id",):
                    continue
                if isinstance(v, (int, float)) and not isinstance(v, bool) or v is None:
                    col = cols.get(k)
                    if col is None:  # first seen on this row
                        col = cols[k] = [math.nan] * (len(ids) - 1)
                    col.append(math.nan if v is None else float(v))
            for col in cols.values():  # a column this row did not have
                if len(col) < len(ids):
                    col.append(math.nan)
        return cls(
            locate(path),
            ids,
            status,
            np.asarray(length, dtype=np.float64),
            {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()},
            fmt or _manifest_format(path),
            problems,
        )

    def __len__(self) -> int:
        return len(self.ids)

    def input_kind(self, input_path: str | Path) -> str:
        """The kind of the input these scores were made on (JSONL, Parquet, ...), found
        once: every later reader of the input (the subset, the groups, the texts) takes it
        from here."""
        key = getattr(locate(input_path), "key", str(input_path))  # (or held in memory)
        if self.kind is None or self.kind[0] != key:
            from fastscore.data.readers import detect_file_kind

            self.kind = (key, detect_file_kind(input_path))
        return self.kind[1]

    def input_format(self, input_path: str | Path) -> str:
        """The record format of the input these scores were made on: the manifest's, else
        detected from the input, once (kept for every later reader of the input)."""
        if self.fmt is None:
            from fastscore.data.formats import resolve_format

            self.fmt = resolve_format(input_path, self.input_kind(input_path), "auto")
        return self.fmt

    @property
    def ok(self) -> np.ndarray:
        return np.fromiter((s == OK for s in self.status), dtype=bool, count=len(self))

    def values(self, column: str, seed: int = 0) -> np.ndarray:
        """The score ``column`` per record: a scores column, or one of ``DERIVED``."""
        if column == "perplexity":
            lb = self.columns.get("loss_base", np.full(len(self), np.nan))
            return np.asarray([perplexity(v) if math.isfinite(v) else math.nan for v in lb])
        if column == "length":
            return self.length
        if column == "random":
            return np.asarray([seeded_uniform(seed, i) for i in range(len(self))])
        if column not in self.columns:
            hint = " (score with --ifd for it)" if column == "ifd" else ""
            raise InputError(
                f"score column {column!r} is not in {self.path}{hint}; numeric columns: "
                f"{sorted(self.columns)}, or one of {list(DERIVED)}"
            )
        return self.columns[column]

    def eligible(self, column: str, seed: int = 0) -> list[tuple[int, float]]:
        """(index, score) of the records that may be selected: ok, with a finite score."""
        v = self.values(column, seed) if len(self) else np.zeros(0)
        keep = np.flatnonzero(self.ok & np.isfinite(v)) if len(self) else []
        return [(int(i), float(v[i])) for i in keep]

    def length_correlations(self) -> dict[str, float | None]:
        """Spearman correlation of each score with response length over the ok rows (the
        paper's reason for normalising: a score that tracks length picks long samples)."""
        out = {}
        ok = self.ok & np.isfinite(self.length) if len(self) else np.zeros(0, dtype=bool)
        for c in LENGTH_CHECKED:
            if c not in self.columns and c not in DERIVED:
                continue
            if c == "perplexity" and "loss_base" not in self.columns:
                continue
            v = self.values(c)
            fin = ok & np.isfinite(v)
            r = spearman(v[fin], self.length[fin])
            out[c] = None if r is None else round(r, 4)
        return out


def _manifest_format(path: str | Path) -> str | None:
    """The record format a scores file's manifest records (``<stem>.manifest.json``, or
    ``manifest.json`` in a run directory), if there is one."""
    m = OutputPaths.find_manifest(path)
    if m is None:
        return None
    try:
        return orjson.loads(m.read_bytes("manifest"))["input"]["format"]
    except (KeyError, orjson.JSONDecodeError, TypeError):
        return None
