"""What a command reads and writes, settled before any work: no output is one of its
inputs or another of its outputs, every output can be written, and each output is held
by one run at a time.

A command lists its reads and writes by role (``Claims``); ``check`` compares them as the
files they are (symlinks followed, ``..`` and ``./`` resolved, hard links told apart by
their inode; a store URL by its address without userinfo) and probes that each output's
directory can be made and written, all before a model loads, so a typo costs nothing and
an output never replaces what the command is reading. ``locked`` then holds an advisory
lock beside each primary output for the run's life (``OutputLock``): a second run into
the same output is refused, naming the holder.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fastscore import storage
from fastscore.errors import ConfigError

log = logging.getLogger(__name__)

LOCK = ".lock"  # beside an output: OUTPUT.lock
# a lease in a store is renewed every LEASE_SECONDS / 4; one not renewed for LEASE_SECONDS
# belongs to a run that is gone (killed, or its machine lost) and may be taken over
LEASE_SECONDS = 300.0


def _key(path: Any) -> str:
    """What a file is, whatever it is called: a URL without userinfo, or the real path
    (symlinks and ``..`` resolved, existing or not)."""
    if storage.is_url(path):
        return storage.shown(path).rstrip("/")
    return os.path.realpath(os.path.expanduser(str(path)))


def _same_file(a: str, b: str) -> bool:
    """Two local paths to one existing file (a hard link, a bind mount)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@dataclass
class Claims:
    """A command's reads and writes, each ``(role, path or URL)``; ``locks``: the outputs
    held for the run's life (a lock beside each)."""

    command: str
    reads: list[tuple[str, Any]] = field(default_factory=list)
    writes: list[tuple[str, Any]] = field(default_factory=list)
    locks: list[Any] = field(default_factory=list)
    trees: list[tuple[str, Any]] = field(default_factory=list)
    directories: list[Any] = field(default_factory=list)

    def read(self, role: str, path: Any) -> Claims:
        """(An input held in memory is no file an output could be.)"""
        if path is not None and not getattr(path, "in_memory", False):
            self.reads.append((role, path))
        return self

    def write(
        self,
        role: str,
        path: Any,
        *,
        lock: bool = False,
        directory: bool = False,
        tree: bool = False,
    ) -> Claims:
        """``lock``: held for the run's life; ``directory``: a directory written into;
        ``tree``: a directory the command replaces or removes whole, so nothing it reads
        may lie under it."""
        if path is not None:
            self.writes.append((role, path))
            if lock:
                self.locks.append(path)
            if directory or tree:
                self.directories.append(path)
            if tree:
                self.trees.append((role, path))
        return self

    def then(self, later: Claims) -> Claims:
        """These claims and the outputs of a ``later`` step of the same command (what it
        reads is this step's outputs, or this step's reads)."""
        return Claims(
            self.command,
            self.reads,
            self.writes + later.writes,
            self.locks + later.locks,
            self.trees + later.trees,
            self.directories + later.directories,
        )

    def check(self) -> None:
        """Refuse an output that is an input or another output, then probe that every
        output can be written (its directory made, a file created there)."""
        written: dict[str, tuple[str, Any]] = {}
        for role, path in self.writes:
            k = _key(path)
            if k in written and written[k][0] != role:
                raise ConfigError(
                    f"{self.command}: the {role} and the {written[k][0]} would be one file, "
                    f"{storage.shown(path)}; choose another output"
                )
            written.setdefault(k, (role, path))
        for rrole, rpath in self.reads:
            rk = _key(rpath)
            hit = written.get(rk)
            if hit is None and not storage.is_url(rpath):
                hit = next(
                    (w for k, w in written.items() if not storage.is_url(k) and _same_file(k, rk)),
                    None,
                )
            inside = False
            if hit is None:
                hit = next(
                    (t for t in self.trees if rk.startswith(_key(t[1]).rstrip("/") + "/")), None
                )
                inside = hit is not None
            if hit is not None:
                wrole, wpath = hit
                raise ConfigError(
                    f"{self.command}: the {rrole} it reads, {storage.shown(rpath)}, is "
                    f"{'inside ' if inside else ''}the {wrole} it writes "
                    f"({storage.shown(wpath)}); writing that would destroy what is being "
                    "read. Choose another output"
                )
        probed: set[str] = set()
        directories = {_key(path) for path in self.directories}
        for role, path in self.writes:
            _check_writable(role, path, probed, directory=_key(path) in directories)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Each lock in ``locks`` held until the block ends, however it ends."""
        with contextlib.ExitStack() as stack:
            for path in self.locks:
                stack.enter_context(OutputLock(path, self.command))
            yield

    @contextlib.contextmanager
    def settled(self) -> Iterator[None]:
        """``check``, then ``locked``: what every command that writes runs first."""
        self.check()
        with self.locked():
            yield


def _check_writable(role: str, path: Any, probed: set[str], *, directory: bool) -> None:
    """A file can be created where the output goes: in its directory (the output itself
    when it is one), or in the nearest existing directory above one that is missing
    (nothing is made here, so a run that stops leaves nothing behind)."""
    if storage.is_url(path):
        where = str(path).rstrip("/") if directory else storage.parent(str(path))
        if where not in probed:
            probed.add(where)
            storage.check_writable(where, role)
        return
    p = Path(os.path.abspath(os.path.expanduser(str(path))))
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
            f"cannot write the {role} {p}: {what} is not writable ({_why(e)})"
        ) from None


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


# --- locks --------------------------------------------------------------------------------


def _boot_and_pid_namespace() -> tuple[str, int]:
    """What makes a pid mean one process: the boot, and the pid namespace (a container
    sharing the host's name has its own)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return "", 0
    return boot, pidns


def _holder(command: str) -> dict[str, Any]:
    boot, pidns = _boot_and_pid_namespace()
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "boot": boot,
        "pidns": pidns,
        "command": command,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another run"
    return (
        f"another run (fastscore {holder.get('command', '?')}, host {holder.get('host', '?')}, "
        f"pid {holder.get('pid', '?')}, since {holder.get('started', '?')})"
    )


def _refused(output: Any, holder: dict | None, extra: str = "") -> ConfigError:
    return ConfigError(
        f"{storage.shown(output)} is being written by {_describe(holder)}{extra}; wait for it "
        "to end or write elsewhere (two runs into one output would mix their scores)"
    )


# this process's locks, by output, with the thread that holds each: a command inside
# another (run's scoring, its select) takes the lock its caller holds; another thread is
# another run
_HELD: dict[str, list] = {}
_HELD_GUARD = threading.Lock()
# leases this process held and another run took over (``raise_if_lease_lost``)
_LOST: list[tuple[str, dict | None]] = []


class OutputLock:
    """An output held by one run: a local file's ``OUTPUT.lock`` under ``flock`` (released
    by the kernel however the process ends), or in a store a lease object ``OUTPUT.lock``
    (``_Lease``). Re-entrant within a thread; another thread, like another process, is
    refused."""

    def __init__(self, output: Any, command: str):
        self.output = output
        self.key = _key(output).rstrip("/") + LOCK
        self.command = command
        self._fd: int | None = None
        self._lease: _Lease | None = None
        self._made: list[Path] = []  # directories the lock file made, innermost first

    def __enter__(self) -> OutputLock:
        with _HELD_GUARD:
            held = _HELD.get(self.key)
            if held is not None:
                if held[2] != threading.get_ident():
                    raise _refused(self.output, None, " in another thread of this process")
                held[1] += 1
                return self
            if storage.is_url(self.output):
                self._lease = _Lease(str(self.output).rstrip("/") + LOCK, self.output, self.command)
                self._lease.acquire()
            else:
                self._made = _missing_dirs(Path(self.key).parent)
                self._fd = _flock(Path(self.key), self.output, self.command)
            _HELD[self.key] = [self, 1, threading.get_ident()]
        return self

    def __exit__(self, *exc) -> None:
        with _HELD_GUARD:
            held = _HELD[self.key]
            held[1] -= 1
            if held[1]:
                return
            del _HELD[self.key]
            owner = held[0]
        if owner._lease is not None:
            owner._lease.release()
        elif owner._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(owner.key)  # while still held: a waiting run re-checks (below)
            os.close(owner._fd)
            for d in owner._made:  # a run that wrote nothing leaves no empty directory
                try:
                    d.rmdir()
                except OSError:
                    break


def _missing_dirs(d: Path) -> list[Path]:
    """``d`` and its parents that do not exist yet, innermost first."""
    made = []
    while not d.exists():
        made.append(d)
        d = d.parent
    return made


def _flock(lock: Path, output: Any, command: str) -> int:
    """The lock file held (LOCK_EX), the holder written in it; refused with the holder's
    name when another process has it."""
    while True:
        lock.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            writable = True
        except FileNotFoundError:  # its directory, removed by a run letting go: again
            continue
        except PermissionError:  # another user's lock file, left by a killed run
            fd, writable = os.open(lock, os.O_RDONLY), False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = None
            with contextlib.suppress(OSError, ValueError):
                holder = orjson.loads(os.pread(fd, 4096, 0))
            os.close(fd)
            raise _refused(output, holder) from None
        # the holder before us removed the file as it let go: ours is then an orphan
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            if writable:
                os.ftruncate(fd, 0)
                os.pwrite(fd, orjson.dumps(_holder(command)), 0)
            return fd
        os.close(fd)


def raise_if_lease_lost() -> None:
    """Stop a run whose lease another run took over (its renewals were late, say), before
    it writes more: the two would mix their scores."""
    if _LOST:
        url, holder = _LOST[0]
        raise ConfigError(
            f"the lease {storage.shown(url)} was taken over by {_describe(holder)} while this "
            f"run held it (not renewed for {LEASE_SECONDS:.0f} s); this run stops here. Its "
            "flushed lines are kept: --resume once the other run has ended"
        )


class _Lease:
    """A lease object in a store: created only if absent (S3's conditional write), renewed
    every ``LEASE_SECONDS / 4`` while the run lives and removed at its end. A lease whose
    holder is gone (its process dead on this machine and pid namespace, or not renewed for
    ``LEASE_SECONDS``) is taken over by a write conditional on the version read, so that
    two runs cannot both take it. Stores without conditional writes (other fsspec
    backends) get the same protocol as far as they allow: each write is read back."""

    def __init__(self, url: str, output: Any, command: str):
        self.url, self.output = url, output
        self.fs, self.path = storage.filesystem(url)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.conditional = "s3" in protocols  # If-None-Match / If-Match on writes
        self.me = {**_holder(command), "token": os.urandom(8).hex()}
        self.etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _put(self, *, create: bool = False, if_match: str | None = None) -> None:
        body = orjson.dumps({**self.me, "renewed": time.time()})
        extra = {"IfMatch": if_match} if if_match and self.conditional else {}
        mode = "create" if create else "overwrite"
        with storage.store_errors(self.url, "output lock"):
            answer = self.fs.pipe_file(self.path, body, mode=mode, **extra)
        self.etag = answer.get("ETag") if isinstance(answer, dict) else None

    def _read(self) -> tuple[dict | None, str | None]:
        """(the lease's holder, its version); (None, None) when there is none."""
        with storage.store_errors(self.url, "output lock"):
            try:
                etag = self.fs.info(self.path).get("ETag")
                return orjson.loads(self.fs.cat_file(self.path)), etag
            except FileNotFoundError:
                return None, None
            except orjson.JSONDecodeError:
                return {}, etag

    def _mine(self) -> bool:
        holder, etag = self._read()
        if (holder or {}).get("token") != self.me["token"]:
            return False
        self.etag = etag or self.etag
        return True

    def acquire(self) -> None:
        for _ in range(5):
            try:
                self._put(create=True)
            except (FileExistsError, ConfigError) as e:
                if isinstance(e, ConfigError) and "Conflict" not in str(e):
                    raise  # (409 ConditionalRequestConflict: another create in flight)
                holder, etag = self._read()
                if holder is None:
                    continue  # let go of between our two calls
                if not self._gone(holder):
                    raise _refused(
                        self.output,
                        holder,
                        f" (its lease {storage.shown(self.url)}; if that run is gone, the "
                        f"lease lapses {LEASE_SECONDS:.0f} s after its last renewal, or "
                        "remove it)",
                    ) from None
                log.warning("taking over the lease of %s (%s)", self.url, _describe(holder))
                try:
                    if self.conditional:  # only if nobody replaced it since it was read
                        self._put(if_match=etag)
                    else:
                        with storage.store_errors(self.url, "output lock"):
                            self.fs.rm_file(self.path)
                        continue
                except ConfigError:
                    continue  # another run took it first: look again
            if self._mine():  # (read back: a store's create need not be atomic)
                break
            raise _refused(self.output, self._read()[0])
        else:
            raise ConfigError(f"could not take the lease {storage.shown(self.url)}; try again")
        self._thread = threading.Thread(target=self._renew, daemon=True, name="fastscore-lease")
        self._thread.start()

    def _gone(self, holder: dict) -> bool:
        pid = holder.get("pid")
        here = (holder.get("host"), holder.get("boot"), holder.get("pidns")) == (
            socket.gethostname(),
            *_boot_and_pid_namespace(),
        )
        if here and isinstance(pid, int) and not storage.alive(pid):
            return True
        renewed = holder.get("renewed")
        return not isinstance(renewed, (int, float)) or time.time() - renewed > LEASE_SECONDS

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 4):
            try:
                if self.conditional and self.etag:
                    self._put(if_match=self.etag)  # refused if another run wrote it since
                elif self._mine():
                    self._put()
            except Exception as e:  # the store, for a moment: the next renewal tries again
                log.warning("could not renew the lease %s: %s", self.url, e)
            try:
                holder, _ = self._read()
            except Exception:
                continue
            if holder is not None and holder.get("token") != self.me["token"]:
                log.error("the lease %s was taken by %s", self.url, _describe(holder))
                _LOST.append((self.url, holder))
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with contextlib.suppress(Exception):
            if self._mine():
                self.fs.rm_file(self.path)
