"""An HTTP proxy in front of a real vLLM server that spoils chosen answers, for the served
engine's fault tests. Only ``/v1/completions`` requests take faults; each takes the next
one queued in ``faults`` (or ``storm`` when set), then requests pass through untouched.

Faults: ``503`` (an overloaded server), ``slow`` (answers after ``slow_seconds``),
``truncated`` (half the JSON body, with a matching length), ``cut`` (the connection drops
half-way through a body announced at full length), ``wrong_prompt`` (the answer is for
another prompt: one prompt token id changed), ``neg_inf`` (every prompt logprob -inf, as
vLLM writes it in JSON: -9999.0).
"""

from __future__ import annotations

import asyncio
import threading

import orjson
from aiohttp import ClientSession, web

from fastscore.engines.servers import free_port


class FaultProxy:
    def __init__(self, upstream: str, slow_seconds: float = 6.0):
        self.upstream = upstream.rstrip("/")
        self.slow_seconds = slow_seconds
        self.faults: list[str] = []
        self.storm: str | None = None
        self.seen: list[str] = []  # the fault (or "pass") each completion request got
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(30), "the fault proxy did not start"
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self.session = ClientSession()
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()
        await self.session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = None
        if request.path == "/v1/completions":
            fault = self.storm or (self.faults.pop(0) if self.faults else None)
            self.seen.append(fault or "pass")
        if fault == "503":
            return web.Response(status=503, text="server overloaded")
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
        headers = {k: v for k, v in request.headers.items() if k in ("Authorization",)}
        async with self.session.request(
            request.method,
            self.upstream + request.path_qs,
            data=await request.read(),
            headers={**headers, "Content-Type": "application/json"},
        ) as r:
            body, status = await r.read(), r.status
        if fault == "truncated":
            body = body[: len(body) // 2]
        if fault == "wrong_prompt":
            answer = orjson.loads(body)
            answer["choices"][0]["prompt_token_ids"][1] += 1
            body = orjson.dumps(answer)
        if fault == "neg_inf":
            answer = orjson.loads(body)
            for entry in answer["choices"][0]["prompt_logprobs"]:
                for lp in (entry or {}).values():
                    lp["logprob"] = -9999.0
            body = orjson.dumps(answer)
        if fault == "cut":
            resp = web.StreamResponse(
                status=status,
                headers={"Content-Type": "application/json", "Content-Length": str(len(body))},
            )
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            request.transport.close()
            return resp
        return web.Response(body=body, status=status, content_type="application/json")
