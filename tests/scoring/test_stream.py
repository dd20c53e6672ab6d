"""fastscore.scoring.stream: aggregation, chunks, the prefetch thread."""

import math

import numpy as np
import pytest

from fastscore.records import NONFINITE, OK, TOO_LONG, RenderedSample
from fastscore.scoring.arithmetic import mean_nll
from fastscore.scoring.stream import aggregate, chunk_by_tokens


def _sample(i, n=5, pos=(3, 4), status=OK):
    return RenderedSample(
        i, f"s{i}", np.arange(n, dtype=np.int32), np.asarray(pos, dtype=np.int32), status
    )


def _losses(lp_base, lp_ref):
    return mean_nll(lp_base), mean_nll(lp_ref), None


def test_aggregate_ok_and_nonfinite_and_passthrough():
    s = aggregate(_sample(0), _losses(np.log([0.5, 0.5]), np.log([1.0, 0.5])))
    assert s.status == OK
    assert s.loss_base == pytest.approx(math.log(2))
    assert s.loss_ref == pytest.approx(math.log(2) / 2)
    assert s.lobass == pytest.approx(0.5)
    assert s.n_response_tokens == 2
    bad = aggregate(_sample(1), _losses(np.array([-np.inf, -1.0]), np.array([-1.0, -1.0])))
    assert bad.status == NONFINITE and bad.lobass is None and "base loss is inf" in bad.reason
    long = aggregate(_sample(2, status=TOO_LONG), None)
    assert long.status == TOO_LONG and long.loss_base is None


def test_chunks_keep_order_and_respect_budget():
    items = [_sample(i, n=10) for i in range(7)]
    items[3] = _sample(3, n=10, status=TOO_LONG)  # costs no engine tokens
    chunks = list(chunk_by_tokens(items, batch_tokens=25))
    assert [s.index for c in chunks for s in c] == list(range(7))
    assert [len(c) for c in chunks] == [3, 4]


def test_prefetch_keeps_order_and_raises_the_producers_error():
    from fastscore.scoring.stream import prefetch

    assert list(prefetch(iter(range(100)), depth=3)) == list(range(100))

    def broken():
        yield 1
        raise ValueError("record 2 is broken")

    it = prefetch(broken())
    assert next(it) == 1
    with pytest.raises(ValueError, match="record 2 is broken"):
        next(it)


def test_prefetch_stops_its_thread_when_abandoned():
    import threading
    import time

    from fastscore.scoring.stream import prefetch

    it = prefetch(iter(range(10_000)), depth=1)
    assert next(it) == 0
    it.close()
    time.sleep(0.3)
    assert not any(t.name == "fastscore-prefetch" for t in threading.enumerate())


def test_prefetch_thread_ends_when_the_consumer_stops_before_the_end_mark():
    """The producer has put its last item and waits for room for the end mark when the
    consumer stops (an error, --strict): it must not wait forever."""
    import threading
    import time

    from fastscore.scoring.stream import prefetch

    it = prefetch(iter([0, 1]), depth=1)
    assert next(it) == 0
    time.sleep(0.3)  # item 1 is queued; the end mark waits for room
    it.close()
    time.sleep(0.5)
    assert not any(t.name == "fastscore-prefetch" for t in threading.enumerate())
