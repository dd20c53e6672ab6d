"""What a command reads and writes, settled before any work: no output is one of its
inputs or another of its outputs, every output can be written, and each output is held
by one run at a time (``storage.locks.OutputLock``).

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fastscore.errors import ConfigError
from fastscore.storage import Location, locate
from fastscore.storage.locks import OutputLock


@dataclass
class Claims:
    """A command's reads and writes, each ``(role, path or URL)``; ``locks``: the outputs
    held for the run's life (a lock beside each)."""

    command: str
    reads: list[tuple[str, Location]] = field(default_factory=list)
    writes: list[tuple[str, Location]] = field(default_factory=list)
    locks: list[Location] = field(default_factory=list)
    trees: list[tuple[str, Location]] = field(default_factory=list)
    directories: list[Location] = field(default_factory=list)

    def read(self, role: str, path: Any) -> Claims:
        """(An input held in memory is no file an output could be.)"""
        if path is not None and not getattr(path, "in_memory", False):
            self.reads.append((role, locate(path)))
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
            path = locate(path)
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
        written: dict[str, tuple[str, Location]] = {}
        for role, path in self.writes:
            k = path.key
            if k in written and written[k][0] != role:
                raise ConfigError(
                    f"{self.command}: the {role} and the {written[k][0]} would be one file, "
                    f"{path.shown}; choose another output"
                )
            written.setdefault(k, (role, path))
        for rrole, rpath in self.reads:
            hit = written.get(rpath.key)
            if hit is None:
                hit = next((w for w in written.values() if rpath.same_file(w[1])), None)
            inside = False
            if hit is None:
                hit = next(
                    (t for t in self.trees if rpath.key.startswith(t[1].key + "/")),
                    None,
                )
                inside = hit is not None
            if hit is not None:
                wrole, wpath = hit
                raise ConfigError(
                    f"{self.command}: the {rrole} it reads, {rpath.shown}, is "
                    f"{'inside ' if inside else ''}the {wrole} it writes "
                    f"({wpath.shown}); writing that would destroy what is being "
                    "read. Choose another output"
                )
        probed: set[str] = set()
        directories = {path.key for path in self.directories}
        for role, path in self.writes:
            path.check_writable(role, directory=path.key in directories, probed=probed)

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
