"""Cross-fitted references: K references, each trained on every record but one fold, and
each record scored by the one that never saw it (``train-ref --folds K``).

A reference fine-tuned for epochs on the records it scores can memorise noise as well as it
learns skills, and then lowers both losses alike; a record's loss under a reference that
did not see it is lowered only by what carried over from the others (RHO-LOSS's holdout
model). The folds are a seeded, balanced draw over the input's record indices, so the
scorer finds each record's fold from its index alone; the output directory holds one
reference per fold (``fold-0`` ...) and a ``train_manifest.json`` that says how they were
drawn and what each learned.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from fastscore.errors import ConfigError, InputError

FOLDS_MIN = 2


def fold_dir(k: int) -> str:
    return f"fold-{k}"


def check_folds(k: int | None) -> None:
    if k is not None and k < FOLDS_MIN:
        raise ConfigError(
            f"--folds must be at least {FOLDS_MIN} (each record scored by a reference that "
            f"never saw it), got {k}"
        )


def assignment(n: int, k: int, seed: int) -> np.ndarray:
    """Each of ``n`` records' fold, ``k`` folds of sizes that differ by at most one: a
    seeded permutation dealt round, so a repeated run draws the same folds."""
    order = np.random.default_rng([seed, 0xF01D]).permutation(n)
    folds = np.empty(n, dtype=np.int32)
    folds[order] = np.arange(n, dtype=np.int32) % k
    return folds


def draw_digest(draw: np.ndarray) -> str:
    """A hash of the folds as drawn, so scoring can tell it draws them the same way."""
    return hashlib.sha256(np.ascontiguousarray(draw, dtype=np.int32).tobytes()).hexdigest()[:16]


def drawn(folds: dict[str, Any]) -> np.ndarray:
    """The folds of a cross-fitted reference, drawn again from its seed and checked
    against the hash its training recorded (another NumPy may draw another permutation,
    and the records would then go to references that saw them)."""
    draw = assignment(folds["records"], folds["k"], folds["seed"])
    saved = folds.get("draw_sha256")
    if saved is not None and draw_digest(draw) != saved:
        raise ConfigError(
            "the cross-fitted reference's folds cannot be drawn again as they were trained "
            f"(this NumPy, {np.__version__}, draws another permutation from seed "
            f"{folds['seed']}); score with the NumPy that trained it, or train it again"
        )
    return draw


def block(ref: str | Path | None) -> dict[str, Any] | None:
    """The ``folds`` block of a cross-fitted reference's train manifest, or None when
    ``ref`` is one reference."""
    from fastscore.scoring.reference import read_train_manifest

    m = read_train_manifest(ref)
    f = m.get("folds") if m else None
    return f if isinstance(f, dict) else None


def dirs(ref: str | Path, folds: dict[str, Any]) -> list[Path]:
    """The fold references' directories, each checked to exist."""
    out = [Path(ref) / d for d in folds["dirs"]]
    for d in out:
        if not d.is_dir():
            raise ConfigError(
                f"the cross-fitted reference {str(ref)!r} lists {d.name} but it is not there; "
                "train it again (train-ref --folds ... --resume trains what is missing)"
            )
    return out


def check_input(folds: dict[str, Any], input_shown: str, n_records: int) -> None:
    """The folds were drawn over one input's records; scoring another file's would give
    each record the fold of whatever record had its index there."""
    if n_records != folds["records"]:
        raise InputError(
            f"the cross-fitted reference's folds were drawn over the {folds['records']} "
            f"records of {folds['input']}; {input_shown} has {n_records}, so its records "
            "cannot be matched to the references that never saw them: score the file the "
            "folds were trained on, or train-ref --folds on this one"
        )


def fingerprint(ref: str | Path, folds: dict[str, Any]) -> dict[str, Any]:
    """What identifies a cross-fitted reference: each fold's checkpoint fingerprint and
    the draw (``--resume`` and Ray shards compare it as they do one reference's)."""
    from fastscore.engines.models import fingerprint as one

    parts = [one(d) for d in dirs(ref, folds)]
    h = hashlib.sha256()
    for p in parts:
        h.update(f"{p['config_sha256']}\0{p['weights_sample_sha256']}\0".encode())
    h.update(f"{folds['k']}\0{folds['seed']}\0{folds['records']}".encode())
    return {
        "path": str(Path(ref).resolve()),
        "folds": folds["k"],
        "config_sha256": hashlib.sha256(
            "".join(p["config_sha256"] for p in parts).encode()
        ).hexdigest(),
        "weights_sample_sha256": h.hexdigest(),
        "files": [f"{Path(p['path']).name}/{f}" for p in parts for f in p["files"]],
    }


class FoldedEngine:
    """The reference engine of a cross-fitted reference: each sample to the engine of its
    record's fold, the answers back in the order asked."""

    def __init__(self, engines: list[Any], folds: np.ndarray, *, path: str, name: str = "ref"):
        self.engines, self.folds, self.path, self.name = engines, folds, path, name

    def fold_of(self, index: int) -> int:
        if not 0 <= index < len(self.folds):
            raise InputError(
                f"record {index} is past the {len(self.folds)} records the cross-fitted "
                "reference's folds were drawn over"
            )
        return int(self.folds[index])

    def response_logprobs(self, samples: list) -> list[np.ndarray]:
        out: list[Any] = [None] * len(samples)
        groups: dict[int, list[int]] = defaultdict(list)
        for i, s in enumerate(samples):
            groups[self.fold_of(s.index)].append(i)
        for k in sorted(groups):
            at = groups[k]
            for i, lp in zip(
                at, self.engines[k].response_logprobs([samples[i] for i in at]), strict=True
            ):
                out[i] = lp
        return out

    def info(self) -> dict[str, Any]:
        first = self.engines[0].info()
        return {
            **first,
            "model": self.path,
            "folds": [e.info().get("model") for e in self.engines],
        }

    def close(self) -> None:
        for e in self.engines:
            e.close()
