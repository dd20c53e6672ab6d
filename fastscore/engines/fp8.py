"""FP8 scoring (``--quantize fp8``): the trunk's linear layers in e4m3, the rest in bf16.

Hopper's dense FP8 rate is twice its bf16 rate, and a forward of a large model is mostly
the products of its linear layers. Each ``nn.Linear`` of the decoder layers (q, k, v, o,
gate, up, down) becomes an ``Fp8Linear``: its weight quantised once at load to
``float8_e4m3fn`` with one scale per output channel, each activation row (token)
quantised on the fly with its own scale, and the product by ``torch._scaled_mm`` with
row-wise scales and a bf16 output. Embeddings, norms, rotary, attention and the output
head with its fp32 log-softmax stay bf16; ``keep_ends`` keeps the first and last decoder
layers bf16 too (where outliers are largest).

The scales: a row's scale is its largest magnitude over e4m3's largest finite value
(448), so the row's largest entry maps onto 448 and nothing saturates; a row of zeros gets
scale 1 (its codes are zeros either way). ``_scaled_mm`` wants the inner and output
dimensions to be multiples of 16 (a layer that is not stays bf16, said) and, in some
builds, the rows too: the activations are padded with zero rows to a multiple of 16.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch

from fastscore.errors import ModelError

log = logging.getLogger(__name__)

E4M3_MAX = 448.0  # float8_e4m3fn's largest finite value
ALIGN = 16  # _scaled_mm's dimension multiple
MIN_CAPABILITY = (8, 9)  # Ada and Hopper: the first with FP8 tensor cores
TRUNK_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def quantize_rows(x):
    """``x`` [rows, n] -> (codes [rows, n] float8_e4m3fn, scales [rows, 1] float32), with
    ``codes * scales`` ~ ``x``: each row scaled so its largest magnitude is 448."""
    amax = x.abs().amax(dim=-1, keepdim=True).float()  # (exact in x's own dtype)
    scale = torch.where(amax > 0, amax / E4M3_MAX, 1.0)
    # (x / scale is computed in float32, scale's dtype: no float32 copy of x first)
    codes = (x / scale).clamp_(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return codes, scale


def dequantize(codes, scales):
    """The values ``quantize_rows`` stands for, in float32."""
    return codes.float() * scales


def emulated_product(x, codes_w, scales_w):
    """``x @ W.T`` as the FP8 path computes it, in float32 arithmetic: ``x`` quantised per
    row, ``W`` per output channel (the reference the kernel path is tested against)."""
    cx, sx = quantize_rows(x)
    return (cx.float() @ codes_w.float().T) * sx * scales_w.T


def require(device) -> None:
    """``--quantize fp8`` refused, with the reason, where it cannot run."""
    reason = unavailable(device)
    if reason:
        raise ModelError(f"--quantize fp8: {reason}")


def unavailable(device) -> str | None:
    """Why FP8 scoring cannot run on ``device`` (a torch.device), or None when it can
    (asked once per device: the answer runs a product)."""
    return _unavailable(torch.device(device))


@functools.cache
def _unavailable(device) -> str | None:
    if not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
        return f"this torch ({torch.__version__}) has no float8_e4m3fn or _scaled_mm"
    if device.type != "cuda":
        return (
            f"FP8 scoring is for CUDA devices of compute capability >= "
            f"{'.'.join(map(str, MIN_CAPABILITY))} (Ada, Hopper and later); this is {device.type}"
        )
    cap = torch.cuda.get_device_capability(device)
    if cap < MIN_CAPABILITY:
        return (
            f"{torch.cuda.get_device_name(device)} is of compute capability "
            f"{cap[0]}.{cap[1]}; FP8 tensor cores need {'.'.join(map(str, MIN_CAPABILITY))} "
            "or later (Ada, Hopper)"
        )
    try:  # row-wise scales came to some devices' builds later than the format itself
        layer = Fp8Linear(torch.nn.Linear(ALIGN, ALIGN, bias=False, device=device))
        layer(torch.ones(1, ALIGN, device=device, dtype=torch.bfloat16))
    except Exception as e:
        return f"this torch ({torch.__version__}) cannot run row-wise FP8 products here: {e}"
    return None


class Fp8Linear(torch.nn.Module):
    """An ``nn.Linear`` whose weight is e4m3 with a scale per output channel; the input
    quantised per row on each call; the product by ``torch._scaled_mm`` (bf16 out)."""

    def __init__(self, linear: Any, *, fast_accum: bool = True):
        super().__init__()
        w = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        codes, scales = quantize_rows(w)
        # kept as bytes: a dtype cast of the model (.to(bfloat16)) leaves integers alone
        self.register_buffer("codes", codes.view(torch.uint8))  # [out, in]
        self.register_buffer("scales", scales.reshape(1, -1).contiguous())  # [1, out]
        b = linear.bias
        self.register_buffer("bias", None if b is None else b.detach().to(torch.bfloat16))
        self.fast_accum = fast_accum

    def forward(self, x):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        rows = x2.shape[0]
        pad = -rows % ALIGN
        if pad:
            x2 = torch.nn.functional.pad(x2, (0, 0, 0, pad))
        cx, sx = quantize_rows(x2)
        out = torch._scaled_mm(
            cx,
            self.weight_codes.t(),  # column-major [in, out], as the kernel wants its second operand
            scale_a=sx,
            scale_b=self.scales,
            bias=self.bias,
            out_dtype=torch.bfloat16,
            use_fast_accum=self.fast_accum,
        )
        if pad:
            out = out[:rows]
        return out.reshape(*shape[:-1], self.out_features)

    @property
    def weight_codes(self):
        """The weight's e4m3 codes [out, in]."""
        return self.codes.view(torch.float8_e4m3fn)

    def _apply(self, fn, recurse=True):
        # nor may such a cast round the scales or the bias: they only follow a device move
        scales, bias = self.scales, self.bias
        super()._apply(fn, recurse)
        self.scales = scales.to(self.codes.device)
        self.bias = None if bias is None else bias.to(self.codes.device)
        return self

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, e4m3 per-channel/per-token"


def quantize_model(model: Any, *, keep_ends: bool = False, fast_accum: bool = True) -> dict:
    """Replace the decoder layers' linear layers of ``model`` (bf16) by ``Fp8Linear`` in
    place; ``keep_ends``: the first and last layers stay bf16. Returns what was done."""
    layers = list(model.get_decoder().layers)
    skip = {0, len(layers) - 1} if keep_ends else set()
    done, kept = 0, []
    for i, layer in enumerate(layers):
        if i in skip:
            continue
        for parent_name, parent in layer.named_modules():
            for name, child in list(parent.named_children()):
                if name not in TRUNK_LINEARS or not isinstance(child, torch.nn.Linear):
                    continue
                if child.in_features % ALIGN or child.out_features % ALIGN:
                    kept.append(f"layer {i} {parent_name}.{name}")
                    continue
                setattr(parent, name, Fp8Linear(child, fast_accum=fast_accum))
                done += 1
    if not done:
        raise ModelError(
            "--quantize fp8: no linear layer of the decoder could be quantised (their "
            f"dimensions must be multiples of {ALIGN})"
        )
    if kept:
        log.warning("fp8: %d linear layers stay bf16 (a dimension not a multiple of %d): %s",
                    len(kept), ALIGN, ", ".join(kept[:4]))  # fmt: skip
    return {
        "format": "e4m3",
        "weights": "per output channel",
        "activations": "per token",
        "linears": done,
        "bf16_layers": sorted(skip),
        "bf16_linears": len(kept),
        "fast_accum": fast_accum,
    }
