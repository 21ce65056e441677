"""The import layers of assistant/, read from the source with `ast` (every import, nested ones too).

Bottom to top: errors < text < storage < config < runtime < corpus < model < variants < evaluation
< serve < checks < cli. A module may import its own layer or a lower one, never a higher one; no
two modules may import each other, however long the way round; our own modules are imported at
the top of a file, so the drawing is the truth. Two exceptions, both to load a heavy library only
when it is used (LAZY_OWN_IMPORTS): the console script imports a verb's modules inside the verb,
so `assistant --help` starts in 0.05 s instead of ~8 s (torch, FastAPI, Gradio); and training
imports its TRL trainer subclass only when it trains (`from trl import SFTTrainer`: 3.8 s).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "assistant"
LAYERS = ["errors", "text", "storage", "config", "runtime", "corpus", "model", "variants", "evaluation", "serve",
          "checks", "cli"]
# Nested imports of our own modules that load a heavy library lazily (see the module docstring):
# a module name (all of its nested imports) or a (module, imported module) pair.
LAZY_OWN_IMPORTS = {"assistant.cli", ("assistant.variants.training", "assistant.variants.shared_prefix")}
MAX_TOP_LEVEL_MODULES = 10


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    nested: bool  # inside a function (or a class body's method)


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _resolve(node: ast.ImportFrom, name: str, path: Path, known: dict[str, Path]) -> list[str]:
    """What a `from X import a, b` imports: the submodule X.a where there is one, else X itself."""
    if node.level:
        base = name.split(".")
        base = base if path.name == "__init__.py" else base[:-1]
        base = base[: len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]


def imports(name: str, path: Path, known: dict[str, Path]) -> list[Edge]:
    edges: list[Edge] = []

    def walk(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                edges.extend(Edge(name, a.name, child.lineno, inner) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                edges.extend(Edge(name, t, child.lineno, inner) for t in _resolve(child, name, path, known))
            walk(child, inner)

    walk(ast.parse(path.read_text(encoding="utf-8"), str(path)), False)
    return edges


def own_edges(root: Path = PACKAGE) -> list[Edge]:
    known = modules(root)
    found = [e for name, path in known.items() for e in imports(name, path, known)
             if e.target.split(".")[0] == root.name and e.target != e.source]
    return list(dict.fromkeys(found))  # `from x import a, b` is one arrow


def layer(name: str) -> int:
    """Index in LAYERS of a module (assistant.evaluation.ppi -> evaluation); the package itself is lowest."""
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else -1


def cycles(edges: list[Edge]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def upward(edges: list[Edge]) -> list[Edge]:
    return [e for e in edges if layer(e.target) > layer(e.source)]


def nested_own(edges: list[Edge]) -> list[Edge]:
    return [e for e in edges if e.nested and e.source not in LAZY_OWN_IMPORTS
            and (e.source, e.target) not in LAZY_OWN_IMPORTS]


def top_level_modules(root: Path = PACKAGE) -> list[str]:
    return sorted(p.stem for p in root.glob("*.py") if p.name != "__init__.py")


def _say(edges: list[Edge]) -> str:
    return "\n".join(f"{e.source}:{e.line} imports {e.target}" for e in edges)


# -- the rules ------------------------------------------------------------------------------------
def test_every_module_has_a_layer():
    for name in modules():
        if name != PACKAGE.name:
            assert name.split(".")[1] in LAYERS, f"{name} is in no layer; add it to LAYERS in {__file__}"


def test_no_import_cycle():
    found = cycles(own_edges())
    assert not found, "import cycles (each a set of modules that import one another):\n" + "\n".join(
        " <-> ".join(c) for c in found)


def test_no_import_from_a_higher_layer():
    bad = upward(own_edges())
    assert not bad, f"imports from a higher layer ({' < '.join(LAYERS)}):\n{_say(bad)}"


def test_own_modules_are_imported_at_the_top():
    bad = nested_own(own_edges())
    assert not bad, ("function-level imports of our own modules (import them at the top; only a heavy "
                     f"optional library may load lazily):\n{_say(bad)}")


def test_at_most_ten_top_level_modules():
    found = top_level_modules()
    assert len(found) <= MAX_TOP_LEVEL_MODULES, f"{len(found)} top-level modules in assistant/: {found}"


# -- the rules catch what they should (a small package written to a temporary folder) ------------
@pytest.fixture
def toy(tmp_path: Path) -> Path:
    root = tmp_path / "assistant"
    for rel, text in {
        "__init__.py": "",
        "errors.py": "",
        "config.py": "from assistant.errors import X\n",
        "corpus/__init__.py": "",
        "corpus/a.py": "from assistant.corpus import b\n",
        "corpus/b.py": "def f():\n    from . import a\n",
        "model/__init__.py": "",
        "model/m.py": "from ..variants.v import V\n",
        "variants/__init__.py": "",
        "variants/v.py": "import assistant.config\n",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_the_rules_find_a_cycle_an_upward_arrow_and_a_nested_import(toy: Path):
    edges = own_edges(toy)
    assert cycles(edges) == [["assistant.corpus.a", "assistant.corpus.b"]]
    assert [(e.source, e.target) for e in upward(edges)] == [("assistant.model.m", "assistant.variants.v")]
    assert [(e.source, e.target, e.line) for e in nested_own(edges)] == [("assistant.corpus.b", "assistant.corpus.a", 2)]
    assert top_level_modules(toy) == ["config", "errors"]
