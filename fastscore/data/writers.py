"""Writing records and scores: the subset (its JSONL lines byte for byte; JSON or
Parquet as parsed, a Parquet or ``datasets`` input keeping its Arrow schema) and the
scores files (JSONL lines; Parquet, with ids that are neither all strings nor all
integers stored as JSON text), and reading scores back.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from fastscore.data.readers import (
    detect_file_kind,
    jsonl_lines,
    parquet_file,
    parse_line,
    read_records,
    record_batches,
)
from fastscore.errors import InputError
from fastscore.records import RawRecord
from fastscore.storage import locate
from fastscore.storage.staging import store_for

# what a subset may be written as, by its name
OUTPUT_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}


# how a scores Parquet file stores ids that are not all strings or all integers
ID_ENCODING_KEY = b"fastscore.id_encoding"


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with open(path, "wb") as f:
        for row in rows:
            f.write(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY))
            f.write(b"\n")
            n += 1
    return n


def read_jsonl_rows(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Rows of a file fastscore wrote (scores): an unparsable line is an error here."""
    for _, lineno, line in jsonl_lines(path):
        try:
            yield orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise InputError(f"{path}, line {lineno}: invalid JSON ({e})") from e


def read_score_rows(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Rows of a scores file fastscore wrote, JSONL or Parquet (by the extension)."""
    if locate(path).suffix.lower() != ".parquet":
        yield from read_jsonl_rows(path)
        return
    pf = parquet_file(path)
    json_ids = (pf.schema_arrow.metadata or {}).get(ID_ENCODING_KEY) == b"json"
    for batch in pf.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            if json_ids and row["id"] is not None:
                row["id"] = orjson.loads(row["id"])
            yield row


def write_scores_parquet(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """The scores JSONL ``src`` as Parquet at ``dst``, streamed. Ids keep their type when
    they are all strings or all integers; otherwise each is stored as its JSON text and the
    file says so in its metadata, which ``read_score_rows`` reads back."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kinds, columns = set(), {}
    for row in read_jsonl_rows(src):
        rid = row["id"]
        if rid is not None:  # (a record without an id: null in either type)
            kinds.add("int" if type(rid) is int else "str" if type(rid) is str else "x")
        for k in row:
            columns.setdefault(k, None)
    id_type = {frozenset({"int"}): pa.int64(), frozenset({"str"}): pa.string()}.get(
        frozenset(kinds)
    )
    types = {
        "index": pa.int64(),
        "status": pa.string(),
        "reason": pa.string(),
        "n_tokens": pa.int64(),
        "n_response_tokens": pa.int64(),
    }
    fields = [
        pa.field(k, (id_type or pa.string()) if k == "id" else types.get(k, pa.float64()))
        for k in (columns or {"index": None, "id": None, "status": None})
    ]
    meta = None if id_type is not None or not kinds else {ID_ENCODING_KEY: b"json"}
    schema = pa.schema(fields, metadata=meta)
    with pq.ParquetWriter(dst, schema) as w:
        batch: list[dict] = []
        for row in read_jsonl_rows(src):
            if meta and row["id"] is not None:
                row["id"] = orjson.dumps(row["id"]).decode()
            batch.append(row)
            if len(batch) == 8192:
                w.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        w.write_table(pa.Table.from_pylist(batch, schema=schema))


def write_subset(
    input_path, output_path, *, chosen: list[int], ids: list, kind: str | None = None
) -> int:
    """Copy the chosen records of the input to the output, checking the input's ids are
    the scores' ``ids``: a JSONL input's lines byte for byte to JSONL, an Arrow input's
    batches with their schema to Parquet, else the records as parsed. ``kind``: the
    input's, when known."""
    from fastscore.runs.outputs import partial_of

    output = locate(output_path)
    store = store_for(output.parent)  # a store's: written here, then put in it complete
    local = store.place(output)
    in_kind = kind or detect_file_kind(input_path)
    out_kind = OUTPUT_KINDS.get(local.suffix.lower())
    if out_kind is None:
        raise InputError(f"output {output}: use a .jsonl, .json or .parquet name")
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_of(local)
    check = _SameIds(input_path, ids)
    if out_kind == "jsonl" and in_kind == "jsonl":
        written = _copy_lines(input_path, tmp, set(chosen), check)
    elif out_kind == "parquet" and in_kind in ("parquet", "hf_disk", "dataset"):
        written = _copy_batches(input_path, in_kind, tmp, set(chosen), check)
    else:
        written = _write_parsed(input_path, in_kind, out_kind, tmp, set(chosen), check)
    if check.seen != len(ids):
        tmp.unlink(missing_ok=True)
        raise InputError(
            f"{input_path} has {check.seen} records but the scores file has {len(ids)}; the "
            "scores were computed on another input"
        )
    tmp.replace(local)
    store.push(local)
    return written


class _SameIds:
    """Each record of the input checked against the scores' id at its index (so a subset
    is never cut from another input than the one scored); ``seen`` counts them."""

    def __init__(self, input_path, ids: list):
        self.input_path, self.ids, self.seen = input_path, ids, 0

    def __call__(self, index: int, data: Any) -> None:
        self.seen += 1
        ids = self.ids
        if index >= len(ids):
            raise InputError(
                f"{self.input_path} has more records than the scores file ({len(ids)}); the "
                "scores were computed on another input"
            )
        rid = RawRecord(index, data).id
        # (scores written before ids had a namespace of their own named an id-less record
        # by its position)
        if rid != ids[index] and not (rid is None and ids[index] == index):
            raise InputError(
                f"record {index} of {self.input_path} has id {rid!r} but the scores file says "
                f"{ids[index]!r}; the scores were computed on another input"
            )


def _copy_lines(input_path, tmp: Path, wanted: set[int], check: _SameIds) -> int:
    """JSONL to JSONL: the chosen lines byte for byte as in the input."""
    written = 0
    with open(tmp, "wb") as f:
        for i, lineno, line in jsonl_lines(input_path):
            check(i, parse_line(i, lineno, line).data)
            if i in wanted:
                f.write(line)
                written += 1
    return written


def _copy_batches(input_path, in_kind: str, tmp: Path, wanted: set[int], check: _SameIds) -> int:
    """Parquet or a ``datasets`` directory to Parquet: the chosen rows of each record
    batch, in the input's Arrow schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    batches = record_batches(input_path, in_kind)
    first = next(batches, None)
    schema = first.schema if first is not None else pa.schema([])
    written = base = 0
    with pq.ParquetWriter(tmp, schema) as w:
        for batch in itertools.chain([first] if first is not None else [], batches):
            for j, rec in enumerate(batch.to_pylist()):
                check(base + j, rec)
            keep = [j for j in range(batch.num_rows) if base + j in wanted]
            if keep:
                w.write_table(pa.Table.from_batches([batch]).take(keep))
                written += len(keep)
            base += batch.num_rows
    return written


def _write_parsed(
    input_path, in_kind: str, out_kind: str, tmp: Path, wanted: set[int], check: _SameIds
) -> int:
    """Any other pair of kinds: the chosen records as parsed, written as JSON, JSONL or
    Parquet (its schema inferred from them)."""
    records = []
    for raw in read_records(input_path, in_kind):
        check(raw.index, raw.data)
        if raw.index in wanted:
            records.append(raw.data)
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
    return len(records)
