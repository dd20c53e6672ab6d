"""Writing to a store through a local *staging* copy (``Store``): a run writes its files
as it does on a local disk, and each one reaches the store as one object written once,
complete (a store has no rename). A file that grows while the run goes (the scores
partial, the features partial) reaches it as *segments*: each flush puts the bytes added
since the last one as a new object, so a run killed anywhere leaves in the store every
line it had flushed, and ``--resume`` (or a retried Ray shard, on another node) puts the
segments together again.

The growing file's protocol, and what holds at every moment:
- a segment is an immutable object ``FILE.segments/<generation>-<offset>`` holding the
  file's bytes ``[offset, offset + size)``; it is put once and never rewritten;
- a generation's segments, read from offset 0 while each starts where the one before
  ends, are a prefix of the file as it was written (the *chain*);
- a growing file is cut or rewritten only after ``restore`` (a resume drops a torn last
  line; a retried shard starts again), and the first segment after a restore starts a
  new generation, put whole from offset 0, as does a file found shorter than what was
  sent; the store cannot tell a cut that grew back to its old length from growth, so a
  cut anywhere else is outside the protocol;
- the older generations are removed only after the new one's first segment is in, so
  the store always holds one complete chain, and ``restore`` takes the newest generation
  that has one;
- segments go out in order on one uploader thread; after a failed put nothing more goes
  out, and the failure is raised in the scoring thread at its next call.

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
from pathlib import Path

from fastscore.errors import ConfigError
from fastscore.storage.location import Location, join, locate, name, store_errors

SEGMENTS = ".segments"  # beside a growing file in the store: its flushed parts
UPLOADS_AHEAD = 16  # segments the uploader may be behind before a sync waits for it


def staging_root() -> Path:
    from fastscore.paths import cache_dir

    return cache_dir() / "staging"


class Store:
    """A directory a run writes into: a local one (the methods are then the plain file
    operations, or nothing), or one in a store, written through a local staging copy
    that belongs to this process (a killed process's copy is removed by the next one)."""

    def __init__(self, where: str | os.PathLike | Location):
        where = locate(where)
        self.remote = where if where.in_store else None  # (the store's directory)
        self.pid = os.getpid()
        if self.remote is None:
            self.local = where.local
            return
        self.fs, root = self.remote.fs_path()
        self._root = root.rstrip("/")
        key = hashlib.sha256(self.remote.key.encode()).hexdigest()[:12]
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
        return f"Store({(self.remote or Location(self.local)).shown!r})"

    def url(self, local: Path) -> Location:
        """Where a staging file goes in the store (its path, for a local store)."""
        if self.remote is None:
            return Location(local)
        loc = self.remote
        for part in Path(local).relative_to(self.local).parts:
            loc = loc / part
        return loc

    def place(self, where: Location | Path) -> Path:
        """The file this process writes for ``where``: the path itself for a local store;
        in a store, its staging copy (``where`` must then be in the store's directory or
        below it, named by its URL or by its staging path: a ``ConfigError`` says so)."""
        where = locate(where)
        if self.remote is None:
            return where.local
        if not where.in_store:
            p = where.local.absolute()
            if self.holds(p):
                return p
        else:
            root = self.remote.key
            if where.key == root or where.key.startswith(root + "/"):
                return self.local.joinpath(*where.key[len(root) :].split("/"))
        raise ConfigError(f"{where.shown} is not in {self.remote.shown}")

    def holds(self, path: Path) -> bool:
        """Whether an (absolute) local path is this store's staging copy or inside it."""
        return path == self.local or self.local in path.parents

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
        # restored, then maybe cut and grown again; or cut shorter since: a new
        # generation, whole (an empty one too: the store must not keep what was cut)
        new = local in self._rebase or length < sent
        self._rebase.discard(local)
        if new:
            gen, sent = gen + 1, 0
        elif length == sent:
            return
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
        if new and not length:  # what grows next starts another generation: a segment
            self._rebase.add(local)  # is put once, never over this empty one

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
            if _STORES.get(self.remote.key) is self:
                del _STORES[self.remote.key]
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


def store_for(where: str | os.PathLike | Location) -> Store:
    """The ``Store`` of a directory: one per remote directory in a process, so that every
    step of a run (scoring, its resume, the selection after it) shares one staging copy."""
    where = locate(where)
    if not where.in_store:
        p = where.local.absolute()
        for st in _STORES.values():  # a path in a staging copy: that copy's store
            if st.pid == os.getpid() and st.holds(p):
                return st
        return Store(where)
    st = _STORES.get(where.key)
    if st is None or st.pid != os.getpid():
        st = _STORES[where.key] = Store(where)
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
