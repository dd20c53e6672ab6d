"""Does the selection train better models? The paper's experiment, small, on a CPU.

A synthetic SFT world with known truth (generated here, seeded):
- learnable: four skills in chat form whose answers come from a small closed set (count
  the words aloud, "= one two three"; the largest / smallest / first of three digits),
  with a held-out test split per skill;
- known: a `next` skill (continue a run of digits up to 9) the base was pretrained on in
  chat form;
- noise: skill prompts with a wrong answer from the skill's own answer set.
The base (a tiny Llama) is pretrained on word-copying text, ascending runs of digits and of
number words (so it knows their order, as a real base knows numbers) and the `next` chats,
never on the four skills. Then, per seed:
1. the reference is trained on the full SFT set with `fastscore train-ref`;
2. `fastscore score --ifd` scores it; `fastscore select` picks subsets at each budget
   with lobass, rho, ifd, perplexity, length and random;
3. the base is fine-tuned on each subset, on the full set and (as the world check) on the
   clean learnable samples alone, every run for the same number of optimiser steps (the
   steps policy, printed), and evaluated on the held-out split: mean response loss and
   exact-match accuracy of greedy answers.
It prints a table (mean and min-max over seeds), the share of each planted kind in each
subset, Spearman(score, length), writes a PNG plot when matplotlib is there, and ends with
one JSON line.

Coverage (``select --coverage``, issue 15) is measured beside the plain rankings: lobass
within clusters of lexical features (what vLLM and served runs get), within clusters of
engine features (the base's final hidden states mean-pooled over the prompt tokens and
randomly projected, ``coverage.project_pooled``; made here by the torch engine with
``pool="prompt"`` over the scored records and written with ``FeatureWriter``, as the
scoring stream writes them), balanced across clusters, and the greedy diverse filter.
How well each feature source finds the planted families is printed too (homogeneity,
completeness and AMI of the clusters against the families).

Two worlds (``--world 1|2|both``):
1. the world above: each skill is named by a keyword ("max: 3 5 1"), 200 samples each;
2. no keyword names a family: each prompt is one of three frames shared by every family
   ("which is the {op} here: {x}", "{x} -- tell me the {op}", "from {x}, give the {op}")
   with one of three words for the operation ("largest", "biggest", "highest", ...), and
   the families differ in size (count 280, max 120, min 240, first 160 of 800) as well as
   in learnability; the held-out split has 50 of each.

    python benchmarks/selection_quality.py                 # both worlds, 3 seeds
    python benchmarks/selection_quality.py --quick         # CI: 1 seed, small world 1
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

METHODS = ("lobass", "rho", "ifd", "perplexity", "length", "random")  # plain rankings
# select options of each coverage method (issue 15); "default" is what `fastscore select`
# and `fastscore run` pick when given only a budget (issue 21: clusters with varied
# responses, features auto: the engine's from this torch-engine scoring)
COVERAGE = {
    "default": {},
    "lobass+clusters": {"coverage": "clusters", "features": "lexical", "within": "none"},
    "lobass+clusters:engine": {"coverage": "clusters", "features": "engine", "within": "none"},
    "lobass+clusters:balanced": {
        "coverage": "clusters",
        "features": "lexical",
        "spread": "balanced",
        "within": "none",
    },
    "lobass+diverse": {"coverage": "diverse", "features": "lexical"},
    # each cluster's budget spread over sub-clusters of its responses (added after the
    # first 3-seed run showed lobass repeating a family's best-learnt answers)
    "lobass+clusters+responses": {
        "coverage": "clusters",
        "features": "lexical",
        "within": "responses",
    },
    "lobass+clusters:engine+responses": {
        "coverage": "clusters",
        "features": "engine",
        "within": "responses",
    },
}
# fixed before any method was compared: the clean subset must beat the base by this much
WORLD_CHECK_LIFT = 0.3
TIED = True
SKILLS = ("count", "max", "min", "first")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# the closed answer set of each skill: noise answers are drawn from it
ANSWERS = {
    "count": ["= " + " ".join(NUMBER_WORDS[1 : n + 1]) for n in range(1, 6)],
    "max": [f"= {d}" for d in range(10)],
    "min": [f"= {d}" for d in range(10)],
    "first": [f"= {d}" for d in range(10)],
}


# world 2: frames shared by every family, several words for each operation
FRAMES2 = ("which is the {op} here: {x}", "{x} -- tell me the {op}", "from {x}, give the {op}")
OPS2 = {
    "count": ("tally", "number of words", "word total"),
    "max": ("largest", "biggest", "highest"),
    "min": ("smallest", "lowest", "least"),
    "first": ("leading one", "earliest", "opening one"),
    "next": ("rest of the run", "continuation", "remaining run"),
}
# training samples per family in world 2, out of 800 (scaled with train_per_skill)
SIZES2 = {"count": 280, "max": 120, "min": 240, "first": 160}


@dataclass(frozen=True)
class WorldSize:
    words: int = 400
    train_per_skill: int = 200
    test_per_skill: int = 50
    known: int = 200
    noise: int = 200
    pretrain_copy: int = 6000
    pretrain_runs: int = 3000  # of digits and as many of number words
    pretrain_known: int = 1500


QUICK = WorldSize(
    words=200,
    train_per_skill=60,
    test_per_skill=20,
    known=60,
    noise=60,
    pretrain_copy=2500,
    pretrain_runs=1200,
    pretrain_known=600,
)


def _word(rng: random.Random) -> str:
    syl = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "be", "du", "fo", "gi", "pa", "so"]
    return "".join(rng.choice(syl) for _ in range(rng.choice((2, 3))))


def skill(name: str, rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    """(prompt, true answer) of one skill, its arguments drawn from rng. Answers start with
    "= " so that every answer word follows a space, as it does in the pretraining text."""
    d = [rng.randint(0, 9) for _ in range(3)]
    if name == "count":
        ws = rng.sample(vocab, rng.randint(1, 5))
        return "count: " + " ".join(ws), "= " + " ".join(NUMBER_WORDS[1 : len(ws) + 1])
    if name == "max":
        return f"max: {d[0]} {d[1]} {d[2]}", f"= {max(d)}"
    if name == "min":
        return f"min: {d[0]} {d[1]} {d[2]}", f"= {min(d)}"
    if name == "first":
        return f"first: {d[0]} {d[1]} {d[2]}", f"= {d[0]}"
    if name == "next":
        a = rng.randint(0, 6)
        return f"next: {a} {a + 1} {a + 2}", "= " + " ".join(str(i) for i in range(a + 3, 10))
    raise ValueError(name)


def skill2(name: str, rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    """World 2: the same task and answer as ``skill``, asked in one of the shared frames
    with one of the operation's words, so no single word names the family."""
    prompt, answer = skill(name, rng, vocab)
    args = prompt.split(": ", 1)[1]
    return rng.choice(FRAMES2).format(op=rng.choice(OPS2[name]), x=args), answer


def chat(prompt: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def build_world(size: WorldSize, seed: int, world: int = 1):
    """(pretraining texts and chats, SFT records with their kind, held-out test records)."""
    rng = random.Random(seed)
    ask = skill if world == 1 else skill2
    per_skill = (
        dict.fromkeys(SKILLS, size.train_per_skill)
        if world == 1
        else {k: round(v * size.train_per_skill / 200) for k, v in SIZES2.items()}
    )
    vocab = sorted({_word(rng) for _ in range(size.words * 3)})[: size.words]
    rng.shuffle(vocab)

    texts = []
    for _ in range(size.pretrain_copy):
        ws = rng.sample(vocab, rng.randint(1, 3))
        texts.append("copy: " + " ".join(ws) + " | " + " ".join(ws))
    for _ in range(size.pretrain_runs):
        a = rng.randint(0, 9)
        texts.append("up: " + " ".join(str(i) for i in range(a, rng.randint(a, 9) + 1)))
        a = rng.randint(0, 9)
        texts.append("up: " + " ".join(NUMBER_WORDS[a : rng.randint(a, 9) + 1]))
    rng.shuffle(texts)
    known_chats = [chat(*ask("next", rng, vocab)) for _ in range(size.pretrain_known)]

    sft, test, seen = [], [], set()
    for name in SKILLS:
        for split, n in (("train", per_skill[name]), ("test", size.test_per_skill)):
            made = 0
            while made < n:
                prompt, answer = ask(name, rng, vocab)
                if prompt in seen:
                    continue  # a test prompt never appears in training (nor twice)
                seen.add(prompt)
                rec = {"kind": "learnable", "skill": name, "messages": chat(prompt, answer)}
                (sft if split == "train" else test).append(rec)
                made += 1
    for _ in range(size.known):
        sft.append({"kind": "known", "skill": "next", "messages": chat(*ask("next", rng, vocab))})
    for _ in range(size.noise):
        name = rng.choice(SKILLS)
        prompt, answer = ask(name, rng, vocab)
        wrong = rng.choice([a for a in ANSWERS[name] if a != answer])
        sft.append({"kind": "noise", "skill": name, "messages": chat(prompt, wrong)})
    rng.shuffle(sft)
    for i, rec in enumerate(sft):
        rec["id"] = f"s{i}"
    return texts, known_chats, sft, test


def pretrain_base(texts, known_chats, sft, test, out: Path, seed: int, steps: int) -> None:
    import torch

    from fastscore.demodata.build import TinyLlama, build_tokenizer, tiny_llama
    from fastscore.demodata.pretrain import Schedule, train_examples

    torch.manual_seed(seed)
    corpus = texts + [m["content"] for c in known_chats for m in c]
    corpus += [m["content"] for r in sft + test for m in r["messages"]]
    tok = build_tokenizer(corpus, 1024)
    model = tiny_llama(tok, TinyLlama(tie_word_embeddings=TIED))
    examples = []
    for text in texts:
        ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
        examples.append((ids, list(range(1, len(ids)))))
    for c in known_chats:
        ids = tok(tok.apply_chat_template(c, tokenize=False), add_special_tokens=False)
        ids = ids["input_ids"]
        examples.append((ids, list(range(1, len(ids)))))
    schedule = Schedule(epochs=1, lr=3e-3, batch_size=32, warmup_steps=20, max_steps=steps)
    train_examples(model, examples, schedule, pad_id=tok.pad_token_id, what="pretrain", seed=seed)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def write_jsonl(path: Path, recs) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    return path


def evaluate(model_dir: Path, test: list[dict]) -> dict:
    """Held-out mean response loss (the scorer's tokens) and exact-match accuracy."""
    import torch
    from transformers import AutoModelForCausalLM

    from fastscore.config import TrainConfig
    from fastscore.engines.models import load_tokenizer
    from fastscore.training.examples import rendered_examples

    tok = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    tmp = write_jsonl(model_dir / "test.jsonl", test)
    examples = rendered_examples(TrainConfig(input=str(tmp), base=str(model_dir)), tok, 255)
    losses = []
    with torch.no_grad():
        for ids, targets in zip(examples.token_ids, examples.targets, strict=True):
            labels = torch.full((1, len(ids)), -100)
            labels[0, targets] = torch.tensor(ids)[targets]
            losses.append(model(input_ids=torch.tensor([ids]), labels=labels).loss.item())
    end = tok.convert_tokens_to_ids("<|im_end|>")
    tok.padding_side = "left"
    correct = 0
    for b in range(0, len(test), 64):
        batch = test[b : b + 64]
        prompts = [
            tok.apply_chat_template(r["messages"][:1], tokenize=False, add_generation_prompt=True)
            for r in batch
        ]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(
                **enc,
                max_new_tokens=16,
                do_sample=False,
                eos_token_id=end,
                pad_token_id=tok.pad_token_id,
            )
        for r, row in zip(batch, gen[:, enc["input_ids"].shape[1] :], strict=True):
            text = tok.decode(row, skip_special_tokens=True).strip()
            correct += text == r["messages"][1]["content"]
    return {"loss": statistics.fmean(losses), "accuracy": correct / len(test)}


def finetune(base: Path, data: Path, out: Path, steps: int, lr: float, seed: int, **kw) -> dict:
    """``train-ref`` as an SFT run; every record trained on (no held-out slice) unless
    ``kw`` says otherwise, so a subset's fine-tune trains on the whole subset."""
    from fastscore.training.run import train_ref

    return train_ref(
        input=str(data),
        base=str(base),
        output_dir=str(out),
        max_steps=steps,
        lr=lr,
        batch_size=16,
        warmup_steps=10,
        device="cpu",
        progress=False,
        seed=seed,
        **{"holdout": "0", **kw},
    )


def engine_features(base: Path, data: Path, scores: Path, pool: str = "prompt") -> np.ndarray:
    """The base's final hidden states mean-pooled over each record's prompt (or response)
    tokens by the torch engine, projected, written beside the scores as the scoring
    stream writes them (``<scores stem>.features.npy``); returns the rows."""
    from fastscore.config import EngineConfig
    from fastscore.data.formats import to_samples
    from fastscore.data.readers import read_records
    from fastscore.engines.models import load_tokenizer
    from fastscore.engines.torch_engine import TorchEngine
    from fastscore.rendering.renderer import Renderer
    from fastscore.scoring.features import FeatureWriter, chunk_feature_rows, finish_features

    rendered = list(Renderer(load_tokenizer(base)).render_all(to_samples(read_records(data))))
    engine = TorchEngine(base, EngineConfig(kind="torch", dtype="float32"), name="base", pool=pool)
    rows = []
    with FeatureWriter(scores) as w:
        for a in range(0, len(rendered), 256):
            chunk = rendered[a : a + 256]
            engine.response_logprobs([r for r in chunk if r.status == "ok"])
            rows.append(chunk_feature_rows(chunk, engine.pooled))
            w.write(rows[-1])
    engine.close()
    finish_features(scores)
    return np.concatenate(rows)


def cluster_diagnostics(feats: dict, families: list[str], n_clusters: dict, seed: int) -> dict:
    """How well k-means on each feature source finds the planted families: homogeneity
    (each cluster holds one family: what coverage needs), completeness (each family in one
    cluster) and adjusted mutual information, at each number of clusters."""
    from sklearn.metrics import adjusted_mutual_info_score, homogeneity_completeness_v_measure

    from fastscore.selection.coverage import kmeans, normalise

    out = {}
    for source, x in feats.items():
        z = normalise(x, centre=not source.startswith("lexical"))
        for label, k in n_clusters.items():
            lab = kmeans(z, k, seed)
            h, c, _ = homogeneity_completeness_v_measure(families, lab)
            out[f"{source} k={k} ({label})"] = {
                "homogeneity": h,
                "completeness": c,
                "ami": adjusted_mutual_info_score(families, lab),
            }
    return out


def run_seed(seed: int, size: WorldSize, budgets, methods, work: Path, args, world=1) -> dict:
    import fastscore
    from fastscore.config import EngineConfig
    from fastscore.selection.coverage import auto_clusters, lexical_features

    t0 = time.perf_counter()
    texts, known_chats, sft, test = build_world(size, seed, world)
    base = work / "base"
    pretrain_base(texts, known_chats, sft, test, base, seed, args.pretrain_steps)
    data = write_jsonl(work / "sft.jsonl", sft)
    kinds = [r["kind"] for r in sft]
    steps = args.steps
    # 1. reference: the base fine-tuned on the full set, by fastscore train-ref
    finetune(base, data, work / "ref", steps, args.lr, seed)
    # 2. scores
    fastscore.score(
        input=str(data),
        output=str(work / "scores.jsonl"),
        base=str(base),
        ref=str(work / "ref"),
        ifd=True,
        progress=False,
        engine=EngineConfig(kind="torch", dtype="float32"),
    )
    scores = work / "scores.jsonl"
    # engine features as the torch engine's stream writes them (pooled prompt tokens)
    feats = {"engine (prompt)": engine_features(base, data, scores, "prompt")}
    response = work / "response-pooled.jsonl"
    feats["engine (response)"] = engine_features(base, data, response, "response")
    feats["lexical"] = lexical_features(data, len(sft), seed=seed, fmt="messages")
    families = [r["skill"] for r in sft]
    n_auto = {f"auto at {b:g}": auto_clusters(len(sft), int(b * len(sft))) for b in budgets}
    n_auto["families"] = len(set(families))
    result = {
        "seed": seed,
        "clusters": cluster_diagnostics(feats, families, n_auto, seed),
        "steps": steps,
        "runs": {},
        "kinds": {},
        "skills": {},
        "length_spearman": None,
    }
    result["runs"]["base"] = evaluate(base, test)
    result["runs"]["full"] = evaluate(work / "ref", test)  # the reference is the full-set run
    clean = write_jsonl(work / "clean.jsonl", [r for r in sft if r["kind"] == "learnable"])
    finetune(base, clean, work / "ft-clean", steps, args.lr, seed)
    result["runs"]["clean"] = evaluate(work / "ft-clean", test)
    print(
        f"  world {world} seed {seed} world check: "
        f"base acc {result['runs']['base']['accuracy']:.3f}, "
        f"clean learnable only {result['runs']['clean']['accuracy']:.3f}, "
        f"full set {result['runs']['full']['accuracy']:.3f}",
        file=sys.stderr,
        flush=True,
    )
    for frac in budgets:
        for method in methods:
            name = f"{method}@{frac:g}"
            subset = work / f"{name}.jsonl"
            # a plain ranking is asked for as such: the default spreads over clusters
            how = COVERAGE.get(method, {"score": method, "coverage": "none"})
            summary = fastscore.select(
                scores=str(scores),
                input=str(data),
                output=str(subset),
                fraction=frac,
                score=how.get("score", "lobass"),
                seed=seed,
                **{k: v for k, v in how.items() if k != "score"},
            )
            result["length_spearman"] = summary["length_spearman"]
            picked = [orjson.loads(x) for x in subset.read_bytes().splitlines()]
            result["kinds"][name] = dict(Counter(r["kind"] for r in picked))
            # which skills the learnable picks teach: a subset of one skill cannot lift
            # the held-out accuracy of the others
            result["skills"][name] = dict(
                Counter(r["skill"] for r in picked if r["kind"] == "learnable")
            )
            finetune(base, subset, work / f"ft-{name}", steps, args.lr, seed)
            result["runs"][name] = evaluate(work / f"ft-{name}", test)
            print(
                f"  world {world} seed {seed} {name:<30} "
                f"acc {result['runs'][name]['accuracy']:.3f} "
                f"loss {result['runs'][name]['loss']:.3f}",
                file=sys.stderr,
                flush=True,
            )
    result["in_data"] = dict(Counter(kinds))
    result["skills_in_data"] = {
        k: sum(r["skill"] == k for r in sft if r["kind"] == "learnable") for k in SKILLS
    }
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _agg(values):
    return statistics.fmean(values), min(values), max(values)


def report(results: list[dict], budgets, methods, out_dir: Path, world: int = 1) -> dict:
    names = ["base", "full", "clean"] + [f"{m}@{b:g}" for b in budgets for m in methods]
    table = {}
    w = max(18, *(len(n) + 2 for n in names))
    print(f"\n=== world {world} ({len(results)} seeds) ===")
    print(f"\n{'run':<{w}}{'accuracy (min-max)':>26}{'held-out loss (min-max)':>30}")
    for n in names:
        acc = _agg([r["runs"][n]["accuracy"] for r in results])
        loss = _agg([r["runs"][n]["loss"] for r in results])
        table[n] = {"accuracy": acc, "loss": loss}
        print(
            f"{n:<{w}}{acc[0]:>10.3f} ({acc[1]:.3f}-{acc[2]:.3f})"
            f"{loss[0]:>14.3f} ({loss[1]:.3f}-{loss[2]:.3f})"
        )
    print("\nplanted kinds in each subset (mean over seeds):")
    kinds = ("learnable", "known", "noise")
    print(f"{'subset':<{w}}" + "".join(f"{k:>11}" for k in kinds))
    print(
        f"{'in the data':<{w}}" + "".join(f"{results[0]['in_data'].get(k, 0):>11}" for k in kinds)
    )
    shares = {}
    for n in names[3:]:
        mean = {k: statistics.fmean(r["kinds"][n].get(k, 0) for r in results) for k in kinds}
        shares[n] = mean
        print(f"{n:<{w}}" + "".join(f"{mean[k]:>11.1f}" for k in kinds))
    print("\nskills of the learnable samples in each subset (mean over seeds):")
    print(f"{'subset':<{w}}" + "".join(f"{k:>9}" for k in SKILLS))
    in_data = results[0]["skills_in_data"]
    print(f"{'in the data (learnable)':<{w}}" + "".join(f"{in_data[k]:>9}" for k in SKILLS))
    skills = {}
    for n in names[3:]:
        skills[n] = {k: statistics.fmean(r["skills"][n].get(k, 0) for r in results) for k in SKILLS}
        print(f"{n:<{w}}" + "".join(f"{skills[n][k]:>9.1f}" for k in SKILLS))
    print(
        "\nclusters against the planted families (skill; `next` for known), mean over seeds:"
        "\n(homogeneity: each cluster holds one family, what coverage needs; completeness:"
        " each family in one cluster)"
    )
    clusters = {}
    for key in results[0]["clusters"]:
        clusters[key] = {
            m: statistics.fmean(r["clusters"][key][m] for r in results)
            for m in ("homogeneity", "completeness", "ami")
        }
        c = clusters[key]
        print(
            f"  {key:<40} homogeneity {c['homogeneity']:.3f}  completeness "
            f"{c['completeness']:.3f}  AMI {c['ami']:.3f}"
        )
    print("\nSpearman(score, response length) over ok records (mean over seeds):")
    sp = {}
    for m in results[0]["length_spearman"]:
        vals = [r["length_spearman"][m] for r in results if r["length_spearman"][m] is not None]
        sp[m] = statistics.fmean(vals) if vals else None
        print(f"  {m:<12} {'n/a' if sp[m] is None else f'{sp[m]:+.3f}'}")
    plot = _plot(table, budgets, methods, out_dir / f"selection_quality_world{world}.png")
    lift = table["clean"]["accuracy"][0] - table["base"]["accuracy"][0]
    passed = lift >= WORLD_CHECK_LIFT
    print(
        f"\nworld check: fine-tuning on the clean learnable samples lifts held-out accuracy "
        f"by {lift:+.3f} over the base (needs >= {WORLD_CHECK_LIFT}): "
        + (
            "passed"
            if passed
            else "FAILED - the skills do not transfer in this world, so no selection "
            "method can show anything; the comparison above is not evidence either way"
        )
    )
    return {
        "table": table,
        "kinds": shares,
        "skills": skills,
        "skills_in_data": in_data,
        "clusters": clusters,
        "length_spearman": sp,
        "plot": plot,
        "world_check": {"accuracy_lift": lift, "passed": passed},
    }


def _plot(table, budgets, methods, path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no matplotlib: pip install matplotlib for the plot)", file=sys.stderr)
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in methods:
        ys = [table[f"{m}@{b:g}"]["accuracy"] for b in budgets]
        ax.errorbar(
            [100 * b for b in budgets],
            [y[0] for y in ys],
            yerr=[[y[0] - y[1] for y in ys], [y[2] - y[0] for y in ys]],
            marker="o",
            capsize=3,
            label=m,
        )
    for n, style in (("full", "--"), ("clean", ":"), ("base", "-.")):
        ax.axhline(table[n]["accuracy"][0], linestyle=style, color="grey", label=n)
    ax.set_xlabel("budget (% of the SFT set)")
    ax.set_ylabel("held-out exact-match accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return str(path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budgets", default="0.05,0.1,0.25")
    ap.add_argument("--methods", default=",".join((*METHODS, *COVERAGE)))
    ap.add_argument("--world", choices=("1", "2", "both"), default="both")
    ap.add_argument("--steps", type=int, default=300, help="optimiser steps of every fine-tune")
    ap.add_argument("--pretrain-steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="1 seed, a small world, 10%% only (--world 1 unless given)",
    )
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    size = WorldSize()
    budgets = [float(b) for b in args.budgets.split(",")]
    methods = args.methods.split(",")
    if args.quick:
        size, args.seeds, budgets = QUICK, 1, [0.1]
        if "--world" not in (argv if argv is not None else sys.argv[1:]):
            args.world = "1"
    worlds = [1, 2] if args.world == "both" else [int(args.world)]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fastscore-selq-"))
    print(
        f"steps policy: every fine-tune (reference, full, clean, each subset) runs the same "
        f"number of optimiser steps ({args.steps}), batch 16, "
        f"lr {args.lr:g}, warm-up 10 then cosine; subsets repeat epochs to fill them",
        file=sys.stderr,
    )
    print(
        "engine features: the base's final hidden states mean-pooled over each record's "
        "prompt tokens by the torch engine (pool='prompt'), projected to 64 float16 numbers "
        "(fastscore.scoring.features.project_pooled), as the scoring stream writes them beside the "
        "scores; recomputed here after scoring with the same writer, beside response-pooled "
        "ones for the cluster diagnostics; lexical features: the prompts' hashed words, "
        "tf-idf, SVD",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    out: dict = {"seeds": args.seeds, "quick": args.quick, "budgets": budgets, "worlds": {}}
    for world in worlds:
        results = []
        for seed in range(args.seeds):
            d = work / f"world{world}" / f"seed{seed}"
            d.mkdir(parents=True, exist_ok=True)
            results.append(run_seed(seed, size, budgets, methods, d, args, world))
        out["steps"] = results[0]["steps"]
        out["worlds"][str(world)] = {
            "seconds_per_seed": [r["seconds"] for r in results],
            **report(results, budgets, methods, work, world),
        }
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
