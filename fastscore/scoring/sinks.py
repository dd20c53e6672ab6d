"""Where a stream's scores go: a scores file (JSONL, flushed per chunk) and, beside it,
the base engine's coverage features (``features.FeatureWriter``), opened for a run or a
shard by ``feature_writer``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import orjson

from fastscore.records import ScoredSample
from fastscore.scoring.features import FeatureWriter, remove_features

if TYPE_CHECKING:
    from fastscore.scoring.session import Session

log = logging.getLogger(__name__)


class JsonlSink:
    """Scores lines appended to a file, flushed per chunk; with ``features`` (a
    ``FeatureWriter``), the chunk's feature rows are written first, so a kill leaves at
    least as many feature rows as scores lines."""

    def __init__(self, path, *, append: bool, with_ifd: bool, features=None, flushed=None):
        self.f = open(path, "ab" if append else "wb")  # noqa: SIM115 (closed by close())
        self.with_ifd = with_ifd
        self.features = features
        self.flushed = flushed  # called after each chunk is flushed (a store's sync)

    def write(self, rows: list[ScoredSample], feature_rows=None) -> None:
        if self.features is not None and feature_rows is not None:
            self.features.write(feature_rows)
        self.f.write(b"".join(orjson.dumps(s.to_json(self.with_ifd)) + b"\n" for s in rows))
        self.f.flush()
        if self.flushed is not None:
            self.flushed()

    def close(self) -> None:
        self.f.close()
        if self.features is not None:
            self.features.close()


def feature_writer(s: Session, done: int) -> FeatureWriter | None:
    """Where the base engine's coverage features go, when it gives them (the torch engine);
    else an earlier run's are removed, so they are never taken for this run's."""
    output = s.cfg.output
    if getattr(s.base, "pool", None):
        w = FeatureWriter(output, resume_rows=done)
        if w.note:
            log.warning("%s", w.note)
        return w if w.enabled else None
    if not done:
        remove_features(output)
    return None
