"""The browser the report's tests draw pages in: Debian's chromium (the Makefile's
`browser` target installs it), driven by Playwright for the explorer. A missing one fails
the test under CI (where `make test` installed it) and skips it elsewhere."""

from __future__ import annotations

import os
import shutil

import pytest


def missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is not installed; `make test` installs it")
    pytest.skip(f"{what} is not installed (make test installs it)")


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        missing("chromium (make browser)")
    return found
