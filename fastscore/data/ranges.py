"""Parts of one input surveyed apart: a JSONL file's byte ranges (each aligned to the next
line start) and a Parquet file's row groups.

A survey of a part says how many records and lines it holds, where its first record
starts, and the ids of its records (64-bit hashes, as ``data.ids`` keeps them). Ray's
workers survey the parts side by side; the driver adds them up (``plan``) into what a
whole-file pass gives: each part's first record index and line number, and every
duplicate id with the record that had it first. So no one process reads the whole input
before scoring starts.

A record without an ``id`` field is known by its position, a namespace of its own
(``data.ids``): it never shares an id, so a part lists only the explicit ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from fastscore.data.formats import to_sample
from fastscore.data.ids import id_hash
from fastscore.data.readers import parse_line, read_record_range
from fastscore.records import BAD_RECORD, RawRecord
from fastscore.storage import locate

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class PartSurvey:
    """One part of the input. ``start``: the byte offset of its first line (JSONL; the
    part's first row for Parquet); ``lines``: the lines it spans, blank ones included."""

    start: int
    lines: int
    records: int
    hashes: np.ndarray = field(repr=False)  # uint64, records with an explicit id
    hashed_at: np.ndarray = field(repr=False)  # int64, their record numbers in the part


@dataclass(frozen=True)
class InputPlan:
    """The parts added up: [lo, hi) record indices and (byte offset, line number) of each
    non-empty part's first record, and {index: index of the first} for duplicate ids."""

    ranges: list[tuple[int, int]]
    starts: dict[int, tuple[int, int]]
    duplicates: dict[int, int]
    records: int


def byte_ranges(size: int, n: int) -> list[tuple[int, int]]:
    """``n`` contiguous byte ranges covering ``0..size`` (fewer for a small file)."""
    n = max(1, min(n, size)) if size else 1
    cuts = [size * k // n for k in range(n + 1)]
    return [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a] or [(0, size)]


def survey_jsonl(path: str | os.PathLike, fmt: str, lo: int, hi: int) -> PartSurvey:
    """The lines that start in bytes ``[lo, hi)`` of a JSONL file."""
    ids = _Ids()
    lines = records = 0
    with locate(path).open() as f:
        if lo > 0:
            f.seek(lo - 1)
            f.readline()  # the rest of a line that started before lo (or its newline)
        start = pos = f.tell()
        while pos < hi:
            line = f.readline()
            if not line:
                break
            pos += len(line)
            lines += 1
            body = line
            if start == 0 and lines == 1:  # a BOM is not content: the first line starts after it
                body = line.removeprefix(_BOM)
                start = len(line) - len(body)
            if not body.strip():
                continue
            ids.add(parse_line(records, lines, body if body.endswith(b"\n") else body + b"\n"), fmt)
            records += 1
    return ids.survey(start=start, lines=lines, records=records)


def survey_rows(path: str | os.PathLike, kind: str, fmt: str, lo: int, hi: int) -> PartSurvey:
    """Records ``lo <= index < hi`` of a Parquet file (its row groups that hold them)."""
    ids = _Ids()
    n = 0
    for raw in read_record_range(path, kind, lo=lo, hi=hi):
        ids.add(RawRecord(index=raw.index - lo, data=raw.data, error=raw.error), fmt)
        n += 1
    return ids.survey(start=lo, lines=n, records=n)


class _Ids:
    """The ids of a part's records, taken as they are read (the records are not kept)."""

    def __init__(self) -> None:
        self.hashes: list[int] = []
        self.at: list[int] = []

    def add(self, raw: RawRecord, fmt: str) -> None:
        if raw.id is None or to_sample(raw, fmt).status == BAD_RECORD:  # (untrusted id)
            return
        self.hashes.append(id_hash(raw.id))
        self.at.append(raw.index)

    def survey(self, *, start: int, lines: int, records: int) -> PartSurvey:
        return PartSurvey(
            start=start,
            lines=lines,
            records=records,
            hashes=np.array(self.hashes, dtype=np.uint64),
            hashed_at=np.array(self.at, dtype=np.int64),
        )


def plan(parts: list[PartSurvey]) -> InputPlan:
    """The surveys of consecutive parts, added up (what a whole-file pass would find)."""
    ranges, starts = [], {}
    index, lineno = 0, 1
    keys, where = [], []
    for p in parts:
        if p.records:
            ranges.append((index, index + p.records))
            starts[index] = (p.start, lineno)
        keys.append(p.hashes)
        where.append(p.hashed_at + index)
        index += p.records
        lineno += p.lines
    keys_a = np.concatenate(keys) if keys else np.empty(0, np.uint64)
    where_a = np.concatenate(where) if where else np.empty(0, np.int64)
    order = np.lexsort((where_a, keys_a))  # by id, then by index: the first comes first
    k, w = keys_a[order], where_a[order]
    new = np.r_[True, k[1:] != k[:-1]] if len(k) else np.empty(0, bool)
    first = np.maximum.accumulate(np.where(new, np.arange(len(k)), 0)) if len(k) else k
    later = ~new
    duplicates = dict(zip(w[later].tolist(), w[first[later]].tolist(), strict=True))
    if not ranges:
        ranges = [(0, 0)]
    return InputPlan(ranges=ranges, starts=starts, duplicates=duplicates, records=index)
