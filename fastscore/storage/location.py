"""Where a file lives, as one type: ``Location``, a local path or an fsspec URL (``s3://``,
``gs://``, ``memory://``, ...), made once where a path enters (the configs) and passed
down. Readers, writers and the run's outputs call its methods and never ask which kind
it is.

It is a thin type on ``universal-pathlib``'s ``UPath`` (pathlib's API over fsspec), for
three things ``UPath`` does not do and every caller needs: ``str()`` never shows a URL's
userinfo (``str(UPath("s3://key:secret@b/k"))`` keeps the secret); a store's errors are
said in one line naming the file's role (``input``, ``output lock``) and never the
credentials, where ``UPath`` raises the driver's own (botocore's); and the probes a run
makes before any work (readable, writable, listable) are methods.

Reading goes to the store itself: ``open`` reads an object in ranges as it is read, so a
Ray worker fetches only its shard's bytes (or a Parquet file's footer and row groups).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from fastscore.errors import ConfigError, InputError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
READ_BLOCK = 4 << 20  # what a read fetches ahead: a shard's range plus at most this


def is_url(path: Any) -> bool:
    """A store URL (``scheme://``, not ``file://``), as opposed to a local path."""
    m = _SCHEME.match(str(path)) if path is not None else None
    return bool(m) and m.group(1).lower() not in ("file", "local")


def join(key: str, *names: str) -> str:
    """A store's key (or URL) and names below it, one ``/`` between each."""
    return "/".join([key.rstrip("/"), *names])


def name(key: str) -> str:
    """The last name of a store's key (or URL)."""
    return key.rstrip("/").rpartition("/")[2]


def _without_userinfo(url: str) -> str:
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1", url)


def shown(path: Any) -> str:
    """A path or URL as logs and manifests show it: a local path made absolute, a URL
    without userinfo (``s3://key:secret@bucket`` keeps only ``s3://bucket``); an input
    held in memory (``data.memory``) by its name."""
    if getattr(path, "in_memory", False):
        return str(path)
    if isinstance(path, Location):
        return path.shown
    if not is_url(path):
        return str(Path(path).resolve())
    return _without_userinfo(str(path))


def without_userinfo(options: dict) -> dict:
    """A config's fields as plain values for a manifest: each URL ``shown`` (no
    credentials), each local location as the path it was given."""
    return {k: _plain(v) for k, v in options.items()}


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return without_userinfo(v)
    if isinstance(v, Location):
        return str(v)
    if isinstance(v, str) and is_url(v):  # (served endpoints: a comma-separated list)
        return ",".join(shown(u) if is_url(u) else u for u in v.split(","))
    return v


def locate(where: Any) -> Any:
    """``where`` as a ``Location`` (a str, a path, a Location); an empty str as None (no
    path given); anything else (None, an input held in memory, ``data.memory``) as it is."""
    if isinstance(where, str) and not where.strip():
        return None
    if (
        isinstance(where, Location)
        or not isinstance(where, (str, os.PathLike))
        or getattr(where, "in_memory", False)  # (a str too: its name)
    ):
        return where
    return Location(where)


def store_error(e: BaseException, url: str, role: str) -> Exception:
    """An fsspec/botocore error as one actionable line (never the credentials)."""
    where = shown(url)
    if isinstance(e, FileNotFoundError):
        text = str(e)
        if "bucket" in text.lower():
            return ConfigError(f"{role} {where}: the bucket does not exist ({text})")
        return InputError(f"{role} {where} does not exist")
    if isinstance(e, PermissionError):
        return ConfigError(
            f"{role} {where}: access denied ({e}); check the credentials the store is given "
            "(for S3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws) and "
            "their permissions on this bucket"
        )
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return ConfigError(f"{role} {where}: the store cannot be reached or refused ({text})")


@contextlib.contextmanager
def store_errors(url: Any, role: str) -> Iterator[None]:
    """A store's errors as ``store_error`` says them; an object that exists where one
    was to be created only if absent (``FileExistsError``) is the caller's to handle."""
    try:
        yield
    except (ConfigError, InputError, FileExistsError):
        raise
    except (OSError, ValueError) as e:
        raise store_error(e, str(url), role) from e
    except Exception as e:  # botocore's own errors (endpoint, signature) are not OSErrors
        if type(e).__module__.split(".")[0] in ("botocore", "aiobotocore", "aiohttp", "s3fs"):
            raise store_error(e, str(url), role) from e
        raise


def _version(entry: dict) -> int:
    """A store's entry's version (its ETag, else its date) as an integer."""
    v = (
        entry.get("ETag")
        or entry.get("etag")
        or entry.get("LastModified")
        or entry.get("mtime")
        or 0
    )
    return _as_int(v)


def _as_int(v: Any) -> int:
    """A version (an ETag, a date) as the integer a run fingerprint holds."""
    if isinstance(v, int):
        return v
    return int.from_bytes(hashlib.sha256(str(v).encode()).digest()[:7], "big")


class Location:
    """A file or directory: a local path, or an object (a prefix) in a store. Made from a
    str, a path or another Location; compared, hashed and pickled as what it names."""

    __slots__ = ("_up", "_url", "_given")

    def __init__(self, where: str | os.PathLike | Location):
        if isinstance(where, Location):
            self._up, self._url, self._given = where._up, where._url, where._given
            return
        if getattr(where, "protocol", "") not in ("", "file", "local"):
            text = str(where)  # a UPath of a store: its URL (its fspath drops the scheme)
        else:
            text = os.fspath(where) if isinstance(where, os.PathLike) else str(where)
        self._url = text if is_url(text) else None
        self._up = None if self._url else Path(text)
        # a local path as it was typed (``./data/``): what manifests and run records hold
        self._given = text

    # --- what it is called -------------------------------------------------------------

    @property
    def in_store(self) -> bool:
        """An object in a store (for the storage package: everything else asks it)."""
        return self._url is not None

    @property
    def upath(self):
        """The ``UPath`` (a ``pathlib.Path`` for a local file), made on first use: an
        unknown scheme or a missing driver is a ``ConfigError`` naming it."""
        if self._up is None:
            self._up = _upath(self._url)
        return self._up

    @property
    def local(self) -> Path:
        """The local path; a ``ConfigError`` for an object in a store (a step that can only
        work on this machine's files, such as training, says so by asking)."""
        if self._url is not None:
            raise ConfigError(f"{self.shown}: must be a local path here, not a store URL")
        return self._up

    def __fspath__(self) -> str:
        return os.fspath(self.local)

    def __str__(self) -> str:
        return self._given if self._url is None else _without_userinfo(self._url)

    def __repr__(self) -> str:
        return f"Location({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        """The same object of a store (its URL without userinfo or a trailing slash), or
        the same local path (a ``pathlib.Path`` too, which hashes alike)."""
        if isinstance(other, Location):
            if (self._url is None) != (other._url is None):
                return False
            return self._up == other._up if self._url is None else self.key == other.key
        return self._url is None and isinstance(other, Path) and self._up == other

    def __hash__(self) -> int:
        return hash(self.key) if self._url is not None else hash(self._up)

    def __reduce__(self):
        return Location, (self._url or self._given,)

    def __truediv__(self, child: str) -> Location:
        if self._url is None:
            return Location(self._up / child)
        return Location(join(self._url, str(child)))

    @property
    def name(self) -> str:
        return self._up.name if self._url is None else name(self._url)

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def parent(self) -> Location:
        """The directory above; a bucket (``s3://b``) has none: a ``ConfigError``."""
        if self._url is None:
            return Location(self._up.parent)
        scheme, _, rest = self._url.partition("://")
        head, sep, _ = rest.rstrip("/").rpartition("/")
        if not sep or not head:
            raise ConfigError(
                f"{self.shown}: name a file inside a bucket or prefix "
                f"({scheme}://bucket/name), not the store's top level"
            )
        return Location(f"{scheme}://{head}")

    def with_name(self, name: str) -> Location:
        return self.parent / name

    @property
    def shown(self) -> str:
        """As logs and manifests show it: a local path made absolute, a URL without its
        userinfo."""
        return str(self._up.resolve()) if self._url is None else _without_userinfo(self._url)

    @property
    def key(self) -> str:
        """What the file is, whatever it is called: a URL without userinfo, or the real
        path (symlinks, ``~`` and ``..`` resolved, existing or not)."""
        if self._url is None:
            return os.path.realpath(os.path.expanduser(str(self._up)))
        return self.shown.rstrip("/")

    def same_file(self, other: Location) -> bool:
        """Two local paths to one existing file (a hard link, a bind mount)."""
        if self.in_store or other.in_store:
            return False
        try:
            return os.path.samefile(self._up, other._up)
        except OSError:
            return False

    def fs_path(self):
        """(fsspec filesystem, path in it) of an object in a store."""
        up = self.upath
        return up.fs, up.path

    # --- reading -----------------------------------------------------------------------

    def open(self, role: str = "input") -> IO[bytes]:
        """A binary, seekable file: a local one, or an object read in ranges as it is read."""
        if self._url is None:
            return open(self._up, "rb")  # noqa: SIM115 - the caller closes it
        fs, p = self.fs_path()
        with store_errors(self, role):
            return fs.open(p, "rb", block_size=READ_BLOCK)

    def open_arrow(self, role: str = "input"):
        """A source Arrow reads: a local file memory-mapped, an object read in ranges."""
        if self._url is None:
            import pyarrow as pa

            return pa.memory_map(str(self._up))
        return self.open(role)

    def read_bytes(self, role: str = "input") -> bytes:
        with self.open(role) as f:
            return f.read()

    def info(self, role: str = "input") -> dict | None:
        """``{"type": "file"|"directory", "size", "version", "local"}``, None when nothing
        is there. ``version``: a local file's mtime in ns, an object's ETag as an integer;
        ``local``: whether reading it is a read of this machine's disk."""
        if self._url is None:
            try:
                st = os.stat(self._up)
            except (FileNotFoundError, NotADirectoryError):
                return None
            kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
            return {"type": kind, "size": st.st_size, "version": st.st_mtime_ns, "local": True}
        fs, p = self.fs_path()
        with store_errors(self, role):
            try:
                i = fs.info(p)
            except FileNotFoundError as e:
                if "bucket" in str(e).lower():
                    raise
                return None
        return {
            "type": i.get("type", "file"),
            "size": int(i.get("size") or 0),
            "version": _version(i),
            "local": False,
        }

    def exists(self) -> bool:
        return self.info() is not None

    def is_dir(self) -> bool:
        i = self.info()
        return bool(i) and i["type"] == "directory"

    def listdir(self) -> list[str]:
        """The names in a directory (a prefix of a store), sorted; [] when there is none."""
        if self._url is None:
            return sorted(x.name for x in self._up.iterdir()) if self._up.is_dir() else []
        fs, p = self.fs_path()
        with store_errors(self, "directory"):
            try:
                return sorted(name(x) for x in fs.ls(p, detail=False, refresh=True))
            except FileNotFoundError:
                return []

    def signature(self, found: dict | None = None) -> tuple[int, int]:
        """(size, version) of what is here: a file's own; for a directory (a
        ``save_to_disk`` dataset) its files' total size and, locally, latest mtime, in a
        store the sum of their versions. ``found``: its ``info()``, when known."""
        i = found or self.info()
        if i is None:
            raise InputError(f"input {self.shown} does not exist")
        if i["type"] != "directory":
            return i["size"], i["version"]
        if self._url is None:
            stats = [f.stat() for f in sorted(self._up.rglob("*")) if f.is_file()]
            return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)
        fs, p = self.fs_path()
        with store_errors(self, "input"):  # (one listing: its entries' sizes and ETags)
            files = [e for e in fs.ls(p, detail=True, refresh=True) if e.get("type") == "file"]
        versions = (_version(e) for e in files)
        return sum(int(e.get("size") or 0) for e in files), sum(versions) % (1 << 62)

    # --- before any work -----------------------------------------------------------------

    def check_readable(self, role: str = "input", found: dict | None = None) -> None:
        """The input is there and the credentials may read it (a store's object: its first
        byte read). ``found``: its ``info()``, when known."""
        found = found or self.info(role)
        if found is None:
            raise InputError(f"{role} {self.shown} does not exist")
        if self._url is not None and found["type"] == "file":
            with self.open(role) as f:
                f.read(1)

    def check_writable(self, role: str = "output", *, directory: bool = False, probed=None):
        """A file can be created where this output goes: in its directory (itself, when
        it is one), or locally in the nearest existing directory above a missing one
        (nothing is made, so a run that stops leaves nothing behind); in a store, the
        bucket is there and the credentials may put, remove and list (a probe object).
        ``probed``: the directories already probed (a set, updated)."""
        probed = set() if probed is None else probed
        if self._url is not None:
            where = self if directory else self.parent
            if where.key not in probed:
                probed.add(where.key)
                where._probe_store(role)
            return
        p = Path(os.path.abspath(os.path.expanduser(str(self._up))))
        if directory and p.exists() and not p.is_dir():
            raise ConfigError(f"cannot write the {role} {p}: it is a file; name a directory")
        if not directory and p.is_dir():
            raise ConfigError(f"cannot write the {role} {p}: it is a directory; name a file")
        d = p if directory else p.parent
        existing = d
        while not existing.exists():
            existing = existing.parent
        if str(existing) in probed:
            return
        probed.add(str(existing))
        what = f"its directory {d}" if existing == d else f"{existing}, where {d} would be made,"
        if not existing.is_dir():
            raise ConfigError(f"cannot write the {role} {p}: {existing} is a file, not a directory")
        try:
            fd, probe = tempfile.mkstemp(dir=existing, prefix=".fastscore-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise ConfigError(
                f"cannot write the {role} {p}: {what} is not writable "
                f"({e.strerror or type(e).__name__})"
            ) from None

    def _probe_store(self, role: str) -> None:
        fs, p = self.fs_path()
        probe = join(p, f".fastscore-probe-{os.getpid()}")
        with store_errors(self, role):
            fs.pipe_file(probe, b"")
            fs.rm_file(probe)
        try:  # a run finds its partial, run record and shards by listing and reading
            fs.ls(p, detail=False, refresh=True)
        except FileNotFoundError:
            pass
        except PermissionError as e:
            raise ConfigError(
                f"{role} {self.shown}: the credentials may write but not list ({e}); a run "
                "needs to read, write, delete and list there (for S3: s3:GetObject, "
                "s3:PutObject, s3:DeleteObject, s3:ListBucket)"
            ) from e


def _upath(url: str):
    """The ``UPath`` of a store URL, with a clear error for an unknown scheme or a missing
    driver; no cached listings: other processes (workers, a resume) write the same
    prefixes."""
    from upath import UPath

    scheme = _SCHEME.match(url).group(1).lower()
    try:
        up = UPath(url, use_listings_cache=False)
        up.fs  # noqa: B018 - the driver is imported here, so a missing one is said now
        return up
    except ValueError as e:
        if "Unsupported filesystem" in str(e) or "Protocol not known" in str(e):
            raise ConfigError(
                f"{_without_userinfo(url)}: unknown storage scheme {scheme!r}; give a local "
                "path or an fsspec URL (s3://bucket/key, gs://..., memory://...)"
            ) from None
        raise ConfigError(f"{_without_userinfo(url)}: not a usable storage URL ({e})") from None
    except ImportError as e:
        extra = " (pip install 'fastscore[s3]')" if scheme in ("s3", "s3a") else ""
        raise ConfigError(
            f"{_without_userinfo(url)}: reading {scheme}:// needs {e.name or e}{extra}"
        ) from None
