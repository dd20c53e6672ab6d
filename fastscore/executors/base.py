"""The step every executor runs: a range of records streamed through an open session
into a partial scores file (with the base engine's coverage features beside it).

The local executor runs it once over the input (from the first record a ``--resume`` has
not kept); a Ray worker runs it once per shard.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from fastscore.data.formats import to_samples
from fastscore.data.ids import IdRegistry, flag_duplicate_ids
from fastscore.data.readers import read_records
from fastscore.records import OK, RawRecord, RenderedSample
from fastscore.runs.problems import SHOWN, Problem, located, nothing_to_score
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


def require_scorable(s: Session) -> None:
    """Before the engines start: the input read and rendered until a record can be scored
    (the first, as a rule); an input with none (an empty file, a CSV named .jsonl, every
    record too long) stops here, naming the first records' lines and reasons."""
    cfg = s.cfg
    samples = flag_duplicate_ids(to_samples(read_records(cfg.input, s.kind), s.fmt), IdRegistry())
    counts: Counter = Counter()
    problems: list[Problem] = []
    for sides in by_record(s.renderer.render_all(samples)):
        bad = next((r for r in sides if r.status != OK), None)
        if bad is None:  # (a pair is scorable when both its sides are)
            return
        counts[bad.status] += 1
        if len(problems) < SHOWN:
            problems.append(Problem(bad.index, bad.id, bad.status, bad.reason))
    raise nothing_to_score(cfg.input, dict(counts), located(cfg.input, s.kind, problems))


def by_record(rendered: Iterable[RenderedSample]) -> Iterator[list[RenderedSample]]:
    """The rendered sequences of each record together (a preference pair's two sides)."""
    group: list[RenderedSample] = []
    for r in rendered:
        if group and group[0].index != r.index:
            yield group
            group = []
        group.append(r)
    if group:
        yield group
