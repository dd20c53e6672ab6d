"""A torch engine that computes only what scoring needs.

vLLM's prompt-logprob path runs the output head and a full log-softmax at every prompt
position. Scoring needs them only where a response token is predicted: here the model's
trunk runs on every token, and the head (``vocab x hidden``, about a third of a small
model's FLOPs per token) runs on the response positions alone.

Batching (``EngineConfig.batching``):
- ``packed`` (CPU default for Llama-style models): samples are concatenated without
  padding into streams of about ``forward_tokens`` tokens; every linear layer is one GEMM
  over the whole stream, attention runs per sample, and the head runs once over all the
  stream's response positions. Hidden states equal the per-sample forward's.
- ``padded`` (GPU default): length-sorted right-padded batches of <= ``forward_tokens``.
- ``single``: one sample per forward (any architecture transformers can load).
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

_DTYPES = ("float32", "bfloat16", "float16")
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
            dtype = getattr(torch, cfg.dtype)
        else:
            raise ModelError(f"dtype must be auto or one of {_DTYPES}, got {cfg.dtype!r}")
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
        packable = packing_support(m)
        on_cpu = self.device.type == "cpu"
        self.batching = cfg.batching
        if self.batching == "auto":
            self.batching = (
                "packed" if on_cpu and packable is None else ("single" if on_cpu else "padded")
            )
        if self.batching == "packed" and packable is not None:
            raise ModelError(f"{self.model_path}: batching='packed' is not possible: {packable}")
        self.forward_tokens = cfg.forward_tokens or {"packed": 1024, "padded": 16384}.get(
            self.batching
        )
        self.start_seconds = time.perf_counter() - t0
        log.info("%s torch engine up in %.1fs on %s", name, self.start_seconds, self.device)

    def info(self) -> dict:
        return {
            "engine": "torch",
            "model": self.model_path,
            "device": str(self.device),
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "batching": self.batching,
            "forward_tokens": self.forward_tokens,
            "start_seconds": round(self.start_seconds, 3),
        }

    def response_logprobs(self, samples: list[RenderedSample]) -> list[np.ndarray]:
        import torch

        out: list[np.ndarray | None] = [None] * len(samples)
        with torch.inference_mode():
            if self.batching == "single":
                for i, s in enumerate(samples):
                    out[i] = self._one(s)
            else:
                groups = (
                    pack_groups(samples, self.forward_tokens)
                    if self.batching == "packed"
                    else length_batches(samples, self.forward_tokens)
                )
                run = self._packed if self.batching == "packed" else self._padded
                for group in groups:
                    for i, lp in zip(group, run([samples[i] for i in group])):
                        out[i] = lp
        return out

    def _packed(self, batch: list[RenderedSample]) -> list[np.ndarray]:
        import torch

        ids = [torch.from_numpy(s.token_ids.astype(np.int64)) for s in batch]
        hidden, starts = packed_hidden(self.model, [t.to(self.device) for t in ids])
        # hidden[starts[i] + t] predicts token t+1 of sample i
        rows = np.concatenate(
            [starts[i] + s.response_positions.astype(np.int64) - 1 for i, s in enumerate(batch)]
        )
        targets = torch.cat(
            [t[torch.from_numpy(s.response_positions.astype(np.int64))] for t, s in zip(ids, batch)]
        ).to(self.device)
        lp = self._head_logprobs(hidden[torch.from_numpy(rows).to(self.device)], targets)
        return np.split(lp, np.cumsum([s.n_response_tokens for s in batch])[:-1])

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


PACKABLE_TYPES = ("llama", "mistral", "qwen2")


def packing_support(model) -> str | None:
    """None when ``packed_hidden`` reproduces the model's forward, else why not."""
    c = model.config
    if c.model_type not in PACKABLE_TYPES:
        return f"model_type {c.model_type!r} is not one of {PACKABLE_TYPES}"
    if getattr(c, "sliding_window", None) and getattr(c, "use_sliding_window", True):
        return "sliding-window attention"
    inner = model.get_decoder()
    for name in ("embed_tokens", "layers", "norm", "rotary_emb"):
        if not hasattr(inner, name):
            return f"the decoder has no {name!r}"
    a = inner.layers[0].self_attn
    if any(hasattr(a, n) for n in ("q_norm", "k_norm")):
        return "q/k normalisation"
    return None


def packed_hidden(model, ids: list):
    """Final hidden states of several sequences run as one unpadded stream.

    Linear layers see all tokens at once ([1, T, hidden]); rotary positions restart at
    each sequence; attention is causal within each sequence only. Returns ([T, hidden],
    start offset of each sequence).
    """
    import torch
    import torch.nn.functional as F
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    inner = model.get_decoder()
    lens = [int(t.shape[0]) for t in ids]
    starts = np.cumsum([0, *lens])
    total = int(starts[-1])
    pos = torch.cat([torch.arange(n, device=ids[0].device) for n in lens])[None]
    x = inner.embed_tokens(torch.cat(ids))[None]  # [1, T, hidden]
    cos, sin = inner.rotary_emb(x, pos)
    for layer in inner.layers:
        a = layer.self_attn
        h = layer.input_layernorm(x)
        q = a.q_proj(h).view(1, total, -1, a.head_dim).transpose(1, 2)  # [1, heads, T, hd]
        k = a.k_proj(h).view(1, total, -1, a.head_dim).transpose(1, 2)
        v = a.v_proj(h).view(1, total, -1, a.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        att = torch.empty_like(q)
        for s, e in zip(starts[:-1], starts[1:]):
            att[:, :, s:e] = F.scaled_dot_product_attention(
                q[:, :, s:e],
                k[:, :, s:e],
                v[:, :, s:e],
                is_causal=True,
                scale=a.scaling,
                enable_gqa=True,
            )
        x = x + a.o_proj(att.transpose(1, 2).reshape(1, total, -1))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return inner.norm(x)[0], starts


def pack_groups(samples: list[RenderedSample], forward_tokens: int) -> list[list[int]]:
    """Consecutive indices holding <= forward_tokens tokens each (a longer sample alone)."""
    groups, cur, total = [], [], 0
    for i, s in enumerate(samples):
        if cur and total + s.n_tokens > forward_tokens:
            groups.append(cur)
            cur, total = [], 0
        cur.append(i)
        total += s.n_tokens
    if cur:
        groups.append(cur)
    return groups


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
