"""Where files live, said once: ``Location`` (a local path or an fsspec URL, made where a
path enters, in the configs, and passed down; ``location``), the local staging copy a
run writes through into a store (``staging.Store``), and the locks that hold an output
for one run (``locks.OutputLock``).

No module outside this package asks whether a path is a URL: the stages call a
Location's methods, and the writers of a run's outputs its ``Store``'s.
"""

from fastscore.storage.location import (
    Location,
    is_url,
    locate,
    shown,
    store_errors,
    without_userinfo,
)

__all__ = [
    "Location",
    "check_readable",
    "check_writable",
    "is_url",
    "locate",
    "open_read",
    "shown",
    "store_errors",
    "without_userinfo",
]


def check_readable(path, role: str = "input") -> None:
    """Before any scoring: the input is there and the credentials may read it."""
    locate(path).check_readable(role)


def check_writable(path, role: str = "output") -> None:
    """Before any scoring: a store's bucket is there and the credentials may write to the
    directory ``path`` (a probe object, put and removed)."""
    locate(path).check_writable(role, directory=True)


def open_read(path, role: str = "input"):
    return locate(path).open(role)
