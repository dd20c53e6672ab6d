"""The demo's synthetic world: a pretraining corpus and an SFT set whose kinds are known.

Three kinds of SFT sample, so the demo can show what each score picks:
- ``learnable``: "what color is the <thing>?" -> "the <thing> is <color>." for a fixed
  table of things the base never saw. Each fact recurs, so fine-tuning learns it.
- ``known``: "what is the capital of <land>?" -> "the capital of <land> is <city>." The
  base was pretrained on these exact exchanges; fine-tuning has little left to teach.
- ``noise``: a request answered by a random string of words; nothing generalises, and
  one short fine-tuning epoch cannot memorise it.
LoBaSS should rank learnable first. Everything is drawn from a seeded generator.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_CONS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
KINDS = ("learnable", "known", "noise")


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_CONS) + rng.choice(_VOWELS) for _ in range(syllables))


def _unique_words(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    out = []
    while len(out) < n:
        w = _word(rng, rng.choice((2, 3)))
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


@dataclass(frozen=True)
class World:
    seed: int = 0
    n_lands: int = 40  # capital facts: pretrained, and the "known" SFT samples
    n_things: int = 40  # color facts only the SFT data teaches: the "learnable" samples
    n_pretrain_things: int = 30  # color facts in pretraining, so the base knows the form
    n_per_kind: int = 200  # SFT samples of each kind
    pretrain_repeats: int = 12


def _chat(user: str, assistant: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def build(world: World) -> tuple[list[list[dict[str, str]]], list[dict]]:
    """(pretraining conversations, SFT records in ``messages`` format with a ``kind``)."""
    rng = random.Random(world.seed)
    taken: set[str] = set(COLORS)
    lands = _unique_words(rng, world.n_lands, taken)
    cities = _unique_words(rng, world.n_lands, taken)
    things = _unique_words(rng, world.n_things + world.n_pretrain_things, taken)
    vocab = _unique_words(rng, 300, taken)  # words for chit-chat and noise
    capital = dict(zip(lands, cities, strict=True))
    color = {t: rng.choice(COLORS) for t in things}
    sft_things, pre_things = things[: world.n_things], things[world.n_things :]

    def capital_qa(land: str) -> list[dict[str, str]]:
        return _chat(
            f"what is the capital of {land}?", f"the capital of {land} is {capital[land]}."
        )

    def color_qa(thing: str) -> list[dict[str, str]]:
        return _chat(f"what color is the {thing}?", f"the {thing} is {color[thing]}.")

    pretrain = []
    for _ in range(world.pretrain_repeats):
        pretrain += [capital_qa(land) for land in lands]
        pretrain += [color_qa(t) for t in pre_things]
        for _ in range(world.n_lands):
            name = rng.choice(vocab)
            pretrain.append(_chat(f"hello, i am {name}.", f"hello {name}, nice to meet you."))
    rng.shuffle(pretrain)

    sft = []
    for i in range(world.n_per_kind):
        sft.append({"kind": "learnable", "messages": color_qa(sft_things[i % len(sft_things)])})
        sft.append({"kind": "known", "messages": capital_qa(lands[i % len(lands)])})
        words = " ".join(rng.choice(vocab) for _ in range(rng.randint(4, 8)))
        sft.append({"kind": "noise", "messages": _chat("say something.", words + ".")})
    rng.shuffle(sft)
    for i, rec in enumerate(sft):
        rec["id"] = f"demo-{i:04d}"
    return pretrain, sft
