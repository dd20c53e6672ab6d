"""Conversation -> token ids + the positions that count as response (what SFT trains on).

What SFT trains on is TRL's definition: ``SFTTrainer(assistant_only_loss=True)`` renders
with a chat template that marks the assistant's output with ``{% generation %}`` and
trains on exactly the tokens inside the markers. The template a run renders with, and
the rule that finds the response, is chosen once (``choose_template``), in this order:

1. ``markers``: the template has ``{% generation %}`` markers (the checkpoint's own, one
   given with ``--chat-template FILE``, or the plain template): transformers' assistant
   token mask of the full render, as TRL computes it.
2. ``trl``: the checkpoint's template is one TRL knows, and TRL's training variant of it
   (``trl.chat_template_utils.get_training_chat_template``; TRL is a core dependency, so
   every install has it) renders, with its markers. Token ids and masks are then TRL's
   (tested over every template pair TRL ships, in an environment of the core dependencies
   alone).
3. ``sentinel``, for a template neither marked nor known: the conversation is rendered
   once in full; each message's content is located in that render by rendering again
   with the content swapped for a sentinel and comparing the two texts. An assistant
   turn's span starts after the template's generation prompt when that lies between the
   previous message and the content (so a reasoning block the template writes there is
   included), else at the content; it ends after the template's end-of-turn marker (the
   first word the template writes after a final reply, e.g. ``<|im_end|>``, ``</s>``) when
   that follows before the next message (so tool calls written after the content are
   included), else at the content's end; trailing whitespace is dropped. A token is a
   response token when it overlaps a span (transformers' rule for the markers too).
   Templates that are not prefix-stable (Qwen3, DeepSeek, Phi-3, ...) render multi-turn
   records this way too.

Tokens after the last response token are cut: they cannot change any score. Position 0
has no context and is never scored.

Prompt-completion records (TRL's shape) are scored on the completion only: the tokens
after the common prefix of the rendered prompt (with the generation prompt) and the
whole (TRL's ``completion_mask``), and, for message lists, within the assistant mask too.
Preference records render each side as TRL's DPO trainer does: with the original template
(not a training variant), the side being every token after the prompt. String prompts and
completions are raw text, tokenized with the tokenizer's special tokens and EOS appended,
as TRL does for non-conversational data.

Templates that write the date (Llama 3.1, GPT-OSS, ...) get a fixed one (``date``), so a
record renders to the same tokens on every day of a run and of its resumes.

The plain template, used when the tokenizer has no chat template (or with
``template="plain"``), is alpaca-style::

    {bos}{system}\\n\\n### Instruction:\\n{user}\\n\\n### Response:\\n{assistant}{eos}\\n\\n...
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib.util
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastscore.config import TEMPLATES
from fastscore.errors import ConfigError, ModelError
from fastscore.records import NO_RESPONSE, OK, TEMPLATE_ERROR, TOO_LONG, RenderedSample, Sample

PLAIN_TEMPLATE = (
    "{{ bos_token or '' }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}### Instruction:\n{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'assistant' %}### Response:\n"
    # (the newline is an expression: the renderer's trim_blocks drops one after a tag)
    "{% generation %}{{ m['content'] }}{{ eos_token or '' }}{% endgeneration %}{{ '\\n\\n' }}"
    "{% else %}### {{ m['role'] | capitalize }}:\n{{ m['content'] }}\n\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Response:\n{% endif %}"
)
RULES = ("markers", "trl", "sentinel")
# private-use characters: no template or tokenizer treats them specially
_SENTINEL = "\ue000fastscore-{}\ue001"
_MARKERS = re.compile(r"\{%-?\s*generation\s*-?%\}")
_EMPTY = np.zeros(0, dtype=np.int32)


def has_generation_markers(source: str) -> bool:
    return _MARKERS.search(source) is not None


@dataclass(frozen=True)
class ChatTemplate:
    """The template a run renders with, and the rule that finds the response in it."""

    source: str  # what chats and prompt-completion records render with
    original: str  # the checkpoint's (or --chat-template's): preference records render with it
    name: str  # model | plain | file
    rule: str  # markers | trl | sentinel
    variant: str | None = None  # rule trl: the family of TRL's training variant

    def describe(self) -> str:
        """Which tokens are scored, in words (the summary line; the manifest's "masks")."""
        if self.rule == "trl":
            return f"TRL's training template for {self.variant} (what SFTTrainer trains on)"
        if self.rule == "markers":
            return f"the {self.name} template's {{% generation %}} markers"
        return (
            f"the fallback rule: the {self.name} template has no {{% generation %}} markers "
            "and TRL ships no training variant of it; each reply is located in the render"
        )

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rule": self.rule,
            "trl_variant": self.variant,
            "masks": self.describe(),
            "sha256": hashlib.sha256(self.source.encode()).hexdigest(),
            "original_sha256": hashlib.sha256(self.original.encode()).hexdigest(),
        }


def _trl_template_dir() -> Path | None:
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "chat_templates"


@functools.lru_cache(maxsize=8)
def _maybe_known_to_trl(source: str) -> bool:
    """Whether TRL might know this template, without importing TRL (seconds) when it does
    not: TRL keeps the originals it recognises as files beside its training variants."""
    folder = _trl_template_dir()
    if folder is None:
        return False
    if not folder.is_dir():
        return True  # another layout: ask TRL itself
    return any(
        p.read_text(encoding="utf-8") == source
        for p in folder.glob("*.jinja")
        if not p.stem.endswith("_training")
    )


def trl_training_variant(tokenizer: Any, source: str) -> tuple[str, str] | None:
    """(training variant, family) when TRL ships one for exactly this template."""
    if not _maybe_known_to_trl(source):
        return None
    try:
        import trl.chat_template_utils as ctu
    except ImportError as e:  # installed but broken: the masks would silently differ
        raise ModelError(
            f"importing TRL failed ({e}); fastscore renders TRL's training templates, the "
            "masks SFT trains on: pip install 'trl>=1.16'"
        ) from e
    saved = tokenizer.chat_template
    try:
        tokenizer.chat_template = source
        variant = ctu.get_training_chat_template(tokenizer)
    except ValueError:  # TRL knows no variant of it
        return None
    finally:
        tokenizer.chat_template = saved
    if variant is None:
        return None
    family = next(
        (
            n.removesuffix("_training_chat_template")
            for n in dir(ctu)
            if n.endswith("_training_chat_template") and getattr(ctu, n) is variant
        ),
        "unnamed",
    )
    return variant, family


def choose_template(
    tokenizer: Any, template: str = "auto", chat_template_file: str | None = None
) -> ChatTemplate:
    """The template and the rule a run renders with (see the module's docstring)."""
    if template not in TEMPLATES:
        raise ConfigError(f"template must be one of {TEMPLATES}, got {template!r}")
    if chat_template_file:
        try:
            source = Path(chat_template_file).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read --chat-template {chat_template_file!r}: {e}") from e
        name = "file"
    else:
        own = getattr(tokenizer, "chat_template", None)
        if isinstance(own, dict):  # named templates: the default one renders chats
            own = own.get("default")
        if template == "plain" or (template == "auto" and not own):
            source, name = PLAIN_TEMPLATE, "plain"
        elif not own:
            raise ModelError(
                "template='model' but the tokenizer has no chat_template; use template='plain', "
                "'auto', or --chat-template FILE"
            )
        else:
            source, name = own, "model"
    if has_generation_markers(source):
        return ChatTemplate(source, source, name, "markers")
    if _trl_template_dir() is None:
        raise ModelError(
            "TRL is not installed, and the chat template has no {% generation %} markers: "
            "TRL's training variants of ~30 families' templates define what SFT trains on "
            "(a core dependency of fastscore): pip install 'trl>=1.16' (or give your "
            "training template, with its markers, as --chat-template FILE)"
        )
    known = trl_training_variant(tokenizer, source)
    if known is not None:
        return ChatTemplate(known[0], source, name, "trl", known[1])
    return ChatTemplate(source, source, name, "sentinel")


def today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


def _fixed_strftime(date: str):
    try:
        day = datetime.datetime.fromisoformat(date)
    except ValueError as e:
        raise ConfigError(f"date must be YYYY-MM-DD, got {date!r}") from e

    def strftime_now(fmt: str) -> str:
        return day.strftime(fmt)

    return strftime_now


def common_prefix_length(a, b) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _common_suffix_length(a: str, b: str, limit: int) -> int:
    n = 0
    while n < limit and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


class _TemplateError(Exception):
    pass


class Renderer:
    """Renders and tokenizes Samples with one tokenizer and one template."""

    def __init__(
        self,
        tokenizer: Any,
        template: str = "auto",
        max_length: int | None = None,
        *,
        chat_template_file: str | None = None,
        date: str | None = None,
    ):
        if not getattr(tokenizer, "is_fast", False):
            raise ModelError(
                "fastscore needs a fast (Rust) tokenizer to map response text to tokens; "
                f"{type(tokenizer).__name__} is a slow one. Save the model with a "
                "tokenizer.json (AutoTokenizer.from_pretrained(..., use_fast=True))."
            )
        self.tokenizer = tokenizer
        self.chat = choose_template(tokenizer, template, chat_template_file)
        self.template_name = self.chat.name
        self.max_length = max_length
        self.date = date or today()
        self._kwargs = {"strftime_now": _fixed_strftime(self.date)}
        self._probe: tuple[str, str] | None = None
        self.content_parts = self._takes_content_parts()

    def info(self) -> dict[str, Any]:
        """What the manifest records of the rendering."""
        return {**self.chat.info(), "date": self.date, "content_as_parts": self.content_parts}

    def _takes_content_parts(self) -> bool:
        """Whether the template reads contents as lists of parts (the VLM templates of
        llava-next, idefics3, ...), as TRL gives them through a processor: it writes text
        contents wrongly or not at all, and parts as given."""
        marks = [_SENTINEL.format("user"), _SENTINEL.format("reply")]
        chat = [{"role": "user", "content": marks[0]}, {"role": "assistant", "content": marks[1]}]

        def writes_both(msgs) -> bool:
            try:
                text = self._text(msgs, {})
            except Exception:
                return False
            return all(m in text for m in marks)

        return not writes_both(chat) and writes_both(_as_parts(chat))

    # ---------------------------------------------------------------- rendering

    def _apply(self, msgs: list[dict], source: str, extra: dict, **kw) -> Any:
        return self.tokenizer.apply_chat_template(
            msgs, chat_template=source, **extra, **self._kwargs, **kw
        )

    def _text(self, msgs: list[dict], extra: dict, generation_prompt: bool = False) -> str:
        return self._apply(
            msgs, self.chat.source, extra, tokenize=False, add_generation_prompt=generation_prompt
        )

    def _sft(self, msgs: list[dict], extra: dict) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of the whole conversation and its assistant-token mask."""
        if self.chat.rule != "sentinel":
            enc = self._apply(
                msgs,
                self.chat.source,
                extra,
                tokenize=True,
                return_dict=True,
                return_assistant_tokens_mask=True,
            )
            return (
                np.asarray(enc["input_ids"], dtype=np.int32),
                np.asarray(enc["assistant_masks"], dtype=bool),
            )
        text, spans = self.sentinel_spans(msgs, extra)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = np.asarray(enc["input_ids"], dtype=np.int32)
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        mask = np.zeros(ids.shape[0], dtype=bool)
        mask[response_positions(offsets[:, 0], offsets[:, 1], spans)] = True
        return ids, mask

    def _probes(self) -> tuple[str, str]:
        """(generation prompt, end-of-turn marker) of the template, from two tiny renders."""
        if self._probe is None:
            gen = marker = ""
            user = [{"role": "user", "content": "x"}]
            reply = _SENTINEL.format("probe")
            try:
                bare, prompted = self._text(user, {}), self._text(user, {}, True)
                if prompted.startswith(bare):
                    gen = prompted[len(bare) :]
                after = self._text(user + [{"role": "assistant", "content": reply}], {})
                tail = after.split(reply, 1)[1] if reply in after else ""
                marker = tail.split()[0] if tail.split() else ""
            except Exception:  # a template that needs more than this: no hints
                pass
            self._probe = gen, marker
        return self._probe

    def sentinel_spans(self, msgs: list[dict], extra: dict) -> tuple[str, list[tuple[int, int]]]:
        """The full rendered text and the [start, end) character span of each assistant
        turn, for templates without markers (rule ``sentinel``)."""
        full = self._text(msgs, extra)
        located = self._locate_all_at_once(msgs, extra, full)
        if located is None:  # the template changes what it writes: one message at a time
            located = []
            for i, m in enumerate(msgs):
                mark = _SENTINEL.format(i)
                alt = self._text([*msgs[:i], _swap(m, mark), *msgs[i + 1 :]], extra)
                p = common_prefix_length(full, alt)
                s = _common_suffix_length(full, alt, min(len(full), len(alt)) - p)
                located.append((p, len(full) - s) if mark in alt[p : len(alt) - s] else None)
        gen, marker = self._probes()
        spans = []
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            if located[i] is None:
                raise _TemplateError(
                    f"cannot locate assistant turn {i} in the rendered conversation (the "
                    "template does not write its content as given); use a template with "
                    "{% generation %} markers (--chat-template FILE)"
                )
            start, end = located[i]
            lo = max((e for e in (x[1] for x in located[:i] if x) if e <= start), default=0)
            hi = min(
                (b for b in (x[0] for x in located[i + 1 :] if x) if b >= end), default=len(full)
            )
            if gen and (k := full.rfind(gen, lo, start)) >= 0:
                start = k + len(gen)
            if marker and (k := full.find(marker, end, hi)) >= 0:
                end = k + len(marker)
            while end > start and full[end - 1].isspace():
                end -= 1
            if end > start:
                spans.append((start, end))
        return full, spans

    def _locate_all_at_once(
        self, msgs: list[dict], extra: dict, full: str
    ) -> list[tuple[int, int] | None] | None:
        """Every message's content span from one more render, with all contents swapped
        for sentinels: when putting the contents back in place of the sentinels gives the
        full render, the template writes each content as given, once. None otherwise."""
        # a turn without content (a tool call, a reasoning-only reply) is located by a
        # sentinel too, put back as "": where its content would be, a point its span grows from
        texts = [_content_text(m) if m.get("content") is not None else "" for m in msgs]
        marks = [_SENTINEL.format(i) for i in range(len(msgs))]
        alt = self._text(
            [
                _swap(m, mark) if t is not None else m
                for m, t, mark in zip(msgs, texts, marks, strict=True)
            ],
            extra,
        )
        rebuilt, located, pos = [], [], 0
        for t, mark in zip(texts, marks, strict=True):
            k = alt.find(mark, pos) if t is not None else -1
            if t is not None and (k < 0 or alt.find(mark, k + 1) >= 0):
                return None  # not written, or written twice
            if k < 0:
                located.append(None)
                continue
            rebuilt.append(alt[pos:k])
            start = sum(map(len, rebuilt))
            rebuilt.append(t)
            located.append((start, start + len(t)))
            pos = k + len(mark)
        rebuilt.append(alt[pos:])
        return located if "".join(rebuilt) == full else None

    def _raw(self, prompt: str, completions: dict[str, str]):
        """Raw text, as TRL tokenizes non-conversational data: special tokens added, EOS
        appended to each completion. Yields (side, ids, scored-from)."""
        eos = self.tokenizer.eos_token or ""
        prompt_ids = self.tokenizer(prompt)["input_ids"]
        full = {}
        for side, text in completions.items():
            text = text if text.endswith(eos) else text + eos
            full[side] = np.asarray(self.tokenizer(prompt + text)["input_ids"], dtype=np.int32)
        return prompt_ids, full

    def sequences(self, sample: Sample) -> list[tuple[str | None, np.ndarray, np.ndarray]]:
        """(side, token ids, response mask) of each sequence a record scores, uncut (for
        ``inspect``); raises what the template raises."""
        extra: dict[str, Any] = {"tools": sample.tools, **(sample.template_kwargs or {})}
        kind = sample.kind

        def dicts(messages) -> list[dict]:
            out = [m.to_dict() for m in messages]
            return _as_parts(out) if self.content_parts else out

        if kind == "chat":
            ids, mask = self._sft(dicts(sample.messages), extra)
            return [(None, ids, mask)]
        if sample.text is not None:
            prompt_ids, full = self._raw(sample.text, sample.completions)
            masks = {side: np.ones(len(ids), dtype=bool) for side, ids in full.items()}
        else:
            prompt = dicts(sample.messages)
            source = self.chat.original if kind == "preference" else self.chat.source
            prompt_ids = self._apply(
                prompt,
                source,
                extra,
                tokenize=True,
                return_dict=True,
                add_generation_prompt=True,
            )["input_ids"]
            full, masks = {}, {}
            for side, cont in sample.completions.items():
                msgs = prompt + dicts(cont)
                if kind == "completion":  # SFT: the assistant mask too
                    full[side], masks[side] = self._sft(msgs, extra)
                else:  # DPO: every token after the prompt
                    enc = self._apply(msgs, source, extra, tokenize=True, return_dict=True)
                    full[side] = np.asarray(enc["input_ids"], dtype=np.int32)
                    masks[side] = np.ones(len(full[side]), dtype=bool)
        # TRL: the completion starts where the prompt and the whole diverge (for a pair,
        # the earlier of the two sides)
        n = min(common_prefix_length(prompt_ids, ids.tolist()) for ids in full.values())
        for mask in masks.values():
            mask[:n] = False
        return [(side, full[side], masks[side]) for side in full]

    def render_sides(self, sample: Sample) -> list[RenderedSample]:
        """One RenderedSample per scored sequence: one for a chat or a prompt-completion
        record, two (chosen, rejected) for a preference record."""
        sides = ["chosen", "rejected"] if sample.kind == "preference" else [None]
        if sample.status != OK:
            return [
                _failed(sample, side, status=sample.status, reason=sample.reason) for side in sides
            ]
        if not _has_response(sample):
            reason = "no assistant turn with non-empty content"
            return [_failed(sample, side, status=NO_RESPONSE, reason=reason) for side in sides]
        try:
            seqs = self.sequences(sample)
        except _TemplateError as e:
            return [_failed(sample, side, status=TEMPLATE_ERROR, reason=str(e)) for side in sides]
        except Exception as e:  # jinja raises for conversations a template refuses
            reason = f"the chat template failed: {type(e).__name__}: {e}"
            return [_failed(sample, side, status=TEMPLATE_ERROR, reason=reason) for side in sides]
        out = []
        for side, ids, mask in seqs:
            where = f" on the {side} side" if side else ""
            positions = np.nonzero(mask)[0].astype(np.int32)
            positions = positions[positions >= 1]  # position 0 has nothing to predict it
            if positions.size == 0:
                out.append(
                    _failed(sample, side, status=NO_RESPONSE, reason="no response token" + where)
                )
                continue
            ids = ids[: int(positions[-1]) + 1]
            r = RenderedSample(sample.index, sample.id, ids, positions, side=side)
            if self.max_length is not None and ids.shape[0] > self.max_length:
                r.status = TOO_LONG
                r.reason = f"{ids.shape[0]} tokens > max_length {self.max_length}{where}"
            out.append(r)
        return out

    def render(self, sample: Sample) -> RenderedSample:
        """A chat or prompt-completion record's one sequence (see ``render_sides``)."""
        if sample.kind == "preference":
            raise ValueError("a preference record renders to two sequences: use render_sides")
        return self.render_sides(sample)[0]

    def render_all(self, samples: Iterable[Sample]) -> Iterator[RenderedSample]:
        for s in samples:
            yield from self.render_sides(s)


def make_renderer(cfg: Any, tokenizer: Any, max_length: int | None) -> Renderer:
    """The renderer of a score, train-ref or inspect config (template, file, date)."""
    return Renderer(
        tokenizer,
        cfg.template,
        max_length,
        chat_template_file=cfg.chat_template,
        date=cfg.date,
    )


def _content_text(m: dict) -> str | None:
    """A message's content as one string (text parts joined), or None if it has none."""
    c = m.get("content")
    if isinstance(c, str):
        return c
    if isinstance(c, list) and len(c) == 1 and isinstance(c[0], dict) and "text" in c[0]:
        return c[0]["text"]
    return None


def _swap(m: dict, mark: str) -> dict:
    """The message with its content replaced by ``mark`` (as a text part if it had parts)."""
    if isinstance(m.get("content"), list):
        return {**m, "content": [{"type": "text", "text": mark}]}
    return {**m, "content": mark}


def _as_parts(msgs: list[dict]) -> list[dict]:
    """Text contents as ``[{"type": "text", "text": ...}]`` (TRL's
    ``prepare_multimodal_messages`` without images)."""
    return [
        {**m, "content": [{"type": "text", "text": m["content"]}]}
        if isinstance(m.get("content"), str)
        else m
        for m in msgs
    ]


def _failed(sample: Sample, side: str | None, *, status: str, reason: str | None) -> RenderedSample:
    return RenderedSample(sample.index, sample.id, _EMPTY, _EMPTY, status, reason, side)


def _has_response(sample: Sample) -> bool:
    """Something to score: a reply with text, tool calls or reasoning (for a chat), or a
    non-empty completion."""
    if sample.completions is None:
        return any(
            m.role == "assistant"
            and (m.text.strip() or (m.extra or {}).get("tool_calls") or _reasoning(m))
            for m in sample.messages
        )
    for cont in sample.completions.values():
        if isinstance(cont, str):
            if not cont.strip():
                return False
        elif not any(m.text.strip() or (m.extra or {}).get("tool_calls") for m in cont):
            return False
    return True


def _reasoning(m) -> bool:
    extra = m.extra or {}
    return any(
        isinstance(extra.get(k), str) and extra[k].strip()
        for k in ("reasoning_content", "reasoning", "thinking")
    )


def response_positions(
    token_starts: np.ndarray, token_ends: np.ndarray, spans: list[tuple[int, int]]
) -> np.ndarray:
    """Indices of tokens that overlap one of the sorted, disjoint [start, end) spans.

    transformers' assistant mask takes the tokens from the one holding a span's first
    character to the one holding its last, so a token that straddles the span's start
    (``" y"`` after a prompt ending in ``": "``) is in; this is the same rule.
    """
    if not spans or token_starts.size == 0:
        return _EMPTY
    span_starts = np.asarray([s for s, _ in spans], dtype=np.int64)
    span_ends = np.asarray([e for _, e in spans], dtype=np.int64)
    # the last span starting before the token ends is the only one it can overlap
    k = np.searchsorted(span_starts, token_ends, side="left") - 1
    kk = np.clip(k, 0, None)
    inside = (k >= 0) & (token_starts < span_ends[kk]) & (token_ends > span_starts[kk])
    return np.nonzero(inside)[0].astype(np.int32)
