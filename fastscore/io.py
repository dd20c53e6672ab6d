"""Reading input files record by record, and writing records back unchanged.

JSONL and Parquet stream; a JSON array is parsed whole (use JSONL for very large sets).
JSONL records keep their raw line bytes so a selected subset is written byte for byte.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from .errors import InputError
from .records import RawRecord

FILE_KINDS = ("jsonl", "json", "parquet")


def detect_file_kind(path: str | os.PathLike) -> str:
    """jsonl, json (an array) or parquet, from the extension, else from the first bytes."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"input file {str(p)!r} does not exist")
    if p.is_dir():
        raise InputError(f"input {str(p)!r} is a directory; give a .jsonl, .json or .parquet file")
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
    return sum(1 for _ in jsonl_lines(path))


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
    elif kind == "parquet":
        import pyarrow.parquet as pq

        i = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for obj in batch.to_pylist():
                yield RawRecord(index=i, data=obj)
                i += 1
    else:
        raise InputError(f"unknown input kind {kind!r}; expected one of {FILE_KINDS}")


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
