"""train-ref on TRL's SFTTrainer: the trainer's labels are the scorer's response tokens on
every format, the loss it starts from is the scorer's, what it saves is a reference every
engine loads (full fine-tuning, LoRA, two processes under torchrun), and a killed run
continues from its checkpoint as if it had not stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

import fastscore
from fastscore.config import EngineConfig, TrainConfig
from fastscore.errors import ConfigError
from fastscore.records import OK, RawRecord
from fastscore.rendering.renderer import make_renderer
from fastscore.training.checkpoints import CHECKPOINTS
from fastscore.training.examples import rendered_examples
from fastscore.training.run import train_ref
from fastscore.training.schedule import Launch, plan
from fastscore.training.trainer import build_trainer
from tests.helpers import cli, forked, score_args
from tests.helpers.format_records import RECORDS

pytestmark = pytest.mark.engine


def _data(tmp_path, demo_assets, n=64, bad=True):
    lines = demo_assets.data.read_bytes().splitlines()[:n]
    if bad:
        lines.insert(3, b"{not json")
        lines.insert(5, orjson.dumps({"messages": [{"role": "user", "content": "no reply"}]}))
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _score(data, ref, out, demo_assets, kind="torch", **served):
    fastscore.score(
        input=str(data),
        output=str(out),
        base=str(demo_assets.base),
        ref=str(ref),
        progress=False,
        engine=EngineConfig(kind=kind, dtype="float32"),
        **served,
    )
    return [orjson.loads(x) for x in out.read_bytes().splitlines()]


def _trainer(cfg, tokenizer, tmp_path, max_length=255):
    examples = rendered_examples(cfg, tokenizer, max_length)
    p = plan(cfg, max_length, Launch())
    return build_trainer(cfg, examples, p, tokenizer, tmp_path / "ckpt"), examples


def _expected_labels(cfg, tokenizer, recs, fmt, max_length=255):
    """What the scorer scores, straight from its renderer: token ids -> labels (the id at
    a response position, -100 elsewhere); a pair's chosen side only."""
    from fastscore.data.formats import to_samples

    renderer = make_renderer(cfg, tokenizer, max_length)
    raws = [RawRecord(i, r) for i, r in enumerate(recs)]
    out = {}
    for r in renderer.render_all(to_samples(raws, fmt)):
        assert r.status == OK, r.reason
        if r.side == "rejected":
            continue
        ids = r.token_ids.tolist()
        positions = set(r.response_positions.tolist())
        out[tuple(ids)] = [t if i in positions else -100 for i, t in enumerate(ids)]
    return out


@pytest.mark.parametrize("fmt", sorted(RECORDS))
def test_the_trainers_labels_are_the_renderers_positions(tmp_path, demo_assets, tokenizer, fmt):
    """Every batch the trainer's own dataloader feeds holds each sample once, with labels
    at exactly the renderer's response positions and -100 elsewhere, padding included."""
    recs = RECORDS[fmt]
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    cfg = TrainConfig(
        input=str(data), base=str(demo_assets.base), output_dir="unused", format=fmt,
        batch_size=2, progress=False,
    )  # fmt: skip
    expected = _expected_labels(cfg, tokenizer, recs, fmt)
    trainer, examples = _trainer(cfg, tokenizer, tmp_path)
    assert len(examples) == len(expected) == len(recs)  # a pair trains once, on its chosen side
    seen = Counter()
    for batch in trainer.get_train_dataloader():
        for ids, labels, attn in zip(
            batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True
        ):
            n = int(attn.sum())
            key = tuple(ids[:n].tolist())
            assert labels[:n].tolist() == expected[key]
            assert (labels[n:] == -100).all() and (attn[n:] == 0).all()
            seen[key] += 1
    assert seen == Counter(dict.fromkeys(expected, 1))


def test_packed_rows_keep_each_samples_labels(tmp_path, demo_assets, tokenizer):
    """--packing: each sample inside a packed row (positions restart at 0) keeps its own
    labels, and every sample is packed once."""
    recs = RECORDS["messages"]
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    cfg = TrainConfig(
        input=str(data), base=str(demo_assets.base), output_dir="unused", format="messages",
        batch_size=2, packing=True, progress=False,
    )  # fmt: skip
    expected = _expected_labels(cfg, tokenizer, recs, "messages")
    trainer, _ = _trainer(cfg, tokenizer, tmp_path)
    seen = Counter()
    for batch in trainer.get_train_dataloader():
        pos, ids, labels = batch["position_ids"][0], batch["input_ids"][0], batch["labels"][0]
        starts = (pos == 0).nonzero().flatten().tolist() + [len(pos)]
        for a, b in zip(starts, starts[1:], strict=False):
            key = tuple(ids[a:b].tolist())
            # the first label of a packed sample is masked (no token before it predicts it)
            assert labels[a + 1 : b].tolist() == expected[key][1:]
            seen[key] += 1
    assert seen == Counter(dict.fromkeys(expected, 1))
    # and trains: the schedule counts the packed rows
    m = train_ref(cfg, output_dir=str(tmp_path / "ref"), epochs=1)
    assert m["trained_samples"] == len(recs) and m["trained_rows"] < len(recs)
    assert m["steps"] == m["schedule"]["steps"] == -(-m["trained_rows"] // 2)
    assert [c["step"] for c in m["loss_curve"]] == list(range(1, m["steps"] + 1))


def test_a_base_without_a_pad_token_keeps_its_tokenizer(tmp_path, demo_assets, tokenizer):
    """TRL pads with eos when the tokenizer has no pad token: the reference keeps the
    base's tokenizer all the same, so score takes the pair."""
    import shutil

    base = tmp_path / "base"
    shutil.copytree(demo_assets.base, base)
    tok = type(tokenizer).from_pretrained(base)
    tok.pad_token = None
    tok.save_pretrained(base)
    data = _data(tmp_path, demo_assets, 16, bad=False)
    train_ref(input=str(data), base=str(base), output_dir=str(tmp_path / "ref"), max_steps=2,
              batch_size=8, progress=False)  # fmt: skip
    assert type(tokenizer).from_pretrained(tmp_path / "ref").pad_token is None
    fastscore.score(input=str(data), output=str(tmp_path / "s.jsonl"), base=str(base),
                    ref=str(tmp_path / "ref"), progress=False,
                    engine=EngineConfig(kind="torch", dtype="float32"))  # fmt: skip
    rows = [orjson.loads(x) for x in (tmp_path / "s.jsonl").read_bytes().splitlines()]
    assert [r["status"] for r in rows] == ["ok"] * 16


def test_the_trainers_first_loss_is_the_scorers(tmp_path, demo_assets, tokenizer):
    """Before any step, the trainer's loss on a batch is the scorer's loss_base averaged
    over the batch's response tokens: the same tokens, the same targets."""
    data = _data(tmp_path, demo_assets, 8)
    rows = _score(data, demo_assets.ref, tmp_path / "s.jsonl", demo_assets)
    rows = [r for r in rows if r["status"] == OK]
    cfg = TrainConfig(input=str(data), base=str(demo_assets.base), output_dir="-", batch_size=8)
    trainer, examples = _trainer(cfg, tokenizer, tmp_path)
    assert examples.counts == {"ok": 8, "bad_record": 1, "no_response": 1}
    assert [len(t) for t in examples.targets] == [r["n_response_tokens"] for r in rows]
    (batch,) = list(trainer.get_train_dataloader())
    trainer.model.eval()
    import torch

    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()
    n = sum(r["n_response_tokens"] for r in rows)
    expected = sum(r["loss_base"] * r["n_response_tokens"] for r in rows) / n
    assert abs(loss - expected) < 1e-5, (loss, expected)


def test_full_fine_tune_gives_a_reference_that_scores(tmp_path, demo_assets):
    data = _data(tmp_path, demo_assets)
    out = tmp_path / "ref"
    m = train_ref(
        input=str(data), base=str(demo_assets.base), output_dir=str(out), epochs=2, lr=1e-3,
        batch_size=8, progress=False,
    )  # fmt: skip
    # 12 of the 64 trainable records held out (20% at most of so few), never trained on
    assert m["trained_samples"] == 52 and m["steps"] == 14 and m["world_size"] == 1
    assert m["counts"]["by_status"] == {"ok": 64, "bad_record": 1, "no_response": 1}
    saved = json.loads((out / "train_manifest.json").read_text())
    assert saved["schedule"]["warmup_steps"] == 1  # 3% of 14 steps, rounded up
    curve = saved["loss_curve"]
    assert [c["step"] for c in curve] == list(range(1, 15))
    # the held-out check: the records' losses fell though the reference never saw them
    check = saved["held_out"]
    assert check["records"] == len(check["indices"]) == 12 and check["verdict"] == "learned"
    assert check["loss_after"] < 0.85 * check["loss_before"], check
    # the loss falls on the demo data
    first, last = curve[0]["loss"], sum(c["loss"] for c in curve[-4:]) / 4
    assert last < 0.8 * first, curve
    assert (out / "loss_curve.png").stat().st_size > 5000
    assert not (out / CHECKPOINTS).exists()  # removed once the reference is saved
    assert not (out / "training_args.bin").exists()
    rows = _score(data, out, tmp_path / "s.jsonl", demo_assets)
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 64
    # the reference learnt the data: its loss on it is well below the base's
    mean_base = sum(r["loss_base"] for r in ok) / len(ok)
    mean_ref = sum(r["loss_ref"] for r in ok) / len(ok)
    assert mean_ref < 0.8 * mean_base, (mean_base, mean_ref)
    # score reads the reference's check, and says the spread of what it scored
    said = json.loads((tmp_path / "s.manifest.json").read_text())["reference"]
    assert said["held_out"] == {k: v for k, v in check.items() if k != "indices"}
    assert said["warnings"] == [] and said["lobass"]["median"] > 0.1, said


def test_a_sampled_reference_trains_on_a_seeded_share(tmp_path, demo_assets):
    data = _data(tmp_path, demo_assets, bad=False)
    kw = dict(input=str(data), base=str(demo_assets.base), max_steps=1, batch_size=8,
              progress=False, sample="0.5")  # fmt: skip
    a = train_ref(output_dir=str(tmp_path / "a"), **kw)
    # 12 of 64 held out, then half of the other 52
    assert a["trained_samples"] == 26 and a["sample"] == {"spec": "0.5", "records": 26}
    assert a["held_out"]["records"] == 12
    b = train_ref(output_dir=str(tmp_path / "b"), **kw)
    assert a["data_digest"] == b["data_digest"]  # the same sample
    c = train_ref(output_dir=str(tmp_path / "c"), **{**kw, "seed": 1})
    assert c["data_digest"] != a["data_digest"]


def test_a_reference_that_did_not_learn_is_said_and_strict_refuses_it(tmp_path, demo_assets):
    """Two steps at a learning rate that moves nothing: the held-out loss does not fall,
    train-ref warns (--strict: exit 1, the reference and its manifest saved all the same),
    and score says it again."""
    data = _data(tmp_path, demo_assets, bad=False)
    out = tmp_path / "ref"
    args = ["train-ref", data, "--base", demo_assets.base, "--output-dir", out, "--lr", "1e-9",
            "--max-steps", "2", "--batch-size", "8", "--no-progress"]  # fmt: skip
    p = cli(*args, "--strict", check=False)
    assert p.returncode == 1, p.stderr
    assert "Error: train-ref --strict: the reference " in p.stderr, p.stderr
    assert "train it longer or with a higher learning rate" in p.stderr
    check = json.loads((out / "train_manifest.json").read_text())["held_out"]
    assert check["verdict"] in ("did not learn", "learned little"), check
    p = cli(*score_args(data, tmp_path / "s.jsonl", demo_assets.base, out))
    assert f"reference: held-out loss {check['loss_before']:.3f}" in p.stderr, p.stderr
    assert "WARNING" in p.stderr and "lobass scores cannot separate" in p.stderr


def test_lora_from_the_cli_saves_the_adapter_as_the_reference(tmp_path, demo_assets):
    """By default the adapter alone is the reference (score takes it over the base);
    --merge saves the same weights merged into a full checkpoint in the base's dtype
    (--keep-adapter keeps the adapter beside it): both score alike."""
    pytest.importorskip("peft", reason="pip install 'fastscore[lora]'")
    data = _data(tmp_path, demo_assets)
    args = ["--lora", "--lora-r", 8, "--lr", "3e-3", "--epochs", 2, "--batch-size", 8,
            "--gradient-checkpointing", "--no-progress"]  # fmt: skip
    out = tmp_path / "ref"
    p = cli("train-ref", data, "--base", demo_assets.base, "--output-dir", out, *args)
    assert "trained on 52 of 66 records, 14 steps" in p.stderr
    assert "reference check: held-out loss " in p.stderr and "of 12 records lower)" in p.stderr
    assert (out / "adapter_config.json").exists() and not (out / "model.safetensors").exists()
    merged = tmp_path / "merged"
    cli("train-ref", data, "--base", demo_assets.base, "--output-dir", merged, *args,
        "--merge", "--keep-adapter")  # fmt: skip
    assert (merged / "adapter" / "adapter_config.json").exists()
    assert not (merged / "adapter_config.json").exists()  # the reference itself is plain
    from safetensors import safe_open

    with safe_open(merged / "model.safetensors", "pt") as f:  # the base's dtype (fp32)
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float32"}  # noqa: SIM118
    rows = _score(data, out, tmp_path / "s.jsonl", demo_assets)
    merged_rows = _score(data, merged, tmp_path / "m.jsonl", demo_assets)
    for a, b in zip(rows, merged_rows, strict=True):
        if a["status"] == "ok":
            assert abs(a["loss_ref"] - b["loss_ref"]) < 1e-4, (a, b)
    ok = [r for r in rows if r["status"] == "ok"]
    mean_base = sum(r["loss_base"] for r in ok) / len(ok)
    mean_ref = sum(r["loss_ref"] for r in ok) / len(ok)
    assert mean_ref < 0.9 * mean_base, (mean_base, mean_ref)


def _train_args(data, demo_assets, out, *extra):
    return ["train-ref", str(data), "--base", str(demo_assets.base), "--output-dir", str(out),
            "--lr", "1e-3", "--epochs", "1", "--batch-size", "8", "--no-progress",
            # whole batches (a last short one is split unevenly across processes)
            "--holdout", "16", *map(str, extra)]  # fmt: skip


def test_two_processes_under_torchrun_train_the_one_process_reference(tmp_path, demo_assets):
    """DDP on CPU (gloo) through torchrun: the same global batches, so the same loss curve
    and the same reference as one process; it loads in every engine (torch, vLLM in
    process, vLLM served) and scores the same in each."""
    from fastscore.engines.servers import Server

    data = _data(tmp_path, demo_assets, bad=False)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "fastscore",
         *_train_args(data, demo_assets, tmp_path / "ddp")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    # one line for the run, from the first process
    assert p.stderr.count("trained on 48 of 64 records, 6 steps on 2 processes") == 1, p.stderr
    assert p.stderr.count("reference check: held-out loss") == 1, p.stderr
    ddp = json.loads((tmp_path / "ddp" / "train_manifest.json").read_text())
    assert ddp["world_size"] == 2 and ddp["distributed"] == "MULTI_CPU"
    assert ddp["schedule"]["per_device_batch_size"] == 4
    cli(*_train_args(data, demo_assets, tmp_path / "one"))
    one = json.loads((tmp_path / "one" / "train_manifest.json").read_text())
    assert one["world_size"] == 1
    for a, b in zip(ddp["loss_curve"], one["loss_curve"], strict=True):
        assert a["step"] == b["step"] and abs(a["loss"] - b["loss"]) < 1e-4, (a, b)
    assert ddp["held_out"]["indices"] == one["held_out"]["indices"]
    assert abs(ddp["held_out"]["loss_after"] - one["held_out"]["loss_after"]) < 1e-3

    servers = [Server(demo_assets.base, "base").start(), Server(tmp_path / "ddp", "ref").start()]
    try:
        torch_rows = _score(data, tmp_path / "ddp", tmp_path / "t.jsonl", demo_assets)
        one_rows = _score(data, tmp_path / "one", tmp_path / "o.jsonl", demo_assets)
        vllm_rows = _score(data, tmp_path / "ddp", tmp_path / "v.jsonl", demo_assets, "vllm")
        base, ref = (s.wait() for s in servers)
        served_rows = _score(
            data, tmp_path / "ddp", tmp_path / "h.jsonl", demo_assets, "served",
            base_url=base.url, ref_url=ref.url, base_model="base", ref_model="ref",
        )  # fmt: skip
    finally:
        for s in servers:
            s.kill()
    for rows, tol in ((one_rows, 1e-3), (vllm_rows, 1e-4), (served_rows, 1e-4)):
        assert len(rows) == len(torch_rows) == 64
        for a, b in zip(rows, torch_rows, strict=True):
            assert a["status"] == b["status"] == OK
            assert abs(a["loss_ref"] - b["loss_ref"]) < tol, (a, b)
    # the reference learnt: lower loss than the base
    assert sum(r["loss_ref"] for r in torch_rows) < 0.8 * sum(r["loss_base"] for r in torch_rows)


def _until(condition, child) -> None:
    """Wait for ``condition`` while the training process runs (no clock: a run that ends
    before it holds fails here, with its stderr)."""
    while not condition():
        assert child.poll() is None, child.result().stderr[-2000:]
        time.sleep(0.05)


def test_a_killed_run_resumes_from_its_checkpoint(tmp_path, demo_assets):
    """SIGKILL once a checkpoint is on disk; --resume continues from it, and the loss
    curve and the reference are the uninterrupted run's."""
    data = _data(tmp_path, demo_assets, bad=False)
    out = tmp_path / "ref"
    args = _train_args(data, demo_assets, out, "--max-steps", 12, "--save-steps", 3)
    child = forked.Child(args)
    # a checkpoint is complete once its run's record is written (after the trainer's state)
    _until(lambda: list((out / CHECKPOINTS).glob("checkpoint-*/train_run.json")), child)
    child.send_signal(signal.SIGKILL)
    child.wait()
    left = sorted(p.name for p in (out / CHECKPOINTS).glob("checkpoint-*"))
    assert left and "checkpoint-12" not in left, left
    # without --resume an unfinished run is neither continued nor dropped
    p = cli(*args, check=False)
    assert p.returncode != 0 and "--resume continues it" in p.stderr, p.stderr
    # other settings are refused
    p = cli(*args, "--resume", "--lr", "2e-3", check=False)
    assert p.returncode != 0 and "options.lr" in p.stderr, p.stderr
    cli(*args, "--resume")
    resumed = json.loads((out / "train_manifest.json").read_text())
    assert resumed["resumed_from"] == left[-1] and resumed["steps"] == 12
    cli(*_train_args(data, demo_assets, tmp_path / "whole", "--max-steps", 12))
    whole = json.loads((tmp_path / "whole" / "train_manifest.json").read_text())
    assert [c["step"] for c in resumed["loss_curve"]] == list(range(1, 13))
    for a, b in zip(resumed["loss_curve"], whole["loss_curve"], strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a, b)
    resumed_rows = _score(data, out, tmp_path / "r.jsonl", demo_assets)
    whole_rows = _score(data, tmp_path / "whole", tmp_path / "w.jsonl", demo_assets)
    for a, b in zip(resumed_rows, whole_rows, strict=True):
        assert abs(a["loss_ref"] - b["loss_ref"]) < 1e-4, (a, b)


def test_a_run_after_a_finished_one_never_resumes_from_its_checkpoints(tmp_path, demo_assets):
    """Run A finishes with its checkpoints kept; run B starts in the same directory on other
    data and is killed before its first checkpoint; B's --resume starts afresh, never from
    A's weights, whose checkpoints were moved aside whole."""
    out = tmp_path / "ref"
    a_data = _data(tmp_path, demo_assets, bad=False)
    cli(*_train_args(a_data, demo_assets, out, "--max-steps", 4, "--save-steps", 2,
                     "--keep-checkpoints"))  # fmt: skip
    assert (out / CHECKPOINTS / "checkpoint-4" / "train_run.json").is_file()
    b_data = tmp_path / "b.jsonl"
    b_data.write_bytes(b"".join(demo_assets.data.read_bytes().splitlines(True)[100:164]))
    b_args = _train_args(b_data, demo_assets, out, "--max-steps", 400, "--save-steps", 300)
    child = forked.Child(b_args)
    run = out / CHECKPOINTS / "train_run.json"
    _until(lambda: run.is_file() and not json.loads(run.read_text()).get("finished"), child)
    child.send_signal(signal.SIGKILL)
    child.wait()
    (aside,) = (out / CHECKPOINTS).glob("finished-*")
    assert sorted(p.name for p in aside.iterdir()) == ["checkpoint-4", "train_run.json"]
    assert not list((out / CHECKPOINTS).glob("checkpoint-*"))
    p = cli(*b_args[:-4], "--max-steps", 2, "--resume")
    assert "no checkpoint in" in p.stderr and "starting afresh" in p.stderr, p.stderr
    assert json.loads((out / "train_manifest.json").read_text())["resumed_from"] is None


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path, demo_assets):
    """The record each checkpoint carries is checked, not only the directory's."""
    data = _data(tmp_path, demo_assets, bad=False)
    out = tmp_path / "ref"
    args = _train_args(data, demo_assets, out, "--max-steps", 4, "--save-steps", 2)
    cli(*args, "--keep-checkpoints")
    run = json.loads((out / CHECKPOINTS / "train_run.json").read_text())
    run.pop("finished")  # as if it had been killed
    (out / CHECKPOINTS / "train_run.json").write_text(json.dumps(run))
    ckpt = out / CHECKPOINTS / "checkpoint-4" / "train_run.json"
    ckpt.write_text(json.dumps({**run, "data_digest": "another"}))
    p = cli(*args, "--resume", check=False)
    assert p.returncode == 1 and "checkpoint-4 were made with other settings" in p.stderr
    assert "data_digest" in p.stderr, p.stderr


def test_bad_settings_are_errors(tmp_path, demo_assets, monkeypatch):
    data = tmp_path / "bad.jsonl"
    data.write_bytes(b"{not json\n" + orjson.dumps({"prompt": "x", "response": ""}) + b"\n")
    base = str(demo_assets.base)
    with pytest.raises(ConfigError, match="no record of .* can be trained on"):
        train_ref(input=str(data), base=base, output_dir=str(tmp_path / "r"))
    with pytest.raises(ConfigError, match="the base model it reads, .* is the output directory"):
        train_ref(input=str(data), base=base, output_dir=base)
    good = _data(tmp_path, demo_assets, 8, bad=False)
    with pytest.raises(ConfigError, match="not a multiple of processes"):
        train_ref(input=str(good), base=base, output_dir=str(tmp_path / "r"), batch_size=6,
                  gradient_accumulation_steps=4)  # fmt: skip
    with pytest.raises(ConfigError, match="start it with torchrun or accelerate launch"):
        train_ref(input=str(good), base=base, output_dir=str(tmp_path / "r"), fsdp=True)
    monkeypatch.setenv("WORLD_SIZE", "1")  # as a launcher sets it
    with pytest.raises(ConfigError, match="FSDP needs GPUs"):
        train_ref(input=str(good), base=base, output_dir=str(tmp_path / "r"), device="cpu",
                  fsdp=True)  # fmt: skip
    with pytest.raises(ConfigError, match="float16 mixed precision needs CUDA"):
        train_ref(input=str(good), base=base, output_dir=str(tmp_path / "r"), device="cpu",
                  dtype="float16")  # fmt: skip


def test_cross_fitted_references_score_each_record_with_the_one_that_never_saw_it(
    tmp_path, demo_assets
):
    """train-ref --folds 2 --lora: two adapters, fold k's trained on the records outside
    fold k and checked on records of fold k; score --ref DIR scores each record with its
    fold's adapter (one base in memory) and says which, as that adapter alone scores it,
    a copy of a record in the other fold too; another file's records are refused, and
    --resume keeps the folds already trained."""
    pytest.importorskip("peft", reason="pip install 'fastscore[lora]'")
    from fastscore.scoring.folds import assignment

    data = _data(tmp_path, demo_assets, bad=False)
    first = orjson.loads(data.read_bytes().splitlines()[0])  # fold 1; its copy, fold 0
    with data.open("ab") as f:
        f.write(orjson.dumps({**first, "id": "copy-of-first"}) + b"\n")
    out = tmp_path / "ref"
    args = ["train-ref", data, "--base", demo_assets.base, "--output-dir", out, "--folds", 2,
            "--lora", "--lora-r", 8, "--epochs", 2, "--batch-size", 8, "--no-progress"]  # fmt: skip
    p = cli(*args)
    assert "trained 2 cross-fitted references on 32 / 33 of 65 records" in p.stderr, p.stderr
    assert "reference check: held-out loss " in p.stderr and "of 26 records lower)" in p.stderr
    m = json.loads((out / "train_manifest.json").read_text())
    draw = assignment(65, 2, 0)
    assert m["folds"]["k"] == 2 and m["folds"]["records"] == 65
    for k in (0, 1):
        fm = json.loads((out / f"fold-{k}" / "train_manifest.json").read_text())
        assert fm["trained_samples"] == int((draw != k).sum())
        # checked on records it never saw: its own fold's
        assert {int(draw[i]) for i in fm["held_out"]["indices"]} == {k}
        assert (out / f"fold-{k}" / "adapter_config.json").exists()
    p = cli(*score_args(data, tmp_path / "s.jsonl", demo_assets.base, out))
    assert "reference: cross-fitted, 2 folds; held-out loss" in p.stderr, p.stderr
    rows = [orjson.loads(x) for x in (tmp_path / "s.jsonl").read_bytes().splitlines()]
    assert [r["fold"] for r in rows] == draw.tolist() and draw[0] != draw[64]
    assert rows[0]["loss_base"] == rows[64]["loss_base"]
    assert rows[0]["loss_ref"] != rows[64]["loss_ref"]  # each copy by its own fold's reference
    for k in (0, 1):
        alone = _score(data, out / f"fold-{k}", tmp_path / f"f{k}.jsonl", demo_assets)
        for a, b in zip(rows, alone, strict=True):
            assert a["loss_base"] == pytest.approx(b["loss_base"], abs=1e-9)
            if a["fold"] == k:
                assert a["loss_ref"] == pytest.approx(b["loss_ref"], abs=1e-6), (a, b)
    short = tmp_path / "short.jsonl"
    short.write_bytes(b"".join(data.read_bytes().splitlines(keepends=True)[:40]))
    p = cli(*score_args(short, tmp_path / "x.jsonl", demo_assets.base, out), check=False)
    assert p.returncode != 0 and "drawn over the 65 records of" in p.stderr, p.stderr
    assert "short.jsonl has 40" in p.stderr
    before = (out / "fold-0" / "adapter_model.safetensors").stat().st_mtime_ns
    p = cli(*args, "--resume", "--keep-checkpoints")  # (an option that changes nothing trained)
    assert "was trained already (--resume): kept" in p.stderr, p.stderr
    assert (out / "fold-0" / "adapter_model.safetensors").stat().st_mtime_ns == before


def test_cross_fitted_full_references_score_as_their_folds(tmp_path, demo_assets):
    """Full fine-tunes as folds: each its own model in the engine, the same routing."""
    data = _data(tmp_path, demo_assets, bad=False)
    out = tmp_path / "ref"
    m = train_ref(input=str(data), base=str(demo_assets.base), output_dir=str(out), folds=2,
                  max_steps=2, batch_size=8, progress=False, holdout="0")  # fmt: skip
    assert m["held_out"] is None and m["folds"]["trained_samples"] == [32, 32]
    rows = _score(data, out, tmp_path / "s.jsonl", demo_assets)
    for k in (0, 1):  # each record routed to its own fold's model
        alone = _score(data, out / f"fold-{k}", tmp_path / f"f{k}.jsonl", demo_assets)
        mine = [(a, b) for a, b in zip(rows, alone, strict=True) if a["fold"] == k]
        assert mine
        for a, b in mine:
            assert a["loss_ref"] == pytest.approx(b["loss_ref"], abs=1e-9)
    with pytest.raises(ConfigError, match="is 2 models: with the base that is 3 vLLM engines"):
        fastscore.score(input=str(data), output=str(tmp_path / "v.jsonl"),
                        base=str(demo_assets.base), ref=str(out), progress=False,
                        engine=EngineConfig(kind="vllm"))  # fmt: skip
    one = tmp_path / "one.jsonl"  # one record that can be trained on, two that cannot
    lines = data.read_bytes().splitlines()
    no_reply = orjson.dumps({"messages": [{"role": "user", "content": "no reply"}]})
    one.write_bytes(b"\n".join([lines[0], no_reply, no_reply.replace(b"no", b"none")]) + b"\n")
    with pytest.raises(ConfigError, match="so its reference has nothing to train on"):
        train_ref(input=str(one), base=str(demo_assets.base), output_dir=str(tmp_path / "o"),
                  folds=2, max_steps=1, progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match="--folds must be at least 2"):
        train_ref(input=str(data), base=str(demo_assets.base), output_dir=str(out), folds=1)
    with pytest.raises(ConfigError, match="give one of them"):
        train_ref(input=str(data), base=str(demo_assets.base), output_dir=str(out), folds=2,
                  sample="0.5")  # fmt: skip
