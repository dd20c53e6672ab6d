"""A torch engine that computes only what scoring needs.

vLLM's prompt-logprob path runs the output head and a full log-softmax at every prompt
position. Scoring needs them only where a response token is predicted: here the model's
trunk runs on every token, and the head (``vocab x hidden``, about a third of a small
model's FLOPs per token) runs on the response positions alone.

Batching: on CPU one sample per forward pass is fastest (no padding; measured in
benchmarks/throughput.py). With ``forward_tokens`` set (the default on a GPU), samples are
sorted by length and grouped into right-padded batches of at most that many tokens.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .._compat import import_transformers
from ..config import EngineConfig
from ..errors import EngineError, ModelError
from ..models import require_model_dir
from ..records import RenderedSample

log = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
HEAD_BLOCK_BYTES = 256 << 20  # logits computed per block of rows, so memory stays bounded


class TorchEngine:
    def __init__(self, model: str | Path, cfg: EngineConfig, *, name: str):
        import torch

        require_model_dir(model)
        self.name, self.model_path, self.cfg = name, str(model), cfg
        tf = import_transformers()
        device = (
            cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.device = torch.device(device)
        if cfg.dtype == "auto":
            dtype = "auto"
        elif cfg.dtype in _DTYPES:
            dtype = getattr(torch, _DTYPES[cfg.dtype])
        else:
            raise ModelError(f"dtype must be auto or one of {sorted(_DTYPES)}, got {cfg.dtype!r}")
        t0 = time.perf_counter()
        try:
            m = tf.AutoModelForCausalLM.from_pretrained(
                model, dtype=dtype, trust_remote_code=cfg.trust_remote_code
            )
        except Exception as e:
            raise EngineError(f"could not load the {name} model {self.model_path!r}: {e}") from e
        self.model = m.to(self.device).eval()
        self.trunk = m.get_decoder()
        self.head = m.get_output_embeddings()
        if self.head is None:
            raise ModelError(f"{self.model_path}: the model has no output embeddings (LM head)")
        for attr in ("logit_scale", "output_multiplier_scale"):
            if getattr(m.config, attr, None) not in (None, 1, 1.0):
                raise ModelError(
                    f"{self.model_path}: config.{attr} rescales logits, which the torch engine "
                    "does not apply; use --engine vllm"
                )
        self.softcap = getattr(m.config, "final_logit_softcapping", None)
        self.forward_tokens = cfg.forward_tokens
        if self.forward_tokens is None and self.device.type != "cpu":
            self.forward_tokens = 16384
        self.start_seconds = time.perf_counter() - t0
        log.info("%s torch engine up in %.1fs on %s", name, self.start_seconds, self.device)

    def info(self) -> dict:
        return {
            "engine": "torch",
            "model": self.model_path,
            "device": str(self.device),
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "forward_tokens": self.forward_tokens,
            "start_seconds": round(self.start_seconds, 3),
        }

    def response_logprobs(self, samples: list[RenderedSample]) -> list[np.ndarray]:
        import torch

        out: list[np.ndarray | None] = [None] * len(samples)
        with torch.inference_mode():
            if self.forward_tokens is None:
                for i, s in enumerate(samples):
                    out[i] = self._one(s)
            else:
                for batch in length_batches(samples, self.forward_tokens):
                    for i, lp in zip(batch, self._padded([samples[i] for i in batch])):
                        out[i] = lp
        return out

    def _one(self, s: RenderedSample) -> np.ndarray:
        import torch

        ids = torch.from_numpy(s.token_ids.astype(np.int64)).to(self.device)[None]
        hidden = self.trunk(input_ids=ids).last_hidden_state[0]  # [n, hidden]
        pos = torch.from_numpy(s.response_positions.astype(np.int64)).to(self.device)
        # hidden[t] predicts token t+1
        return self._head_logprobs(hidden[pos - 1], ids[0, pos])

    def _padded(self, batch: list[RenderedSample]) -> list[np.ndarray]:
        import torch

        width = max(s.n_tokens for s in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, s in enumerate(batch):
            ids[row, : s.n_tokens] = torch.from_numpy(s.token_ids.astype(np.int64))
            mask[row, : s.n_tokens] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        hidden = self.trunk(input_ids=ids, attention_mask=mask).last_hidden_state
        rows = np.concatenate([np.full(s.n_response_tokens, r) for r, s in enumerate(batch)])
        cols = np.concatenate([s.response_positions for s in batch]).astype(np.int64)
        r = torch.from_numpy(rows).to(self.device)
        c = torch.from_numpy(cols).to(self.device)
        lp = self._head_logprobs(hidden[r, c - 1], ids[r, c])
        return np.split(lp, np.cumsum([s.n_response_tokens for s in batch])[:-1])

    def _head_logprobs(self, h, targets) -> np.ndarray:
        """log p(target | h) for each row: the head and a log-softmax over the vocabulary."""
        import torch

        vocab = self.head.weight.shape[0]
        block = max(1, HEAD_BLOCK_BYTES // (4 * vocab))
        parts = []
        for b in range(0, h.shape[0], block):
            logits = self.head(h[b : b + block]).float()
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            tgt = targets[b : b + block, None]
            parts.append(logits.gather(1, tgt)[:, 0] - torch.logsumexp(logits, dim=-1))
        return torch.cat(parts).double().cpu().numpy()

    def close(self) -> None:
        self.model = self.trunk = self.head = None


def length_batches(samples: list[RenderedSample], forward_tokens: int) -> list[list[int]]:
    """Indices grouped longest first so that each padded batch holds <= forward_tokens."""
    order = sorted(range(len(samples)), key=lambda i: -samples[i].n_tokens)
    batches, cur = [], []
    for i in order:
        width = samples[cur[0]].n_tokens if cur else samples[i].n_tokens
        if cur and width * (len(cur) + 1) > forward_tokens:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches
