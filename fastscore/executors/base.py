"""The step every executor runs: a range of records streamed through an open session
into a partial scores file (with the base engine's coverage features beside it).

The local executor runs it once over the input (from the first record a ``--resume`` has
not kept); a Ray worker runs it once per shard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from fastscore.records import RawRecord
from fastscore.scoring.sinks import JsonlSink, feature_writer
from fastscore.scoring.stream import score_records

if TYPE_CHECKING:
    from fastscore.scoring.session import Session


def score_range(
    s: Session,
    records: Iterable[RawRecord],
    partial: str | Path,
    *,
    done: int,
    ids,
    on_chunk: Callable[[int], None] | None = None,
    flushed: Callable[[], None] | None = None,
) -> None:
    """Score ``records`` into ``partial``: appended after the ``done`` lines a resume kept
    (0: the file is started anew), with the features of the same records; ``ids``: the
    registry that flags repeated ids (``data.ids``); ``flushed``: called after each chunk
    is on disk (a store's sync)."""
    sink = JsonlSink(
        partial,
        append=bool(done),
        with_ifd=s.cfg.ifd,
        features=feature_writer(s, done),
        flushed=flushed,
    )
    try:
        score_records(s, records, sink, ids=ids, on_chunk=on_chunk)
    finally:
        sink.close()
