"""The trainer's data: the scorer's rendering of every record that can be trained on, less
the held-out slice (and with ``--sample`` a seeded sample of the rest), or a fold's split."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastscore.config import TrainConfig
from fastscore.data.formats import resolve_format, to_samples
from fastscore.data.ids import IdRegistry, flag_duplicate_ids
from fastscore.data.readers import detect_file_kind, read_records
from fastscore.records import OK, RenderedSample
from fastscore.rendering.renderer import make_renderer
from fastscore.scoring.reference import holdout_count, sample_count, seeded_draw, split_holdout


@dataclass(frozen=True)
class Examples:
    """The scorer's rendering of the records that can be trained on: token ids and the
    positions whose token is a target (the scorer's response positions)."""

    token_ids: list[list[int]]
    targets: list[list[int]]
    counts: Counter  # records by status (a pair counts once: its chosen side)
    template: dict[str, Any]  # the renderer's info
    indices: tuple[int, ...] = ()  # each example's record index in the input
    held: tuple[RenderedSample, ...] = ()  # held out of training: the learning check's

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def tokens(self) -> int:
        return sum(len(t) for t in self.targets)

    def completion_masks(self) -> list[list[int]]:
        masks = []
        for ids, targets in zip(self.token_ids, self.targets, strict=True):
            mask = [0] * len(ids)
            for t in targets:
                mask[t] = 1
            masks.append(mask)
        return masks

    def dataset(self):
        """A pre-tokenized dataset as TRL takes it: ``input_ids`` and ``completion_mask``
        (with ``completion_only_loss`` the trainer's labels are the ids where it is 1)."""
        import datasets

        datasets.disable_progress_bars()  # a bar per map over an in-memory list: noise
        return datasets.Dataset.from_dict(
            {"input_ids": self.token_ids, "completion_mask": self.completion_masks()}
        )

    def digest(self) -> str:
        """A hash of exactly what is trained on, for --resume to tell other data apart."""
        h = hashlib.sha256()
        for ids, targets in zip(self.token_ids, self.targets, strict=True):
            # the lengths first: two rows' bytes cannot run together into other rows
            h.update(np.array([len(ids), len(targets), *ids, *targets], dtype=np.int64).data)
        return h.hexdigest()[:16]


def rendered_examples(cfg: TrainConfig, tokenizer, max_length: int) -> Examples:
    """The scorer's rendering of every record of ``cfg.input``, a repeated id flagged as
    ``score`` flags it. A preference record trains on its chosen side (SFT on the preferred
    answers). Every record that can be trained on (``split_for_training`` keeps some out)."""
    kind = detect_file_kind(cfg.input)
    renderer = make_renderer(cfg, tokenizer, max_length)
    fmt = resolve_format(cfg.input, kind, cfg.format)
    samples = flag_duplicate_ids(to_samples(read_records(cfg.input, kind), fmt), IdRegistry())
    ids, targets, indices, counts = [], [], [], Counter()
    for r in renderer.render_all(samples):
        if r.side == "rejected":
            continue
        counts[r.status] += 1
        if r.status == OK:
            ids.append(r.token_ids.tolist())
            targets.append(r.response_positions.tolist())
            indices.append(r.index)
    return Examples(ids, targets, counts, renderer.info(), tuple(indices))


def split_for_training(examples: Examples, cfg: TrainConfig) -> Examples:
    """``examples`` less ``cfg.holdout``'s seeded share, kept out for the check that the
    reference learned (``held``; ``scoring.reference``), and with ``cfg.sample`` a seeded
    sample of the rest."""
    n = len(examples)
    held_at = split_holdout(n, holdout_count(cfg.holdout, n), cfg.seed).tolist()
    out = set(held_at)
    keep = [i for i in range(n) if i not in out]
    if cfg.sample is not None:  # (the held-out slice stays out)
        keep = [keep[j] for j in seeded_draw(len(keep), sample_count(cfg.sample, len(keep)),
                                             [cfg.seed, 0x5A3])]  # fmt: skip
    return _subset(examples, keep, held_at)


def _subset(examples: Examples, keep: list[int], held_at: list[int]) -> Examples:
    """``examples`` at positions ``keep``, those at ``held_at`` held out for the check."""
    held = tuple(
        RenderedSample(
            examples.indices[i],
            None,
            np.asarray(examples.token_ids[i], dtype=np.int32),
            np.asarray(examples.targets[i], dtype=np.int32),
        )
        for i in held_at
    )
    return dataclasses.replace(
        examples,
        token_ids=[examples.token_ids[i] for i in keep],
        targets=[examples.targets[i] for i in keep],
        indices=tuple(examples.indices[i] for i in keep),
        held=held,
    )


def fold_split(examples: Examples, draw: np.ndarray, k: int, cfg: TrainConfig) -> Examples:
    """Fold ``k``'s training examples (every record outside fold k) and its held-out
    check's records: ``cfg.holdout``'s count of them, drawn from fold k."""
    inside = [i for i, index in enumerate(examples.indices) if draw[index] == k]
    n_held = min(holdout_count(cfg.holdout, len(examples)), len(inside))
    held_at = [inside[j] for j in split_holdout(len(inside), n_held, cfg.seed + k)]
    out = set(inside)
    keep = [i for i in range(len(examples)) if i not in out]
    return _subset(examples, keep, held_at)
