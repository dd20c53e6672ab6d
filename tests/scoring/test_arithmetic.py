"""fastscore.scoring.arithmetic by hand: mean losses, lobass, rho, ifd, Spearman."""

import math

import numpy as np
import pytest

from fastscore.scoring.arithmetic import lobass, mean_nll, rho, score_losses


def test_mean_nll_by_hand():
    # -(ln 0.5 + ln 0.25) / 2 = (0.6931 + 1.3863) / 2
    assert mean_nll(np.log([0.5, 0.25])) == pytest.approx((math.log(2) + math.log(4)) / 2)
    assert mean_nll(np.array([0.0, 0.0])) == 0.0
    assert math.isnan(mean_nll(np.array([])))
    assert mean_nll(np.array([-np.inf, -1.0])) == math.inf


def test_mean_nll_sums_in_float64():
    lp = np.full(1_000_000, -0.1, dtype=np.float32)
    assert mean_nll(lp) == pytest.approx(float(np.float32(0.1)), rel=1e-12)


def test_scores_by_hand():
    assert lobass(2.0, 0.5) == pytest.approx(0.75)
    assert rho(2.0, 0.5) == pytest.approx(1.5)
    assert lobass(1.0, 1.5) == pytest.approx(-0.5)  # the reference got worse
    assert lobass(0.0, 0.3) is None  # undefined, never a made-up number
    assert score_losses(4.0, 1.0) == {"lobass": pytest.approx(0.75), "rho": pytest.approx(3.0)}


def test_lobass_ranking_equals_base_over_ref_ranking():
    # METHOD.md: (Lb-Lr)/Lb and Lb/Lr - 1 rank samples identically.
    rng = np.random.default_rng(0)
    lb = rng.uniform(0.5, 5, 200)
    lr = rng.uniform(0.1, 5, 200)
    a = np.argsort([-lobass(b, r) for b, r in zip(lb, lr, strict=True)], kind="stable")
    b = np.argsort(-(lb / lr - 1), kind="stable")
    assert (a == b).all()


def test_ifd_by_hand():
    from fastscore.scoring.arithmetic import ifd

    assert ifd(1.0, 2.0) == 0.5
    assert ifd(3.0, 2.0) == 1.5
    assert ifd(1.0, 0.0) is None and ifd(1.0, math.nan) is None


def test_response_alone_keeps_every_turns_response_tokens():
    from fastscore.scoring.arithmetic import response_alone

    ids = np.array([1, 10, 11, 20, 21, 12, 13, 22], dtype=np.int32)
    pos = np.array([3, 4, 7], dtype=np.int32)  # two turns: 20 21, then 22
    got_ids, got_pos = response_alone(ids, pos, bos=1)
    assert got_ids.tolist() == [1, 20, 21, 22] and got_pos.tolist() == [1, 2, 3]
    got_ids, got_pos = response_alone(ids, pos, bos=None)
    assert got_ids.tolist() == [20, 21, 22] and got_pos.tolist() == [1, 2]


def test_spearman_by_hand():
    from fastscore.scoring.arithmetic import spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties share ranks: x ranks 1.5 1.5 3 4, y ranks 1 2 3 4; centred, sum xy = 4.5,
    # sum x^2 = 4.5, sum y^2 = 5
    assert spearman([5, 5, 6, 7], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1, 2], [1, 2]) is None


def test_seeded_uniform_and_perplexity():
    from fastscore.scoring.arithmetic import perplexity, seeded_uniform

    a = [seeded_uniform(0, i) for i in range(1000)]
    assert a == [seeded_uniform(0, i) for i in range(1000)]  # fixed by (seed, index)
    assert a != [seeded_uniform(1, i) for i in range(1000)]
    assert all(0.0 <= v < 1.0 for v in a) and 0.45 < sum(a) / len(a) < 0.55
    assert perplexity(0.0) == 1.0 and perplexity(math.log(4.0)) == pytest.approx(4.0)
    assert perplexity(1000.0) == math.inf
