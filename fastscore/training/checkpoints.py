"""What a ``--resume`` may continue: each checkpoint carries its run's record (options,
the base's fingerprint, a digest of the trained tokens); a finished run's checkpoints are
moved aside, never continued by another run."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from fastscore.config import TrainConfig
from fastscore.errors import ConfigError
from fastscore.training.examples import Examples

log = logging.getLogger(__name__)


CHECKPOINTS = "checkpoints"  # under output_dir; the trainer's own output_dir


RUN = "train_run.json"  # in CHECKPOINTS: the settings a --resume must match


# options that change nothing about what is trained: a resume may change them
# (the checkpoint's own save and logging intervals win on resume, so those are not neutral;
# the paths are not compared: the data's digest and the base's fingerprint are)
NEUTRAL = (
    "progress", "resume", "keep_checkpoints", "keep_adapter", "merge", "strict", "input",
    "base", "output_dir",
)  # fmt: skip


def run_record(
    cfg: TrainConfig, examples: Examples, max_length: int, base: dict[str, Any]
) -> dict[str, Any]:
    options = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NEUTRAL}
    return {
        "options": options,
        "base": base["weights_sample_sha256"],
        "max_length": max_length,
        "data_digest": examples.digest(),
    }


def resume_point(
    cfg: TrainConfig, checkpoints: Path, run: dict[str, Any], *, main: bool = True
) -> str | None:
    """The checkpoint to continue from (``--resume``), or None to start afresh. An
    unfinished run's checkpoints are neither continued with other settings nor dropped
    without ``--resume``; a finished run's kept checkpoints are moved aside (by the first
    process), so that a run started after it never continues from them; a checkpoint is
    continued only when the run record it carries is this run's."""
    saved = _read_run(checkpoints / RUN)
    if saved.get("finished"):
        if main:
            _move_aside(checkpoints, saved)
        if cfg.resume:
            log.warning("train-ref --resume: the run in %s finished; starting afresh", checkpoints)
        return None
    last = _last_complete(checkpoints)
    if last is None:
        if cfg.resume:
            log.warning("train-ref --resume: no checkpoint in %s; starting afresh", checkpoints)
        return None
    if not cfg.resume:
        raise ConfigError(
            f"train-ref: {checkpoints} holds checkpoints of an unfinished run "
            f"(last: {Path(last).name}); --resume continues it, or remove the folder"
        )
    for record, where in ((saved, f"the checkpoints in {checkpoints}"), (
        _read_run(Path(last) / RUN), f"{last}")):  # fmt: skip
        differ = _differences(record, run)
        if differ:
            raise ConfigError(
                f"train-ref --resume: {where} were made with other settings "
                f"({', '.join(differ)} differ); give the same ones, or remove the folder"
            )
    return last


def _differences(saved: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """What of ``run`` a saved run record does not match (all of it, when there is none)."""
    return sorted(
        [k for k in run if k != "options" and saved.get(k) != run[k]]
        + [
            f"options.{k}"
            for k in run["options"]
            if saved.get("options", {}).get(k, object()) != run["options"][k]
        ]
    )


def _read_run(path: Path) -> dict[str, Any]:
    import orjson

    try:
        return orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return {}


def _move_aside(checkpoints: Path, saved: dict[str, Any]) -> None:
    """A finished run's kept checkpoints, out of the way of the run starting here: into
    ``checkpoints/finished-<its data digest>-<n>/`` with its record (said)."""
    kept = [p for p in checkpoints.glob("checkpoint-*") if p.is_dir()]
    if not kept:
        return
    n = 1
    while (to := checkpoints / f"finished-{saved.get('data_digest', 'run')}-{n}").exists():
        n += 1
    to.mkdir()
    for p in kept:
        p.rename(to / p.name)
    (checkpoints / RUN).rename(to / RUN)
    log.info("train-ref: the finished run's kept checkpoints in %s moved to %s", checkpoints, to)


def write_run(checkpoints: Path, run: dict[str, Any]) -> None:
    """The settings a resume must match; replaced whole, as other processes may read it."""
    import orjson

    checkpoints.mkdir(parents=True, exist_ok=True)
    tmp = checkpoints / f".{RUN}.tmp"
    tmp.write_bytes(orjson.dumps(run, option=orjson.OPT_INDENT_2))
    os.replace(tmp, checkpoints / RUN)


def _last_complete(checkpoints: Path) -> str | None:
    """The newest checkpoint the trainer finished writing and that carries its run's
    record: the trainer writes its state last, and the record follows (``record_runs``),
    so a process killed while saving leaves a folder without them."""
    done = [
        p
        for p in checkpoints.glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit()
        and (p / "trainer_state.json").is_file()
        and (p / RUN).is_file()
    ]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def record_runs(run: dict[str, Any]):
    """Each checkpoint gets the record of the run that saved it, which a resume checks."""
    from transformers import TrainerCallback

    class RecordRun(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.is_world_process_zero:
                write_run(Path(args.output_dir) / f"checkpoint-{state.global_step}", run)
            return control

    return RecordRun()
