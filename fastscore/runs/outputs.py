"""Where a scoring run writes: one object names every file beside the scores.

``SCORES`` is the scores file (``.jsonl`` or ``.parquet``). Beside it, while the run goes:
``SCORES.partial`` (the lines so far, JSONL, flushed per chunk), ``SCORES.run.json`` (what
``--resume`` checks), ``SCORES.shards/`` (Ray's shards and their done markers); at the end
the manifest (``<stem>.manifest.json``, or ``manifest.json`` in a ``run`` directory).

``SCORES`` may be a store URL (``s3://bucket/run/scores.jsonl``): the paths here are then
those of the run's local staging copy, and ``store`` puts each file in the store
(``storage.Store``: whole objects, and the partials as segments).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastscore import storage
from fastscore.errors import ConfigError
from fastscore.runs.claims import raise_if_lease_lost

PARTIAL = ".partial"
RUN_MANIFEST = "manifest.json"  # a `fastscore run` directory's manifest


def partial_of(path: str | Path) -> Path:
    """The file a result is written to before it is renamed into place."""
    p = Path(path)
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
    store: storage.Store = field(compare=False, repr=False)

    @classmethod
    def of(cls, scores: str | Path, manifest: str | Path | None = None) -> OutputPaths:
        if storage.is_url(scores):
            where = storage.parent(str(scores))
            st = storage.store_for(where)
            s = st.local / storage.name(str(scores))
            # the manifest beside the scores: named by its URL, or its staging path
            beside = not manifest or (
                storage.parent(str(manifest)) == where
                if storage.is_url(manifest)
                else Path(manifest).parent == st.local
            )
            if not beside:
                raise ConfigError(
                    f"the manifest {storage.shown(manifest)} must be in the directory of the "
                    f"scores {storage.shown(scores)}"
                )
            m = st.local / (storage.name(str(manifest)) if manifest else manifest_name(s.name))
            return cls(s, m, st)
        s = Path(scores)
        m = Path(manifest) if manifest else s.with_name(manifest_name(s.name))
        return cls(s, m, storage.store_for(s.parent))

    def files(self) -> list[tuple[str, str]]:
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

    @property
    def remote(self) -> bool:
        return self.store.remote is not None

    def url(self, local: Path) -> str:
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
    def find_manifest(cls, scores: str | Path) -> Path | str | None:
        """The manifest of a scores file (or of its partial): ``<stem>.manifest.json``
        beside it, else a ``run`` directory's ``manifest.json``; None when neither exists."""
        if storage.is_url(scores):
            s = str(scores).removesuffix(PARTIAL)
            where = storage.parent(s)
            for m in (
                storage.join(where, manifest_name(storage.name(s))),
                storage.join(where, RUN_MANIFEST),
            ):
                if storage.exists(m):
                    return m
            return None
        p = Path(scores)
        p = p.with_name(p.name.removesuffix(PARTIAL))
        for m in (p.with_name(manifest_name(p.name)), p.with_name(RUN_MANIFEST)):
            if m.exists():
                return m
        return None

    def shard(self, k: int) -> tuple[Path, Path]:
        """Ray shard ``k``: its scores and its done marker."""
        return self.shards / f"shard-{k:05d}.jsonl", self.shards / f"shard-{k:05d}.done.json"
