"""Where a scoring run writes: one object names every file beside the scores.

``SCORES`` is the scores file (``.jsonl`` or ``.parquet``). Beside it, while the run goes:
``SCORES.partial`` (the lines so far, JSONL, flushed per chunk), ``SCORES.run.json`` (what
``--resume`` checks), ``SCORES.shards/`` (Ray's shards and their done markers); at the end
the manifest (``<stem>.manifest.json``, or ``manifest.json`` in a ``run`` directory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PARTIAL = ".partial"
RUN_MANIFEST = "manifest.json"  # a `fastscore run` directory's manifest


def partial_of(path: str | Path) -> Path:
    """The file a result is written to before it is renamed into place."""
    p = Path(path)
    return p.with_name(p.name + PARTIAL)


@dataclass(frozen=True)
class OutputPaths:
    scores: Path
    manifest: Path

    @classmethod
    def of(cls, scores: str | Path, manifest: str | Path | None = None) -> OutputPaths:
        s = Path(scores)
        return cls(s, Path(manifest) if manifest else s.with_name(s.stem + ".manifest.json"))

    @property
    def partial(self) -> Path:
        return partial_of(self.scores)

    @property
    def run_record(self) -> Path:
        return self.scores.with_name(self.scores.name + ".run.json")

    @property
    def shards(self) -> Path:
        return self.scores.with_name(self.scores.name + ".shards")

    @property
    def features(self) -> Path:
        """The base engine's coverage features, one row per scores line (scoring.features)."""
        return self.scores.with_name(self.scores.stem + ".features.npy")

    @classmethod
    def find_manifest(cls, scores: str | Path) -> Path | None:
        """The manifest of a scores file (or of its partial): ``<stem>.manifest.json``
        beside it, else a ``run`` directory's ``manifest.json``; None when neither exists."""
        p = Path(scores)
        p = p.with_name(p.name.removesuffix(PARTIAL))
        for m in (cls.of(p).manifest, p.with_name(RUN_MANIFEST)):
            if m.exists():
                return m
        return None

    def shard(self, k: int) -> tuple[Path, Path]:
        """Ray shard ``k``: its scores and its done marker."""
        return self.shards / f"shard-{k:05d}.jsonl", self.shards / f"shard-{k:05d}.done.json"
