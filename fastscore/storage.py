"""Where files live: local paths, or object storage named by an fsspec URL (``s3://``,
``gs://``, ``memory://``, ...), through ``fsspec`` (``s3fs`` for S3).

Reading goes to the store itself: a reader opens the object and seeks, so a Ray worker
fetches only its shard's byte range (or a Parquet file's footer and row groups). Writing
goes through a local *staging* copy (``Store``): a run writes its files as it does on a
local disk, and each one reaches the store as one object written once, complete (a
store has no rename). A file that grows while the run goes (the scores partial, the
features partial) reaches it as *segments*: each flush puts the bytes added since the
last one as a new object, so a run killed anywhere leaves in the store every line it had
flushed, and ``--resume`` (or a retried Ray shard, on another node) puts the segments
together again.

Credentials are the store's own (for S3 the usual AWS variables, ``~/.aws`` or an
instance role; ``AWS_ENDPOINT_URL`` for an S3-compatible server); fastscore never takes
them as options, and a URL is written to logs and manifests without any userinfo.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import queue
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from fastscore.errors import ConfigError, InputError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
SEGMENTS = ".segments"  # beside a growing file in the store: its flushed parts
READ_BLOCK = 4 << 20  # what a read fetches ahead: a shard's range plus at most this
UPLOADS_AHEAD = 16  # segments the uploader may be behind before a sync waits for it


def is_url(path: Any) -> bool:
    """A store URL (``scheme://``, not ``file://``), as opposed to a local path."""
    m = _SCHEME.match(str(path)) if path is not None else None
    return bool(m) and m.group(1).lower() not in ("file", "local")


def shown(path: Any) -> str:
    """A path or URL as logs and manifests show it: a local path made absolute, a URL
    without userinfo (``s3://key:secret@bucket`` keeps only ``s3://bucket``); an input
    held in memory (``data.memory``) by its name."""
    if getattr(path, "in_memory", False):
        return str(path)
    if not is_url(path):
        return str(Path(path).resolve())
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1", str(path))


def without_userinfo(options: dict) -> dict:
    """A config's fields with each URL among them as ``shown`` (no credentials)."""
    return {
        k: without_userinfo(v) if isinstance(v, dict) else shown(v) if is_url(v) else v
        for k, v in options.items()
    }


def join(url: str, *names: str) -> str:
    return "/".join([str(url).rstrip("/"), *names])


def parent(url: str) -> str:
    head, _, _ = str(url).rstrip("/").rpartition("/")
    return head


def name(url: str) -> str:
    return str(url).rstrip("/").rpartition("/")[2]


def filesystem(url: str):
    """(fsspec filesystem, path in it) for a URL, with a clear error for an unknown
    scheme or a missing driver."""
    import fsspec

    scheme = _SCHEME.match(url).group(1).lower()
    try:
        # no cached listings: other processes (workers, a resume) write the same prefixes
        return fsspec.core.url_to_fs(url, use_listings_cache=False)
    except ValueError as e:
        if "Protocol not known" in str(e):
            raise ConfigError(
                f"{shown(url)}: unknown storage scheme {scheme!r}; give a local path or an "
                "fsspec URL (s3://bucket/key, gs://..., memory://...)"
            ) from None
        raise ConfigError(f"{shown(url)}: not a usable storage URL ({e})") from None
    except ImportError as e:
        extra = " (pip install 'fastscore[s3]')" if scheme in ("s3", "s3a") else ""
        raise ConfigError(f"{shown(url)}: reading {scheme}:// needs {e.name or e}{extra}") from None


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
def store_errors(url: str, role: str) -> Iterator[None]:
    """A store's errors as ``store_error`` says them; an object that exists where one
    was to be created only if absent (``FileExistsError``) is the caller's to handle."""
    try:
        yield
    except (ConfigError, InputError, FileExistsError):
        raise
    except (OSError, ValueError) as e:
        raise store_error(e, url, role) from e
    except Exception as e:  # botocore's own errors (endpoint, signature) are not OSErrors
        if type(e).__module__.split(".")[0] in ("botocore", "aiobotocore", "aiohttp", "s3fs"):
            raise store_error(e, url, role) from e
        raise


# --- reading -------------------------------------------------------------------------


def open_read(path: str | os.PathLike, role: str = "input") -> IO[bytes]:
    """A binary, seekable file: a local one, or an object read in ranges as it is read."""
    if not is_url(path):
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    fs, p = filesystem(str(path))
    with store_errors(str(path), role):
        return fs.open(p, "rb", block_size=READ_BLOCK)


def read_bytes(path: str | os.PathLike, role: str = "input") -> bytes:
    with open_read(path, role) as f:
        return f.read()


def info(path: str | os.PathLike, role: str = "input") -> dict | None:
    """``{"type": "file"|"directory"|"memory", "size", "version"}``, None when nothing is
    there (an input held in memory: its records and their digest)."""
    if getattr(path, "in_memory", False):
        records, digest = path.signature()
        return {"type": "memory", "size": records, "version": digest}
    if not is_url(path):
        p = Path(path)
        if not p.exists():
            return None
        st = p.stat()
        return {
            "type": "directory" if p.is_dir() else "file",
            "size": st.st_size,
            "version": st.st_mtime_ns,
        }
    fs, p = filesystem(str(path))
    with store_errors(str(path), role):
        try:
            i = fs.info(p)
        except FileNotFoundError as e:
            if "bucket" in str(e).lower():
                raise
            return None
    version = i.get("ETag") or i.get("etag") or i.get("LastModified") or i.get("mtime") or 0
    return {
        "type": i.get("type", "file"),
        "size": int(i.get("size") or 0),
        "version": _as_int(version),
    }


def _as_int(v: Any) -> int:
    """A version (an ETag, a date) as the integer a run fingerprint holds."""
    if isinstance(v, int):
        return v
    return int.from_bytes(hashlib.sha256(str(v).encode()).digest()[:7], "big")


def exists(path: str | os.PathLike) -> bool:
    return info(path) is not None


def is_dir(path: str | os.PathLike) -> bool:
    i = info(path)
    return bool(i) and i["type"] == "directory"


def size(path: str | os.PathLike) -> int:
    i = info(path)
    if i is None:
        raise InputError(f"input {shown(path)} does not exist")
    return i["size"]


def listdir(path: str | os.PathLike) -> list[str]:
    """The names in a directory (a prefix of a store), sorted; [] when there is none."""
    if not is_url(path):
        p = Path(path)
        return sorted(x.name for x in p.iterdir()) if p.is_dir() else []
    fs, p = filesystem(str(path))
    with store_errors(str(path), "directory"):
        try:
            return sorted(name(x) for x in fs.ls(p, detail=False, refresh=True))
        except FileNotFoundError:
            return []


def check_readable(path: str | os.PathLike, role: str = "input") -> None:
    """Before any scoring: the input is there and the credentials may read it."""
    if not is_url(path):
        return
    if info(path, role) is None:
        raise InputError(f"{role} {shown(path)} does not exist")
    if not is_dir(path):
        with open_read(path, role) as f:
            f.read(1)


def check_writable(url: str, role: str = "output") -> None:
    """Before any scoring: the bucket is there and the credentials may write to it (a
    probe object, put and removed)."""
    if not is_url(url):
        return
    fs, p = filesystem(url)
    probe = join(p, f".fastscore-probe-{os.getpid()}")
    with store_errors(url, role):
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    try:  # a run finds its partial, run record and shards by listing and reading
        fs.ls(p, detail=False, refresh=True)
    except FileNotFoundError:
        pass
    except PermissionError as e:
        raise ConfigError(
            f"{role} {shown(url)}: the credentials may write but not list ({e}); a run "
            "needs to read, write, delete and list there (for S3: s3:GetObject, "
            "s3:PutObject, s3:DeleteObject, s3:ListBucket)"
        ) from e


# --- writing through a local staging copy ----------------------------------------------


def staging_root() -> Path:
    from fastscore.paths import cache_dir

    return cache_dir() / "staging"


class Store:
    """A directory a run writes into: a local one (the methods are then the plain file
    operations, or nothing), or one in a store, written through a local staging copy
    that belongs to this process (a killed process's copy is removed by the next one)."""

    def __init__(self, where: str | os.PathLike):
        self.remote = str(where).rstrip("/") if is_url(where) else None
        self.pid = os.getpid()
        if self.remote is None:
            self.local = Path(where)
            return
        self.fs, self._root = filesystem(self.remote)
        key = hashlib.sha256(shown(self.remote).encode()).hexdigest()[:12]
        root = staging_root()
        _remove_dead_staging(root)
        # the host too: a cache directory on a shared disk is seen by several machines
        self.local = root / f"{key}-{_host()}-{os.getpid()}"
        self.local.mkdir(parents=True, exist_ok=True)
        self._sent: dict[Path, tuple[int, int]] = {}  # a growing file: (generation, bytes sent)
        self._rebase: set[Path] = set()
        self._uploads: queue.Queue | None = None  # segments on their way (``sync``)
        self._error: tuple[Path, BaseException] | None = None

    def __repr__(self) -> str:
        return f"Store({shown(self.remote or self.local)!r})"

    def url(self, local: Path) -> str:
        """Where a staging file goes in the store (its path, for a local store)."""
        if self.remote is None:
            return str(local)
        return join(self.remote, *Path(local).relative_to(self.local).parts)

    def _key(self, local: Path) -> str:
        return join(self._root, *Path(local).relative_to(self.local).parts)

    def _do(self, local: Path, what: str):
        return store_errors(self.url(local), what)

    def push(self, local: Path) -> None:
        """The local file as one object, written once, complete (a directory: each file)."""
        if self.remote is None:
            return
        local = Path(local)
        self.drain()  # the segments before it: a finished file goes after its partial
        with self._do(local, "output"):
            if local.is_dir():
                for f in sorted(local.rglob("*")):
                    if f.is_file():
                        self.fs.put_file(str(f), self._key(f))
            else:
                self.fs.put_file(str(local), self._key(local))

    def pull(self, local: Path) -> bool:
        """The object into its staging file; False (and the staging file removed) when
        the store has none. A local store: whether the file exists."""
        local = Path(local)
        if self.remote is None:
            return local.exists()
        local.parent.mkdir(parents=True, exist_ok=True)
        with self._do(local, "output"):
            try:
                self.fs.get_file(self._key(local), str(local))
            except FileNotFoundError:
                local.unlink(missing_ok=True)
                return False
        return True

    def exists(self, local: Path) -> bool:
        if self.remote is None:
            return Path(local).exists()
        with self._do(local, "output"):
            return self.fs.exists(self._key(local))

    def remove(self, local: Path) -> None:
        """The file, here and in the store (its segments too)."""
        Path(local).unlink(missing_ok=True)
        if self.remote is None:
            return
        self.drain()  # no segment of it may land after it is removed
        self._sent.pop(Path(local), None)
        with self._do(local, "output"):
            for key in (self._key(local), self._key(local) + SEGMENTS):
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm(key, recursive=True)

    # a growing file: its flushed parts as segments, ``<generation>-<offset>``, each put
    # once; a file cut shorter (a resume cuts a torn line) starts a new generation, put
    # whole before the old one is removed, so the store always holds one complete chain

    def sync(self, *files: Path) -> None:
        """What each growing file gained since its last segment, as a new segment, in
        the order given. The bytes are read now and put by the store's uploader thread,
        in order, so scoring does not wait on the store (unless it falls behind by
        ``UPLOADS_AHEAD`` segments)."""
        if self.remote is None:
            return
        self._raise_upload_error()
        for f in files:
            self._sync_one(Path(f))

    def _sync_one(self, local: Path) -> None:
        if not local.exists():  # (features turned off: its partial is gone)
            return
        gen, sent = self._sent.get(local, (0, 0))
        length = local.stat().st_size
        if local in self._rebase:  # restored, then maybe cut and grown again: whole
            self._rebase.discard(local)
            gen, sent = gen + 1, 0
        if length == sent:
            return
        if length < sent:  # cut shorter since: a new generation, whole
            gen, sent = gen + 1, 0
        with open(local, "rb") as f:
            f.seek(sent)
            data = f.read(length - sent)
        seg = join(self._key(local) + SEGMENTS, f"{gen:06d}-{sent:016d}")

        def put(seg=seg, data=data, new_base=sent == 0 and gen > 0):
            self.fs.pipe_file(seg, data)
            if new_base:
                self._drop_generations(local, below=gen)

        self._submit(local, put)
        self._sent[local] = (gen, length)

    def _submit(self, local: Path, job) -> None:
        if self._uploads is None:
            self._uploads = queue.Queue(maxsize=UPLOADS_AHEAD)
            threading.Thread(target=self._upload, daemon=True, name="fastscore-store").start()
        self._raise_upload_error()
        self._uploads.put((local, job))

    def _upload(self) -> None:
        while True:
            local, job = self._uploads.get()
            try:
                if self._error is None:  # after a failure, nothing more goes out of order
                    job()
            except BaseException as e:  # raised in the scoring thread, at its next call
                self._error = (local, e)
            finally:
                self._uploads.task_done()

    def _raise_upload_error(self) -> None:
        if self._error is not None:
            local, e = self._error
            # what went out after the failure is unknown: a later run in this process
            # starts from a new store (and from what the store holds)
            self._error = None
            self._sent.clear()
            if _STORES.get(self.remote) is self:
                del _STORES[self.remote]
            with self._do(local, "output"):
                raise e

    def drain(self) -> None:
        """Wait until every segment handed to the uploader is in the store."""
        if self._uploads is not None:
            self._uploads.join()
            self._raise_upload_error()

    def restore(self, local: Path) -> bool:
        """The growing file put together from its segments in the store (the newest
        complete generation); False, and no staging file, when there are none."""
        if self.remote is None:
            return Path(local).exists()
        local = Path(local)
        self.drain()
        chain = self._chain(local)
        local.unlink(missing_ok=True)
        if not chain:
            return False
        local.parent.mkdir(parents=True, exist_ok=True)
        with self._do(local, "output"), open(local, "wb") as f:
            for key, _, _ in chain:
                f.write(self.fs.cat_file(key))
        gen = int(name(chain[0][0]).split("-")[0])
        self._sent[local] = (gen, local.stat().st_size)
        # a resume cuts a torn tail and writes on: the store cannot tell a cut that grew
        # back from growth, so the next segment starts a new generation, whole
        self._rebase.add(local)
        return True

    def last_synced(self, local: Path) -> float | None:
        """When the growing file last reached the store (seconds since the epoch; a local
        file's modification time); None when it never did."""
        if self.remote is None:
            p = Path(local)
            return p.stat().st_mtime if p.exists() else None
        chain = self._chain(local)
        return max(m for _, _, m in chain) if chain else None

    def _chain(self, local: Path) -> list[tuple[str, int, float]]:
        """(key, size, modified) of the newest generation's segments, from offset 0."""
        seg_dir = self._key(local) + SEGMENTS
        with self._do(local, "output"):
            try:
                entries = self.fs.ls(seg_dir, detail=True, refresh=True)
            except FileNotFoundError:
                return []
        by_gen: dict[int, dict[int, tuple[str, int, float]]] = {}
        for e in entries:
            g, _, off = name(e["name"]).partition("-")
            if g.isdigit() and off.isdigit():
                when = e.get("LastModified") or e.get("mtime") or e.get("created") or 0
                when = when.timestamp() if hasattr(when, "timestamp") else float(when)
                by_gen.setdefault(int(g), {})[int(off)] = (e["name"], int(e["size"]), when)
        for g in sorted(by_gen, reverse=True):
            parts, chain, at = by_gen[g], [], 0
            while at in parts:
                chain.append(parts[at])
                if parts[at][1] == 0:
                    break
                at += parts[at][1]
            if chain:
                return chain
        return []

    def _drop_generations(self, local: Path, *, below: int) -> None:
        seg_dir = self._key(local) + SEGMENTS
        for k in self.fs.ls(seg_dir, detail=False, refresh=True):
            g = name(k).split("-")[0]
            if g.isdigit() and int(g) < below:
                self.fs.rm_file(k)

    def close(self) -> None:
        """The staging copy removed (the store keeps everything pushed)."""
        if self.remote is not None:
            with contextlib.suppress(Exception):  # what could not go out is reported by now
                self.drain()
            shutil.rmtree(self.local, ignore_errors=True)


_STORES: dict[str, Store] = {}


def store_for(where: str | os.PathLike) -> Store:
    """The ``Store`` of a directory: one per remote directory in a process, so that every
    step of a run (scoring, its resume, the selection after it) shares one staging copy."""
    if not is_url(where):
        p = Path(where).absolute()
        for st in _STORES.values():  # a path in a staging copy: that copy's store
            if st.pid == os.getpid() and (p == st.local or st.local in p.parents):
                return st
        return Store(where)
    key = str(where).rstrip("/")
    st = _STORES.get(key)
    if st is None or st.pid != os.getpid():
        st = _STORES[key] = Store(key)
    return st


@atexit.register
def _close_all() -> None:
    """This process's staging copies, removed as it exits (everything is in the store)."""
    for st in list(_STORES.values()):
        if st.pid == os.getpid():
            st.close()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", os.uname().nodename)


def _remove_dead_staging(root: Path) -> None:
    """Staging copies of this host's processes that are gone (a killed run's)."""
    if not root.is_dir():
        return
    for d in root.iterdir():
        rest, _, pid = d.name[13:].rpartition("-")  # after the 12-digit key and its dash
        if rest != _host() or not pid.isdigit() or int(pid) == os.getpid():
            continue
        if not alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def alive(pid: int) -> bool:
    """Whether a process of this host still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
