"""``inspect``: one sample as the models see it, with the scored tokens marked.

Mask bugs (a template that scores the prompt, a turn left out, an EOS not scored) are the
most common silent error in SFT tooling; this shows exactly which tokens fastscore scores,
through the same ``Renderer`` the scorer uses, and with a reference model each response
token's logprob under both models.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import orjson

from fastscore.config import InspectConfig, api_config, validate_inspect
from fastscore.data.formats import to_sample
from fastscore.data.memory import MEMORY_KINDS
from fastscore.data.readers import read_records
from fastscore.data.writers import read_score_rows
from fastscore.errors import ConfigError, InputError
from fastscore.records import OK, RawRecord


def inspect(config: InspectConfig | None = None, /, **fields: Any) -> dict[str, Any]:
    """The chosen record (``id`` or ``index``; the first by default) rendered and tokenized:
    every token's text and whether it is scored, and with a reference each scored token's
    logprob under the base and the reference."""
    from fastscore.config import ScoreConfig
    from fastscore.scoring.session import open_session

    cfg = api_config(InspectConfig, config, fields)
    cfg = _from_scores_manifest(cfg)
    validate_inspect(cfg)
    # the scorer's own session: its tokenizer check, length limit, format and renderer
    # (without --ref the base stands in for it: rendering needs one model)
    score_cfg = ScoreConfig(
        input=cfg.input,
        base=cfg.base,
        ref=cfg.ref or cfg.base,
        format=cfg.format,
        template=cfg.template,
        chat_template=cfg.chat_template,
        date=cfg.date,
        max_length=cfg.max_length,
        engine=cfg.engine,
    )
    with open_session(score_cfg, start_engines=False) as session:
        return _inspect(cfg, session)


def _inspect(cfg: InspectConfig, session) -> dict[str, Any]:
    tok, renderer = session.tokenizer, session.renderer
    raw = _find(cfg, session.kind)
    sample = to_sample(raw, session.fmt)
    rendered = renderer.render_sides(sample)
    bad = next((r for r in rendered if r.status != OK), None)
    out: dict[str, Any] = {
        "index": raw.index,
        "id": sample.id,
        "status": bad.status if bad else OK,
        "reason": bad.reason if bad else None,
        "template": renderer.info(),
        "tokens": [],
    }
    if sample.status != OK:
        return out
    try:
        sequences = renderer.sequences(sample)
    except Exception:  # the status and reason above say why
        return out
    views = {}
    for r, (side, ids, _) in zip(rendered, sequences, strict=True):
        scored = set(r.response_positions.tolist())
        texts = token_texts(tok, ids)
        view = {
            "tokens": [
                {
                    "position": i,
                    "id": int(t),
                    "text": piece,
                    "scored": i in scored,
                    # after the last response token nothing changes a score: not computed
                    "computed": i < r.n_tokens,
                }
                for i, (t, piece) in enumerate(zip(ids.tolist(), texts, strict=True))
            ],
            "n_tokens": r.n_tokens,
            "n_response_tokens": r.n_response_tokens,
        }
        views[side] = (r, view)
    if cfg.ref and not bad:
        for r, view in views.values():
            for e, name in zip(session.engines, ("base", "ref"), strict=True):
                values = e.response_logprobs([r])[0]
                for pos, v in zip(r.response_positions.tolist(), values.tolist(), strict=True):
                    view["tokens"][pos][f"logprob_{name}"] = v
                view[f"loss_{name}"] = float(-np.mean(values))
    if None in views:
        out.update(views[None][1])
    else:
        out["sides"] = {side: view for side, (_, view) in views.items()}
    if cfg.scores:
        out["scores_row"] = _score_row(cfg.scores, raw.index)
    return out


def _from_scores_manifest(cfg: InspectConfig) -> InspectConfig:
    """With ``scores``, the models and rendering options the scores were made with, unless
    given: so the tokens shown are the ones that were scored."""
    if not cfg.scores:
        return cfg
    from fastscore.runs.outputs import OutputPaths

    path = OutputPaths.find_manifest(cfg.scores)
    if path is None:
        if cfg.base:
            return cfg
        raise ConfigError(
            f"inspect: no manifest beside {cfg.scores} to take the models from; give --base"
        )
    m = orjson.loads(path.read_bytes("manifest"))
    if cfg.input is None and m["input"].get("kind") in MEMORY_KINDS:
        raise ConfigError(
            f"inspect: the scores {cfg.scores} were made from an input held in memory "
            f"({m['input']['path']}); give it again: input=..."
        )
    opts = m.get("options", {})
    fill = {
        "base": cfg.base or m["models"]["base"]["path"],
        "ref": cfg.ref or m["models"]["ref"]["path"],
        "input": cfg.input or m["input"]["path"],
    }
    for name in ("template", "format"):
        if getattr(cfg, name) == "auto" and opts.get(name):
            fill[name] = opts[name]
    for name in ("chat_template", "date"):  # the template file and the date it rendered
        if getattr(cfg, name) is None and opts.get(name):
            fill[name] = opts[name]
    if cfg.max_length is None and m.get("max_length"):
        fill["max_length"] = m["max_length"]
    return dataclasses.replace(cfg, **fill)


def _find(cfg: InspectConfig, kind: str) -> RawRecord:
    for raw in read_records(cfg.input, kind):
        if cfg.id is not None:
            rid = raw.id
            if rid is None:  # known by its index (--index) alone
                continue
            if rid == cfg.id or (isinstance(cfg.id, str) and str(rid) == cfg.id):
                return raw
        elif raw.index == (cfg.index or 0):
            return raw
    if cfg.id is None:
        raise InputError(f"{cfg.input} has no record with index {cfg.index or 0}")
    raise InputError(
        f"{cfg.input} has no record with id {cfg.id!r} (a record without an id is found by "
        "its position: --index)"
    )


def token_texts(tok, ids) -> list[str]:
    """Each token's text: the growth of the decoded prefix, so that word-initial spaces show
    where they are (a lone token's decode can lose them). A character whose bytes span
    several tokens is shown with the token that completes it (the ones before it show
    nothing), so the texts add up to the decoded whole."""
    out, prev = [], ""
    ids = list(ids)
    for i in range(len(ids)):
        text = tok.decode(ids[: i + 1])
        if text.endswith("\ufffd") and i + 1 < len(ids):
            out.append("")  # an incomplete character so far
            continue
        out.append(text[len(prev) :] if text.startswith(prev) else tok.decode(ids[i : i + 1]))
        prev = text
    return out


def _score_row(path: str, index: int) -> dict[str, Any]:
    for n, row in enumerate(read_score_rows(path)):
        if n == index:
            return row
    raise InputError(f"{path} has no row {index}: the scores are of another input")


GREEN, DIM, BOLD, RESET = "\x1b[42;30m", "\x1b[2m", "\x1b[1m", "\x1b[0m"


def format_inspect(result: dict[str, Any], color: bool) -> str:
    """The rendered text with the scored tokens marked (a green background, or ⟦ ⟧ around
    each run of scored tokens without colour), then a table of the scored tokens; each
    side of a preference record in turn."""
    t = result["template"]
    head = (
        f"record {result['index']} ("
        + ("no id" if result["id"] is None else f"id {result['id']!r}")
        + f"), template {t['name']} (rule "
        f"{t['rule']}{', TRL variant ' + t['trl_variant'] if t.get('trl_variant') else ''}): "
        f"status {result['status']}"
    )
    if result["reason"]:
        head += f" ({result['reason']})"
    sides = result.get("sides") or ({None: result} if result["tokens"] else {})
    lines = [head]
    for side, view in sides.items():
        counts, body = _format_view(view, color)
        if side is None:  # one sequence: its counts close the heading line
            lines[0] += ", " + counts
            lines += ["", *body]
        else:
            lines += ["", f"== {side}: {counts} ==", "", *body]
    if "scores_row" in result:
        row = result["scores_row"]
        cols = [k for k in ("status", "loss_base", "loss_ref", "lobass", "margin") if k in row]
        lines.append("scores file: " + ", ".join(f"{k} {row[k]}" for k in cols))
    return "\n".join(lines)


def _format_view(view: dict[str, Any], color: bool) -> tuple[str, list[str]]:
    counts = f"{view['n_tokens']} tokens, {view['n_response_tokens']} scored" + (
        " (marked in green)" if color else " (between ⟦ and ⟧)"
    )
    parts, inside = [], False
    for t in view["tokens"]:
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
    lines = ["".join(parts), ""]
    has_lp = any("logprob_base" in t for t in view["tokens"])
    lines.append(
        f"{'pos':>5}  {'token':<18}"
        + (f"{'logprob base':>14}{'logprob ref':>13}{'ref - base':>12}" if has_lp else "")
    )
    for t in view["tokens"]:
        if not t["scored"]:
            continue
        row = f"{t['position']:>5}  {_show(t['text']):<18}"
        if has_lp:
            b, r = t["logprob_base"], t["logprob_ref"]
            row += f"{b:>14.4f}{r:>13.4f}{r - b:>+12.4f}"
        lines.append(row)
    if has_lp:
        lines.append(
            f"mean loss: base {view['loss_base']:.4f}, ref {view['loss_ref']:.4f}"
            + _lobass(view["loss_base"], view["loss_ref"])
        )
    return counts, lines


def _show(text: str) -> str:
    return orjson.dumps(text).decode()


def _lobass(lb: float, lr: float) -> str:
    return f", lobass {(lb - lr) / lb:.4f}" if lb > 0 and math.isfinite(lr) else ""
