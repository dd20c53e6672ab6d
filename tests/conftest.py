"""Shared fixtures: the demo models are built once per test session (about 20 s on 2 CPU
cores) into a private cache that CLI subprocesses inherit; vLLM engines start once."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_CACHE = Path(tempfile.mkdtemp(prefix="fastscore-test-cache-"))
os.environ.setdefault("FASTSCORE_CACHE_DIR", str(_CACHE))
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


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
