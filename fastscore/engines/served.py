"""Scoring against models already served by vLLM's OpenAI-compatible HTTP API.

Each request is ``POST /v1/completions`` with the prompt as token ids, ``max_tokens=1``,
``prompt_logprobs=0``, ``temperature=0`` and ``return_token_ids``; the prompt ids the
server reports back must equal those sent (a server that re-tokenizes or adds a BOS is
caught). At start, ``/tokenize`` on probe texts must give the local tokenizer's ids.

Requests are spread over all endpoints of a model (the least busy first), with at most
``concurrency`` in flight per endpoint. Connection errors, timeouts, 429 and 5xx answers
are retried with exponential backoff for up to ``retry_seconds``, so a server restart
costs a pause, not the run. The API key is read from the environment variable named by
``api_key_env`` and is never printed, logged or written.

Idle keep-alive connections: servers close them (vLLM's uvicorn after 5 s). The client's
event loop runs in a thread of its own, so it reads the sockets between calls and sees
such a close; pooled connections are dropped after ``KEEPALIVE_SECONDS``, before the
server's limit; and a request whose connection turns out closed before any answer came is
sent again at once on a new one (counted as a reconnect, with no backoff).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastscore.config import EngineConfig
from fastscore.errors import EngineError, ModelError
from fastscore.records import RenderedSample

log = logging.getLogger(__name__)

PROBES = (
    "hello there, how are you?",
    "  leading spaces, trailing\n\nnewlines\t and tabs  ",
    "numbers 12345 and symbols !@#$%^&*() and unicode: caf\u00e9 \u00fc\u00df \u4f60\u597d",
)


# Idle pooled connections are closed after this long: below the keep-alive of common
# servers (uvicorn, and so vLLM: 5 s), so the client gives a connection up first.
KEEPALIVE_SECONDS = 4.0
# A request whose connection proves closed before any answer is sent again at once, this
# many times (each on a new connection), before it counts as a failure.
RECONNECTS = 3


class _Retryable(Exception):
    pass


class LoopThread:
    """An asyncio event loop running in a daemon thread of its own.

    A loop that ran only inside ``run_until_complete`` would read no socket between calls,
    miss a server closing an idle connection, and write the next request into it.
    """

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine) -> Any:
        future = self.submit(coro)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. Ctrl-C here: stop the requests in flight too
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@dataclass
class Endpoint:
    url: str
    sem: asyncio.Semaphore
    in_flight: int = 0
    down_until: float = 0.0
    requests: int = 0
    retries: int = 0  # failures retried after a backoff
    reconnects: int = 0  # requests sent again at once: the connection was closed under them


# JSON has no -inf: vLLM's OpenAI-compatible server writes a logprob of -inf as this
# (``clamp_prompt_logprobs``), which is then no number but a token the model rules out
NEG_INF_STANDIN = -9999.0


def parse_prompt_logprobs(sample: RenderedSample, choice: dict) -> np.ndarray:
    """The response tokens' logprobs from one ``/v1/completions`` choice; vLLM's stand-in
    for -inf (``NEG_INF_STANDIN``, or anything below it) is -inf again, so the sample is
    ``nonfinite_loss`` as the in-process engines make it, never a huge loss that ranks
    first.

    Raises ValueError when the answer is not about this sample's tokens.
    """
    got = choice.get("prompt_token_ids")
    if got is None or len(got) != sample.n_tokens or not np.array_equal(got, sample.token_ids):
        raise ValueError(
            f"the server scored other tokens than were sent for {sample.label} (sent "
            f"{sample.n_tokens}, got {None if got is None else len(got)}); it must not "
            "re-tokenize the prompt or add a BOS"
        )
    plp = choice.get("prompt_logprobs")
    if not isinstance(plp, list) or len(plp) != sample.n_tokens:
        raise ValueError(f"no prompt_logprobs for every prompt token of {sample.label}")
    out = np.empty(sample.n_response_tokens, dtype=np.float64)
    for j, p in enumerate(sample.response_positions.tolist()):
        entry = plp[p]
        key = str(int(sample.token_ids[p]))
        if not isinstance(entry, dict) or key not in entry:
            raise ValueError(
                f"prompt_logprobs of {sample.label} has no entry for token {key} at position {p}"
            )
        out[j] = float(entry[key]["logprob"])
    out[out <= NEG_INF_STANDIN] = -np.inf
    return out


class ServedEngine:
    def __init__(
        self,
        urls: list[str],
        cfg: EngineConfig,
        *,
        model: str | None,
        name: str,
        tokenizer=None,
    ):
        if not urls:
            raise EngineError(f"--engine served needs --{name}-url")
        try:
            import aiohttp  # noqa: F401
        except ImportError as e:
            raise EngineError("the served engine needs aiohttp: pip install aiohttp") from e
        self.name, self.cfg = name, cfg
        self.urls = [u.rstrip("/") for u in urls]
        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        self._headers = {"Content-Type": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self.endpoints: list[Endpoint] = []
        self.session = None
        self.loop = LoopThread(f"fastscore-{name}-http")
        t0 = time.perf_counter()
        try:
            self.loop.run(self._open())
            self.server_models = self.loop.run(self._models())
            self.model = model or self._only_model()
            lens = [
                int(m["max_model_len"])
                for models in self.server_models.values()
                for m in models
                if m["id"] == self.model and m.get("max_model_len")
            ]
            if not lens:
                raise EngineError(
                    f"no {self.name} server serves a model named {self.model!r}: "
                    f"{ {u: [m['id'] for m in ms] for u, ms in self.server_models.items()} }"
                )
            self.max_model_len = min(lens)
            if tokenizer is not None:
                self.check_tokenizer(tokenizer)
        except BaseException:
            self.close()
            raise
        self.start_seconds = time.perf_counter() - t0

    # -------------------------------------------------------------- setup

    async def _open(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.cfg.request_timeout)
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_SECONDS)
        self.session = aiohttp.ClientSession(
            headers=self._headers, timeout=timeout, connector=connector
        )
        self.endpoints = [Endpoint(u, asyncio.Semaphore(self.cfg.concurrency)) for u in self.urls]

    async def _models(self) -> dict[str, list[dict]]:
        out = {}
        for ep in self.endpoints:
            body = await self._request(ep, "GET", "/v1/models", body=None)
            out[ep.url] = body.get("data", [])
        return out

    def _only_model(self) -> str:
        names = {m["id"] for models in self.server_models.values() for m in models}
        if len(names) != 1:
            raise EngineError(
                f"the {self.name} servers serve {sorted(names)}; name one with --{self.name}-model"
            )
        return names.pop()

    def root(self) -> str | None:
        """The model's path on the server (``root`` in /v1/models), if reported."""
        for models in self.server_models.values():
            for m in models:
                if m["id"] == self.model and m.get("root"):
                    return m["root"]
        return None

    def check_tokenizer(self, tokenizer) -> None:
        """Every endpoint must tokenize the probe texts as the local tokenizer does."""

        async def probe(ep: Endpoint, text: str):
            body = {"model": self.model, "prompt": text, "add_special_tokens": False}
            return await self._request(ep, "POST", "/tokenize", body=body)

        for ep in self.endpoints:
            for text in PROBES:
                got = self.loop.run(probe(ep, text)).get("tokens")
                want = tokenizer(text, add_special_tokens=False)["input_ids"]
                if got != want:
                    raise ModelError(
                        f"the {self.name} server {ep.url} tokenizes {text!r} as {got} but the "
                        f"local tokenizer gives {want}: it serves another tokenizer. Point "
                        "--tokenizer (or --base) at the served model's own tokenizer"
                    )

    # -------------------------------------------------------------- requests

    async def _request(self, ep: Endpoint, method: str, path: str, *, body, retry: bool = False):
        """One request; failures that may pass raise _Retryable (or EngineError if not
        ``retry``), failures that will not pass raise EngineError."""
        import aiohttp
        import orjson

        try:
            r = await self._send(ep, method, path, body=body)
            async with r:
                text = await r.text()
                if r.status == 429 or r.status >= 500:
                    raise _Retryable(f"HTTP {r.status}: {text[:200]}")
                if r.status == 401:
                    raise EngineError(
                        f"{ep.url} refused the request (401 Unauthorized): set the API key in "
                        f"the environment variable {self.cfg.api_key_env}"
                    )
                if r.status >= 400:
                    raise EngineError(f"{ep.url}{path} answered HTTP {r.status}: {text[:500]}")
                try:
                    return orjson.loads(text)
                except orjson.JSONDecodeError as e:
                    raise _Retryable(f"a malformed answer ({e}): {text[:200]!r}") from e
        except (aiohttp.ClientError, asyncio.TimeoutError, _Retryable) as e:
            if retry:
                raise _Retryable(f"{type(e).__name__}: {e}") from e
            raise EngineError(
                f"the {self.name} server {ep.url} failed on {path}: {type(e).__name__}: {e}"
            ) from e

    async def _send(self, ep: Endpoint, method: str, path: str, *, body):
        """The response (headers read), sending again at once on a new connection when the
        one it went out on was closed before any answer began."""
        import aiohttp

        for attempt in range(RECONNECTS + 1):
            try:
                return await self.session.request(method, ep.url + path, json=body)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
                # a refused connection is a server that is down: retried with backoff
                if isinstance(e, aiohttp.ClientConnectorError) or attempt == RECONNECTS:
                    raise
                ep.reconnects += 1
                log.debug("%s %s%s: %s; sent again on a new connection", self.name, ep.url,
                          path, e)  # fmt: skip
        raise AssertionError("unreachable")

    def _pick(self) -> Endpoint:
        now = time.monotonic()
        up = [ep for ep in self.endpoints if ep.down_until <= now] or self.endpoints
        return min(up, key=lambda ep: (ep.in_flight, ep.down_until))

    async def _score(self, sample: RenderedSample) -> np.ndarray:
        body = {
            "model": self.model,
            "prompt": sample.token_ids.tolist(),
            "max_tokens": 1,
            "prompt_logprobs": 0,
            "temperature": 0,
            "return_token_ids": True,
            # "token_id:N" strings instead of decoding every prompt token on the server
            "return_tokens_as_token_ids": True,
        }
        first_fail, attempt = None, 0
        while True:
            ep = self._pick()  # each attempt may go to another endpoint
            ep.in_flight += 1
            try:
                async with ep.sem:
                    ep.requests += 1
                    answer = await self._request(
                        ep, "POST", "/v1/completions", body=body, retry=True
                    )
                break
            except _Retryable as e:
                now = time.monotonic()
                first_fail = first_fail or now
                if now - first_fail > self.cfg.retry_seconds:
                    raise EngineError(
                        f"the {self.name} server {ep.url} kept failing for "
                        f"{self.cfg.retry_seconds:.0f}s (retry_seconds): {e}"
                    ) from e
                ep.retries += 1
                ep.down_until = now + 2.0
                delay = min(8.0, 0.25 * 2**attempt) * (0.5 + random.random())
                attempt += 1
                log.warning("%s %s: %s; retrying in %.1fs", self.name, ep.url, e, delay)
                await asyncio.sleep(delay)
            finally:
                ep.in_flight -= 1
        try:
            return parse_prompt_logprobs(sample, answer["choices"][0])
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise EngineError(f"{self.name} server {ep.url}: {e}") from e

    async def _score_all(self, samples: list[RenderedSample]) -> list[np.ndarray]:
        return await asyncio.gather(*(self._score(s) for s in samples))

    # -------------------------------------------------------------- Engine

    def response_logprobs(self, samples: list[RenderedSample]) -> list[np.ndarray]:
        if not samples:
            return []
        return self.loop.run(self._score_all(samples))

    def submit(self, samples: list[RenderedSample]) -> concurrent.futures.Future:
        """The requests of ``samples`` sent now, answered in the engine's own thread: the
        caller can send the other model's, or the next chunk's, meanwhile."""
        return self.loop.submit(self._score_all(samples))

    def info(self) -> dict:
        return {
            "engine": "served",
            "model": self.model,
            "root": self.root(),
            "endpoints": [
                {
                    "url": ep.url,
                    "requests": ep.requests,
                    "retries": ep.retries,
                    "reconnects": ep.reconnects,
                }
                for ep in self.endpoints
            ],
            "max_model_len": self.max_model_len,
            "concurrency_per_endpoint": self.cfg.concurrency,
            "start_seconds": round(self.start_seconds, 3),
        }

    def close(self) -> None:
        if self.session is not None:
            self.loop.run(self.session.close())
            self.session = None
        self.loop.close()
