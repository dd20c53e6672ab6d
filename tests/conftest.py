"""Shared fixtures: the demo models are built once (about 20 s on 2 CPU cores) into a
private cache that test workers and CLI subprocesses inherit; vLLM engines start once.

`make test` runs the suite on one pytest-xdist worker per core (``--dist loadfile``, with
the grouping below), so the waits for engines, servers and clusters to start overlap."""

from __future__ import annotations

import os
import shutil
import tempfile
import types
from pathlib import Path

import pytest

# made by the process that starts the session (xdist's workers inherit it), removed when
# the session ends; a cache the user names is theirs
_OWN_CACHE = None
if "FASTSCORE_CACHE_DIR" not in os.environ:
    _OWN_CACHE = Path(tempfile.mkdtemp(prefix="fastscore-test-cache-"))
    os.environ["FASTSCORE_CACHE_DIR"] = str(_OWN_CACHE)
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    # workers side by side share the cores: more threads than a worker's share only wait
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))


# The test files whose tests use the session's vLLM engines (the `engines` fixture): one
# xdist worker runs them all, so the engines start once (pytest_collection_modifyitems
# refuses a user left out of this list).
ENGINE_USERS = frozenset(
    {
        "tests/engines/test_engine.py",
        "tests/scoring/test_more_scores.py",
        "tests/scoring/test_same_scores.py",
    }
)


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile``, with the files in ENGINE_USERS one unit: each file's tests on
    one worker (they share its fixtures: a server, a cluster, a scored run)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "vllm-engines" if path in ENGINE_USERS else path

    return ByFile(config, log)


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        if "engines" in item.fixturenames and path not in ENGINE_USERS:
            raise pytest.UsageError(f"{path} uses the vLLM engines: add it to ENGINE_USERS")
    # the files that start engines, servers or clusters are handed out first, so the long
    # ones do not end the run alone
    items.sort(key=lambda item: item.get_closest_marker("engine") is None)


def pytest_unconfigure(config):
    if _OWN_CACHE is not None and not hasattr(config, "workerinput"):
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def _restore_environ():
    """A test that runs the CLI in-process (click's CliRunner) lets `main` set the engines'
    quiet-logging variables in this process; later CLI subprocesses would inherit them."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def demo_assets():
    from fastscore.demodata.build import ensure_demo

    return ensure_demo()


@pytest.fixture(scope="session")
def tokenizer(demo_assets):
    from fastscore.engines.models import load_tokenizer

    return load_tokenizer(demo_assets.base)


@pytest.fixture(scope="session")
def engines(demo_assets):
    """(base, ref) vLLM engines in fp32 on the demo models, shut down at session end."""
    from fastscore.config import EngineConfig
    from fastscore.engines.vllm_engine import VllmEngine

    cfg = EngineConfig(dtype="float32", kv_cache_gb=0.25)
    base = VllmEngine(demo_assets.base, cfg, max_model_len=256, name="base")
    ref = VllmEngine(demo_assets.ref, cfg, max_model_len=256, name="ref")
    yield base, ref
    base.close()
    ref.close()


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server on loopback (``helpers.s3``), one per test process."""
    pytest.importorskip("moto", reason="pip install 'fastscore[dev]' (moto[server], s3fs)")
    pytest.importorskip("s3fs", reason="pip install 'fastscore[s3]'")
    from tests.helpers.s3 import MotoServer

    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """A new bucket on the server, and this process's AWS variables set to reach it as
    its writer (``s3.env``: the same for a child process)."""
    import s3fs

    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    s3fs.S3FileSystem.clear_instance_cache()  # the variables a cached one was made with
    bucket = s3_server.new_bucket()
    yield types.SimpleNamespace(
        server=s3_server,
        bucket=bucket,
        url=f"s3://{bucket}",
        env=dict(os.environ),
        fs=s3_server.fs(),
    )
    s3fs.S3FileSystem.clear_instance_cache()
