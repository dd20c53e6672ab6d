"""Build the demo's tokenizer, base model and reference model, once, into the cache.

No model hub is reachable, so the demo makes its own: a byte-level BPE tokenizer with a
ChatML chat template, a tiny Llama "pretrained" on the world's corpus, and a reference
model fine-tuned from it on the demo SFT set with the response-only loss (the same
response masks the scorer uses). Seeded and deterministic; a few minutes on 2 CPU cores.
head_dim is 64 because vLLM's CPU attention refuses smaller heads.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from fastscore.demodata import world as world_mod
from fastscore.demodata.pretrain import Schedule, train_examples
from fastscore.paths import cache_dir
from fastscore.quiet import libraries_quiet
from fastscore.scoring import reference

log = logging.getLogger(__name__)

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]


@dataclass(frozen=True)
class TinyLlama:
    hidden_size: int = 128
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 2
    head_dim: int = 64
    max_position_embeddings: int = 256
    vocab_size: int = 1024
    tie_word_embeddings: bool = False


@dataclass(frozen=True)
class DemoRecipe:
    world: world_mod.World = field(default_factory=world_mod.World)
    model: TinyLlama = field(default_factory=TinyLlama)
    pretrain: Schedule = field(default_factory=lambda: Schedule(epochs=3, lr=3e-3))
    finetune: Schedule = field(default_factory=lambda: Schedule(epochs=3, lr=1e-3, batch_size=16))
    seed: int = 0
    builder: int = 4  # bumped when the building code changes what it builds

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode() + CHATML_TEMPLATE.encode()
        return hashlib.sha256(blob).hexdigest()[:12]


@dataclass(frozen=True)
class DemoAssets:
    root: Path

    @property
    def base(self) -> Path:
        return self.root / "base"

    @property
    def ref(self) -> Path:
        return self.root / "ref"

    @property
    def data(self) -> Path:
        return self.root / "sft.jsonl"


def ensure_demo(
    recipe: DemoRecipe | None = None, root: Path | None = None, *, progress: bool = False
) -> DemoAssets:
    """The demo assets, built on first use (a line per step with its time, a bar for the
    long ones with ``progress``) and reused afterwards."""
    recipe = recipe or DemoRecipe()
    root = Path(root) if root else cache_dir() / f"demo-{recipe.key()}"
    assets = DemoAssets(root)
    if (root / "COMPLETE").exists():
        return assets
    root.parent.mkdir(parents=True, exist_ok=True)
    # Processes that start together (test workers, two demos) build once: the others wait
    # here and find it built, instead of replacing the folder while the first one reads it.
    with open(root.with_name(root.name + ".lock"), "wb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "COMPLETE").exists():
            return assets
        log.info(
            "building the demo's models into %s (once: later runs reuse them; "
            "$FASTSCORE_CACHE_DIR moves the cache)",
            root,
        )
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        t0 = time.perf_counter()
        with libraries_quiet():
            _build(recipe, DemoAssets(tmp), progress=progress)
        seconds = time.perf_counter() - t0
        (tmp / "COMPLETE").write_text(f"built in {seconds:.1f}s\n")
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)  # atomic: a half-built demo is never picked up
        log.info("demo models built in %.1fs", seconds)
    return assets


class _Steps:
    """The build's steps, each announced as it starts and timed as it ends."""

    def __init__(self, total: int):
        self.total, self.n = total, 0

    @contextlib.contextmanager
    def step(self, what: str):
        self.n += 1
        t0 = time.perf_counter()
        done: list[str] = []
        log.info("  [%d/%d] %s ...", self.n, self.total, what)
        yield done  # the step may add what it made
        log.info(
            "  [%d/%d] %s: done in %.1fs%s",
            self.n,
            self.total,
            what,
            time.perf_counter() - t0,
            f" ({', '.join(done)})" if done else "",
        )


def build_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_llama(tokenizer, m: TinyLlama):
    """A randomly initialised Llama of shape ``m`` for ``tokenizer``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=m.hidden_size,
        intermediate_size=m.intermediate_size,
        num_hidden_layers=m.num_hidden_layers,
        num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.num_attention_heads,
        head_dim=m.head_dim,
        max_position_embeddings=m.max_position_embeddings,
        tie_word_embeddings=m.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    return LlamaForCausalLM(config)


def _build(recipe: DemoRecipe, out: DemoAssets, *, progress: bool = False) -> None:
    import torch

    from fastscore.config import TrainConfig
    from fastscore.training.run import train_ref

    steps = _Steps(4)
    torch.manual_seed(recipe.seed)
    with steps.step("the world: its pretraining corpus and SFT records") as done:
        pretrain, sft = world_mod.build(recipe.world)
        with open(out.data, "wb") as f:
            for rec in sft:
                f.write(orjson.dumps(rec) + b"\n")
        done.append(f"{len(pretrain):,} pretraining chats, {len(sft):,} SFT records")

    with steps.step("a byte-level BPE tokenizer") as done:
        texts = [m["content"] for conv in pretrain for m in conv]
        texts += [m["content"] for rec in sft for m in rec["messages"]]
        tokenizer = build_tokenizer(texts, recipe.model.vocab_size)
        done.append(f"{len(tokenizer):,} tokens")

    with steps.step("the base: a tiny Llama pretrained on the corpus") as done:
        model = tiny_llama(tokenizer, recipe.model)
        # Pretraining: every token of the ChatML-formatted corpus counts.
        pre_ids = [tokenizer.apply_chat_template(conv, tokenize=False) for conv in pretrain]
        pre_examples = []
        for text in pre_ids:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            pre_examples.append((ids, list(range(1, len(ids)))))
        r = train_examples(model, pre_examples, recipe.pretrain, pad_id=tokenizer.pad_token_id,
                           what="pretraining", progress=progress)  # fmt: skip
        model.save_pretrained(out.base)
        tokenizer.save_pretrained(out.base)
        params = sum(p.numel() for p in model.parameters())
        done.append(
            f"{params / 1e6:.1f}M parameters, {r['steps']} steps, loss {r['final_loss']:.3f}"
        )

    # The reference: fastscore's own train-ref, so the response masks are the scorer's.
    with steps.step("the reference: train-ref (TRL's SFTTrainer) on the SFT records") as done:
        ft = recipe.finetune
        trained = train_ref(
            TrainConfig(
                input=str(out.data),
                base=str(out.base),
                output_dir=str(out.ref),
                format="messages",
                epochs=ft.epochs,
                lr=ft.lr,
                batch_size=ft.batch_size,
                warmup_steps=ft.warmup_steps,
                weight_decay=ft.weight_decay,
                device="cpu",
                progress=progress,
                seed=recipe.seed,
            )
        )
        check = trained["held_out"]
        if trained["counts"]["by_status"] != {"ok": len(sft)}:
            raise RuntimeError(f"demo records did not all render: {trained['counts']}")
        if check is not None and check["verdict"] != reference.LEARNED:
            raise RuntimeError(f"the demo's reference did not learn: {check}")
        loss = trained["final_loss"]
        done.append(
            f"{trained['steps']} steps" + (f", loss {loss:.3f}" if loss is not None else "")
        )
        if check is not None:
            done.append(f"held-out loss {check['relative_drop']:.0%} lower")
