"""Cross-fitted references' arithmetic on hand-made cases: the folds' draw, the routing of
each sample to its fold's engine, the pooled held-out verdict and the input check."""

from collections import Counter

import numpy as np
import pytest

from fastscore.errors import ConfigError, InputError
from fastscore.records import RenderedSample
from fastscore.scoring import folds
from fastscore.scoring import reference as r


def test_the_folds_are_a_balanced_seeded_draw():
    a = folds.assignment(11, 3, seed=0)
    assert sorted(Counter(a.tolist()).values()) == [3, 4, 4]  # sizes differ by one at most
    assert np.array_equal(a, folds.assignment(11, 3, seed=0))
    assert not np.array_equal(a, folds.assignment(11, 3, seed=1))
    assert set(folds.assignment(1000, 2, seed=5).tolist()) == {0, 1}
    assert Counter(folds.assignment(1000, 2, seed=5).tolist()) == {0: 500, 1: 500}


def test_fewer_than_two_folds_are_refused():
    folds.check_folds(None)
    folds.check_folds(2)
    for bad in (1, 0, -3):
        with pytest.raises(ConfigError, match="--folds must be at least 2"):
            folds.check_folds(bad)


class Tagging:
    """An engine whose every logprob is its own tag, so the answer shows who scored it."""

    def __init__(self, tag: float):
        self.tag, self.calls = tag, []

    def response_logprobs(self, samples):
        self.calls.append([s.index for s in samples])
        return [np.full(s.n_response_tokens, self.tag) for s in samples]


def _sample(index: int, n: int = 2) -> RenderedSample:
    return RenderedSample(index, None, np.arange(n + 1), np.arange(1, n + 1))


def test_each_sample_goes_to_its_folds_engine_and_comes_back_in_order():
    engines = [Tagging(-1.0), Tagging(-2.0)]
    e = folds.FoldedEngine(engines, np.array([1, 0, 0, 1, 1]), path="ref")
    got = e.response_logprobs([_sample(i) for i in (4, 0, 1, 2, 3, 1)])
    assert [float(x[0]) for x in got] == [-2.0, -2.0, -1.0, -1.0, -2.0, -1.0]
    assert engines[0].calls == [[1, 2, 1]] and engines[1].calls == [[4, 0, 3]]  # one call each
    assert e.response_logprobs([]) == []
    with pytest.raises(InputError, match="record 5 is past the 5 records"):
        e.response_logprobs([_sample(5)])


def test_the_pooled_verdict_weighs_each_folds_check_by_its_records():
    a = r.verdict([4.0, 4.0], [2.0, 2.0])  # -50%
    b = r.verdict([2.0, 2.0, 2.0, 2.0], [2.0, 2.0, 2.0, 3.0])  # +12.5%, none fell
    p = r.pooled([a, b])
    assert p["records"] == 6
    assert p["loss_before"] == pytest.approx((8 + 8) / 6)
    assert p["loss_after"] == pytest.approx((4 + 9) / 6)
    assert p["relative_drop"] == pytest.approx(3 / 16)
    assert p["share_fell"] == pytest.approx(2 / 6) and p["verdict"] == r.LEARNED
    assert r.pooled([b])["verdict"] == r.NOT_LEARNED
    with pytest.raises(ValueError):
        r.pooled([])


def test_another_inputs_records_are_refused():
    drawn = {"k": 2, "seed": 0, "records": 10, "input": "a.jsonl", "dirs": ["fold-0", "fold-1"]}
    folds.check_input(drawn, "a.jsonl", 10)
    with pytest.raises(InputError, match="drawn over the 10 records of a.jsonl; b.jsonl has 9"):
        folds.check_input(drawn, "b.jsonl", 9)


def test_a_fold_that_is_missing_is_said(tmp_path):
    (tmp_path / "fold-0").mkdir()
    drawn = {"dirs": ["fold-0", "fold-1"]}
    with pytest.raises(ConfigError, match="lists fold-1 but it is not there"):
        folds.dirs(tmp_path, drawn)


def test_a_draw_that_comes_out_otherwise_is_refused():
    drawn = {"k": 2, "seed": 3, "records": 10}
    draw = folds.assignment(10, 2, 3)
    assert np.array_equal(folds.drawn({**drawn, "draw_sha256": folds.draw_digest(draw)}), draw)
    with pytest.raises(ConfigError, match="cannot be drawn again as they were trained"):
        folds.drawn({**drawn, "draw_sha256": "0" * 16})
