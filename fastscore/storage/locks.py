"""Each output held by one run at a time (``OutputLock``): beside a local output a lock file
under ``flock`` (released by the kernel however the process ends); beside an output in a
store a lease object, renewed while the run lives (``_Lease``). A second run into the same
output is refused, naming the holder.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from fastscore.errors import ConfigError
from fastscore.storage.location import locate, store_errors
from fastscore.storage.staging import alive

log = logging.getLogger(__name__)

LOCK = ".lock"  # beside an output: OUTPUT.lock
# a lease in a store is renewed every LEASE_SECONDS / 4; one not renewed for LEASE_SECONDS
# belongs to a run that is gone (killed, or its machine lost) and may be taken over
LEASE_SECONDS = 300.0


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
        f"{locate(output).shown} is being written by {_describe(holder)}{extra}; wait for it "
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
        self.output = locate(output)
        self.key = self.output.key + LOCK
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
            if self.output.in_store:
                lease = self.output.parent / (self.output.name + LOCK)
                self._lease = _Lease(lease, self.output, self.command)
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
            f"the lease {locate(url).shown} was taken over by {_describe(holder)} while this "
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

    def __init__(self, url: Any, output: Any, command: str):
        self.url, self.output = locate(url), output
        self.fs, self.path = self.url.fs_path()
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
        with store_errors(self.url, "output lock"):
            answer = self.fs.pipe_file(self.path, body, mode=mode, **extra)
        self.etag = answer.get("ETag") if isinstance(answer, dict) else None

    def _read(self) -> tuple[dict | None, str | None]:
        """(the lease's holder, its version); (None, None) when there is none."""
        with store_errors(self.url, "output lock"):
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
                        f" (its lease {self.url.shown}; if that run is gone, the "
                        f"lease lapses {LEASE_SECONDS:.0f} s after its last renewal, or "
                        "remove it)",
                    ) from None
                log.warning("taking over the lease of %s (%s)", self.url, _describe(holder))
                try:
                    if self.conditional:  # only if nobody replaced it since it was read
                        self._put(if_match=etag)
                    else:
                        with store_errors(self.url, "output lock"):
                            self.fs.rm_file(self.path)
                        continue
                except ConfigError:
                    continue  # another run took it first: look again
            if self._mine():  # (read back: a store's create need not be atomic)
                break
            raise _refused(self.output, self._read()[0])
        else:
            raise ConfigError(f"could not take the lease {self.url.shown}; try again")
        self._thread = threading.Thread(target=self._renew, daemon=True, name="fastscore-lease")
        self._thread.start()

    def _gone(self, holder: dict) -> bool:
        pid = holder.get("pid")
        here = (holder.get("host"), holder.get("boot"), holder.get("pidns")) == (
            socket.gethostname(),
            *_boot_and_pid_namespace(),
        )
        if here and isinstance(pid, int) and not alive(pid):
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
