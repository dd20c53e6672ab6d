"""``inspect``: one sample as the models see it, with the scored tokens marked.

Mask bugs (a template that scores the prompt, a turn left out, an EOS not scored) are the
most common silent error in SFT tooling; this shows exactly which tokens fastscore scores,
through the same ``Renderer`` the scorer uses, and with a reference model each response
token's logprob under both models.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .config import InspectConfig, validate_inspect
from .errors import ConfigError, InputError
from .formats import record_id, to_sample
from .io import detect_file_kind, read_records, read_score_rows
from .records import OK, RawRecord


def inspect(config: InspectConfig | None = None, /, **fields: Any) -> dict[str, Any]:
    """The chosen record (``id`` or ``index``; the first by default) rendered and tokenized:
    every token's text and whether it is scored, and with a reference each scored token's
    logprob under the base and the reference."""
    from .models import load_tokenizer, model_max_length
    from .pipeline import make_engine, resolve_format, resolve_max_length
    from .render import Renderer

    cfg = dataclasses.replace(config, **fields) if config else InspectConfig(**fields)
    cfg = _from_scores_manifest(cfg)
    validate_inspect(cfg)
    kind = detect_file_kind(cfg.input)
    raw = _find(cfg, kind)
    fmt = resolve_format(cfg.input, kind, cfg.format)
    tok = load_tokenizer(cfg.base, cfg.engine.trust_remote_code)
    if cfg.ref:
        from .models import check_same_tokenizer

        check_same_tokenizer(
            tok, load_tokenizer(cfg.ref, cfg.engine.trust_remote_code), cfg.base, cfg.ref
        )
    trc = cfg.engine.trust_remote_code
    max_length = (
        resolve_max_length(cfg)  # what the scorer would use: both models' context
        if cfg.ref
        else cfg.max_length or model_max_length(cfg.base, trc) - 1
    )
    renderer = Renderer(tok, cfg.template, max_length)
    sample = to_sample(raw, fmt)
    rendered = renderer.render(sample)
    out: dict[str, Any] = {
        "index": raw.index,
        "id": sample.id,
        "status": rendered.status,
        "reason": rendered.reason,
        "template": renderer.template_name,
        "tokens": [],
    }
    if sample.status != OK:
        return out
    msgs = [{"role": m.role, "content": m.content} for m in sample.messages]
    text, _ = renderer.response_spans(msgs)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    starts = [s for s, _ in enc["offset_mapping"]] + [len(text)]
    scored = set(rendered.response_positions.tolist())
    computed = rendered.n_tokens
    out["tokens"] = [
        {
            "position": i,
            "id": int(t),
            "text": text[starts[i] : starts[i + 1]],
            "scored": i in scored,
            # after the last response token nothing changes a score: not computed
            "computed": i < computed,
        }
        for i, t in enumerate(enc["input_ids"])
    ]
    out["n_tokens"] = computed
    out["n_response_tokens"] = rendered.n_response_tokens
    if cfg.ref and rendered.status == OK:
        engines = [
            make_engine(m, cfg.engine, max_length + 1, name)
            for m, name in ((cfg.base, "base"), (cfg.ref, "ref"))
        ]
        try:
            lp = {
                name: e.response_logprobs([rendered])[0]
                for e, name in zip(engines, ("base", "ref"))
            }
        finally:
            for e in engines:
                e.close()
        for name, values in lp.items():
            for pos, v in zip(rendered.response_positions.tolist(), values.tolist()):
                out["tokens"][pos][f"logprob_{name}"] = v
            out[f"loss_{name}"] = float(-np.mean(values))
    if cfg.scores:
        out["scores_row"] = _score_row(cfg.scores, raw.index)
    return out


def _from_scores_manifest(cfg: InspectConfig) -> InspectConfig:
    """With ``scores``, the models and rendering options the scores were made with, unless
    given: so the tokens shown are the ones that were scored."""
    if not cfg.scores:
        return cfg
    from .pipeline import manifest_path_for

    path = manifest_path_for(cfg.scores)
    if not path.exists():
        alt = Path(cfg.scores).with_name("manifest.json")  # fastscore run's directory
        path = alt if alt.exists() else path
    if not path.exists():
        if cfg.base:
            return cfg
        raise ConfigError(
            f"inspect: no manifest beside {cfg.scores} to take the models from; give --base"
        )
    m = orjson.loads(path.read_bytes())
    opts = m.get("options", {})
    fill = {
        "base": cfg.base or m["models"]["base"]["path"],
        "ref": cfg.ref or m["models"]["ref"]["path"],
        "input": cfg.input or m["input"]["path"],
    }
    for name in ("template", "format"):
        if getattr(cfg, name) == "auto" and opts.get(name):
            fill[name] = opts[name]
    if cfg.max_length is None and m.get("max_length"):
        fill["max_length"] = m["max_length"]
    return dataclasses.replace(cfg, **fill)


def _find(cfg: InspectConfig, kind: str) -> RawRecord:
    for raw in read_records(cfg.input, kind):
        if cfg.id is not None:
            rid = record_id(raw)
            if rid == cfg.id or (isinstance(cfg.id, str) and str(rid) == cfg.id):
                return raw
        elif raw.index == (cfg.index or 0):
            return raw
    what = f"id {cfg.id!r}" if cfg.id is not None else f"index {cfg.index or 0}"
    raise InputError(f"{cfg.input} has no record with {what}")


def _score_row(path: str, index: int) -> dict[str, Any]:
    for n, row in enumerate(read_score_rows(path)):
        if n == index:
            return row
    raise InputError(f"{path} has no row {index}: the scores are of another input")


GREEN, DIM, BOLD, RESET = "\x1b[42;30m", "\x1b[2m", "\x1b[1m", "\x1b[0m"


def format_inspect(result: dict[str, Any], color: bool) -> str:
    """The rendered text with the scored tokens marked (a green background, or ⟦ ⟧ around
    each run of scored tokens without colour), then a table of the scored tokens."""
    head = (
        f"record {result['index']} (id {result['id']!r}), template {result['template']}: "
        f"status {result['status']}"
    )
    if result["reason"]:
        head += f" ({result['reason']})"
    if not result["tokens"]:
        return head
    head += f", {result['n_tokens']} tokens, {result['n_response_tokens']} scored" + (
        " (marked in green)" if color else " (between ⟦ and ⟧)"
    )
    parts, inside = [], False
    for t in result["tokens"]:
        if t["scored"] != inside:
            parts.append(
                (GREEN if t["scored"] else RESET) if color else ("⟦" if t["scored"] else "⟧")
            )
            inside = t["scored"]
        piece = t["text"]
        if not t["computed"] and color:
            piece = DIM + piece + RESET
        parts.append(piece)
    if inside:
        parts.append(RESET if color else "⟧")
    lines = [head, "", "".join(parts), ""]
    has_lp = any("logprob_base" in t for t in result["tokens"])
    lines.append(
        f"{'pos':>5}  {'token':<18}"
        + (f"{'logprob base':>14}{'logprob ref':>13}{'ref - base':>12}" if has_lp else "")
    )
    for t in result["tokens"]:
        if not t["scored"]:
            continue
        row = f"{t['position']:>5}  {_show(t['text']):<18}"
        if has_lp:
            b, r = t["logprob_base"], t["logprob_ref"]
            row += f"{b:>14.4f}{r:>13.4f}{r - b:>+12.4f}"
        lines.append(row)
    if has_lp:
        lines.append(
            f"mean loss: base {result['loss_base']:.4f}, ref {result['loss_ref']:.4f}"
            + _lobass(result["loss_base"], result["loss_ref"])
        )
    if "scores_row" in result:
        row = result["scores_row"]
        lines.append(
            "scores file: "
            + ", ".join(f"{k} {row[k]}" for k in ("status", "loss_base", "loss_ref", "lobass"))
        )
    return "\n".join(lines)


def _show(text: str) -> str:
    return orjson.dumps(text).decode()


def _lobass(lb: float, lr: float) -> str:
    return f", lobass {(lb - lr) / lb:.4f}" if lb > 0 and math.isfinite(lr) else ""
