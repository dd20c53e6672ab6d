"""A run's input and what is known of it, found once per run and handed on.

``find_source`` looks at the input once (one ``info`` of the file or the store's object,
and, when the name does not say the format, its first bytes) and returns a ``Source``:
its kind (JSONL, Parquet, ...), its size and version (what ``--resume`` and a run's
fingerprint compare) and whether reading it whole is a read of this machine's disk. The
scoring session keeps it (``Session.source``); the run record, the manifest's
fingerprint, the progress bar and the Ray planner take it from there instead of opening
the input again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastscore.data.readers import file_kind
from fastscore.errors import InputError
from fastscore.storage import locate


@dataclass(frozen=True)
class Source:
    kind: str  # data.readers.FILE_KINDS, or data.memory.MEMORY_KINDS
    size: int  # bytes (a directory: its files'); held in memory: its records
    version: int  # a local file's mtime (ns), a store's ETag as an integer; a digest
    local: bool  # whether reading it whole is a read of this machine's disk or memory


def find_source(where: Any) -> Source:
    """The input's facts; an input that is missing or cannot be read (a store's refused
    credentials: its first byte is read) says so here, before any model is loaded."""
    if getattr(where, "in_memory", False):
        records, digest = where.signature()
        return Source(where.kind, records, digest, True)
    where = locate(where)
    found = where.info()
    if found is None:
        raise InputError(f"input file {str(where)!r} does not exist")
    kind = file_kind(where, found)
    where.check_readable(found=found)  # (a store's object: may these credentials read it?)
    size, version = where.signature(found)
    return Source(kind, size, version, found["local"])
