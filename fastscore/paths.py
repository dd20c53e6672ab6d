"""Where fastscore keeps what it builds (the demo models)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$FASTSCORE_CACHE_DIR``, else ``$XDG_CACHE_HOME/fastscore``, else ``~/.cache/fastscore``."""
    if os.environ.get("FASTSCORE_CACHE_DIR"):
        return Path(os.environ["FASTSCORE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fastscore"
