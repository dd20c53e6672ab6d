"""Engines: anything that returns, per sample, the logprob of each response token."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from fastscore.records import RenderedSample


class Engine(Protocol):
    """An engine may also have ``submit(samples) -> concurrent.futures.Future`` of the same
    list, sent at once and answered later (the served engine): the stream then keeps both
    models' requests, and the next chunk's, in flight together."""

    name: str

    def response_logprobs(self, samples: list[RenderedSample]) -> list[np.ndarray]:
        """float64 [n_response_tokens] per sample: log p(token_t | tokens_<t) at each
        response position, in the order of ``samples``."""
        ...

    def info(self) -> dict: ...

    def close(self) -> None: ...
