"""Loading tokenizers, checking base and reference agree, fingerprinting checkpoints."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ._compat import import_transformers
from .errors import ModelError

_FINGERPRINT_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
)


def require_model_dir(model: str | Path) -> None:
    if not Path(model).is_dir():
        raise ModelError(
            f"model {str(model)!r} is not a directory; give a local Hugging Face checkpoint "
            "directory (config.json, weights, tokenizer files)"
        )


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


def load_tokenizer(model: str | Path, trust_remote_code: bool = False):
    AutoTokenizer = import_transformers().AutoTokenizer
    require_model_dir(model)
    try:
        return AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ModelError(f"cannot load the tokenizer of {str(model)!r}: {e}") from e


def _backend(tok: Any) -> dict:
    return json.loads(tok.backend_tokenizer.to_str())


def tokenizer_differences(a: Any, b: Any) -> list[str]:
    """What differs between two tokenizers in ways that change token ids or masks."""
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
    if getattr(a, "chat_template", None) != getattr(b, "chat_template", None):
        diffs.append("chat templates differ")
    if getattr(a, "is_fast", False) and getattr(b, "is_fast", False):
        ja, jb = _backend(a), _backend(b)
        for part in ("normalizer", "pre_tokenizer", "model", "added_tokens"):
            if part == "model" and va != vb:
                continue  # already reported as a vocabulary difference
            if ja.get(part) != jb.get(part):
                diffs.append(f"tokenizer {part} differs")
    return diffs


def check_same_tokenizer(base_tok: Any, ref_tok: Any, base: str, ref: str) -> None:
    diffs = tokenizer_differences(base_tok, ref_tok)
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
    covers each weight file's name, size, and first and last MiB (a fine-tuned checkpoint
    differs there from its base; a full hash would cost a read of every weight).
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
            w.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(-(1 << 20), 2)
                w.update(f.read())
    return {
        "path": str(root.resolve()),
        "config_sha256": h.hexdigest(),
        "weights_sample_sha256": w.hexdigest(),
        "files": files + [p.name for p in weights],
    }
