"""The import layering of the package (issue 10's design), checked over the source with ``ast``.

Each top-level part of ``journal_loader`` (a package such as ``storage/`` or a module such as
``loader.py``) sits on one layer of ``LAYERS``; a module may import its own layer or a lower
one, never a higher one, and no two parts may import each other (directly or round a longer
loop), not even on the same layer (with upward imports reported on their own, a loop left is
one between parts of one layer). Imports inside functions count: they run too, and a
function-level import is how a cycle usually hides. Imports under ``if TYPE_CHECKING:`` do
not: they never run. A part missing from the table fails the check, so a new module gets a
layer on purpose rather than by default.

The checker runs on a directory, not on the imported package, so the tests below can plant
an upward import and a cycle into a copy under tmp_path and see it caught.
"""

from __future__ import annotations

import ast
import itertools
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "journal_loader"
SOURCE = Path(__file__).resolve().parent.parent / PACKAGE

# Bottom to top; the one copy of the table. "" is the package's own __init__: the lazy
# facade that re-exports the public names (run, Loader, RunReport...), so it sits on top and
# nothing inside the package imports it (``__version__`` comes from ``version``).
LAYER_NAMES = [
    ("base", ["errors", "secrets", "resources", "suggest", "version", "faults", "switching"]),
    ("storage", ["storage"]),
    ("sources", ["sources"]),
    ("config", ["config"]),
    ("graph", ["graph"]),
    ("journal", ["journal"]),
    ("projections", ["projections"]),
    ("loaders", ["loader", "facts", "factory"]),
    ("runner", ["runner", "abandon", "failures", "dlq"]),
    ("audit", ["audit"]),
    ("api", ["api"]),
    ("ops", ["ops"]),
    ("cli", ["cli", "__main__"]),
    ("facade", [""]),
]
LAYERS: dict[str, int] = {
    part: level for level, (_name, parts) in enumerate(LAYER_NAMES) for part in parts
}


@dataclass(frozen=True, order=True)
class Import:
    file: str  # relative to the directory that holds the package
    line: int
    source: str  # the importing module, dotted
    target: str  # the imported module, dotted

    def __str__(self) -> str:
        return f"{self.file}:{self.line} -> {self.target}"


def part_of(module: str) -> str:
    """journal_loader.graph.protocol -> graph; journal_loader -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_name(part: str) -> str:
    return LAYER_NAMES[LAYERS[part]][0]


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    names = list(rel.parts)
    if names[-1] == "__init__":
        names.pop()
    return ".".join(names)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: module level, in functions and classes, in try
    and if blocks, but not in the body of ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports(root: Path, package: str = PACKAGE) -> list[Import]:
    """The package's imports of its own modules, one per imported module and statement."""
    modules = {_module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    found: list[Import] = []
    for source, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        file = str(path.relative_to(root))
        for node in _runtime_imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: from the importing module's package upwards
                    anchor = source.split(".")
                    if not is_package:
                        anchor = anchor[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import name` imports the module pkg.name when there is one
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            for target in dict.fromkeys(targets):
                if target == package or target.startswith(package + "."):
                    found.append(Import(file, node.lineno, source, target))
    return found


def check(root: Path, package: str = PACKAGE) -> list[str]:
    """Every breach of the layering, one line each; [] when the package keeps it."""
    problems: list[str] = []
    edges: dict[str, dict[str, list[Import]]] = {}
    for imp in imports(root, package):
        src, dst = part_of(imp.source), part_of(imp.target)
        unknown = [p for p in (src, dst) if p not in LAYERS]
        if unknown:
            problems.append(f"{imp}: {package}.{unknown[0]} has no layer in LAYERS")
            continue
        if src == dst:
            continue
        if LAYERS[dst] > LAYERS[src]:
            problems.append(
                f"{imp}: upward import ({src or package} is {layer_name(src)}, "
                f"{dst or package} is {layer_name(dst)})"
            )
            # Reported; left out of the cycle search, where it would close a loop through
            # half the package and bury the one line that matters.
            continue
        edges.setdefault(src, {}).setdefault(dst, []).append(imp)
    for cycle in _cycles(edges):
        members = set(cycle)
        through = sorted(
            str(imp)
            for src in cycle
            for dst, imps in edges.get(src, {}).items()
            if dst in members
            for imp in imps
        )
        problems.append(
            f"import cycle between {', '.join(p or package for p in cycle)}: {'; '.join(through)}"
        )
    return sorted(problems)


def _cycles(edges: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """The strongly connected components with more than one part (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


# --- the checks ---


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {part_of(_module_name(p, SOURCE.parent)) for p in SOURCE.rglob("*.py")}
    assert sorted(parts - LAYERS.keys()) == []


def test_every_package_says_what_it_owns_and_may_import() -> None:
    missing = []
    for init in sorted(SOURCE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        if "may import" not in doc.lower():
            missing.append(str(init.relative_to(SOURCE.parent)))
    assert missing == []


def test_the_facade_docstring_lists_the_layers_in_this_order() -> None:
    doc = ast.get_docstring(ast.parse((SOURCE / "__init__.py").read_text(encoding="utf-8")))
    assert doc is not None and "bottom to top" in doc
    text = doc[doc.index("bottom to top") :]
    where = {}
    for part in LAYERS.keys() - {"", "__main__"}:
        m = re.search(rf"\b{part}\b", text)
        assert m is not None, f"{part} is not named in journal_loader/__init__.py's docstring"
        where[part] = m.start()
    for lower, higher in itertools.pairwise(LAYER_NAMES[:-1]):  # (the facade is not listed)
        top_of_lower = max(where[p] for p in lower[1] if p in where)
        bottom_of_higher = min(where[p] for p in higher[1] if p in where)
        assert top_of_lower < bottom_of_higher, (lower[0], higher[0])


def test_the_package_keeps_its_layers() -> None:
    assert check(SOURCE.parent) == []


# --- the checker itself: it sees what is planted into a copy ---


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    shutil.copytree(SOURCE, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _plant(root: Path, module: str, code: str) -> None:
    path = root / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text(encoding="utf-8") + "\n" + code, encoding="utf-8")


def _new(root: Path) -> list[str]:
    """What the checker reports in the copy and not in the package itself (the package may
    have breaches of its own; those are the first test's business)."""
    before = set(check(SOURCE.parent))
    return [p for p in check(root) if p not in before]


def test_a_planted_upward_import_is_caught(copy: Path) -> None:
    _plant(copy, "journal_loader.storage.base", "from journal_loader.cli import main\n")
    lines = len((copy / "journal_loader/storage/base.py").read_text().splitlines())
    assert _new(copy) == [
        f"journal_loader/storage/base.py:{lines} -> journal_loader.cli: upward import "
        "(storage is storage, cli is cli)"
    ]


def test_a_planted_upward_import_inside_a_function_is_caught(copy: Path) -> None:
    _plant(
        copy,
        "journal_loader.errors",
        "def _late():\n    from journal_loader import runner\n    return runner\n",
    )
    lines = len((copy / "journal_loader/errors.py").read_text().splitlines())
    assert _new(copy) == [
        f"journal_loader/errors.py:{lines - 1} -> journal_loader.runner: upward import "
        "(errors is base, runner is runner)"
    ]


def test_a_planted_cycle_on_one_layer_is_caught(copy: Path) -> None:
    # loader and facts share a layer: facts imports loader (Loader), and this makes loader
    # import facts back, the cycle loader_from_config used to close.
    _plant(copy, "journal_loader.loader", "def _facts():\n    import journal_loader.facts\n")
    lines = len((copy / "journal_loader/loader.py").read_text().splitlines())
    new = _new(copy)
    assert len(new) == 1
    assert new[0].startswith("import cycle between facts, loader: ")
    assert f"journal_loader/loader.py:{lines} -> journal_loader.facts" in new[0]


def test_type_checking_imports_and_unknown_parts(copy: Path) -> None:
    _plant(
        copy,
        "journal_loader.storage.base",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from journal_loader.api import run\n",
    )
    (copy / "journal_loader/newthing.py").write_text("import journal_loader.errors\n")
    assert _new(copy) == [
        "journal_loader/newthing.py:1 -> journal_loader.errors: "
        "journal_loader.newthing has no layer in LAYERS"
    ]
