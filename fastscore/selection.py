"""``select``: a scores file + its input -> the chosen records, unchanged, in input order.

Ranking is by one score column; ties go to the earlier record, so the result does not
depend on anything but the scores. Records whose status is not ``ok`` or whose score is
missing or not finite are never selected.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import orjson

from .config import SelectConfig, validate_select
from .errors import InputError
from .formats import record_id
from .io import detect_file_kind, jsonl_lines, parse_line, read_jsonl_rows, read_records
from .records import RawRecord

OUTPUT_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}


def choose(values: list[tuple[int, float]], n_records: int, cfg: SelectConfig) -> list[int]:
    """Indices chosen from (index, score) pairs of the eligible records, in input order.

    ``n_records`` counts every input record: a fraction is of the whole input, and
    ``k = floor(fraction * n_records)``.
    """
    sign = -1.0 if cfg.order == "desc" else 1.0
    if cfg.threshold is not None:
        keep = [i for i, v in values if (v >= cfg.threshold if sign < 0 else v <= cfg.threshold)]
        return sorted(keep)
    k = cfg.top_k if cfg.top_k is not None else math.floor(cfg.fraction * n_records + 1e-9)
    ranked = sorted(values, key=lambda iv: (sign * iv[1], iv[0]))
    return sorted(i for i, _ in ranked[:k])


def load_scores(path: str | Path, column: str) -> tuple[list[dict], list[tuple[int, float]]]:
    """(every row's index/id/status, eligible (index, score) pairs) from a scores file."""
    rows, eligible = [], []
    for n, row in enumerate(read_jsonl_rows(path)):
        if "index" not in row or "status" not in row:
            raise InputError(f"{path}: line {n + 1} is not a fastscore scores row")
        if row["index"] != n:
            raise InputError(
                f"{path}: line {n + 1} has index {row['index']}, expected {n}; the scores "
                "file is incomplete or reordered"
            )
        if n == 0 and column not in row:
            cols = sorted(k for k, v in row.items() if isinstance(v, (int, float)))
            raise InputError(f"score column {column!r} is not in {path}; numeric columns: {cols}")
        rows.append({"id": row.get("id"), "status": row["status"]})
        v = row.get(column)
        if row["status"] == "ok" and isinstance(v, (int, float)) and math.isfinite(v):
            eligible.append((n, float(v)))
    return rows, eligible


def select(config: SelectConfig | None = None, /, **fields: Any) -> dict[str, Any]:
    """Write the records chosen by ``config`` to ``config.output``; returns a summary."""
    cfg = dataclasses.replace(config, **fields) if config else SelectConfig(**fields)
    validate_select(cfg)
    rows, eligible = load_scores(cfg.scores, cfg.score)
    chosen = choose(eligible, len(rows), cfg)
    n_written = write_subset(cfg.input, cfg.output, chosen, rows)
    target = (
        None
        if cfg.threshold is not None
        else (cfg.top_k if cfg.top_k is not None else math.floor(cfg.fraction * len(rows) + 1e-9))
    )
    return {
        "score": cfg.score,
        "order": cfg.order,
        "rule": {
            k: getattr(cfg, k)
            for k in ("top_k", "fraction", "threshold")
            if getattr(cfg, k) is not None
        },
        "records": len(rows),
        "eligible": len(eligible),
        "selected": n_written,
        # fewer eligible records than asked for: said, not hidden
        "short_by": 0 if target is None else target - n_written,
        "output": str(Path(cfg.output).resolve()),
    }


def write_subset(input_path, output_path, chosen: list[int], rows: list[dict]) -> int:
    """Copy the chosen records of the input to the output, checking ids match the scores."""
    in_kind = detect_file_kind(input_path)
    out_kind = OUTPUT_KINDS.get(Path(output_path).suffix.lower())
    if out_kind is None:
        raise InputError(f"output {output_path}: use a .jsonl, .json or .parquet name")
    wanted = set(chosen)
    n_input = 0

    def check(index: int, data: Any) -> None:
        if index >= len(rows):
            raise InputError(
                f"{input_path} has more records than the scores file ({len(rows)}); the "
                "scores were computed on another input"
            )
        rid = record_id(RawRecord(index, data))
        if rid != rows[index]["id"]:
            raise InputError(
                f"record {index} of {input_path} has id {rid!r} but the scores file says "
                f"{rows[index]['id']!r}; the scores were computed on another input"
            )

    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(output_path) + ".partial")
    written = 0
    if out_kind == "jsonl" and in_kind == "jsonl":
        with open(tmp, "wb") as f:
            for i, lineno, line in jsonl_lines(input_path):
                n_input += 1
                check(i, parse_line(i, lineno, line).data)
                if i in wanted:
                    f.write(line)  # byte for byte as in the input
                    written += 1
    elif out_kind == "parquet" and in_kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(input_path)
        with pq.ParquetWriter(tmp, pf.schema_arrow) as w:
            base = 0
            for batch in pf.iter_batches(batch_size=1024):
                for j, rec in enumerate(batch.to_pylist()):
                    check(base + j, rec)
                keep = [j for j in range(batch.num_rows) if base + j in wanted]
                if keep:
                    w.write_table(pa.Table.from_batches([batch]).take(keep))
                    written += len(keep)
                base += batch.num_rows
            n_input = base
    else:
        records = []
        for raw in read_records(input_path, in_kind):
            n_input += 1
            check(raw.index, raw.data)
            if raw.index in wanted:
                records.append(raw.data)
        written = len(records)
        if out_kind == "json":
            tmp.write_bytes(orjson.dumps(records))
        elif out_kind == "jsonl":
            with open(tmp, "wb") as f:
                for r in records:
                    f.write(orjson.dumps(r) + b"\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(records), tmp)
    if n_input != len(rows):
        tmp.unlink(missing_ok=True)
        raise InputError(
            f"{input_path} has {n_input} records but the scores file has {len(rows)}; the "
            "scores were computed on another input"
        )
    tmp.replace(output_path)
    return written
