"""The held-out check's arithmetic and what score makes of a reference's train manifest,
on hand-made cases."""

import json

import numpy as np
import pytest

from fastscore.errors import ConfigError
from fastscore.scoring import reference as r


def test_how_many_records_are_held_out():
    assert r.holdout_count("auto", 600) == 32  # the floor of a few dozen
    assert r.holdout_count("auto", 10_000) == 300  # 3%
    assert r.holdout_count("auto", 10_000_000) == 1000  # the cap
    assert r.holdout_count("auto", 64) == 12  # at most a fifth of few records
    assert r.holdout_count("auto", 30) == 0  # too few to tell a drop from noise
    assert r.holdout_count("0", 600) == 0
    assert r.holdout_count(64, 600) == 64 and r.holdout_count("64", 600) == 64
    assert r.holdout_count("0.1", 600) == 60
    with pytest.raises(ConfigError, match="leaving none to train on"):
        r.holdout_count("64", 64)
    for bad in ("-1", "1.5", "some", "nan", ""):
        with pytest.raises(ConfigError, match="--holdout must be auto, a count"):
            r.parse_holdout(bad)


def test_the_held_out_records_are_a_seeded_draw():
    a = r.split_holdout(100, 10, seed=0)
    assert a.tolist() == sorted(set(a.tolist())) and len(a) == 10 and a.max() < 100
    assert np.array_equal(a, r.split_holdout(100, 10, seed=0))
    assert not np.array_equal(a, r.split_holdout(100, 10, seed=1))
    assert r.split_holdout(100, 0, seed=0).size == 0


def test_verdicts():
    learned = r.verdict([4.0, 4.0, 2.0], [2.0, 3.0, 2.5])
    assert learned["loss_before"] == pytest.approx(10 / 3) and learned["loss_after"] == 2.5
    assert learned["relative_drop"] == pytest.approx(0.25) and learned["verdict"] == r.LEARNED
    assert learned["share_fell"] == pytest.approx(2 / 3) and learned["records"] == 3
    weak = r.verdict([4.0, 4.0], [3.8, 3.9])  # 3.75% lower
    assert weak["verdict"] == r.WEAK and "learned little" in r.warning(weak)
    worse = r.verdict([4.0, 4.0], [4.5, 3.9])
    assert worse["verdict"] == r.NOT_LEARNED and worse["relative_drop"] < 0
    assert "did not learn" in r.warning(worse) and r.warning(learned) is None
    assert r.describe(learned) == (
        "held-out loss 3.333 -> 2.500 (-25%, 67% of 3 records lower): learned"
    )
    with pytest.raises(ValueError):
        r.verdict([1.0], [1.0, 2.0])


def test_how_training_rendered_otherwise():
    train = {"template": {"name": "chatml", "rule": "markers", "sha256": "a"}, "max_length": 128}
    same = {"name": "chatml", "rule": "markers", "sha256": "a"}
    assert r.mismatches(train, same, 128) == [] and r.mismatches(train, same, 64) == []
    said = r.mismatches(train, {**same, "sha256": "b", "rule": "fallback"}, 256)
    assert [s.split(" ")[0] for s in said] == ["masks", "template", "max"], said
    assert "records longer than 128 tokens were never trained on" in said[-1]


def test_a_reference_no_better_than_the_base_is_said():
    assert r.spread_warning(r.lobass_spread([0.3, 0.1, np.nan])) is None
    s = r.lobass_spread([0.01, -0.05, None, 0.005])
    assert s == {"median": 0.005, "mean": pytest.approx(-0.011667, abs=1e-6),
                 "std": pytest.approx(0.027183, abs=1e-6),
                 "share_positive": pytest.approx(2 / 3, abs=1e-6)}  # fmt: skip
    assert "no better than the base" in r.spread_warning(s)
    assert r.lobass_spread([None, np.nan]) is None
    # a known record (L_base near 0) drags the mean below 0; most records say it learned
    learned = r.lobass_spread([0.3, 0.4, 0.2, -50.0])
    assert learned["mean"] < 0 and r.spread_warning(learned) is None


def test_what_score_reads_of_the_reference(tmp_path):
    check = r.verdict([4.0, 4.0], [3.9, 3.95])
    manifest = {"command": "train-ref", "template": {"name": "chatml", "sha256": "a"},
                "max_length": 64, "held_out": {**check, "indices": [3, 9]}}  # fmt: skip
    (tmp_path / "train_manifest.json").write_text(json.dumps(manifest))
    block = r.scoring_block(str(tmp_path), {"name": "chatml", "sha256": "a"}, 128,
                            np.array([0.2, 0.4]))  # fmt: skip
    assert block["held_out"] == check  # (without the indices)
    assert block["lobass"]["median"] == pytest.approx(0.3)
    assert [w.split(":")[0] for w in block["warnings"]] == [
        "the reference learned little (a drop under 15%)",
        "the reference was trained on records rendered otherwise",
    ]
    line = r.summary_line(block)
    assert (
        line.startswith("reference: held-out loss 4.000 -> 3.925")
        and "median 0.300, 100% above 0" in line
    )
    manifest["held_out"] = None
    (tmp_path / "train_manifest.json").write_text(json.dumps(manifest))
    block = r.scoring_block(str(tmp_path), {"name": "chatml", "sha256": "a"}, 64, None)
    assert block["warnings"] == [
        "the reference's training held nothing out, so nothing checked that it learned "
        "(train-ref --holdout)"
    ]
    # a reference without a train manifest (not made by train-ref): only the spread
    block = r.scoring_block(str(tmp_path / "none"), {}, 64, np.array([-0.1, 0.0]))
    assert block["train_manifest"] is None and len(block["warnings"]) == 1


def test_how_many_records_a_sampled_reference_trains_on():
    assert r.sample_count(None, 50) == 50
    assert r.sample_count("0.25", 50) == 13 and r.sample_count(0.1, 50) == 5
    assert r.sample_count("20", 50) == 20 and r.sample_count("80", 50) == 50
    for bad in ("0", "auto", "-3", "x"):
        with pytest.raises(ConfigError, match="sample must be a share"):
            r.sample_count(bad, 50)
