"""Inputs that are not files: a ``datasets.Dataset`` held in memory (or memory-mapped from
its cache) or a list of record dicts, as the Python API's ``input``.

``InMemory`` wraps one. It is a ``str`` whose text is the input's name (what manifests
and messages show, with the dataset's fingerprint or a hash of the records, so two inputs
are told apart), and it carries the object: the readers stream its records from where
they are, batch by batch for a dataset, with no copy to disk, and every stage reads it as
it reads a file, so the scores are those of the same records in a file. A one-pass
iterator cannot be read again (selection, reports and resumes read the input anew) and is
refused, as is a ``DatasetDict`` (several splits).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from fastscore.errors import InputError

MEMORY_KINDS = ("dataset", "records")
BATCH = 1024  # rows a dataset hands over at a time


class InMemory(str):
    """An in-memory input; as a string, its name."""

    in_memory = True
    data: Any
    kind: str
    digest: str

    def __new__(cls, data: Any) -> InMemory:
        if isinstance(data, InMemory):
            return data
        kind, digest = _describe(data)
        n = len(data)
        name = (
            f"<datasets.Dataset: {n:,} rows, fingerprint {digest}>"
            if kind == "dataset"
            else f"<{n:,} records in memory, sha256 {digest}>"
        )
        self = super().__new__(cls, name)
        self.data, self.kind, self.digest = data, kind, digest
        return self

    # a config holding it is copied (dataclasses.asdict) without copying the records
    def __copy__(self) -> InMemory:
        return self

    def __deepcopy__(self, memo: dict) -> InMemory:
        return self

    def __reduce__(self):
        raise TypeError(
            f"{self} is in this process's memory and cannot be sent to another; write it to a "
            "file first (Dataset.to_parquet, or JSONL)"
        )

    @property
    def shown(self) -> str:
        """As logs and manifests show it (``storage.Location.shown``'s counterpart)."""
        return str(self)

    def exists(self) -> bool:
        return True

    def signature(self) -> tuple[int, int]:
        """(records, content) in place of a file's (size, modification time)."""
        return len(self.data), int(self.digest, 16)

    def records(self) -> Iterator[Any]:
        """Every record, in order, as a dict (a dataset's rows batch by batch)."""
        if self.kind == "records":
            yield from self.data
            return
        for table in self.batches():
            yield from table.to_pylist()

    def batches(self) -> Iterator[Any]:
        """A dataset's rows as Arrow record batches (its select/shuffle order kept)."""
        for table in self.data.with_format("arrow").iter(batch_size=BATCH):
            yield from table.to_batches()


def as_input(x: Any) -> Any:
    """A path or URL as it is; a ``datasets.Dataset`` or a list of records wrapped."""
    if x is None or isinstance(x, (str, os.PathLike)):
        return x
    return InMemory(x)


def _describe(data: Any) -> tuple[str, str]:
    """(kind, a short content digest) of an in-memory input, or the reason it is none."""
    module = type(data).__module__.split(".")[0]
    name = type(data).__name__
    if module == "datasets":
        if name == "Dataset":
            fp = getattr(data, "_fingerprint", None) or ""
            return "dataset", hashlib.sha256(fp.encode()).hexdigest()[:16]
        if name == "DatasetDict":
            raise InputError(
                f"input is a DatasetDict with splits {sorted(data)}; give one split, e.g. "
                f"input=ds[{next(iter(data), 'train')!r}]"
            )
        raise InputError(
            f"input is a {name}: it streams once and has no length; give a datasets.Dataset "
            "(datasets.Dataset.from_generator, or load it without streaming) or a file"
        )
    if isinstance(data, Sequence) and not isinstance(data, (bytes, bytearray)):
        h = hashlib.sha256()
        for rec in data:
            try:
                h.update(orjson.dumps(rec, option=orjson.OPT_SORT_KEYS))
            except TypeError:  # (a record orjson cannot write is a bad record anyway)
                h.update(repr(rec).encode())
            h.update(b"\n")
        return "records", h.hexdigest()[:16]
    raise InputError(
        f"input must be a path, a URL, a datasets.Dataset or a list of records, got "
        f"{name}; an iterator or generator can be read only once (scoring, selection and "
        "reports read the input again): pass list(it), or datasets.Dataset.from_generator"
    )
