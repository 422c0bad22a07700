"""The package's layout, checked on its source: the math modules use the array API standard alone, and the
imports among vicreg's modules form no cycle. Structural checks of the code, not of values (the rest of the
suite checks the values)."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "vicreg"

MATH_MODULES = ["_terms.py", "_loss.py", "_rank_me.py", "_native/generic.py"]
"""The modules that hold the math (each term, the Gram path and its exact columns, the analytic gradient)
and the generic versions of the primitives: written against ``xp`` alone."""

LIBRARIES = {"numpy", "torch", "jax", "jaxlib", "cupy", "dask", "sparse", "ndonnx", "array_api_strict", "ml_dtypes"}
"""Array libraries (and their parts) that a math module may neither import nor name."""

LIBRARY_ATTRIBUTES = {
    "at",  # JAX's functional updates
    "requires_grad",
    "contiguous",
    "is_contiguous",
    "item",
    "numpy",
    "cpu",
    "cuda",
    "flags",
    "__module__",
}
"""Attributes that exist on some libraries' arrays only, or that tell libraries apart."""


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _docstrings(tree: ast.AST) -> set[int]:
    """The ``id`` of every docstring constant (they may name libraries in prose)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    # attribute docstrings: a string expression right after an assignment
    for node in ast.walk(tree):
        for field in ("body", "orelse"):
            body = getattr(node, field, None)
            if isinstance(body, list):
                for stmt in body:
                    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                        found.add(id(stmt.value))
    return found


def library_specific_constructs(source: str, module: str) -> list[str]:
    """Every construct of ``source`` that is not array-API-only: an import of an array library (or of a
    module of vicreg that imports one), a name or string that names a library, an attribute only some
    libraries have, an in-place update (augmented assignment, item assignment, a method ending in ``_``)
    and an ``out=`` argument. Each as ``"line N: what"``."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    package = module.rsplit(".", 1)[0] if "." in module else module
    allowed_relative = {"_native", "_config", "_terms", "_rank_me", "_checks"}
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in LIBRARIES:
                    found.append(f"line {line}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").split(".")[0] in LIBRARIES:
                found.append(f"line {line}: from {node.module} import")
            if node.level > 0:
                target = node.module or ""
                names = [target] if target else [a.name for a in node.names]
                for name in names:
                    if name.split(".")[0] not in allowed_relative and not (package.endswith("_native") and name == ""):
                        found.append(f"line {line}: from {'.' * node.level}{target} import ({package})")
        elif isinstance(node, ast.Name) and node.id in LIBRARIES:
            found.append(f"line {line}: the name {node.id}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if node.value in LIBRARIES or node.value.split(".")[0] in LIBRARIES:
                found.append(f"line {line}: the string {node.value!r}")
        elif isinstance(node, ast.Attribute):
            if node.attr in LIBRARY_ATTRIBUTES:
                found.append(f"line {line}: the attribute .{node.attr}")
            elif node.attr.endswith("_") and not node.attr.startswith("_") and isinstance(node.ctx, ast.Load):
                found.append(f"line {line}: the in-place method .{node.attr}")
        elif isinstance(node, ast.AugAssign):
            found.append(f"line {line}: an augmented (in-place) assignment")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Subscript):
                    found.append(f"line {line}: an item assignment")
        elif isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "out":
                    found.append(f"line {line}: an out= argument")
            if isinstance(node.func, ast.Name) and node.func.id in ("type", "isinstance") and node.args:
                found.append(f"line {line}: {node.func.id}() of a value")
    return found


@pytest.mark.parametrize("name", MATH_MODULES)
def test_math_modules_use_the_array_api_alone(name):
    path = PACKAGE / name
    found = library_specific_constructs(path.read_text(), _module_name(path))
    assert not found, f"{name}: " + "; ".join(found)


@pytest.mark.parametrize(
    "snippet, what",
    [
        ("import torch\n", "import torch"),
        ("from jax import lax\n", "from jax import"),
        ("def f(x):\n    x += 1\n", "augmented"),
        ("def f(x):\n    x[0] = 1\n", "item assignment"),
        ("def f(x, y):\n    return x.addcmul_(y, y)\n", "in-place method"),
        ("def f(xp, x, y):\n    return xp.matmul(x, y, out=x)\n", "out="),
        ("def f(x):\n    return x.at[0].set(1)\n", ".at"),
        ("def f(x):\n    return type(x).__module__ == 'torch'\n", "type()"),
        ("def f(x):\n    return 'numpy' if x else ''\n", "the string 'numpy'"),
        ("from . import torch\n", "from . import"),
    ],
)
def test_the_layout_check_can_fail(snippet, what):
    """The check itself: each kind of library-specific construct is caught (so the test above can fail)."""
    found = library_specific_constructs(snippet, "vicreg._terms")
    assert any(what in f for f in found), found


def _imports(path: pathlib.Path) -> set[str]:
    """The vicreg modules that ``path`` imports, at module level or inside a function (absolute names)."""
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    base = module if is_package else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "vicreg"}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if (node.module or "").split(".")[0] == "vicreg":
                    found |= {_resolve(f"{node.module}.{a.name}", node.module) for a in node.names}
                continue
            anchor = base.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
            target = ".".join([*anchor, *([node.module] if node.module else [])])
            found |= {_resolve(f"{target}.{a.name}", target) for a in node.names}
    return found - {module}


def _resolve(candidate: str, fallback: str) -> str:
    """``candidate`` where it is a module of the package (``from . import _terms``), else ``fallback`` (a
    name imported from that module)."""
    parts = candidate.split(".")[1:]
    path = PACKAGE.joinpath(*parts)
    return candidate if path.with_suffix(".py").exists() or (path / "__init__.py").exists() else fallback


def import_graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (the first repeated at the end), or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_package_imports_form_no_cycle():
    graph = import_graph()
    assert "vicreg.torch" in graph["vicreg._dispatch"] and "vicreg._terms" in graph["vicreg._loss"]  # the probe works
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    graph = import_graph()
    graph["vicreg._terms"] = {*graph["vicreg._terms"], "vicreg._loss"}  # what the old core had, in effect
    assert find_cycle(graph) is not None


def test_only_the_dispatch_module_chooses_an_adapter():
    """``vicreg.torch`` and ``vicreg.jax`` are imported by the dispatch module alone within the package (and
    by nothing below the adapters)."""
    graph = import_graph()
    importers = {m for m, targets in graph.items() if targets & {"vicreg.torch", "vicreg.jax"}}
    assert importers == {"vicreg._dispatch"}
