"""A torch engine that computes only what scoring needs.

vLLM's prompt-logprob path runs the output head and a full log-softmax at every prompt
position. Scoring needs them only where a response token is predicted: here the model's
trunk runs on every token, and the head (``vocab x hidden``, about a third of a small
model's FLOPs per token) runs on the response positions alone, in blocks of rows.

Batching (``EngineConfig.batching``):
- ``packed`` (the default for Llama-style models): samples are concatenated without
  padding into streams of about ``forward_tokens`` tokens; every linear layer is one GEMM
  over the whole stream, and the head runs once over all the stream's response positions.
  Attention is one variable-length flash-attention call on CUDA (bf16/fp16), one SDPA
  call per sample elsewhere (see ``packed.py``). Hidden states equal the per-sample
  forward's.
- ``padded``: length-sorted right-padded batches of <= ``forward_tokens`` (the default on
  CUDA for models ``packed`` cannot reproduce, or without flash attention, e.g. fp32).
- ``single``: one sample per forward (any architecture transformers can load; the CPU
  default for models ``packed`` cannot reproduce).

On CUDA one call queues every forward and head block before it reads anything back: the
host packs the next stream while the GPU runs this one, and the call syncs once, when it
copies the logprobs back. No CUDA graphs or torch.compile: a packed forward of 16K tokens
is tens of milliseconds of GPU work even for a 1B model, against a few milliseconds of
kernel launches that run ahead of it, so graphs have nothing to hide; compiling would fuse
the elementwise work between GEMMs (``packed.py`` trims it by hand instead) at the price
of a compile per model and shape, and of a failure mode a scoring run does not need.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from fastscore._compat import import_transformers
from fastscore.config import EngineConfig
from fastscore.engines.models import require_model_dir
from fastscore.engines.packed import (
    KeepKV,
    pack_samples,
    packed_hidden,
    packing_support,
    sdpa_per_sequence,
    to_device,
    varlen_attention,
    varlen_unavailable,
)
from fastscore.engines.prefixes import PrefixCache, PrefixState, fit_budget, plan_prefixes
from fastscore.errors import EngineError, ModelError
from fastscore.records import RenderedSample

log = logging.getLogger(__name__)

_DTYPES = ("float32", "bfloat16", "float16")
# fp32 logits computed per block of rows, so memory stays bounded: 256 MiB on CPU (cache
# friendly), 512 MiB on CUDA (1,046 rows at a 128K vocabulary: blocks big enough that the
# head's GEMM runs at full rate; with the log-softmax's output, 1 GiB alive, small beside
# two resident 8B models)
HEAD_BLOCK_BYTES = {"cpu": 256 << 20, "cuda": 512 << 20}
# Tokens per forward when EngineConfig.forward_tokens is None. CUDA packed: 16K rows
# already run the GEMMs of a 1B or 8B model at full rate (128 row tiles times the column
# tiles is several waves over 132 SMs), and the host launches a forward's few hundred
# kernels in a few ms while the GPU works ~80 ms (1B) to ~0.5 s (8B) on it; more rows buy
# nothing but memory. With the in-place MLP an 8B forward of 16K tokens should need about
# 1.2 GiB beyond the two resident models' 30 GiB (an estimate; fastscore bench --gpu measures
# it), which keeps the engine well under 0.6x of padded transformers' peak.
DEFAULT_FORWARD_TOKENS = {
    ("cpu", "packed"): 1024,
    ("cuda", "packed"): 16384,
    ("cpu", "padded"): 16384,
    ("cuda", "padded"): 16384,
}


class TorchEngine:
    """``model``: a local checkpoint directory, or an already-built transformers causal LM
    (benchmarks and tests that build models in memory; ``cfg.dtype`` other than auto
    converts it)."""

    def __init__(
        self, model: str | Path | Any, cfg: EngineConfig, *, name: str, pool: str | None = None
    ):
        """``pool``: "prompt" (or "response") makes each ``response_logprobs`` call also
        leave ``self.pooled``, float32 ``[len(samples), hidden]``: each sample's final
        hidden states (the head's input) averaged over its prompt tokens (every token not
        scored) or its response tokens, from the same forward; None when off. Coverage
        features (``coverage.project_pooled``) are made from them."""
        import torch

        if pool not in (None, "prompt", "response"):
            raise ValueError(f"pool must be None, 'prompt' or 'response', got {pool!r}")
        self.name, self.cfg = name, cfg
        self.pool, self.pooled, self._pooled_parts = pool, None, []
        self.switch = None  # an AdapterSwitch when a peft adapter is the reference
        self.device = resolve_device(cfg.device)
        if cfg.dtype == "auto":
            dtype = "auto"
        elif cfg.dtype in _DTYPES:
            dtype = getattr(torch, cfg.dtype)
        else:
            raise ModelError(f"dtype must be auto or one of {_DTYPES}, got {cfg.dtype!r}")
        self.quant = None
        if cfg.quantize == "fp8":  # before any weight is read: said at once where it cannot run
            from fastscore.engines import fp8

            fp8.require(self.device)
            dtype = torch.bfloat16  # everything but the trunk's products
        t0 = time.perf_counter()
        if isinstance(model, (str, Path)):
            require_model_dir(model)
            self.model_path = str(model)
            tf = import_transformers()
            try:
                m = tf.AutoModelForCausalLM.from_pretrained(
                    model, dtype=dtype, trust_remote_code=cfg.trust_remote_code
                )
            except Exception as e:
                raise EngineError(
                    f"could not load the {name} model {self.model_path!r}: {e}"
                ) from e
        else:
            m = model if dtype == "auto" else model.to(dtype)
            self.model_path = getattr(m, "name_or_path", "") or f"<in-memory {type(m).__name__}>"
        self.model = m.to(self.device).eval()
        if cfg.quantize == "fp8":
            from fastscore.engines import fp8

            self.quant = fp8.quantize_model(self.model, keep_ends=cfg.fp8_keep_ends)
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
        self._choose_batching(packing_support(m))
        on = "cuda" if self.device.type == "cuda" else "cpu"
        self.forward_tokens = cfg.forward_tokens or DEFAULT_FORWARD_TOKENS.get((on, self.batching))
        self.head_block_bytes = HEAD_BLOCK_BYTES[on]
        self.fp32_head_gemm = _fp32_gemm_works(self.head, self.device)
        share = self.batching == "packed" and cfg.share_prefixes
        self.prefixes = PrefixCache(int(cfg.prefix_cache_gb * (1 << 30))) if share else None
        self.start_seconds = time.perf_counter() - t0
        log.info("%s torch engine up in %.1fs on %s", name, self.start_seconds, self.device)

    def _choose_batching(self, not_packable: str | None) -> None:
        """``auto`` -> packed where it reproduces the model (and, on CUDA, where flash
        attention runs), else padded on CUDA and single on CPU; ``note`` says why."""
        on_cpu = self.device.type == "cpu"
        attn = self.model.get_decoder().layers[0].self_attn if not not_packable else None
        no_varlen = (
            varlen_unavailable(self.device, self.dtype, attn.head_dim) if attn is not None else None
        )
        self.note = None
        self.batching = self.cfg.batching
        if self.batching == "auto":
            if not_packable is not None:
                self.batching = "single" if on_cpu else "padded"
                self.note = f"packed batching not possible: {not_packable}"
            elif on_cpu or no_varlen is None:
                self.batching = "packed"
            else:
                self.batching = "padded"
                self.note = f"packed batching needs flash attention: {no_varlen}"
        if self.batching == "packed" and not_packable is not None:
            raise ModelError(
                f"{self.model_path}: batching='packed' is not possible: {not_packable}"
            )
        self.attention, self.attention_name = None, None
        if self.batching == "packed":
            if no_varlen is None:
                self.attention, self.attention_name = varlen_attention, "varlen-flash"
            else:
                self.attention, self.attention_name = sdpa_per_sequence, "sdpa-per-sample"
                if not on_cpu:
                    self.note = f"one attention call per sample: {no_varlen}"

    @property
    def dtype(self):
        return next(self.model.parameters()).dtype

    def info(self) -> dict:
        out = {
            "engine": "torch",
            "model": self.model_path,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "batching": self.batching,
            "forward_tokens": self.forward_tokens,
            "start_seconds": round(self.start_seconds, 3),
        }
        if self.attention_name:
            out["attention"] = self.attention_name
        if self.switch is not None:
            out["adapter"] = "on" if self.switch.on else "off"
        if self.quant is not None:
            out["quantize"] = {"fp8": self.quant}
        # the head's GEMM writes fp32 logits where torch can (bf16/fp16 weights on CUDA),
        # else the model's dtype, upcast before the log-softmax
        out["head_logits"] = "float32" if self.fp32_head_gemm else out["dtype"]
        if self.note:
            out["note"] = self.note
        if self.prefixes is not None:
            c = self.prefixes.counts
            out["prefix_sharing"] = {
                # tokens run through the trunk, and those a shared prefix spared
                "tokens_computed": c["tokens_computed"],
                "tokens_skipped": c["tokens_skipped"],
                "prefixes_run": c["prefixes_run"],
                "prefixes_reused": c["prefixes_reused"],
                "evictions": c["evictions"],
                "kept_bytes_peak": c["peak_bytes"],
                "budget_bytes": self.prefixes.budget,
            }
        return out

    def response_logprobs(self, samples: list[RenderedSample]) -> list[np.ndarray]:
        import torch

        self.pooled = None
        if not samples:
            return []
        self._pooled_parts = []
        with torch.inference_mode(), self.switch or contextlib.nullcontext():
            if self.batching == "single":
                groups, run = [[i] for i in range(len(samples))], self._one
            elif self.batching == "packed" and self.prefixes is not None:
                groups, run = self._shared_prefixes(samples)
            elif self.batching == "packed":
                groups, run = pack_groups(samples, self.forward_tokens), self._packed
            else:
                groups, run = length_batches(samples, self.forward_tokens), self._padded
            # every group is queued before anything is read back: one sync, here
            parts = [run([samples[i] for i in g]) for g in groups]
            flat = torch.cat(parts).cpu().numpy().astype(np.float64)
            pooled = torch.cat(self._pooled_parts).cpu().numpy() if self.pool else None
        order = [i for g in groups for i in g]
        if pooled is not None:
            self.pooled = np.empty_like(pooled)
            self.pooled[order] = pooled
        split = np.cumsum([samples[i].n_response_tokens for i in order])[:-1]
        out: list[np.ndarray | None] = [None] * len(samples)
        for i, lp in zip(order, np.split(flat, split), strict=True):
            out[i] = lp
        return out

    def _packed(self, batch: list[RenderedSample], prefixes=None):
        host = pack_samples(batch, prefixes)
        b = to_device(host, self.device)
        hidden = packed_hidden(self.model, b, self.attention)  # [T, hidden]
        if host.extra:  # the rows of the samples' shared prefixes, after the stream's
            import torch

            hidden = torch.cat([hidden, *(st.hidden for st in host.extra)])
        if self.pool:
            rows, seg = pool_rows(batch, self.pool)
            cuts = np.cumsum(np.bincount(seg, minlength=len(batch)))[:-1]
            rows = np.concatenate([host.row_of(i, r) for i, r in enumerate(np.split(rows, cuts))])
            self._pool(hidden, rows, seg, n=len(batch))
        return self._head_logprobs(hidden[b.rows], b.targets)

    def _shared_prefixes(self, samples: list[RenderedSample]):
        """The token prefixes the samples share, each run once (``engines.prefixes``);
        returns the groups of samples to run and how (their remainders, packed)."""
        cache = self.prefixes
        plan = plan_prefixes(
            [s.token_ids for s in samples],
            cached=cache.__contains__,
            cached_lengths=cache.lengths(),
        )
        # the new prefixes' states live through the call: at most the budget's worth
        plan = fit_budget(plan, cache.budget // self._prefix_bytes_per_token())
        # the kept ones this call uses, held (and made recent) before new ones may evict them
        held = {k: cache.get(k) for k in set(plan.keys) - set(plan.build) if k is not None}
        built = self._run_prefixes(plan.build)
        states = [None if k is None else built.get(k) or held[k] for k in plan.keys]
        c = cache.counts
        c["prefixes_run"] += len(built)
        c["prefixes_reused"] += len({k for k in plan.keys if k is not None} - set(built))
        c["tokens_skipped"] += sum(plan.lengths) - sum(st.length for st in built.values())
        c["tokens_computed"] += sum(st.length for st in built.values()) + sum(
            s.n_tokens - p for s, p in zip(samples, plan.lengths, strict=True)
        )
        remainders = [
            RenderedSample(s.index, s.id, s.token_ids[p:], s.response_positions)
            for s, p in zip(samples, plan.lengths, strict=True)
        ]  # (only their lengths: pack_groups balances the streams by tokens run)
        groups = pack_groups(remainders, self.forward_tokens)
        by_sample = {id(s): st for s, st in zip(samples, states, strict=True)}

        def run(batch: list[RenderedSample]):
            return self._packed(batch, [by_sample[id(s)] for s in batch])

        return groups, run

    def _run_prefixes(self, build: dict) -> dict:
        """New shared prefixes, packed into streams: their keys and values per layer and
        final hidden states, kept in the cache (and returned, for this call)."""
        if not build:
            return {}
        keys = list(build)
        fake = [RenderedSample(-1, None, build[k], np.zeros(0, np.int64)) for k in keys]
        out = {}
        for g in pack_groups(fake, self.forward_tokens):
            b = to_device(pack_samples([fake[i] for i in g]), self.device)
            cu = b.cu_host.tolist()
            kept = KeepKV([(cu[j], cu[j + 1]) for j in range(len(g))])
            hidden = packed_hidden(self.model, b, self.attention, keep=kept)
            for j, i in enumerate(g):
                s, e = cu[j], cu[j + 1]
                st = PrefixState(keys[i], e - s, kept.k[j], kept.v[j], hidden[s:e].clone())
                out[keys[i]] = st
                self.prefixes.put(st)
        return out

    def _prefix_bytes_per_token(self) -> int:
        """What a prefix's kept state costs per token: keys and values in every layer,
        and the final hidden state."""
        c, size = self.model.config, self.dtype.itemsize
        attn = self.trunk.layers[0].self_attn
        kv = c.num_hidden_layers * 2 * getattr(c, "num_key_value_heads", c.num_attention_heads)
        return max(1, (kv * attn.head_dim + c.hidden_size) * size)

    def _pool(self, hidden, rows: np.ndarray, seg: np.ndarray, *, n: int) -> None:
        """Mean of ``hidden[rows]`` per sample ``seg`` (fp32), kept for ``self.pooled``."""
        import torch

        r = torch.from_numpy(rows).to(self.device)
        g = torch.from_numpy(seg).to(self.device)
        sums = torch.zeros((n, hidden.shape[-1]), dtype=torch.float32, device=self.device)
        sums.index_add_(0, g, hidden[r].float())
        counts = torch.from_numpy(np.bincount(seg, minlength=n)).to(self.device)
        self._pooled_parts.append(sums / counts.clamp(min=1)[:, None])

    def _one(self, batch: list[RenderedSample]):
        import torch

        (s,) = batch
        ids = torch.from_numpy(s.token_ids.astype(np.int64)).to(self.device)[None]
        hidden = self.trunk(input_ids=ids).last_hidden_state[0]  # [n, hidden]
        if self.pool:
            self._pool(hidden, *pool_rows(batch, self.pool), n=1)
        pos = torch.from_numpy(s.response_positions.astype(np.int64)).to(self.device)
        # hidden[t] predicts token t+1
        return self._head_logprobs(hidden[pos - 1], ids[0, pos])

    def _padded(self, batch: list[RenderedSample]):
        import torch

        width = max(s.n_tokens for s in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, s in enumerate(batch):
            ids[row, : s.n_tokens] = torch.from_numpy(s.token_ids.astype(np.int64))
            mask[row, : s.n_tokens] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        hidden = self.trunk(input_ids=ids, attention_mask=mask).last_hidden_state
        if self.pool:
            cols, seg = pool_rows(batch, self.pool)
            flat = hidden.reshape(-1, hidden.shape[-1])  # [B * width, hidden]
            self._pool(flat, seg * width + cols, seg, n=len(batch))
        rows = np.concatenate([np.full(s.n_response_tokens, r) for r, s in enumerate(batch)])
        cols = np.concatenate([s.response_positions for s in batch]).astype(np.int64)
        r = torch.from_numpy(rows).to(self.device)
        c = torch.from_numpy(cols).to(self.device)
        return self._head_logprobs(hidden[r, c - 1], ids[r, c])

    def _head_logprobs(self, h, targets):
        """log p(target | h) per row, fp32 on the device: the head, then a log-softmax over
        the vocabulary, a block of rows at a time."""
        import torch

        w = self.head.weight
        if h.shape[0] == 0:
            return torch.zeros(0, dtype=torch.float32, device=h.device)
        block = max(1, self.head_block_bytes // (4 * w.shape[0]))
        parts = []
        for b in range(0, h.shape[0], block):
            if self.fp32_head_gemm:
                # bf16 operands, fp32 accumulation written out as fp32: the logits are not
                # rounded to bf16 (an error of ~0.05 at a logit of 20) before the softmax
                logits = torch.mm(h[b : b + block], w.t(), out_dtype=torch.float32)
            else:
                logits = self.head(h[b : b + block]).float()
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            # one fused kernel (two reads of the block, one write) where an explicit
            # logsumexp makes six passes; measured 12% of a 1B model's time on an H200
            lp = torch.log_softmax(logits, dim=1)
            parts.append(lp.gather(1, targets[b : b + block, None])[:, 0])
        return torch.cat(parts)

    def close(self) -> None:
        self.model = self.trunk = self.head = None


def resolve_device(spec: str):
    """``--device``: auto is cuda when there is one, else cpu."""
    import torch

    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(spec)


def _fp32_gemm_works(head, device) -> bool:
    """Whether torch.mm writes this half-precision head's product straight to fp32 here
    (``out_dtype``, aten::mm.dtype: CUDA only, torch >= 2.8)."""
    import torch

    w = getattr(head, "weight", None)
    if device.type != "cuda" or w is None or w.dtype not in (torch.bfloat16, torch.float16):
        return False
    if getattr(head, "bias", None) is not None or type(head) is not torch.nn.Linear:
        return False
    try:
        with torch.inference_mode():
            a = torch.ones((2, w.shape[1]), dtype=w.dtype, device=device)
            got = torch.mm(a, w[:4].t(), out_dtype=torch.float32)
            want = a.float() @ w[:4].float().t()
            return bool(torch.allclose(got, want, rtol=1e-3, atol=1e-3))
    except (TypeError, RuntimeError, NotImplementedError):
        return False


def pool_rows(samples: list[RenderedSample], which: str) -> tuple[np.ndarray, np.ndarray]:
    """(positions within each sample, the sample of each), int64, of the tokens pooled:
    "response" the scored tokens, "prompt" every other one (position 0 included)."""
    pos, seg = [], []
    for n, s in enumerate(samples):
        if which == "response":
            p = s.response_positions.astype(np.int64)
        else:
            keep = np.ones(s.n_tokens, dtype=bool)
            keep[s.response_positions] = False
            p = np.flatnonzero(keep).astype(np.int64)
        pos.append(p)
        seg.append(np.full(p.shape[0], n, dtype=np.int64))
    return np.concatenate(pos), np.concatenate(seg)


def pack_groups(samples: list[RenderedSample], forward_tokens: int) -> list[list[int]]:
    """Consecutive indices holding <= forward_tokens tokens each (a longer sample alone),
    balanced: as few groups as the budget allows, of about equal size, so that a call a
    little over the budget makes two half-size forwards rather than a full one and a
    sliver."""
    total = sum(s.n_tokens for s in samples)
    target = -(-total // max(1, -(-total // forward_tokens)))  # ceil(total / n_groups)
    groups, cur, size = [], [], 0
    for i, s in enumerate(samples):
        if cur and size + s.n_tokens > forward_tokens:
            groups.append(cur)
            cur, size = [], 0
        cur.append(i)
        size += s.n_tokens
        if size >= target:
            groups.append(cur)
            cur, size = [], 0
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
