"""The records a run could not score, named where a user finds them: the first few with
their line (JSONL) or position, their status and reason, and how many more there are.

A run's summary line and manifest show them (``located``, ``summary_lines``); a run with
nothing to score at all stops with them instead of writing a scores file that holds no
score (``nothing_to_score``), unless ``allow_empty`` asks for that file anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from fastscore.data.readers import jsonl_starts
from fastscore.errors import InputError
from fastscore.records import record_label

SHOWN = 5  # problems named one by one; the rest are counted


@dataclass(frozen=True)
class Problem:
    index: int
    id: Any
    status: str
    reason: str | None
    where: str = ""  # "line 6 (record 5)" in a JSONL file, else "record 5"

    def line(self) -> str:
        where = self.where or f"record {self.index}"
        who = "" if self.id is None else f", {record_label(self.index, self.id)}"
        reason = self.reason or ""
        line_no = where.split(" (")[0]  # "line 6" (a reason may start with it too)
        reason = reason.removeprefix(f"{line_no}: ")
        return f"{where}{who}: {self.status}: {reason}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def located(path: Any, kind: str, problems: Iterable[Problem]) -> list[Problem]:
    """``problems`` with ``where`` filled in: their line numbers, from one pass over a
    JSONL input that stops at the last one."""
    problems = list(problems)
    starts = jsonl_starts(path, [p.index for p in problems]) if kind == "jsonl" else {}
    return [
        Problem(
            p.index,
            p.id,
            p.status,
            p.reason,
            f"line {starts[p.index][1]} (record {p.index})"
            if p.index in starts
            else f"record {p.index}",
        )
        for p in problems
    ]


def summary_lines(problems: list[Problem], not_ok: int, *, indent: str = "  ") -> list[str]:
    """The first problems, one per line, then how many more (every reason is in the scores
    file)."""
    lines = [indent + p.line() for p in problems]
    if not_ok > len(problems):
        lines.append(f"{indent}... and {not_ok - len(problems):,} more (each with its reason in "
                     "the scores file)")  # fmt: skip
    return lines


def nothing_to_score(
    path: Any, by_status: dict[str, int], problems: list[Problem], *, kept: Any = None
) -> InputError:
    """The error of a run with no record it can score: the counts by status and the first
    problems with their lines; ``kept``: the partial that holds the lines it scored."""
    records = sum(by_status.values())
    where = path.shown
    if not records:
        head = f"nothing to score: {where} has no records (an empty file?)"
    else:
        counts = ", ".join(f"{k}={v:,}" for k, v in sorted(by_status.items()))
        head = (
            f"nothing to score: none of the {records:,} records of {where} can be scored ({counts})"
        )
    lines = [head, *summary_lines(problems, records)] if records else [head]
    if kept is None:
        lines.append("Nothing was written; --allow-empty writes the outputs anyway (exit 0).")
    else:
        lines.append(
            f"The scores file was not put in place; its lines are kept in {kept.shown}: "
            "the same command with --resume --allow-empty puts them there (exit 0)."
        )
    return InputError("\n".join(lines))
