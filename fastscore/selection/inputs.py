"""What selection reads of the input records themselves (in the format the scores were
made with): each record's group (a field's value) and the records that repeat an
earlier one's text.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastscore.data.formats import sample_turns, to_sample
from fastscore.data.ids import IdRegistry
from fastscore.data.readers import read_records
from fastscore.errors import InputError
from fastscore.records import OK


@dataclass
class InputFacts:
    """What one pass over the input found, per record (by position)."""

    groups: list[str]  # the value of the group field, as text ("(missing)" without one)
    duplicates: set[int]  # records repeating an earlier record's text


def input_facts(
    path,
    *,
    n_rows: int,
    fmt: str,
    group_field: str | None = None,
    dedup: bool = False,
    kind: str | None = None,
) -> InputFacts:
    """One pass over the input, read in ``fmt`` (the format the scores were made with):
    each record's group (with ``group_field``) and, with ``dedup``, the records that
    repeat an earlier one's roles and texts (case and whitespace normalised). ``kind``:
    the input's, when known (``ScoresTable.input_kind``)."""
    groups: list[str] = []
    duplicates: set[int] = set()
    seen = IdRegistry()
    for raw in read_records(path, kind):
        if group_field:
            v = raw.data.get(group_field) if isinstance(raw.data, dict) else None
            groups.append("(missing)" if v is None else v if isinstance(v, str) else str(v))
        if dedup:
            sample = to_sample(raw, fmt)
            if sample.status == OK:
                text = "\n".join(
                    f"{role}: {' '.join(t.lower().split())}" for role, t in sample_turns(sample)
                )
                if seen.first(text, raw.index) is not None:
                    duplicates.add(raw.index)
    if group_field and len(groups) != n_rows:
        raise InputError(
            f"{path} has {len(groups)} records but the scores file has {n_rows}; the scores "
            "were computed on another input"
        )
    return InputFacts(groups, duplicates)
