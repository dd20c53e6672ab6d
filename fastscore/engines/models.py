"""Loading tokenizers, checking base and reference agree, fingerprinting checkpoints."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fastscore._compat import import_transformers
from fastscore.errors import ModelError

# the config and every file a tokenizer is made from (the ids and the template scored)
_FINGERPRINT_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "adapter_config.json",  # a peft adapter as the reference (its weights: *.safetensors)
)


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.safetensors.index.json", "*.bin.index.json")
_CHECKPOINT = "config.json, weights, tokenizer files: what save_pretrained writes"


def require_model_dir(model: str | Path, role: str = "model") -> None:
    if not Path(model).exists():
        raise ModelError(
            f"the {role} {str(model)!r} does not exist; give a local Hugging Face checkpoint "
            f"directory ({_CHECKPOINT})"
        )
    if not Path(model).is_dir():
        raise ModelError(
            f"the {role} {str(model)!r} is not a directory; give a local Hugging Face "
            f"checkpoint directory ({_CHECKPOINT})"
        )


def require_checkpoint(
    model: str | Path, role: str, *, config: bool = True, weights: bool = True
) -> None:
    """``model`` is a Hugging Face checkpoint directory, or an error that names what is
    missing, before transformers says it in its own words (``config``: its config is read;
    ``weights``: the model itself is loaded from it; a tokenizer is always needed)."""
    require_model_dir(model, role)
    root = Path(model)
    missing = []
    if config and not (root / "config.json").is_file():
        missing.append("config.json")
    if weights and not any(next(root.glob(g), None) for g in _WEIGHT_FILES):
        missing.append("weights (*.safetensors or *.bin)")
    if not any((root / f).is_file() for f in _TOKENIZER_FILES):
        missing.append("tokenizer (tokenizer.json or tokenizer_config.json)")
    if missing:
        raise ModelError(
            f"the {role} {str(model)!r} is not a Hugging Face checkpoint directory: it has no "
            f"{', no '.join(missing)}. Give the directory that model.save_pretrained and "
            "tokenizer.save_pretrained wrote (a hub snapshot's folder, or a training run's "
            "final checkpoint)"
        )


def checkpoint_dtype(model: str | Path) -> str | None:
    """The dtype a checkpoint's config says its weights are in (float32, bfloat16...)."""
    try:
        c = json.loads((Path(model) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    d = c.get("dtype") or c.get("torch_dtype") or (c.get("text_config") or {}).get("dtype")
    return str(d).removeprefix("torch.") if d else None


def pair_dtype(engine_cfg: Any, base: str | Path, ref: str | Path) -> tuple[Any, str | None]:
    """The engine config both models run with: ``dtype`` auto loads each checkpoint in its
    own dtype, so a float32 reference fine-tuned from a bfloat16 base (train-ref saves
    float32) would score in another precision than the base, and L_base - L_ref would
    carry the gap; then both take the base's dtype, and the note says so."""
    import dataclasses

    if engine_cfg.dtype != "auto" or not ref or not (Path(ref) / "config.json").is_file():
        return engine_cfg, None
    b, r = checkpoint_dtype(base), checkpoint_dtype(ref)
    if b is None or r is None or b == r:
        return engine_cfg, None
    note = (
        f"the reference's weights are {r} and the base's {b}: both score in {b}, one "
        "precision for the pair (--dtype chooses another)"
    )
    return dataclasses.replace(engine_cfg, dtype=b), note


def has_tokenizer(model: str | Path) -> bool:
    return any((Path(model) / f).is_file() for f in _TOKENIZER_FILES)


def model_max_length(model: str | Path, trust_remote_code: bool = False) -> int:
    """The checkpoint's context length (max_position_embeddings)."""
    require_model_dir(model)
    try:
        cfg = import_transformers().AutoConfig.from_pretrained(
            model, trust_remote_code=trust_remote_code
        )
    except Exception as e:
        raise ModelError(f"cannot read the config of {str(model)!r}: {e}") from e
    n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    if not n:
        raise ModelError(f"{model}: config has no max_position_embeddings; pass --max-length")
    return int(n)


def model_width(model: str | Path, trust_remote_code: bool = False) -> int | None:
    """The checkpoint's hidden size, or None when its config does not say it."""
    cfg = import_transformers().AutoConfig.from_pretrained(
        model, trust_remote_code=trust_remote_code
    )
    text = getattr(cfg, "get_text_config", lambda: cfg)()
    n = getattr(text, "hidden_size", None) or getattr(text, "n_embd", None)
    return int(n) if n else None


def load_tokenizer(model: str | Path, trust_remote_code: bool = False):
    AutoTokenizer = import_transformers().AutoTokenizer
    require_model_dir(model)
    try:
        return AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ModelError(f"cannot load the tokenizer of {str(model)!r}: {e}") from e


def _backend(tok: Any) -> dict:
    return json.loads(tok.backend_tokenizer.to_str())


def tokenizer_differences(a: Any, b: Any, templates: bool = True) -> list[str]:
    """What differs between two tokenizers in ways that change token ids or masks
    (``templates``: their chat templates too; not when a run renders with its own)."""
    diffs = []
    va, vb = a.get_vocab(), b.get_vocab()
    if va != vb:
        only_a = sorted(set(va) - set(vb))[:3]
        only_b = sorted(set(vb) - set(va))[:3]
        moved = sorted(t for t in set(va) & set(vb) if va[t] != vb[t])[:3]
        diffs.append(
            f"vocabularies differ (sizes {len(va)} vs {len(vb)}; only in base: {only_a}, "
            f"only in ref: {only_b}, other ids: {moved})"
        )
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        if getattr(a, name, None) != getattr(b, name, None):
            diffs.append(f"{name} differs ({getattr(a, name)!r} vs {getattr(b, name)!r})")
    if templates and getattr(a, "chat_template", None) != getattr(b, "chat_template", None):
        diffs.append("chat templates differ")
    if getattr(a, "is_fast", False) and getattr(b, "is_fast", False):
        ja, jb = _backend(a), _backend(b)
        for part in ("normalizer", "pre_tokenizer", "model", "added_tokens"):
            if part == "model" and va != vb:
                continue  # already reported as a vocabulary difference
            if ja.get(part) != jb.get(part):
                diffs.append(f"tokenizer {part} differs")
    return diffs


def check_same_tokenizer(
    base_tok: Any, ref_tok: Any, *, base: str, ref: str, templates: bool = True
) -> None:
    diffs = tokenizer_differences(base_tok, ref_tok, templates)
    if diffs:
        raise ModelError(
            f"the base ({base}) and reference ({ref}) tokenizers differ: "
            + "; ".join(diffs)
            + ". Both models must score the same token ids: fine-tune the reference from the "
            "base without changing its tokenizer"
        )


def fingerprint(model: str | Path) -> dict[str, Any]:
    """Hashes that tell checkpoints apart without reading gigabytes.

    ``config_sha256`` covers the config and tokenizer files whole; ``weights_sample_sha256``
    covers each weight file's name and size and, for a file over 8 MiB, its first MiB (the
    header), 64 slices of 64 KiB spread evenly through it and its last MiB (a fine-tune,
    LoRA merged in included, rewrites most of the bytes, so it shows in the slices; a full
    hash would cost a read of every weight); a smaller file whole. So a reference retrained
    in place is told from the old one (``--resume`` and Ray shards compare these).
    """
    root = Path(model)
    h = hashlib.sha256()
    files = []
    for name in _FINGERPRINT_FILES:
        p = root / name
        if p.is_file():
            h.update(name.encode() + b"\0" + p.read_bytes() + b"\0")
            files.append(name)
    w = hashlib.sha256()
    weights = sorted(p for ext in ("*.safetensors", "*.bin", "*.pt") for p in root.glob(ext))
    for p in weights:
        size = p.stat().st_size
        w.update(f"{p.name}\0{size}\0".encode())
        with open(p, "rb") as f:
            if size <= 8 << 20:
                w.update(f.read())
                continue
            w.update(f.read(1 << 20))
            for k in range(64):
                f.seek((1 << 20) + k * (size - (3 << 20)) // 64)
                w.update(f.read(64 << 10))
            f.seek(-(1 << 20), 2)
            w.update(f.read())
    return {
        "path": str(root.resolve()),
        "config_sha256": h.hexdigest(),
        "weights_sample_sha256": w.hexdigest(),
        "files": files + [p.name for p in weights],
    }
