"""The scoring stream: records in, one scores line per record out, in input order.

read -> parse -> render (generators, in a prefetch thread) -> chunks of ~batch_tokens ->
both engines -> mean losses -> aggregate -> the sink, flushed per chunk.

Samples whose rendered token ids (and scored positions) are identical get the engines'
work once: a hash of the ids per sample, remembered for the last ``IDENTICAL_WINDOW``
distinct samples, maps a repeat to the first one's losses (real SFT sets hold exact
duplicates). Engines may answer asynchronously (served ones do): both models' requests
of a chunk are in flight together, and the next chunk's are sent before this one is
aggregated and written.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import math
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastscore.data.formats import to_samples
from fastscore.data.ids import flag_duplicate_ids
from fastscore.data.readers import location
from fastscore.errors import InputError
from fastscore.records import NONFINITE, OK, RawRecord, RenderedSample, ScoredSample
from fastscore.runs.stats import Stats
from fastscore.scoring.arithmetic import ifd, mean_nll, response_alone, score_losses

MAX_CHUNK_RECORDS = 8192


# distinct samples whose losses are remembered for repeats: about 100 bytes each
IDENTICAL_WINDOW = 1 << 18


def chunk_by_tokens(items: Iterable[RenderedSample], batch_tokens: int) -> Iterator[list]:
    """Consecutive runs of samples holding about ``batch_tokens`` scorable tokens each; the
    sequences of one record (a preference pair's two sides) stay in one chunk."""
    buf: list[RenderedSample] = []
    tokens = 0
    for r in items:
        full = tokens >= batch_tokens or len(buf) >= MAX_CHUNK_RECORDS
        if full and buf[-1].index != r.index:
            yield buf
            buf, tokens = [], 0
        buf.append(r)
        if r.status == OK:
            tokens += r.n_tokens
    if buf:
        yield buf


def prefetch(it: Iterable, depth: int = 2) -> Iterator:
    """Run ``it`` in a background thread, ``depth`` items ahead of the consumer.

    Reading and rendering the next chunk then overlaps the engines' work on this one (the
    engines release the GIL in their kernels). An exception in ``it`` is re-raised here.
    When the consumer stops early (an error, ``--strict``), the thread stops too.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(x) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def worker() -> None:
        source = iter(it)
        try:
            for x in source:
                if not put(x):
                    return
            put(done)
        except BaseException as e:  # handed to the consumer, raised there
            put(e)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # the reader's files, now, in this thread

    t = threading.Thread(target=worker, name="fastscore-prefetch", daemon=True)
    t.start()
    try:
        while True:
            x = q.get()
            if x is done:
                return
            if isinstance(x, BaseException):
                raise x
            yield x
    finally:
        stop.set()
        t.join(timeout=10)


def timed(it: Iterable, stats: Stats, stage: str) -> Iterator:
    it = iter(it)
    while True:
        with stats.timer(stage):
            try:
                x = next(it)
            except StopIteration:
                return
        yield x


def aggregate(sample: RenderedSample, losses: tuple | None) -> ScoredSample:
    """One rendered sample and its mean losses (base, ref, and base alone for ifd or None)
    -> its scores line."""
    if sample.status != OK:
        return ScoredSample(
            sample.index,
            sample.id,
            sample.status,
            sample.reason,
            sample.n_tokens,
            sample.n_response_tokens,
        )
    lb, lr, la = losses
    if not (math.isfinite(lb) and math.isfinite(lr)):
        bad = [f"{n} loss is {v}" for n, v in (("base", lb), ("ref", lr)) if not math.isfinite(v)]
        return ScoredSample(
            sample.index,
            sample.id,
            NONFINITE,
            "; ".join(bad) + " (a response token got probability 0 or the engine returned nan)",
            sample.n_tokens,
            sample.n_response_tokens,
        )
    alone = {}
    if la is not None:
        alone = {"loss_alone": la if math.isfinite(la) else None, "ifd": ifd(lb, la)}
    return ScoredSample(
        sample.index,
        sample.id,
        OK,
        None,
        sample.n_tokens,
        sample.n_response_tokens,
        loss_base=lb,
        loss_ref=lr,
        **score_losses(lb, lr),
        **alone,
    )


SIDE_COLUMNS = ("loss_base", "loss_ref", "lobass", "rho")


def aggregate_pair(chosen: ScoredSample, rejected: ScoredSample) -> ScoredSample:
    """A preference record's line from its two sides' lines: each side's columns
    (``loss_base_chosen``, ..., ``rho_rejected``) and ``margin = lobass_chosen -
    lobass_rejected``, the difference of the normalised implicit rewards (DavIR-DPO); the
    unsuffixed columns are the chosen side's. A failed side fails the record."""
    bad = next((s for s in (chosen, rejected) if s.status != OK), None)
    if bad is not None:
        return ScoredSample(
            chosen.index,
            chosen.id,
            bad.status,
            bad.reason,
            chosen.n_tokens,
            chosen.n_response_tokens,
        )
    pair: dict[str, Any] = {}
    for name, side in (("chosen", chosen), ("rejected", rejected)):
        for col in SIDE_COLUMNS:
            pair[f"{col}_{name}"] = getattr(side, col)
        pair[f"n_tokens_{name}"] = side.n_tokens
        pair[f"n_response_tokens_{name}"] = side.n_response_tokens
    lc, lr = chosen.lobass, rejected.lobass
    pair["margin"] = None if lc is None or lr is None else lc - lr
    return dataclasses.replace(chosen, pair=pair)


def alone_sample(r: RenderedSample, bos: int | None) -> RenderedSample:
    """The response without its prompt (for ifd)."""
    ids, positions = response_alone(r.token_ids, r.response_positions, bos)
    return RenderedSample(r.index, r.id, ids, positions)


def submit(engine, samples: list[RenderedSample]) -> concurrent.futures.Future:
    """The engine's response logprobs of ``samples``: from its own ``submit`` when it works
    asynchronously (served engines), else computed now into a finished future."""
    if samples and hasattr(engine, "submit"):
        return engine.submit(samples)
    f: concurrent.futures.Future = concurrent.futures.Future()
    try:
        f.set_result(engine.response_logprobs(samples) if samples else [])
    except Exception as e:
        f.set_exception(e)
    return f


class Slot:
    """The losses (and the base's pooled features, when it gives them) of one distinct
    sample; filled when its chunk's engine work is done."""

    __slots__ = ("losses", "features")

    def __init__(self) -> None:
        self.losses: tuple | None = None
        self.features = None


def sample_key(r: RenderedSample) -> bytes:
    h = hashlib.blake2b(r.token_ids.tobytes(), digest_size=16)
    h.update(b"|")
    h.update(r.response_positions.tobytes())
    return h.digest()


class Identical:
    """Distinct samples seen lately (LRU, bounded), so that a repeat reuses the losses of
    the first one rather than the engines' work."""

    def __init__(self, window: int = IDENTICAL_WINDOW):
        self.window = window
        self.slots: OrderedDict[bytes, Slot] = OrderedDict()

    def get(self, key: bytes) -> Slot | None:
        slot = self.slots.get(key)
        if slot is not None:
            self.slots.move_to_end(key)
        return slot

    def add(self, key: bytes) -> Slot:
        slot = self.slots[key] = Slot()
        if len(self.slots) > self.window:
            self.slots.popitem(last=False)
        return slot


@dataclass
class _Job:
    chunk: list[RenderedSample]
    slots: list[Slot | None]  # per chunk item: where its losses are (None: not ok)
    new: list[tuple[Slot, RenderedSample]]  # the distinct samples sent to the engines
    futures: list[concurrent.futures.Future]  # base, ref (, base alone)
    alone: list[RenderedSample | None] | None


def score_records(
    session,
    records: Iterable[RawRecord],
    sink,
    *,
    ids=None,
    on_chunk: Callable[[int], None] | None = None,
) -> None:
    """Score ``records`` with the session's renderer and engines into ``sink`` (anything
    with ``write(list[ScoredSample])``), one line per record in input order, checking ids
    against ``ids`` (see ``ids.py``) when given. ``on_chunk(records)`` after each write."""
    cfg, stats = session.cfg, session.stats
    samples = to_samples(records, session.fmt)
    if ids is not None:
        samples = flag_duplicate_ids(samples, ids)
    rendered = timed(session.renderer.render_all(samples), stats, "read_render")
    base, ref = session.engines
    bos = session.tokenizer.bos_token_id
    seen = Identical()
    pending: _Job | None = None
    for chunk in prefetch(chunk_by_tokens(rendered, cfg.batch_tokens)):
        job = _send(chunk, base, ref, with_ifd=cfg.ifd, bos=bos, seen=seen, stats=stats)
        if pending is not None:  # this chunk's requests are out while the last is written
            _write(pending, session, sink, on_chunk=on_chunk)
        pending = job
    if pending is not None:
        _write(pending, session, sink, on_chunk=on_chunk)


def _feature_rows(job: _Job, sink):
    """One coverage feature row per record of the chunk (coverage.chunk_feature_rows)."""
    if getattr(sink, "features", None) is None:
        return None
    from fastscore.scoring.features import chunk_feature_rows

    ok = [slot.features for r, slot in zip(job.chunk, job.slots, strict=True) if r.status == OK]
    if any(f is None for f in ok):  # rows of NaN keep the file in step with the scores
        return chunk_feature_rows(job.chunk, None)
    return chunk_feature_rows(job.chunk, np.stack(ok) if ok else None)


def _send(chunk, base, ref, *, with_ifd: bool, bos, seen: Identical, stats: Stats) -> _Job:
    slots: list[Slot | None] = []
    new: list[tuple[Slot, RenderedSample]] = []
    fold_of = getattr(ref, "fold_of", None)  # a cross-fitted reference (scoring.folds)
    for r in chunk:
        if r.status != OK:
            slots.append(None)
            continue
        key = sample_key(r)
        if fold_of is not None:  # (a repeat in another fold is scored by another reference)
            key = fold_of(r.index).to_bytes(4, "little") + key
        slot = seen.get(key)
        if slot is None:
            slot = seen.add(key)
            new.append((slot, r))
        else:
            stats.counts["identical_samples"] += 1
        slots.append(slot)
    todo = [r for _, r in new]
    stats.counts["engine_tokens"] += sum(r.n_tokens for r in todo)
    with stats.timer("engine_base"):
        futures = [submit(base, todo)]
        # an in-process base has answered already: keep its pooled states before any other
        # call on it (ifd's) replaces them
        pooled = getattr(base, "pooled", None) if todo else None
        if pooled is not None:
            for (slot, _), row in zip(new, pooled, strict=True):
                slot.features = row
    with stats.timer("engine_ref"):
        futures.append(submit(ref, todo))
    alone = None
    if with_ifd:
        with stats.timer("engine_base_alone"):
            alone = [alone_sample(r, bos) for r in todo]
            # a one-token response with no BOS has nothing to score alone
            futures.append(submit(base, [a for a in alone if a.n_response_tokens]))
    return _Job(chunk, slots, new, futures, alone)


def _write(job: _Job, session, sink, *, on_chunk) -> None:
    cfg, stats = session.cfg, session.stats
    with stats.timer("engine_wait"):
        results = [f.result() for f in job.futures]
    lp_alone = iter(results[2]) if job.alone is not None else None
    for k, ((slot, _), lb, lr) in enumerate(zip(job.new, results[0], results[1], strict=True)):
        la = None
        if lp_alone is not None:
            la = mean_nll(next(lp_alone)) if job.alone[k].n_response_tokens else math.nan
        slot.losses = (mean_nll(lb), mean_nll(lr), la)
    rows, parts = [], []
    fold_of = getattr(session.ref, "fold_of", None)
    with stats.timer("aggregate_write"):
        for j, (r, slot) in enumerate(zip(job.chunk, job.slots, strict=True)):
            parts.append(aggregate(r, slot.losses if slot is not None else None))
            if r.status == OK:
                stats.counts["tokens_scored_samples"] += r.n_tokens
                stats.counts["response_tokens"] += r.n_response_tokens
            if j + 1 < len(job.chunk) and job.chunk[j + 1].index == r.index:
                continue  # the record's other side comes next
            s = aggregate_pair(*parts) if len(parts) == 2 else parts[0]
            parts = []
            if cfg.strict and s.status != OK:
                raise InputError(
                    f"{cfg.input}, {location(cfg.input, session.kind, s.index)}: {s.status}: "
                    f"{s.reason} (--strict stops here; without it such records get "
                    "a status and the run goes on)"
                )
            stats.counts["records"] += 1
            stats.counts[f"status:{s.status}"] += 1
            if fold_of is not None:
                s.fold = fold_of(s.index)
            rows.append(s)
        sink.write(rows, _feature_rows(job, sink))
    if on_chunk is not None:
        on_chunk(len(rows))
