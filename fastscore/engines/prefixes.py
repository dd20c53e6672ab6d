"""Token prefixes that several samples share, computed once (the torch engine's packed path).

Tool-use and agent sets repeat one long system prompt before every conversation, chat
templates add a fixed preamble, and a preference pair's two sides share their prompt.
The hidden states of a prefix do not depend on what follows it, so the engine runs each
shared prefix once, keeps its keys and values per layer and its final hidden states
(``PrefixState``), and runs each sample's remainder attending to the prefix's keys and
values and its own.

``plan_prefixes`` decides, from the token ids alone, which prefix each sample uses (pure:
tested by hand-made cases). The samples are sorted by their ids, so those that share a
prefix sit together; the longest common prefixes of neighbours form a tree (each node:
a run of samples and the prefix they all share), and for each node the plan takes the
cheaper of computing its prefix once (then its children may use it or a longer one of
their own) or leaving its samples to the prefix above. The cost counted is tokens run
through the trunk. A prefix kept from an earlier call (``PrefixCache``, least recently
used out first, within a byte budget) costs nothing to use.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_PREFIX_TOKENS = 16  # shorter prefixes save less than the bookkeeping costs
_MAX_DEPTH = 200  # of the tree walked (a pathological input is then shared less, not wrong)


def prefix_key(ids: np.ndarray, n: int) -> bytes:
    """What identifies the first ``n`` tokens of ``ids``."""
    return np.asarray(ids[:n], dtype="<u4").tobytes()


@dataclass
class PrefixState:
    """A prefix run once: keys and values per layer ``[P, kv heads, head dim]`` (rotary
    applied) and the final hidden states ``[P, hidden]`` (the head's input, for response
    positions and pooled features inside the prefix)."""

    key: bytes
    length: int
    k: list
    v: list
    hidden: Any

    @property
    def nbytes(self) -> int:
        t = [*self.k, *self.v, self.hidden]
        return int(sum(x.numel() * x.element_size() for x in t))


class PrefixCache:
    """Prefix states by key, least recently used evicted first past ``budget_bytes``."""

    def __init__(self, budget_bytes: int):
        self.budget = int(budget_bytes)
        self.entries: OrderedDict[bytes, PrefixState] = OrderedDict()
        self.bytes = 0
        self.counts: Counter = Counter()

    def __contains__(self, key: bytes) -> bool:
        return key in self.entries

    def lengths(self) -> list[int]:
        return sorted({s.length for s in self.entries.values()}, reverse=True)

    def get(self, key: bytes) -> PrefixState | None:
        s = self.entries.get(key)
        if s is not None:
            self.entries.move_to_end(key)
        return s

    def put(self, state: PrefixState) -> None:
        """Keep ``state`` (most recent); evict the least recent until within the budget.
        A state larger than the whole budget is not kept (its call still uses it)."""
        size = state.nbytes
        if size > self.budget:
            self.counts["too_large"] += 1
            return
        old = self.entries.pop(state.key, None)
        if old is not None:
            self.bytes -= old.nbytes
        self.entries[state.key] = state
        self.bytes += size
        while self.bytes > self.budget:
            _, gone = self.entries.popitem(last=False)
            self.bytes -= gone.nbytes
            self.counts["evictions"] += 1
        self.counts["peak_bytes"] = max(self.counts["peak_bytes"], self.bytes)


@dataclass(frozen=True)
class PrefixPlan:
    """Per sample: the prefix length it uses (0: none) and its key; ``build``: the new
    prefixes to run, by key, as token ids."""

    lengths: list[int]
    keys: list[bytes | None]
    build: dict[bytes, np.ndarray]


def fit_budget(plan: PrefixPlan, max_tokens: int) -> PrefixPlan:
    """``plan`` with its new prefixes cut to ``max_tokens`` in all, those that spare the
    most tokens kept first; the samples of a dropped one share nothing (a preference set's
    prompts, one per pair, could otherwise hold more states than the budget)."""
    if sum(len(ids) for ids in plan.build.values()) <= max_tokens:
        return plan
    users = Counter(k for k in plan.keys if k is not None)
    order = sorted(plan.build, key=lambda k: -(users[k] - 1) * len(plan.build[k]))
    keep, total = {}, 0
    for k in order:
        if total + len(plan.build[k]) <= max_tokens:
            keep[k] = plan.build[k]
            total += len(plan.build[k])
    dropped = set(plan.build) - set(keep)
    lengths = [0 if k in dropped else n for n, k in zip(plan.lengths, plan.keys, strict=True)]
    keys = [None if k in dropped else k for k in plan.keys]
    return PrefixPlan(lengths, keys, keep)


def _lcp(a: np.ndarray, b: np.ndarray) -> int:
    m = min(a.shape[0], b.shape[0])
    if m == 0:
        return 0
    eq = a[:m] == b[:m]
    return m if eq.all() else int(np.argmin(eq))


def plan_prefixes(
    ids: list[np.ndarray],
    *,
    cached: Callable[[bytes], bool] = lambda key: False,
    cached_lengths: list[int] = (),
    min_tokens: int = MIN_PREFIX_TOKENS,
) -> PrefixPlan:
    """Which prefix each sample of ``ids`` uses. A prefix leaves at least one token to each
    sample that uses it; ``cached(key)`` says a prefix is kept already (free to use)."""
    n = len(ids)
    lengths = [int(x.shape[0]) for x in ids]
    # the longest kept prefix each sample starts with
    own: list[tuple[int, bytes | None]] = []
    for x, size in zip(ids, lengths, strict=True):
        best: tuple[int, bytes | None] = (0, None)
        for p in cached_lengths:
            if min_tokens <= p < size and cached(prefix_key(x, p)):
                best = (p, prefix_key(x, p))
                break
        own.append(best)
    order = sorted(range(n), key=lambda i: np.asarray(ids[i], dtype=">u4").tobytes())
    lcp = [0] + [_lcp(ids[order[j - 1]], ids[order[j]]) for j in range(1, n)]
    use: list[tuple[int, bytes | None]] = [(0, None)] * n
    build: dict[bytes, np.ndarray] = {}
    memo: dict[tuple[int, int, int], tuple[int, bool]] = {}
    nodes: dict[tuple[int, int], tuple[int, list[tuple[int, int]]]] = {}

    def node(lo: int, hi: int):
        """The run's shared prefix (capped: one token left to each) and its child runs."""
        got = nodes.get((lo, hi))
        if got is None:
            common = min(lcp[lo + 1 : hi])
            cuts = [lo] + [j for j in range(lo + 1, hi) if lcp[j] == common] + [hi]
            p = min(common, min(lengths[order[j]] for j in range(lo, hi)) - 1)
            got = nodes[(lo, hi)] = (p, list(zip(cuts, cuts[1:], strict=False)))
        return got

    def is_leaf(lo: int, hi: int, depth: int) -> bool:
        return hi - lo == 1 or depth > _MAX_DEPTH

    def leaf(lo: int, hi: int, avail: int) -> int:
        return sum(lengths[order[j]] - max(avail, own[order[j]][0]) for j in range(lo, hi))

    def known(lo: int, hi: int, avail: int, depth: int) -> tuple[int, bool] | None:
        got = memo.get((lo, hi, avail))
        if got is None and is_leaf(lo, hi, depth):  # (a leaf's sum, once)
            got = memo[(lo, hi, avail)] = (leaf(lo, hi, avail), False)
        return got

    def cost(lo: int, hi: int, avail: int, depth: int) -> tuple[int, bool]:
        """(tokens run for samples order[lo:hi] given a prefix of ``avail`` tokens paid
        for, whether the run's own prefix is taken): the tree walked with a stack of its
        own, each run's children costed before the run itself (a deep tree of long shared
        prefixes needs no raised recursion limit)."""
        stack = [(lo, hi, avail, depth)]
        while stack:
            a0, b0, av, d = stack[-1]
            if known(a0, b0, av, d) is not None:
                stack.pop()
                continue
            p, children = node(a0, b0)
            takes = p >= min_tokens and p > av
            wants = [(a, b, av, d + 1) for a, b in children]
            if takes:
                wants += [(a, b, p, d + 1) for a, b in children]
            missing = [w for w in wants if known(*w) is None]
            if missing:
                stack.extend(missing)
                continue
            stack.pop()
            leave = sum(known(a, b, av, d + 1)[0] for a, b in children)
            best = (leave, False)
            if takes:
                paid = 0 if cached(prefix_key(ids[order[a0]], p)) else p
                take = paid + sum(known(a, b, p, d + 1)[0] for a, b in children)
                if take < leave:
                    best = (take, True)
            memo[(a0, b0, av)] = best
        return known(lo, hi, avail, depth)

    # each run takes its own prefix where that costs less, depth first in sorted order (the
    # order the prefixes are built in)
    stack = [(0, n, (0, None), 0)] if n else []
    while stack:
        lo, hi, avail, depth = stack.pop()
        if is_leaf(lo, hi, depth):
            for j in range(lo, hi):
                i = order[j]
                use[i] = own[i] if own[i][0] > avail[0] else avail
            continue
        p, children = node(lo, hi)
        if cost(lo, hi, avail[0], depth)[1]:
            key = prefix_key(ids[order[lo]], p)
            if not cached(key):
                build[key] = np.asarray(ids[order[lo]][:p])
            avail = (p, key)
        stack.extend((a, b, avail, depth + 1) for a, b in reversed(children))
    return PrefixPlan([u[0] for u in use], [u[1] for u in use], build)
