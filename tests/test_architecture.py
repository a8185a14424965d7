"""The package's shape, checked statically (``ast`` only, nothing imported): no import cycle between
hf_tbar's modules, and a top level of a few rooms rather than a hall of modules.

Every ``import``/``from ... import`` counts, wherever it stands (module level, inside a function, under
``if TYPE_CHECKING:``): an import moved into a function still ties the two modules together. An edge goes
to the module named (``from .models import clip`` -> ``hf_tbar.models.clip``; ``from .models import
family_of`` -> ``hf_tbar.models``, the package's ``__init__``, which imports its own submodules in turn).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "hf_tbar"
SOURCE = Path(__file__).resolve().parent.parent / "src" / PACKAGE
#: The most plain modules (``__init__.py`` aside) the top level of ``src/hf_tbar`` may hold: ten, and
#: ``pipeline`` (the one library call the CLI, the examples and users run: load -> unlearn -> verify -> save).
MAX_TOP_LEVEL_MODULES = 11


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its ``__init__.py``)."""
    modules = {}
    for path in sorted(SOURCE.rglob("*.py")):
        parts = (PACKAGE, *path.relative_to(SOURCE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute dotted name of the ``from`` part of an import (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``module`` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                while name and name not in known:
                    name = name.rpartition(".")[0]
                if name:
                    targets.add(name)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve_from(module, is_package, node)
            for alias in node.names:
                if f"{source}.{alias.name}" in known:
                    targets.add(f"{source}.{alias.name}")
                elif source in known:
                    targets.add(source)
    # Importing ``hf_tbar.a.b`` runs ``hf_tbar/a/__init__.py`` first (the root package's is running already).
    targets |= {t.rsplit(".", i)[0] for t in set(targets) for i in range(1, t.count("."))}
    targets.discard(module)
    return {t for t in targets if not module.startswith(t + ".")}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    graph = {}
    for module, path in files.items():
        graph[module] = imported_modules(module, path, known)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan, then a path inside)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)

    cycles = []
    for component in components:
        start = min(component)
        # Breadth-first search for the shortest way back to ``start`` inside the component.
        previous = {start: None}
        frontier = [start]
        end = None
        while frontier and end is None:
            following = []
            for node in frontier:
                for nxt in sorted(graph[node] & component):
                    if nxt == start:
                        end = node
                        break
                    if nxt not in previous:
                        previous[nxt] = node
                        following.append(nxt)
                if end is not None:
                    break
            frontier = following
        path = [end]
        while previous[path[-1]] is not None:
            path.append(previous[path[-1]])
        cycles.append([*reversed(path), start])
    return cycles


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert len(graph) > 100, sorted(graph)
    assert graph[PACKAGE], "the package's __init__ imports nothing it exports"
    assert any(graph[m] for m in graph if m != PACKAGE), "no module imports another: the resolver is broken"


def test_find_cycles_reports_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_resolve(tmp_path):
    source = (
        "from . import x\nfrom .. import y\nfrom ..z import w\nimport p.q\n\ndef f():\n    from .x import v\n"
    )
    path = tmp_path / "m.py"
    path.write_text(source)
    known = {"p", "p.q", "p.r.x", "p.y", "p.z", "p.r.m"}
    assert imported_modules("p.r.m", path, known) == {"p.r.x", "p.y", "p.z", "p.q"}


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles in src/hf_tbar:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_top_level_is_a_few_rooms():
    modules = sorted(p.stem for p in SOURCE.glob("*.py") if p.name != "__init__.py")
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, (
        f"{len(modules)} modules at the top of src/{PACKAGE} (at most {MAX_TOP_LEVEL_MODULES}): "
        f"{', '.join(modules)}; give each a room (a package with one job)"
    )


@pytest.mark.parametrize("module", ["hf_tbar.errors", "hf_tbar.metrics"])
def test_leaves_import_nothing_of_the_package(module):
    """The errors and the pure metrics sit at the bottom: everything may import them, they import nothing back."""
    graph = import_graph()
    assert graph[module] <= {"hf_tbar.errors"}, graph[module]


#: Files whose functions may import hf_tbar: the ``evaluate`` metric scripts, loaded by path from outside the
#: package (``evaluate.load("src/hf_tbar/metric_modules/...")``), import the package only when they compute.
INNER_IMPORTS_ALLOWED = ("metric_modules/",)


def test_no_import_of_the_package_hidden_in_a_function():
    """An import of hf_tbar inside a function hides an edge (often one running back up): they stand at the top."""
    hidden = []
    for module, path in module_files().items():
        if any(part in path.relative_to(SOURCE).as_posix() for part in INNER_IMPORTS_ALLOWED):
            continue
        for function in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                own = (
                    isinstance(node, ast.ImportFrom)
                    and (node.level or (node.module or "").startswith(PACKAGE))
                ) or (
                    isinstance(node, ast.Import) and any(a.name.split(".")[0] == PACKAGE for a in node.names)
                )
                if own:
                    hidden.append(f"{module}:{node.lineno} (in {function.name})")
    assert not hidden, "imports of hf_tbar inside functions:\n" + "\n".join(hidden)


GATE_NAMES = {"max_asr", "min_ca_retention"}
GATE_HOME = "hub/gate.py"


def _literal_gate_defaults(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, name)`` of every ``max_asr``/``min_ca_retention`` parameter or field whose default is a number."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = [*args.posonlyargs, *args.args]
            pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
            found += [
                (d.lineno, a.arg) for a, d in pairs if a.arg in GATE_NAMES and isinstance(d, ast.Constant)
            ]
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id in GATE_NAMES
        ):
            value = node.value
            if isinstance(value, ast.Call):  # field(default=...)
                value = next((k.value for k in value.keywords if k.arg == "default"), None)
            if isinstance(value, ast.Constant):
                found.append((node.lineno, node.target.id))
    return found


def test_the_gate_thresholds_have_one_home():
    """The safety gate's defaults are written once (``hub/gate.py``); every other default names them."""
    literals = [
        f"{path.relative_to(SOURCE).as_posix()}:{line} ({name})"
        for path in module_files().values()
        if path.relative_to(SOURCE).as_posix() != GATE_HOME
        for line, name in _literal_gate_defaults(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not literals, "gate thresholds written as literals outside hub/gate.py:\n" + "\n".join(literals)
    sample = ast.parse("def f(max_asr: float = 0.1, *, min_ca_retention=0.9):\n    pass\n")
    assert [name for _, name in _literal_gate_defaults(sample)] == ["max_asr", "min_ca_retention"]


def _builds_an_unlearner(tree: ast.AST) -> list[int]:
    """Lines of ``tree`` that import ``BackdoorUnlearner`` or call it (by name or as an attribute)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(a.name == "BackdoorUnlearner" for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call):
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else None
            )
            if name == "BackdoorUnlearner":
                lines.append(node.lineno)
    return lines


def test_the_cli_calls_the_pipeline_and_builds_no_unlearner():
    """``cli/`` parses arguments and calls :mod:`hf_tbar.pipeline`; none of its modules builds an unlearner."""
    built = [
        f"cli/{path.name}:{line}"
        for path in sorted((SOURCE / "cli").glob("*.py"))
        for line in _builds_an_unlearner(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not built, "cli modules that build a BackdoorUnlearner themselves:\n" + "\n".join(built)
    sample = "from ..tbar.unlearner import BackdoorUnlearner\nu = BackdoorUnlearner(m)\nv = tbar.BackdoorUnlearner(m)\n"
    assert _builds_an_unlearner(ast.parse(sample)) == [1, 2, 3]
