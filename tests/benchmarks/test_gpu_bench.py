"""The GPU benchmark's code on CPU at a tiny shape (its figures mean nothing here), and its
pure pieces by hand, so that a device run finds no bug a CPU could have shown."""

import json
import math

import numpy as np

from fastscore.benchmarks import gpu as gb
from fastscore.records import RenderedSample


def test_tiny_shape_runs_every_way_on_cpu(tmp_path):
    import argparse

    p = argparse.ArgumentParser()
    gb.add_cli_args(p)
    argv = [
        "--shape", "tiny", "--device", "cpu", "--samples", "8", "--padded-samples", "4",
        "--loop-samples", "2", "--median-prompt", "20", "--median-response", "30",
        "--max-tokens", "256", "--workdir", str(tmp_path), "--json-out",
        str(tmp_path / "out.json"), "--profile-out", str(tmp_path / "profile.txt"),
        "--fp8-rehearsal",
    ]  # fmt: skip
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: a second thread only waits (and stalls a busy CPU)
    try:
        summary = gb.main(p.parse_args(argv), argv)
    finally:
        torch.set_num_threads(threads)
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["ratios"] == summary["ratios"]
    assert {"device", "command", "matmul_tflops", "ways", "ratios"} <= set(written)
    assert written["command"].startswith("python -m fastscore.benchmarks.gpu --shape tiny")
    assert [w["name"] for w in written["ways"]] == list(gb.WAYS) and "errors" not in written
    for w in written["ways"]:
        assert w["tokens_per_s"] > 0 and w["mfu"] > 0 and "peak_mem_gib" in w
    assert written["ways"][0]["stage_seconds"]["engine_base"] > 0  # e2e ran the pipeline
    assert set(written["ratios"]) == {
        "mfu", "e2e_over_engine", "vs_one_sample_loop", "vs_hf_padded", "mem_vs_hf_padded",
        "fp8_e2e_over_bf16_e2e", "fp8_engine_over_bf16_engine",
    }  # fmt: skip
    # the FP8 ways ran (rehearsed with torch's CPU kernel), against their own format's rate
    assert written["matmul_tflops_fp8"] > 0 and written["ratios"]["fp8_e2e_over_bf16_e2e"] > 0
    a = written["fp8_agreement"]
    assert a["samples"] == 8 and a["loss_base"]["max_abs_delta"] < 0.5, a
    assert (tmp_path / "scores-fp8.jsonl").exists()
    assert written["ratios"]["mem_vs_hf_padded"] is None  # no GPU memory on CPU
    assert written["engine"]["batching"] == "packed"
    assert written["profile_top"] and "Name" in (tmp_path / "profile.txt").read_text()
    assert (tmp_path / "scores.jsonl").exists()


def test_sample_lengths_are_long_tailed_and_capped():
    spec = gb.DataSpec(150, 250, 0.9, 4096)
    lengths = gb.sample_lengths(20000, spec, seed=0)
    total = lengths.sum(axis=1) + gb.TEMPLATE_TOKENS
    assert lengths.min() >= 1 and total.max() <= 4096
    assert abs(np.median(lengths[:, 0]) - 150) < 8 and abs(np.median(lengths[:, 1]) - 250) < 12
    assert 560 < total.mean() < 630  # the issue's ~592 tokens per sample


def test_word_tokenizer_has_the_exact_vocabulary(tmp_path):
    tok = gb.build_word_tokenizer(300, tmp_path)
    assert len(tok) == 300
    ids = tok("<|im_start|>user\nw0 w5 w290<|im_end|>", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == [
        "<|im_start|>",
        "user",
        "w0",
        "w5",
        "w290",
        "<|im_end|>",
    ]


def test_stratified_subset_spans_the_lengths():
    samples = [RenderedSample(i, i, np.zeros(n, np.int32), np.ones(1, np.int32)) for i, n in
               enumerate([5, 50, 10, 40, 20, 30, 1000, 2, 8, 60])]  # fmt: skip
    sub = gb.stratified(samples, 5)
    assert [s.n_tokens for s in sub] == [5, 10, 30, 50, 1000]
    assert gb.stratified(samples, 99) == samples


def test_ratios_and_targets_by_hand():
    def way(name, tps, m, mem):
        return gb.WayResult(name, 1, 1, 1.0, tps, m, mem)

    results = {
        "fastscore-e2e": way("fastscore-e2e", 90.0, 0.55, 34.0),
        "engine": way("engine", 100.0, 0.6, 33.0),
        "hf-padded": way("hf-padded", 80.0, 0.4, 60.0),
        "one-sample-loop": way("one-sample-loop", 20.0, 0.15, 31.0),
    }
    r = gb.summarize(results)
    assert r.pop("fp8_e2e_over_bf16_e2e") is None and r.pop("fp8_engine_over_bf16_engine") is None
    assert r == {
        "mfu": 0.6,
        "e2e_over_engine": 0.9,
        "vs_one_sample_loop": 4.0,
        "vs_hf_padded": 1.5,
        "mem_vs_hf_padded": 0.55,
    }
    met = gb.check_targets(r, gb.SHAPES["llama-8b"].targets)
    assert met == {
        "mfu": False, "e2e_over_engine": True, "vs_one_sample_loop": True,
        "vs_hf_padded": True, "mem_vs_hf_padded": True,
    }  # fmt: skip
    assert gb.summarize({"engine": results["engine"]})["vs_hf_padded"] is None


def test_pair_flops_count_both_models():
    s = RenderedSample(0, 0, np.zeros(10, np.int32), np.arange(5, 10, dtype=np.int32))
    shape = gb.SHAPES["tiny"].model
    one = gb.scoring_flops(shape, [(10, 5)])
    assert gb.pair_flops(shape, [s]) == 2 * one and math.isfinite(one)


def test_fp8_ratios_by_hand():
    def way(name, tps):
        return gb.WayResult(name, 1, 1, 1.0, tps, 0.5, 30.0)

    results = {
        "fastscore-e2e": way("fastscore-e2e", 90.0),
        "engine": way("engine", 100.0),
        "engine-fp8": way("engine-fp8", 170.0),
        "fastscore-e2e-fp8": way("fastscore-e2e-fp8", 144.0),
    }
    r = gb.summarize(results)
    assert r["fp8_engine_over_bf16_engine"] == 1.7 and r["fp8_e2e_over_bf16_e2e"] == 1.6
    met = gb.check_targets(r, gb.SHAPES["llama-8b"].targets)
    assert met["fp8_e2e_over_bf16_e2e"] is True
