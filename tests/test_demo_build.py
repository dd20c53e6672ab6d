import logging

from fastscore.demodata.build import DemoRecipe, ensure_demo
from fastscore.demodata.pretrain import Schedule
from fastscore.demodata.world import KINDS, World, build


def test_world_is_seeded_and_balanced():
    w = World(n_per_kind=30, pretrain_repeats=2)
    pre1, sft1 = build(w)
    pre2, sft2 = build(w)
    assert (pre1, sft1) == (pre2, sft2)
    assert sorted(r["kind"] for r in sft1) == sorted(list(KINDS) * 30)
    assert build(World(seed=1, n_per_kind=30))[1] != sft1
    # "known" answers are in the pretraining corpus; "learnable" ones are not
    pre_answers = {c[1]["content"] for c in pre1}
    for r in sft1:
        answer = r["messages"][1]["content"]
        assert (answer in pre_answers) == (r["kind"] == "known"), r


def test_build_is_deterministic(tmp_path, caplog, capfd):
    recipe = DemoRecipe(
        world=World(n_per_kind=10, pretrain_repeats=1),
        pretrain=Schedule(epochs=1, lr=3e-3),
        finetune=Schedule(epochs=1, lr=1e-3, batch_size=8),
    )
    caplog.set_level(logging.INFO, logger="fastscore")
    a = ensure_demo(recipe, tmp_path / "a")
    # a line per step with its time, where it is built; no other library's bars (issue 31)
    said = [r.getMessage() for r in caplog.records]
    assert said[0].startswith(f"building the demo's models into {tmp_path / 'a'} (once")
    for n, step in enumerate(("the world", "a byte-level BPE", "the base", "the reference"), 1):
        assert any(m.startswith(f"  [{n}/4] {step}") and ": done in " in m for m in said), said
    assert said[-1].startswith("demo models built in ")
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err, err
    b = ensure_demo(recipe, tmp_path / "b")
    for part in (
        "base/model.safetensors",
        "ref/model.safetensors",
        "base/tokenizer.json",
        "sft.jsonl",
    ):
        assert (a.root / part).read_bytes() == (b.root / part).read_bytes(), part
    assert (a.base / "model.safetensors").read_bytes() != (a.ref / "model.safetensors").read_bytes()
    assert (a.root / "COMPLETE").exists()
