"""In-process vLLM engine returning teacher-forced logprobs of the response tokens.

Two ways to ask vLLM, picked at start (``EngineConfig.logprobs_path``):
- ``token_ids``: ``prompt_logprob_token_ids`` + ``prompt_logprob_start`` return an array
  holding only the rows we ask for. Needs the V2 model runner (GPU); the fast path.
- ``flat``: ``prompt_logprobs=0`` with ``flat_logprobs=True`` returns the actual token's
  logprob at every prompt position as flat lists; we take the response positions.
Either way the engine gets token ids (no detokenization) with prefix caching off, and the
token ids vLLM reports back are checked against what was sent.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from fastscore.config import EngineConfig
from fastscore.errors import EngineError
from fastscore.quiet import output_to_log, verbose
from fastscore.records import RenderedSample

log = logging.getLogger(__name__)


class VllmEngine:
    def __init__(self, model: str | Path, cfg: EngineConfig, *, max_model_len: int, name: str):
        self.name = name
        self.model = str(model)
        self.cfg = cfg
        self.max_model_len = max_model_len
        # vLLM's engine process inherits where its output goes: a log file unless verbose
        with output_to_log(f"vllm-{name}") as self.log_path:
            self._start(cfg, name)
        where = f"in {self.log_path}" if self.log_path else "above"
        log.info(
            "%s engine up in %.1fs (logprobs path: %s; vLLM's log %s)",
            name,
            self.start_seconds,
            self.path,
            where,
        )

    def _start(self, cfg: EngineConfig, name: str) -> None:
        try:
            from vllm import LLM, SamplingParams
            from vllm.platforms import current_platform
        except ImportError as e:
            raise EngineError(
                f"vLLM is not importable ({e}). Install it: pip install 'fastscore[cpu]' on a "
                "CPU machine or 'fastscore[gpu]' on a GPU machine"
            ) from e
        self._SamplingParams = SamplingParams
        on_cpu = current_platform.is_cpu()
        kwargs: dict = dict(
            model=self.model,
            dtype=cfg.dtype,
            enable_prefix_caching=False,
            max_model_len=self.max_model_len,
            seed=cfg.seed,
            trust_remote_code=cfg.trust_remote_code,
            tensor_parallel_size=cfg.tensor_parallel_size,
            enforce_eager=on_cpu if cfg.enforce_eager is None else cfg.enforce_eager,
            use_tqdm_on_load=verbose(),
        )
        if cfg.quantize == "fp8":
            if on_cpu:
                raise EngineError(
                    "--quantize fp8: vLLM's online fp8 (quantization='fp8') needs a GPU of "
                    "compute capability >= 8.9; on CPU score in the checkpoint's dtype"
                )
            kwargs["quantization"] = "fp8"  # weights per tensor at load, activations dynamic
        if cfg.kv_cache_gb is not None or (on_cpu and cfg.gpu_memory_utilization is None):
            kwargs["kv_cache_memory_bytes"] = int((cfg.kv_cache_gb or 1.0) * (1 << 30))
        if cfg.gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        elif not on_cpu:
            kwargs["gpu_memory_utilization"] = 0.42  # two engines share one device
        t0 = time.perf_counter()
        try:
            self.llm = LLM(**kwargs)
        except Exception as e:
            where = f"in {self.log_path}" if self.log_path else "in the log above"
            raise EngineError(
                f"could not start vLLM for the {name} model {self.model!r}: "
                f"{type(e).__name__}: {e}. vLLM's own error is {where}. Common "
                "causes: too little memory for the KV cache (lower --kv-cache-gb, or "
                "--gpu-memory-utilization on a GPU); a head size vLLM's CPU attention refuses "
                "(64 works); an architecture vLLM does not support (try --engine torch)"
            ) from e
        self.start_seconds = time.perf_counter() - t0
        v2 = bool(getattr(self.llm.llm_engine.vllm_config, "use_v2_model_runner", False))
        if cfg.logprobs_path == "token_ids" and not v2:
            raise EngineError(
                "logprobs_path='token_ids' needs vLLM's V2 model runner "
                "(VLLM_USE_V2_MODEL_RUNNER=1, a GPU); use 'auto' or 'flat'"
            )
        self.path = "token_ids" if cfg.logprobs_path in ("auto", "token_ids") and v2 else "flat"

    def info(self) -> dict:
        return {
            "engine": "vllm",
            "model": self.model,
            "logprobs_path": self.path,
            "max_model_len": self.max_model_len,
            "quantize": self.cfg.quantize,
            "start_seconds": round(self.start_seconds, 3),
            "log": None if self.log_path is None else str(self.log_path),
        }

    def response_logprobs(self, samples: list[RenderedSample]) -> list[np.ndarray]:
        if not samples:
            return []
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=s.token_ids.tolist()) for s in samples]
        if self.path == "token_ids":
            params = [self._token_id_params(s) for s in samples]
        else:
            params = self._SamplingParams(
                max_tokens=1, prompt_logprobs=0, detokenize=False, flat_logprobs=True
            )
        try:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        except Exception as e:
            where = f" (vLLM's own log: {self.log_path})" if self.log_path else ""
            raise EngineError(f"{self.name} engine failed: {type(e).__name__}: {e}{where}") from e
        if len(outputs) != len(samples):
            raise EngineError(
                f"{self.name} engine returned {len(outputs)} outputs for {len(samples)} prompts"
            )
        extract = self._from_token_ids if self.path == "token_ids" else self._from_flat
        return [extract(s, o) for s, o in zip(samples, outputs, strict=True)]

    def _check_prompt(self, sample: RenderedSample, out) -> None:
        got = out.prompt_token_ids
        if got is None or len(got) != sample.n_tokens or not np.array_equal(got, sample.token_ids):
            raise EngineError(
                f"{self.name} engine scored other tokens than were sent for "
                f"{sample.label} (sent {sample.n_tokens}, got {len(got or [])}); the engine "
                "must not re-tokenize or add tokens"
            )

    def _from_flat(self, sample: RenderedSample, out) -> np.ndarray:
        self._check_prompt(sample, out)
        flat = out.prompt_logprobs
        if flat is None or len(flat) != sample.n_tokens:
            raise EngineError(f"{self.name} engine returned no prompt logprobs for {sample.label}")
        pos = sample.response_positions
        at = np.asarray(flat.start_indices, dtype=np.int64)[pos]
        token_ids = np.asarray(flat.token_ids, dtype=np.int64)[at]
        if not np.array_equal(token_ids, sample.token_ids[pos]):
            raise EngineError(
                f"{self.name} engine's prompt logprobs are not for the sample's own tokens "
                f"({sample.label})"
            )
        return np.asarray(flat.logprobs, dtype=np.float64)[at]

    def _token_id_params(self, sample: RenderedSample):
        start, rows = token_id_rows(sample)
        return self._SamplingParams(
            max_tokens=1,
            detokenize=False,
            prompt_logprob_token_ids=rows,
            prompt_logprob_start=start,
        )

    def _from_token_ids(self, sample: RenderedSample, out) -> np.ndarray:
        self._check_prompt(sample, out)
        try:
            return pick_token_id_logprobs(sample, out.prompt_token_id_logprobs)
        except ValueError as e:
            raise EngineError(f"{self.name} engine: {e}") from e

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        core = getattr(llm.llm_engine, "engine_core", None)
        if core is not None:
            core.shutdown()  # without it the process aborts at interpreter exit


def token_id_rows(sample: RenderedSample) -> tuple[int, np.ndarray]:
    """(prompt_logprob_start, prompt_logprob_token_ids) asking for the response tokens only.

    vLLM's row i scores its ids as predictions of token ``start + i + 1``, and rows run to
    the end of the prompt. Rows of non-response tokens (between assistant turns) hold -1,
    which vLLM scores -inf at no cost and we never read.
    """
    pos = sample.response_positions
    start = int(pos[0]) - 1
    rows = np.full((sample.n_tokens - 1 - start, 1), -1, dtype=np.int32)
    rows[pos - 1 - start, 0] = sample.token_ids[pos]
    return start, rows


def pick_token_id_logprobs(sample: RenderedSample, scores) -> np.ndarray:
    """The response tokens' logprobs from vLLM's ``prompt_token_id_logprobs`` array."""
    start = int(sample.response_positions[0]) - 1
    shape = None if scores is None else np.shape(scores)
    if shape != (sample.n_tokens - 1 - start, 1):
        raise ValueError(
            f"{sample.label}: expected token-id logprobs of shape "
            f"({sample.n_tokens - 1 - start}, 1), got {shape}"
        )
    return np.asarray(scores, dtype=np.float64)[sample.response_positions - 1 - start, 0]
