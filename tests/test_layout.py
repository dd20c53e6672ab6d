"""The package's import graph has no cycle, function-level imports included.

A cycle hidden by an import inside a function still ties two modules together (each
needs the other to be understood, tested or moved); the graph here counts every
``import`` and ``from ... import`` statement anywhere in a module, except those under
``if TYPE_CHECKING:`` (never run). Importing ``a.b.c`` also runs ``a/__init__`` and
``a/b/__init__``, so those count as edges too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fastscore"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skip.update(id(n) for n in ast.walk(child))
    return skip


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports (and their parent packages)."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    targets = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets.add(mod)
            targets.update(f"{mod}.{a.name}" for a in node.names)  # submodules imported
    found = set()
    for t in targets:
        parts = t.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name in modules and name != here:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_cycle_hidden_in_a_function():
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "fastscore.cli" in graph and graph["fastscore.cli"]  # the graph was read
    assert cycles(graph) == []


def test_only_the_storage_package_tells_a_url_from_a_path():
    """A location is a ``storage.Location`` from the config on: the stages call its
    methods, and no module outside ``fastscore/storage/`` asks whether it is a URL."""
    asking = {
        module_name(p)
        for p in PACKAGE.rglob("*.py")
        if "storage" not in p.relative_to(PACKAGE).parts[:1]
        and any(
            isinstance(n, (ast.Name, ast.Attribute, ast.alias))
            and {"is_url", "in_store"}
            & {getattr(n, "id", None), getattr(n, "attr", None), getattr(n, "name", None)}
            for n in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        )
    }
    assert (PACKAGE / "storage" / "location.py").exists()
    assert asking == set()
