"""Where a scoring run writes: one object names every file beside the scores.

``SCORES`` is the scores file (``.jsonl`` or ``.parquet``). Beside it, while the run goes:
``SCORES.partial`` (the lines so far, JSONL, flushed per chunk), ``SCORES.run.json`` (what
``--resume`` checks), ``SCORES.shards/`` (Ray's shards and their done markers); at the end
the manifest (``<stem>.manifest.json``, or ``manifest.json`` in a ``run`` directory).

``SCORES`` is a ``storage.Location``; in a store (``s3://bucket/run/scores.jsonl``) the
paths here are those of the run's local staging copy, and ``store`` puts each file in the
store (``storage.staging.Store``: whole objects, and the partials as segments).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastscore.errors import ConfigError
from fastscore.storage import Location, locate, shown
from fastscore.storage.locks import raise_if_lease_lost
from fastscore.storage.staging import Store, store_for

PARTIAL = ".partial"
RUN_MANIFEST = "manifest.json"  # a `fastscore run` directory's manifest


def partial_of(path: str | Path | Location) -> Path | Location:
    """The file a result is written to before it is renamed into place (beside it: a
    Location's in a store too)."""
    p = path if isinstance(path, Location) else Path(path)
    return p.with_name(p.name + PARTIAL)


def features_of(scores: Path) -> Path:
    """The base engine's coverage features, one row per scores line (scoring.features)."""
    return scores.with_name(scores.stem + ".features.npy")


def manifest_name(scores_name: str) -> str:
    return Path(scores_name).stem + ".manifest.json"


@dataclass(frozen=True)
class OutputPaths:
    scores: Path
    manifest: Path
    store: Store = field(compare=False, repr=False)

    @classmethod
    def of(cls, scores: str | Location, manifest: str | Location | None = None) -> OutputPaths:
        """The files of a run writing ``scores``; ``manifest``: where its manifest goes, in
        the scores' directory (by its location, or its staging path)."""
        scores = locate(scores)
        st = store_for(scores.parent)
        s = st.place(scores)
        if not manifest:
            return cls(s, s.with_name(manifest_name(s.name)), st)
        try:
            return cls(s, st.place(manifest), st)
        except ConfigError:
            raise ConfigError(
                f"the manifest {shown(manifest)} must be in the directory of the scores "
                f"{scores.shown}"
            ) from None

    def files(self) -> list[tuple[str, Location]]:
        """Every file a scoring run writes, by role, where it is kept (a path or URL)."""
        return [
            (role, self.url(local))
            for role, local in (
                ("scores output", self.scores),
                ("scores manifest", self.manifest),
                ("scores partial", self.partial),
                ("run record", self.run_record),
                ("coverage features", self.features),
                ("coverage features partial", self.features_partial),
                ("Ray shards", self.shards),
            )
        ]

    def url(self, local: Path) -> Location:
        """Where a file of the run is kept (its store URL, or the path itself)."""
        return self.store.url(local)

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
        return features_of(self.scores)

    @property
    def features_partial(self) -> Path:
        return partial_of(self.features)

    def growing(self, scores: Path | None = None) -> tuple[Path, Path]:
        """The files that grow chunk by chunk while ``scores`` (the run's scores, or a
        shard's) is written: its partial and its features' partial."""
        s = Path(scores or self.scores)
        return partial_of(s), partial_of(features_of(s))

    def sync(self, scores: Path | None = None) -> None:
        """What the chunk just flushed added, into the store (features first, as they are
        written first)."""
        raise_if_lease_lost()  # (a store's output: another run may have taken its lease)
        partial, features = self.growing(scores)
        self.store.sync(features, partial)

    def restore(self, scores: Path | None = None) -> bool:
        """The partials as the store holds them, into the staging copy; whether the scores
        partial is there."""
        partial, features = self.growing(scores)
        self.store.restore(features)
        return self.store.restore(partial)

    def drop_partials(self, scores: Path | None = None) -> None:
        for p in self.growing(scores):
            self.store.remove(p)

    @classmethod
    def find_manifest(cls, scores: str | Location) -> Location | None:
        """The manifest of a scores file (or of its partial): ``<stem>.manifest.json``
        beside it, else a ``run`` directory's ``manifest.json``; None when neither exists."""
        s = locate(scores)
        s = s.with_name(s.name.removesuffix(PARTIAL))
        for m in (s.with_name(manifest_name(s.name)), s.with_name(RUN_MANIFEST)):
            if m.exists():
                return m
        return None

    def shard(self, k: int) -> tuple[Path, Path]:
        """Ray shard ``k``: its scores and its done marker."""
        return self.shards / f"shard-{k:05d}.jsonl", self.shards / f"shard-{k:05d}.done.json"
