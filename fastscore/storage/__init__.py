"""Where files live, said once: ``Location`` (a local path or an fsspec URL, made where a
path enters, in the configs, and passed down; ``location``), the local staging copy a
run writes through into a store (``staging.Store``), and the locks that hold an output
for one run (``locks.OutputLock``).

No module outside this package asks whether a path is a URL: the stages call a
Location's methods, and the writers of a run's outputs its ``Store``'s.
"""

from fastscore.storage.location import Location, is_url, locate, shown, without_userinfo

__all__ = ["Location", "is_url", "locate", "shown", "without_userinfo"]
