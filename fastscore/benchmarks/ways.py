"""The ways to score a pair of models that the benchmarks time, one implementation each
for CPU and GPU. Each returns ``run(samples)``: one full pass of both models (base and
reference) over rendered samples, since that is the job.

- ``engine_only``: fastscore's engine on pre-tokenized samples.
- ``fastscore_e2e``: fastscore end to end, the JSONL file to the scores file
  (``score_file`` with engines already started).
- ``one_sample_loop``: transformers, one sample per forward, the loss at every position
  with the prompt masked, read back per sample (the Cherry-LLM / Data-Juicer way).
- ``padded``: transformers, longest-first right-padded batches, the full logits and a
  log-softmax over them, the response targets gathered (lm-eval-harness's HF way).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np


def engine_only(engines) -> Callable:
    def run(samples):
        for e in engines:
            e.response_logprobs(samples)

    return run


def fastscore_e2e(cfg, engines) -> Callable:
    """``run(samples)`` scores ``cfg.input`` (the file the samples were rendered from) into
    ``cfg.output`` and returns the run's manifest."""
    from fastscore.executors.local import score_file

    def run(samples=None):
        return score_file(cfg, engines=engines)[0]

    return run


def one_sample_loop(models, device="cpu") -> Callable:
    """One sample per forward, transformers' loss over every position (prompt masked)."""
    import torch

    def run(samples):
        with torch.inference_mode():
            for m in models:
                for s in samples:
                    ids = torch.from_numpy(s.token_ids.astype(np.int64))[None].to(device)
                    labels = torch.full_like(ids, -100)
                    pos = torch.from_numpy(s.response_positions.astype(np.int64)).to(device)
                    labels[0, pos] = ids[0, pos]
                    assert math.isfinite(m(input_ids=ids, labels=labels).loss.item())

    return run


def padded(models, device="cpu", batch_size: int = 16) -> Callable:
    """lm-eval-harness's HF loglikelihood: longest first, right-padded batches, the full
    logits, log_softmax over them in the model's dtype, the targets gathered."""
    import torch
    import torch.nn.functional as F

    def run(samples):
        order = sorted(range(len(samples)), key=lambda i: -samples[i].n_tokens)
        batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
        with torch.inference_mode():
            for m in models:
                for b in batches:
                    width = max(samples[i].n_tokens for i in b)
                    ids = torch.zeros((len(b), width), dtype=torch.long)
                    mask = torch.zeros_like(ids)
                    for row, i in enumerate(b):
                        ids[row, : samples[i].n_tokens] = torch.from_numpy(
                            samples[i].token_ids.astype(np.int64)
                        )
                        mask[row, : samples[i].n_tokens] = 1
                    ids, mask = ids.to(device), mask.to(device)
                    lp = F.log_softmax(m(input_ids=ids, attention_mask=mask).logits, dim=-1)
                    rows = np.concatenate(
                        [np.full(samples[i].n_response_tokens, r) for r, i in enumerate(b)]
                    )
                    cols = np.concatenate([samples[i].response_positions for i in b])
                    r = torch.from_numpy(rows).to(device)
                    c = torch.from_numpy(cols.astype(np.int64)).to(device)
                    got = lp[r, c - 1].gather(1, ids[r, c][:, None]).float().cpu()
                    assert torch.isfinite(got).all()
                    del lp

    return run


def print_table(rows: list[dict], columns: list[tuple[str, str, int, str]]) -> None:
    """``rows`` (dicts) one line each; ``columns`` as (header, key, width, format spec),
    e.g. ("tok/s", "tokens_per_s", 12, ",.0f"); the first column left-aligned, a missing
    value blank."""

    def line(cells: list[str]) -> str:
        w = [c[2] for c in columns]
        return f"{cells[0]:<{w[0]}}" + "".join(
            f"{t:>{n}}" for t, n in zip(cells[1:], w[1:], strict=True)
        )

    print(line([c[0] for c in columns]))
    for r in rows:
        print(line(["" if r.get(k) is None else format(r[k], f) for _, k, _, f in columns]))


def write_json(summary: dict, json_out: Path | None) -> None:
    """The summary to ``json_out`` (when given) and as the last line of stdout."""
    import json

    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
