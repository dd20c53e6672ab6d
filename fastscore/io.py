"""Reading input files record by record, and writing records back unchanged.

JSONL, Parquet and Hugging Face ``datasets`` directories (``save_to_disk``) stream; a JSON
array is parsed whole (use JSONL for very large sets). JSONL records keep their raw line
bytes so a selected subset is written byte for byte.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from .errors import InputError
from .records import RawRecord

FILE_KINDS = ("jsonl", "json", "parquet", "hf_disk")
# what a subset may be written as, by its name
OUTPUT_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}
# how a scores Parquet file stores ids that are not all strings or all integers
ID_ENCODING_KEY = b"fastscore.id_encoding"


def detect_file_kind(path: str | os.PathLike) -> str:
    """jsonl, json (an array), parquet, or hf_disk (a ``datasets`` ``save_to_disk``
    directory), from the extension or the directory's files, else from the first bytes."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"input file {str(p)!r} does not exist")
    if p.is_dir():
        if (p / "state.json").exists() and (p / "dataset_info.json").exists():
            return "hf_disk"
        if (p / "dataset_dict.json").exists():
            raise InputError(
                f"{str(p)!r} is a DatasetDict (several splits); give one split's directory, "
                f"e.g. {str(p / 'train')!r}"
            )
        raise InputError(
            f"input {str(p)!r} is a directory but not one saved by datasets' save_to_disk "
            "(no state.json); give a .jsonl, .json or .parquet file or such a directory"
        )
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    with open(p, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"["):
        return "json"
    if stripped.startswith(b"{") or not stripped:
        return "jsonl"
    raise InputError(
        f"cannot tell the format of {str(p)!r}: expected JSONL (one object per line), "
        "a JSON array, or Parquet; name the file .jsonl, .json or .parquet"
    )


def count_records(path: str | os.PathLike, kind: str | None = None) -> int:
    """Number of records, cheaply (a newline count for JSONL), for progress and fractions."""
    kind = kind or detect_file_kind(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if kind == "json":
        return len(_load_json_array(path))
    if kind == "hf_disk":
        return sum(t.num_rows for t in _hf_disk_tables(path))
    return sum(1 for _ in jsonl_lines(path))


def _hf_disk_tables(path: str | os.PathLike) -> Iterator[Any]:
    """The Arrow tables of a ``save_to_disk`` directory, in order, memory-mapped (what
    ``datasets.load_from_disk`` reads, without needing ``datasets``)."""
    import pyarrow as pa

    state = orjson.loads((Path(path) / "state.json").read_bytes())
    if state.get("_indices_data_files"):
        raise InputError(
            f"{path}: this dataset was saved with an indices mapping (a select/shuffle not "
            "flattened); save it again after dataset.flatten_indices()"
        )
    for f in state.get("_data_files", []):
        with pa.memory_map(str(Path(path) / f["filename"])) as src:
            yield pa.ipc.open_stream(src).read_all()


def _load_json_array(path: str | os.PathLike) -> list[Any]:
    try:
        data = orjson.loads(Path(path).read_bytes().removeprefix(b"\xef\xbb\xbf"))
    except orjson.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, list):
        raise InputError(f"{path}: a .json input must hold an array of records")
    return data


def read_records(path: str | os.PathLike, kind: str | None = None) -> Iterator[RawRecord]:
    """Yield every record of the file in order, with its 0-based index.

    A JSONL line that is not valid JSON is yielded with ``error`` set (never skipped);
    blank lines are not records.
    """
    kind = kind or detect_file_kind(path)
    if kind == "jsonl":
        yield from _read_jsonl(path)
    elif kind == "json":
        for i, obj in enumerate(_load_json_array(path)):
            yield RawRecord(index=i, data=obj)
    elif kind in ("parquet", "hf_disk"):
        i = 0
        for batch in record_batches(path, kind):
            for obj in batch.to_pylist():
                yield RawRecord(index=i, data=obj)
                i += 1
    else:
        raise InputError(f"unknown input kind {kind!r}; expected one of {FILE_KINDS}")


def record_batches(path: str | os.PathLike, kind: str) -> Iterator[Any]:
    """Arrow record batches of a Parquet file or a ``save_to_disk`` directory."""
    if kind == "parquet":
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(path).iter_batches(batch_size=1024)
    else:
        for table in _hf_disk_tables(path):
            yield from table.to_batches(max_chunksize=1024)


def jsonl_lines(path: str | os.PathLike) -> Iterator[tuple[int, int, bytes]]:
    """(record index, line number, line) for each record line of a JSONL file.

    The one rule for what a record is, shared by every reader: blank lines are not
    records, and a UTF-8 BOM opening the file (some editors write one) is not content.
    Lines keep their newline (one is added to a last line without it).
    """
    i = 0
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if lineno == 1:
                line = line.removeprefix(b"\xef\xbb\xbf")
            if not line.strip():
                continue
            yield i, lineno, line if line.endswith(b"\n") else line + b"\n"
            i += 1


def parse_line(index: int, lineno: int, line: bytes) -> RawRecord:
    try:
        return RawRecord(index=index, data=orjson.loads(line))
    except orjson.JSONDecodeError as e:
        return RawRecord(index=index, data=None, error=f"line {lineno}: invalid JSON ({e})")


def _read_jsonl(path: str | os.PathLike) -> Iterator[RawRecord]:
    for index, lineno, line in jsonl_lines(path):
        yield parse_line(index, lineno, line)


def jsonl_starts(path: str | os.PathLike, wanted: Iterable[int]) -> dict[int, tuple[int, int]]:
    """(byte offset, line number) where JSONL records ``wanted`` start, found without
    parsing a record; so a shard of records ``lo..hi`` starts reading at record ``lo``."""
    wanted = set(wanted)
    starts, pos, index = {}, 0, 0
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            body = line.removeprefix(b"\xef\xbb\xbf") if lineno == 1 else line
            if body.strip():
                if index in wanted:
                    starts[index] = (pos + len(line) - len(body), lineno)
                    if len(starts) == len(wanted):
                        break
                index += 1
            pos += len(line)
    return starts


def read_record_range(
    path: str | os.PathLike, kind: str, lo: int, hi: int, start: tuple[int, int] | None = None
) -> Iterator[RawRecord]:
    """Records ``lo <= index < hi`` without parsing the ones before: a JSONL file is read
    from ``start`` (record ``lo``'s byte offset and line number, from ``jsonl_starts``), a
    Parquet file from the row groups that hold the range; other kinds are read through."""
    if kind == "jsonl" and start is not None:
        offset, lineno = start
        index = lo
        with open(path, "rb") as f:
            f.seek(offset)
            for n, line in enumerate(f, start=lineno):
                if index >= hi:
                    return
                if not line.strip():
                    continue
                yield parse_line(index, n, line if line.endswith(b"\n") else line + b"\n")
                index += 1
        return
    if kind == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        groups, first, row = [], None, 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if row + n > lo and row < hi:
                groups.append(g)
                first = row if first is None else first
            row += n
        index = first if first is not None else hi
        for batch in pf.iter_batches(batch_size=1024, row_groups=groups):
            for obj in batch.to_pylist():
                if index >= hi:
                    return
                if index >= lo:
                    yield RawRecord(index=index, data=obj)
                index += 1
        return
    for raw in read_records(path, kind):
        if raw.index >= hi:
            return
        if raw.index >= lo:
            yield raw


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
    if Path(path).suffix.lower() != ".parquet":
        yield from read_jsonl_rows(path)
        return
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    json_ids = (pf.schema_arrow.metadata or {}).get(ID_ENCODING_KEY) == b"json"
    for batch in pf.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            if json_ids:
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
        kinds.add("int" if type(row["id"]) is int else "str" if type(row["id"]) is str else "x")
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
            if meta:
                row["id"] = orjson.dumps(row["id"]).decode()
            batch.append(row)
            if len(batch) == 8192:
                w.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        w.write_table(pa.Table.from_pylist(batch, schema=schema))


def location(path, kind: str, index: int) -> str:
    """'line N (record I)' of a JSONL record (blank lines are not records), else 'record I'."""
    if kind == "jsonl":
        for i, lineno, _ in jsonl_lines(path):
            if i == index:
                return f"line {lineno} (record {index})"
    return f"record {index}"


def write_subset(input_path, output_path, chosen: list[int], ids: list) -> int:
    """Copy the chosen records of the input to the output, checking the input's ids are
    the scores' ``ids``."""
    from .formats import record_id
    from .outputs import partial_of

    in_kind = detect_file_kind(input_path)
    out_kind = OUTPUT_KINDS.get(Path(output_path).suffix.lower())
    if out_kind is None:
        raise InputError(f"output {output_path}: use a .jsonl, .json or .parquet name")
    wanted = set(chosen)
    n_input = 0

    def check(index: int, data: Any) -> None:
        if index >= len(ids):
            raise InputError(
                f"{input_path} has more records than the scores file ({len(ids)}); the "
                "scores were computed on another input"
            )
        rid = record_id(RawRecord(index, data))
        if rid != ids[index]:
            raise InputError(
                f"record {index} of {input_path} has id {rid!r} but the scores file says "
                f"{ids[index]!r}; the scores were computed on another input"
            )

    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_of(output_path)
    written = 0
    if out_kind == "jsonl" and in_kind == "jsonl":
        with open(tmp, "wb") as f:
            for i, lineno, line in jsonl_lines(input_path):
                n_input += 1
                check(i, parse_line(i, lineno, line).data)
                if i in wanted:
                    f.write(line)  # byte for byte as in the input
                    written += 1
    elif out_kind == "parquet" and in_kind in ("parquet", "hf_disk"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        batches = record_batches(input_path, in_kind)
        first = next(batches, None)
        schema = first.schema if first is not None else pa.schema([])
        with pq.ParquetWriter(tmp, schema) as w:
            base = 0
            for batch in itertools.chain([first] if first is not None else [], batches):
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
    if n_input != len(ids):
        tmp.unlink(missing_ok=True)
        raise InputError(
            f"{input_path} has {n_input} records but the scores file has {len(ids)}; the "
            "scores were computed on another input"
        )
    tmp.replace(output_path)
    return written
