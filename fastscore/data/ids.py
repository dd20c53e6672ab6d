"""Duplicate ids: the scores file is joined back to the data by id, so an id that two
records share is ambiguous. The first record with an id is scored; a later one gets the
status ``duplicate_id`` and names the first.

Only records that parse (any status but ``bad_record``) and have an id take part: an
unreadable record's id is not trusted, and a record without an ``id`` field (or with a
null one) is known by its position, which no other record shares (its scores line has
``id: null``); so an explicit ``{"id": 2}`` never collides with the record at position 2.
Ids are compared as JSON, so ``"3"`` and ``3`` differ. Memory is about
16 bytes per record (a 64-bit hash and the first index in sorted numpy arrays), so
memory stays small on large inputs; two distinct ids collide with probability about
n^2 / 2^65 (3e-8 for a million records).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import orjson

from fastscore.records import BAD_RECORD, DUPLICATE_ID, Sample


def id_hash(rid: Any) -> int:
    blob = orjson.dumps(rid, option=orjson.OPT_SORT_KEYS)
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little")


class IdRegistry:
    """The ids seen so far and the index of the first record that had each."""

    def __init__(self, min_merge: int = 65536) -> None:
        self._min_merge = min_merge
        self._keys = np.empty(0, dtype=np.uint64)  # sorted
        self._first = np.empty(0, dtype=np.int64)
        self._recent: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._keys) + len(self._recent)

    def first(self, rid: Any, index: int) -> int | None:
        """The index of an earlier record with ``rid``, else None (and ``rid`` is kept)."""
        h = id_hash(rid)
        if h in self._recent:
            return self._recent[h]
        pos = int(np.searchsorted(self._keys, np.uint64(h)))
        if pos < len(self._keys) and int(self._keys[pos]) == h:
            return int(self._first[pos])
        self._recent[h] = index
        # merging when the recent part is a quarter of the sorted part keeps the total
        # sorting work O(n log n)
        if len(self._recent) >= max(self._min_merge, len(self._keys) // 4):
            self._merge()
        return None

    def _merge(self) -> None:
        keys = np.concatenate([self._keys, np.fromiter(self._recent, np.uint64)])
        first = np.concatenate([self._first, np.fromiter(self._recent.values(), np.int64)])
        order = np.argsort(keys, kind="stable")
        self._keys, self._first = keys[order], first[order]
        self._recent = {}


class KnownDuplicates:
    """Duplicates found beforehand (by a whole-file pass): {index: index of the first}."""

    def __init__(self, duplicates: dict[int, int]) -> None:
        self.duplicates = duplicates

    def first(self, rid: Any, index: int) -> int | None:
        return self.duplicates.get(index)


def duplicate_reason(rid: Any, first: int) -> str:
    return (
        f"id {orjson.dumps(rid).decode()} is already record {first}'s; "
        "only the first record with an id is scored"
    )


def _with_first(samples: Iterable[Sample], seen) -> Iterator[tuple[Sample, int | None]]:
    """Each sample with the index of an earlier record holding its id (None if none, if
    the sample is a bad record, whose id is not trusted, or if it has no id)."""
    for s in samples:
        checked = s.status != BAD_RECORD and s.id is not None
        yield s, (seen.first(s.id, s.index) if checked else None)


def flag_duplicate_ids(samples: Iterable[Sample], seen) -> Iterator[Sample]:
    """Samples, each later one with an already used id turned into ``duplicate_id``."""
    for s, first in _with_first(samples, seen):
        if first is not None:
            s = Sample(s.index, s.id, status=DUPLICATE_ID, reason=duplicate_reason(s.id, first))
        yield s


def duplicate_records(path, kind: str, fmt: str) -> dict[int, int]:
    """Every record of a file whose id an earlier record has: {index: index of the first}.
    For executors that score parts of a file apart (Ray shards) and must agree with a
    whole-file run."""
    from fastscore.data.formats import to_samples
    from fastscore.data.readers import read_records

    pairs = _with_first(to_samples(read_records(path, kind), fmt), IdRegistry())
    return {s.index: first for s, first in pairs if first is not None}
