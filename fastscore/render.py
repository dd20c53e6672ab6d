"""Conversation -> token ids + the positions that count as response (what SFT trains on).

How the mask is found, for any chat template:
1. The whole conversation is rendered to text once and tokenized once, with character
   offsets. Those ids are what the models see; nothing is tokenized in pieces, so no
   boundary can merge differently from the real input.
2. For assistant turn i, the template is rendered for ``messages[:i]`` with the
   generation prompt (where the reply starts) and for ``messages[:i+1]`` (where the turn
   ends). Both must be prefixes of the full text, or the template is not prefix-stable and
   the record gets status ``template_error``. The turn's span is the text between them,
   with trailing whitespace dropped: the reply and the end-of-turn marker the template
   writes right after it (``<|im_end|>`` in ChatML, the EOS token in the plain template),
   not the newline that separates turns.
3. A token is a response token when its first character lies in a span.

Tokens after the last response token are cut: they cannot change any score. An assistant
turn that opens the conversation has no prompt and is context only.

The plain template, used when the tokenizer has no chat template (or with
``template="plain"``), is alpaca-style::

    {bos}{system}\n\n### Instruction:\n{user}\n\n### Response:\n{assistant}{eos}\n\n...
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .errors import ConfigError, ModelError
from .records import NO_RESPONSE, OK, TEMPLATE_ERROR, TOO_LONG, RenderedSample, Sample

PLAIN_TEMPLATE = (
    "{{ bos_token or '' }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}### Instruction:\n{{ m['content'] }}\n\n"
    "{% else %}### Response:\n{{ m['content'] }}{{ eos_token or '' }}\n\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Response:\n{% endif %}"
)
TEMPLATES = ("auto", "model", "plain")

_EMPTY = np.zeros(0, dtype=np.int32)


def choose_template(tokenizer: Any, template: str = "auto") -> tuple[str, str]:
    """(jinja source, name) of the template to render with."""
    if template not in TEMPLATES:
        raise ConfigError(f"template must be one of {TEMPLATES}, got {template!r}")
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):  # named templates: the default one renders chats
        own = own.get("default")
    if template == "plain" or (template == "auto" and not own):
        return PLAIN_TEMPLATE, "plain"
    if not own:
        raise ModelError(
            "template='model' but the tokenizer has no chat_template; use template='plain' "
            "or 'auto'"
        )
    return own, "model"


class Renderer:
    """Renders and tokenizes Samples with one tokenizer and one template."""

    def __init__(self, tokenizer: Any, template: str = "auto", max_length: int | None = None):
        if not getattr(tokenizer, "is_fast", False):
            raise ModelError(
                "fastscore needs a fast (Rust) tokenizer to map response text to tokens; "
                f"{type(tokenizer).__name__} is a slow one. Save the model with a "
                "tokenizer.json (AutoTokenizer.from_pretrained(..., use_fast=True))."
            )
        self.tokenizer = tokenizer
        self.template, self.template_name = choose_template(tokenizer, template)
        self.max_length = max_length

    def _text(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages,
            chat_template=self.template,
            tokenize=False,
            add_generation_prompt=generation_prompt,
        )

    def response_spans(self, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
        """The full rendered text and the [start, end) character span of each reply."""
        full = self._text(messages, generation_prompt=False)
        spans = []
        for i, m in enumerate(messages):
            # A reply that opens the conversation has no prompt (and templates cannot
            # render the empty prefix that would locate it): it is context, not scored.
            if m["role"] != "assistant" or i == 0:
                continue
            before = self._text(messages[:i], generation_prompt=True)
            through = self._text(messages[: i + 1], generation_prompt=False)
            if not full.startswith(before) or not full.startswith(through):
                raise _TemplateError(
                    f"the chat template is not prefix-stable at assistant turn {i} (rendering "
                    "the turns before it does not give a prefix of the whole conversation); "
                    "use --template plain, or a template that renders turns independently"
                )
            start, end = len(before), len(through)
            while end > start and full[end - 1].isspace():
                end -= 1
            if end > start:
                spans.append((start, end))
        return full, spans

    def render(self, sample: Sample) -> RenderedSample:
        if sample.status != OK:
            return RenderedSample(
                sample.index, sample.id, _EMPTY, _EMPTY, sample.status, sample.reason
            )
        msgs = [{"role": m.role, "content": m.content} for m in sample.messages]
        if not any(m["role"] == "assistant" and m["content"].strip() for m in msgs):
            return RenderedSample(
                sample.index,
                sample.id,
                _EMPTY,
                _EMPTY,
                NO_RESPONSE,
                "no assistant turn with non-empty content",
            )
        try:
            text, spans = self.response_spans(msgs)
        except _TemplateError as e:
            return RenderedSample(sample.index, sample.id, _EMPTY, _EMPTY, TEMPLATE_ERROR, str(e))
        except Exception as e:  # jinja raises for conversations a template refuses
            return RenderedSample(
                sample.index,
                sample.id,
                _EMPTY,
                _EMPTY,
                TEMPLATE_ERROR,
                f"the chat template failed: {type(e).__name__}: {e}",
            )
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = np.asarray(enc["input_ids"], dtype=np.int32)
        token_starts = np.asarray([s for s, _ in enc["offset_mapping"]], dtype=np.int64)
        positions = response_positions(token_starts, spans)
        positions = positions[positions >= 1]  # position 0 has nothing to be predicted from
        if positions.size == 0:
            reason = (
                "the only reply opens the conversation, with no prompt before it"
                if msgs[0]["role"] == "assistant"
                else "no response token"
            )
            return RenderedSample(sample.index, sample.id, _EMPTY, _EMPTY, NO_RESPONSE, reason)
        ids = ids[: int(positions[-1]) + 1]
        if self.max_length is not None and ids.shape[0] > self.max_length:
            return RenderedSample(
                sample.index,
                sample.id,
                ids,
                positions,
                TOO_LONG,
                f"{ids.shape[0]} tokens > max_length {self.max_length}",
            )
        return RenderedSample(sample.index, sample.id, ids, positions)

    def render_all(self, samples: Iterable[Sample]) -> Iterator[RenderedSample]:
        for s in samples:
            yield self.render(s)


class _TemplateError(Exception):
    pass


def response_positions(token_starts: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """Indices of tokens whose first character lies in one of the sorted, disjoint spans."""
    if not spans or token_starts.size == 0:
        return _EMPTY
    span_starts = np.asarray([s for s, _ in spans], dtype=np.int64)
    span_ends = np.asarray([e for _, e in spans], dtype=np.int64)
    k = np.searchsorted(span_starts, token_starts, side="right") - 1
    inside = (k >= 0) & (token_starts < span_ends[np.clip(k, 0, None)])
    return np.nonzero(inside)[0].astype(np.int32)
