"""Several samples run as one unpadded stream through a Llama-style trunk.

Padding wastes the arithmetic of every pad token, and one forward per sample leaves a GPU
idle between small kernels. Packing concatenates the samples: every linear layer is one
GEMM over the whole stream ([T, hidden]); rotary positions restart at each sample; and
attention stays causal within each sample. On CUDA that attention is one call of torch's
variable-length flash attention (``torch.nn.attention.varlen.varlen_attn``) over the
stream, given the samples' cumulative lengths (``cu_seqlens``). Elsewhere (CPU, fp32) it
is one SDPA call per sample, so the rest of the path (positions, cu_seqlens, the rows the
head runs on) is the same code on both devices and is tested on CPU.

``pack_samples`` builds the host-side arrays (pure numpy); ``to_device`` moves them in one
copy (pinned, non-blocking on CUDA, so the host can prepare the next stream while the GPU
runs this one); ``packed_hidden`` runs the trunk.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastscore.records import RenderedSample


def stream_layout(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cu_seqlens int32 [n+1], positions int64 [T]) of sequences of ``lengths`` packed end
    to end: cu_seqlens[i] is where sequence i starts (the last entry is T), and each token's
    position counts from its own sequence's start."""
    lengths = np.asarray(lengths, dtype=np.int64)
    cu = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=cu[1:])
    positions = np.arange(cu[-1], dtype=np.int64) - np.repeat(cu[:-1], lengths)
    return cu.astype(np.int32), positions


@dataclass(frozen=True)
class PackedBatch:
    """Samples as one stream, on the host. Row r of the head's input is the hidden state at
    ``rows[r]``, which predicts ``targets[r]``; the rows come sample by sample, in order.

    With shared prefixes (``engines.prefixes``), sample i's first ``skip[i]`` tokens are
    not in the stream: they are ``prefixes[i]``'s, run before, whose keys and values its
    remainder attends to; rows past the stream's ``T`` are those prefixes' hidden states
    (``hidden_of``: the stream's, then each of ``extra``'s, in order)."""

    token_ids: np.ndarray  # int64 [T]
    positions: np.ndarray  # int64 [T]
    cu_seqlens: np.ndarray  # int32 [n+1]
    max_len: int
    rows: np.ndarray  # int64 [R]
    targets: np.ndarray  # int64 [R]
    skip: np.ndarray | None = None  # int64 [n]: each sample's prefix length
    prefixes: tuple = ()  # per sample: its PrefixState or None
    extra: tuple = ()  # the distinct PrefixStates, in order of first use
    extra_at: np.ndarray | None = None  # int64 [n]: where sample i's prefix rows start

    @property
    def n_tokens(self) -> int:
        return int(self.token_ids.shape[0])

    def row_of(self, i: int, rows: np.ndarray) -> np.ndarray:
        """Where sample i's hidden rows ``rows`` (its own positions) are in ``hidden_of``."""
        rows = rows.astype(np.int64)
        at = self.cu_seqlens[i] + rows
        if self.skip is None or not self.skip[i]:
            return at
        p = self.skip[i]
        return np.where(rows >= p, at - p, self.extra_at[i] + rows)


def pack_samples(samples: list[RenderedSample], prefixes=None) -> PackedBatch:
    """``prefixes``: per sample, the ``PrefixState`` it starts with (or None)."""
    prefixes = tuple(prefixes) if prefixes is not None else (None,) * len(samples)
    skip = np.asarray([0 if st is None else st.length for st in prefixes], dtype=np.int64)
    lengths = np.asarray([s.n_tokens for s in samples], dtype=np.int64) - skip
    cu, positions = stream_layout(lengths)
    positions = positions + np.repeat(skip, lengths)  # a remainder goes on after its prefix
    ids = np.concatenate([s.token_ids[p:] for s, p in zip(samples, skip, strict=True)])
    ids = ids.astype(np.int64)
    extra, first, extra_at = [], {}, np.zeros(len(samples), dtype=np.int64)
    top = int(cu[-1])
    for i, st in enumerate(prefixes):
        if st is None:
            continue
        if st.key not in first:
            first[st.key] = top
            extra.append(st)
            top += st.length
        extra_at[i] = first[st.key]
    shared = bool(extra)
    b = PackedBatch(ids, positions, cu, int(lengths.max()), np.zeros(0, np.int64),
                    np.zeros(0, np.int64), skip if shared else None, prefixes if shared else (),
                    tuple(extra), extra_at if shared else None)  # fmt: skip
    # hidden[t] predicts token t + 1, so response token p of sample i is read at its row
    # p - 1 (p >= 1 always: position 0 has nothing to be predicted from)
    rows = [b.row_of(i, s.response_positions - 1) for i, s in enumerate(samples)]
    targets = [s.token_ids[s.response_positions].astype(np.int64) for s in samples]
    return dataclasses.replace(b, rows=np.concatenate(rows), targets=np.concatenate(targets))


@dataclass(frozen=True)
class DeviceBatch:
    """A ``PackedBatch`` on the model's device; ``cu_host`` and ``max_len`` stay on the host
    so that neither attention path has to read the device back (a sync)."""

    token_ids: Any  # torch int64 [T]
    positions: Any  # torch int64 [T]
    cu_seqlens: Any  # torch int32 [n+1]
    rows: Any  # torch int64 [R]
    targets: Any  # torch int64 [R]
    cu_host: np.ndarray
    max_len: int
    prefixes: tuple = ()  # per sample: its PrefixState or None (host side, as in PackedBatch)
    cu_k: Any = None  # torch int32 [n+1]: where each sample's keys start, prefix included
    max_len_k: int = 0


def to_device(b: PackedBatch, device) -> DeviceBatch:
    """One host-to-device copy of all the batch's index arrays."""
    import torch

    parts = (b.token_ids, b.positions, b.cu_seqlens.astype(np.int64), b.rows, b.targets)
    host = torch.from_numpy(np.concatenate(parts))
    if device.type == "cuda":
        # pinned, so the copy is asynchronous: the caller goes on queueing kernels (and
        # packing the next stream) while it runs; the caching host allocator keeps the
        # buffer alive until the copy is done
        dev = host.pin_memory().to(device, non_blocking=True)
    else:
        dev = host.to(device)
    t, n, r = b.n_tokens, b.cu_seqlens.shape[0], b.rows.shape[0]
    ids, pos, cu, rows, tgt = torch.split(dev, [t, t, n, r, r])
    out = DeviceBatch(ids, pos, cu.to(torch.int32), rows, tgt, b.cu_seqlens, b.max_len)
    if not b.prefixes:
        return out
    lengths = np.diff(b.cu_seqlens.astype(np.int64)) + b.skip
    cu_k = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=cu_k[1:])
    kw = {"non_blocking": True} if device.type == "cuda" else {}
    return dataclasses.replace(
        out,
        prefixes=b.prefixes,
        cu_k=torch.from_numpy(cu_k).to(device, **kw).to(torch.int32),
        max_len_k=int(lengths.max()),
    )


def prefix_keys(k, v, batch: DeviceBatch, layer: int):
    """Keys and values of the stream with each sample's prefix's placed ahead of its own:
    ``[sum(prefix + remainder), kv heads, D]``, laid out by ``batch.cu_k``."""
    import torch

    ks, vs = [], []
    cu = batch.cu_host
    for j, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)):
        st = batch.prefixes[j]
        if st is not None:
            ks.append(st.k[layer])
            vs.append(st.v[layer])
        ks.append(k[s:e])
        vs.append(v[s:e])
    return torch.cat(ks), torch.cat(vs)


# ------------------------------------------------------------------ attention over a stream
# Each takes q [T, Hq, D], k and v [T, Hkv, D] (Hq a multiple of Hkv) and returns [T, Hq, D].


def sdpa_per_sequence(q, k, v, *, batch: DeviceBatch, scale: float, layer: int = 0):
    """One causal SDPA call per sample: the CPU path (and CUDA without flash attention). A
    sample with a shared prefix attends to the prefix's keys and values, then its own."""
    import torch
    import torch.nn.functional as F

    out = torch.empty_like(q)
    cu = batch.cu_host
    for j, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)):
        st = batch.prefixes[j] if batch.prefixes else None
        # [1, heads, len, D] views of the sample's slice
        qs = q[s:e].transpose(0, 1)[None]
        if st is None:
            ks, vs = (x[s:e].transpose(0, 1)[None] for x in (k, v))
            o = F.scaled_dot_product_attention(
                qs, ks, vs, is_causal=True, scale=scale, enable_gqa=True
            )
        else:
            ks, vs = (
                torch.cat([pre, x[s:e]]).transpose(0, 1)[None]
                for pre, x in ((st.k[layer], k), (st.v[layer], v))
            )
            # causal, aligned at the bottom right: query t (position p + t) sees keys <= p + t
            mask = torch.ones((e - s, st.length + e - s), dtype=torch.bool, device=q.device)
            mask = mask.tril(diagonal=st.length)
            o = F.scaled_dot_product_attention(
                qs, ks, vs, attn_mask=mask, scale=scale, enable_gqa=True
            )
        out[s:e] = o[0].transpose(0, 1)
    return out


@dataclass(frozen=True)
class VarlenCall:
    """How to call this torch's ``varlen_attn`` for causal attention with fewer KV heads."""

    causal: dict  # window_size=(-1, 0) (torch >= 2.11) or is_causal=True (earlier)
    gqa: bool  # enable_gqa exists (torch 2.13); else the KV heads are repeated


def varlen_call(fn: Callable) -> VarlenCall | None:
    """Read ``fn``'s signature: torch 2.11 has ``window_size`` and no ``enable_gqa``, torch
    2.13 both. None for an API this code does not know (no causal keyword, or no scale)."""
    params = inspect.signature(fn).parameters
    if "scale" not in params:
        return None
    if "window_size" in params:
        # a tuple: varlen_attn tests ``window_size == (-1, 0)``, which a list would fail
        causal: dict = {"window_size": (-1, 0)}
    elif "is_causal" in params:
        causal = {"is_causal": True}
    else:
        return None
    return VarlenCall(causal, "enable_gqa" in params)


@functools.cache
def _torch_varlen() -> tuple[Callable, VarlenCall] | None:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    call = varlen_call(varlen_attn)
    return None if call is None else (varlen_attn, call)


def varlen_unavailable(device, dtype, head_dim: int) -> str | None:
    """None when flash varlen attention can run here, else why not (for the engine's info)."""
    import torch

    if device.type != "cuda":
        return f"flash attention runs on CUDA only (device {device})"
    if dtype not in (torch.bfloat16, torch.float16):
        name = str(dtype).removeprefix("torch.")
        return (
            f"flash attention needs bfloat16 or float16 weights, not {name} (pass --dtype bfloat16)"
        )
    if head_dim % 8 or head_dim > 256:
        return f"flash attention needs head_dim <= 256 and a multiple of 8, not {head_dim}"
    if _torch_varlen() is None:
        return f"torch {torch.__version__} has no usable torch.nn.attention.varlen.varlen_attn"
    return None


def varlen_attention(q, k, v, *, batch: DeviceBatch, scale: float, layer: int = 0, fn=None):
    """The whole stream in one flash-attention call. ``fn``: a varlen_attn stand-in (tests).
    Samples with a shared prefix: its keys and values placed ahead of each one's own, and
    the causal mask aligned at the bottom right (flash attention's, for fewer queries than
    keys), still one call."""
    fn, call = (fn, varlen_call(fn)) if fn is not None else _torch_varlen()
    kw = dict(call.causal, scale=scale)
    cu_k, max_k = batch.cu_seqlens, batch.max_len
    if batch.prefixes:
        k, v = prefix_keys(k, v, batch, layer)
        cu_k, max_k = batch.cu_k, batch.max_len_k
    if k.shape[1] != q.shape[1]:
        if call.gqa:
            kw["enable_gqa"] = True
        else:
            # query head h reads KV head h // rep, as transformers' repeat_kv has it; the
            # copy costs well under 1% of a layer's time
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    return fn(q, k, v, batch.cu_seqlens, cu_k, batch.max_len, max_k, **kw)


# ------------------------------------------------------------------ the trunk


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


class KeepKV:
    """The keys and values (rotary applied) of some samples of a stream, copied out layer
    by layer as the forward goes (what a shared prefix keeps): ``k[j]``, ``v[j]`` are the
    per-layer lists of the sample at ``slices[j]``."""

    def __init__(self, slices: list[tuple[int, int]]):
        self.slices = slices
        self.k: list[list] = [[] for _ in slices]
        self.v: list[list] = [[] for _ in slices]

    def add(self, k, v) -> None:
        for j, (s, e) in enumerate(self.slices):
            self.k[j].append(k[s:e].clone())
            self.v[j].append(v[s:e].clone())


def packed_hidden(model, batch: DeviceBatch, attention: Callable, keep: KeepKV | None = None):
    """Final hidden states [T, hidden] of the stream; equal to each sample's own forward
    (within rounding: the norms, rotary and MLP below round once where transformers'
    modules round two or three times). ``keep``: copies some samples' keys and values."""
    inner = model.get_decoder()
    silu = getattr(model.config, "hidden_act", None) == "silu"
    x = inner.embed_tokens(batch.token_ids)  # [T, hidden]
    n = x.shape[0]
    cos, sin = inner.rotary_emb(x[None], batch.positions[None])  # [1, T, D] each
    cos, sin = cos[0, :, None], sin[0, :, None]  # [T, 1, D]: broadcast over heads
    for li, layer in enumerate(inner.layers):
        a = layer.self_attn
        h = _rms_norm(layer.input_layernorm, x)
        q = _rotary(a.q_proj(h).view(n, -1, a.head_dim), cos, sin)  # [T, heads, D]
        k = _rotary(a.k_proj(h).view(n, -1, a.head_dim), cos, sin)  # [T, kv heads, D]
        v = a.v_proj(h).view(n, -1, a.head_dim)
        if keep is not None:
            keep.add(k, v)
        att = attention(q, k, v, batch=batch, scale=a.scaling, layer=li)  # [T, heads, D]
        x = x + a.o_proj(att.reshape(n, -1))
        x = x + _gated_mlp(layer.mlp, _rms_norm(layer.post_attention_layernorm, x), silu)
    return _rms_norm(inner.norm, x)


# The elementwise work between the GEMMs is memory-bound, and at a 1B model's width it is
# a large share of a layer's time; these do it in fewer passes over the activations.

RMS_NORMS = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm")


def _rms_norm(norm, x):
    """transformers' RMSNorm (weight * x / rms(x), computed in fp32) as torch's rms_norm:
    one fused kernel on CUDA that reads and writes x once, where the module makes about
    eight passes over it in fp32 (a tenth of a 1B model's layer time)."""
    import torch.nn.functional as F

    if type(norm).__name__ not in RMS_NORMS:
        return norm(x)
    return F.rms_norm(x, (x.shape[-1],), norm.weight, norm.variance_epsilon)


def _rotary(x, cos, sin):
    """transformers' rotary embedding, x * cos + rotate_half(x) * sin, for x [T, heads, D]
    and cos, sin [T, 1, D]: two products and two fused multiply-adds on the halves into
    one output, instead of the module's seven full-size intermediate tensors."""
    import torch

    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    out = torch.empty_like(x)
    lo, hi = out[..., :h], out[..., h:]
    torch.mul(x1, cos[..., :h], out=lo)
    lo.addcmul_(x2, sin[..., :h], value=-1)  # rotate_half(x) = (-x2, x1)
    torch.mul(x2, cos[..., h:], out=hi)
    hi.addcmul_(x1, sin[..., h:])
    return out


def _gated_mlp(mlp, h, silu: bool):
    """down(silu(gate(h)) * up(h)) with the activation and the product in place: two
    [T, intermediate] buffers alive instead of four, the largest activations of a forward
    (0.45 GiB each for an 8B model at 16K tokens)."""
    import torch.nn.functional as F

    if not silu or not all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")):
        return mlp(h)
    g = F.silu(mlp.gate_proj(h), inplace=True)
    return mlp.down_proj(g.mul_(mlp.up_proj(h)))
