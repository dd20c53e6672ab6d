"""Counters and timers for the run manifest."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager


class Stats:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def timer(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0

    def to_json(self) -> dict:
        return {
            "counts": dict(sorted(self.counts.items())),
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }
