"""Reading input files record by record, or a shard's range of records.

An input is a ``storage.Location`` (a local path or a store URL; a str is taken as one),
or an input held in memory (``data.memory``): a store's object is read in ranges as it is
read, so a shard fetches only its part.

JSONL, Parquet and Hugging Face ``datasets`` directories (``save_to_disk``) stream; a JSON
array is parsed whole (use JSONL for very large sets). JSONL records keep their raw line
bytes so a selected subset is written byte for byte (``writers``). A shard reads from its
first record's byte offset (JSONL) or its row groups (Parquet), parsing nothing before.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from fastscore.data.memory import MEMORY_KINDS
from fastscore.errors import InputError
from fastscore.records import RawRecord
from fastscore.storage import locate

FILE_KINDS = ("jsonl", "json", "parquet", "hf_disk")


def detect_file_kind(path: str | os.PathLike) -> str:
    """jsonl, json (an array), parquet, or hf_disk (a ``datasets`` ``save_to_disk``
    directory), from the extension or the directory's files, else from the first bytes;
    an input held in memory is a ``dataset`` or ``records`` (``data.memory``)."""
    if getattr(path, "in_memory", False):
        return path.kind
    path = locate(path)
    return file_kind(path, path.info())


def file_kind(path, found: dict | None) -> str:
    """``detect_file_kind`` of a ``storage.Location`` whose ``info()`` is ``found``."""
    shown = str(path)
    if found is None:
        raise InputError(f"input file {shown!r} does not exist")
    if found["type"] == "directory":
        if (path / "state.json").exists() and (path / "dataset_info.json").exists():
            return "hf_disk"
        if (path / "dataset_dict.json").exists():
            raise InputError(
                f"{shown!r} is a DatasetDict (several splits); give one split's directory, "
                f"e.g. {str(path / 'train')!r}"
            )
        raise InputError(
            f"input {shown!r} is a directory but not one saved by datasets' save_to_disk "
            "(no state.json); give a .jsonl, .json or .parquet file or such a directory"
        )
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    with path.open() as f:
        head = f.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"["):
        return "json"
    if stripped.startswith(b"{") or not stripped:
        return "jsonl"
    raise InputError(
        f"cannot tell the format of {shown!r}: expected JSONL (one object per line), "
        "a JSON array, or Parquet; name the file .jsonl, .json or .parquet"
    )


def parquet_file(path: str | os.PathLike):
    """A ``pyarrow.parquet.ParquetFile``; a store's object is read in ranges (the footer,
    then the row groups asked for)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(locate(path).open_arrow())


def count_records(path: str | os.PathLike, kind: str | None = None) -> int:
    """Number of records, cheaply (a newline count for JSONL), for progress and fractions."""
    kind = kind or detect_file_kind(path)
    if kind in MEMORY_KINDS:
        return len(path.data)
    if kind == "parquet":
        return parquet_file(path).metadata.num_rows
    if kind == "json":
        return len(_load_json_array(path))
    if kind == "hf_disk":
        return sum(t.num_rows for t in _hf_disk_tables(path))
    return sum(1 for _ in jsonl_lines(path))


def _hf_disk_tables(path: str | os.PathLike) -> Iterator[Any]:
    """The Arrow tables of a ``save_to_disk`` directory, in order, memory-mapped (what
    ``datasets.load_from_disk`` reads, without needing ``datasets``)."""
    import pyarrow as pa

    path = locate(path)
    state = orjson.loads((path / "state.json").read_bytes())
    if state.get("_indices_data_files"):
        raise InputError(
            f"{path}: this dataset was saved with an indices mapping (a select/shuffle not "
            "flattened); save it again after dataset.flatten_indices()"
        )
    for f in state.get("_data_files", []):
        with (path / f["filename"]).open_arrow() as src:
            yield pa.ipc.open_stream(src).read_all()


def _load_json_array(path: str | os.PathLike) -> list[Any]:
    try:
        data = orjson.loads(locate(path).read_bytes().removeprefix(b"\xef\xbb\xbf"))
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
    elif kind in MEMORY_KINDS:
        for i, obj in enumerate(path.records()):
            yield RawRecord(index=i, data=obj)
    else:
        raise InputError(f"unknown input kind {kind!r}; expected one of {FILE_KINDS}")


def record_batches(path: str | os.PathLike, kind: str) -> Iterator[Any]:
    """Arrow record batches of a Parquet file, a ``save_to_disk`` directory or a dataset
    held in memory."""
    if kind == "parquet":
        yield from parquet_file(path).iter_batches(batch_size=1024)
    elif kind == "dataset":
        yield from path.batches()
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
    with locate(path).open() as f:
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
    with locate(path).open() as f:
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


def skip_jsonl(path: str | os.PathLike, start: tuple[int, int], n: int) -> tuple[int, int]:
    """The (byte offset, line number) ``n`` records after ``start``: where a shard's
    retried attempt goes on from the lines its lost attempt had written."""
    offset, lineno = start
    with locate(path).open() as f:
        f.seek(offset)
        while n > 0:
            line = f.readline()
            if not line:
                break
            offset += len(line)
            lineno += 1
            if line.strip():
                n -= 1
    return offset, lineno


def read_record_range(
    path: str | os.PathLike,
    kind: str,
    *,
    lo: int,
    hi: int,
    start: tuple[int, int] | None = None,
) -> Iterator[RawRecord]:
    """Records ``lo <= index < hi`` without parsing the ones before: a JSONL file is read
    from ``start`` (record ``lo``'s byte offset and line number, from ``jsonl_starts``), a
    Parquet file from the row groups that hold the range; other kinds are read through."""
    if kind == "jsonl" and start is not None:
        offset, lineno = start
        index = lo
        with locate(path).open() as f:
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
        pf = parquet_file(path)
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


def location(path, kind: str, index: int) -> str:
    """'line N (record I)' of a JSONL record (blank lines are not records), else 'record I'."""
    if kind == "jsonl":
        for i, lineno, _ in jsonl_lines(path):
            if i == index:
                return f"line {lineno} (record {index})"
    return f"record {index}"
