"""Whether the reference learned: the held-out records' mean response loss under the base
and the saved reference, by the scorer's own torch engine (``scoring.reference`` judges)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from fastscore.config import TrainConfig
from fastscore.engines.models import pair_dtype
from fastscore.errors import ConfigError
from fastscore.records import RenderedSample
from fastscore.scoring import reference
from fastscore.scoring.arithmetic import mean_nll
from fastscore.training.schedule import Launch, Plan

log = logging.getLogger(__name__)


def said_if_not_learned(check, cfg: TrainConfig, out: Path, launch: Launch) -> None:
    """The held-out check's warning, by the launch's first process; --strict: an error."""
    said = reference.warning(check) if check else None
    if said and launch.main:
        if cfg.strict:
            raise ReferenceNotLearned(f"train-ref --strict: {said} (saved in {out} all the same)")
        log.warning("train-ref: %s", said)


class ReferenceNotLearned(ConfigError):
    """train-ref --strict: the held-out check says the reference did not learn enough."""


def held_out_check(
    cfg: TrainConfig, p: Plan, ref: Path, held: tuple[RenderedSample, ...]
) -> dict[str, Any] | None:
    """The held-out records' mean response loss under the base and under the saved
    reference, by the scorer's own torch engine (the losses score will compute), and the
    verdict (``scoring.reference.verdict``); None when nothing was held out (said)."""
    from fastscore.config import EngineConfig
    from fastscore.engines.adapters import is_adapter, torch_pair
    from fastscore.engines.torch_engine import TorchEngine

    if not held:  # asked for (--holdout 0): said; too few records for auto: warned
        said = log.info if str(cfg.holdout).strip() == "0" else log.warning
        said(
            "train-ref: no records held out (--holdout %s), so nothing checks that the "
            "reference learned",
            cfg.holdout,
        )
        return None
    t0 = time.perf_counter()
    ecfg, _ = pair_dtype(
        EngineConfig(kind="torch", device=p.device, trust_remote_code=cfg.trust_remote_code),
        cfg.base,
        ref,
    )
    losses = {}
    engines = logging.getLogger("fastscore.engines")
    level = engines.level
    engines.setLevel(logging.WARNING)  # their start lines: the check's own line says it all
    try:
        if is_adapter(ref):  # one base, the adapter off then on
            pair = torch_pair(cfg.base, ref, ecfg)
            try:
                for name, engine in zip(("base", "ref"), pair, strict=True):
                    losses[name] = [mean_nll(lp) for lp in engine.response_logprobs(list(held))]
            finally:
                for engine in pair:
                    engine.close()
        else:  # one model at a time
            for name, model in (("base", cfg.base), ("ref", str(ref))):
                engine = TorchEngine(model, ecfg, name=name)
                try:
                    losses[name] = [mean_nll(lp) for lp in engine.response_logprobs(list(held))]
                finally:
                    engine.close()
    finally:
        engines.setLevel(level)
    check = reference.verdict(losses["base"], losses["ref"])
    check["seconds"] = round(time.perf_counter() - t0, 3)
    check["seed"] = cfg.seed
    check["indices"] = [s.index for s in held]  # the records' places in the input
    return check
