"""The documentation: the site builds strictly, the API reference covers the public API, every public
function and class documents its arguments, and the README stays a short first page whose commands CI can
read and whose numbers come from the committed runs.

The site build runs ``mkdocs build --strict`` in a subprocess into a temporary folder (about 2 s); it is
skipped, with the reason, when the ``docs`` extra is not installed.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PUBLIC = {"vicreg": "vicreg/__init__.py", "vicreg.torch": "vicreg/torch.py", "vicreg.jax": "vicreg/jax.py"}
API_PAGES = {"vicreg": "api/vicreg", "vicreg.torch": "api/torch", "vicreg.jax": "api/jax"}


def _all(module: str) -> list[str]:
    """A module's ``__all__``, read from its source (no import: the docs need neither PyTorch nor JAX)."""
    tree = ast.parse((ROOT / PUBLIC[module]).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"{module} has no __all__")


# every test here on one pytest-xdist worker, so that the module-scoped fixture below runs once
pytestmark = pytest.mark.xdist_group("docs")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once with ``mkdocs build --strict``."""
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "pymdownx"):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return out


def test_docs_build_strictly(site):
    assert (site / "index.html").is_file()
    for page in (
        "getting-started",
        "loss",
        "precision",
        "pytorch",
        "jax",
        "numpy-cupy",
        "training",
        "benchmarks",
        "development",
        *API_PAGES.values(),
        "api/internals",
    ):
        assert (site / page / "index.html").is_file(), page


def test_math_reaches_mathjax(site):
    """Formulas (Markdown pages and docstrings alike) are wrapped for MathJax, which the site loads."""
    loss = (site / "loss" / "index.html").read_text(encoding="utf-8")
    internals = (site / "api" / "internals" / "index.html").read_text(encoding="utf-8")
    assert loss.count('class="arithmatex"') > 10
    assert internals.count('class="arithmatex"') > 10
    assert ".. math::" not in internals and ":math:`" not in internals and ":func:`" not in internals
    assert "mathjax" in loss.lower()


@pytest.mark.parametrize("module", list(PUBLIC))
def test_api_reference_covers_all(site, module):
    """Every name of the module's ``__all__`` has its own entry (an anchor) in the module's API page."""
    html = (site / API_PAGES[module] / "index.html").read_text(encoding="utf-8")
    missing = [name for name in _all(module) if f'id="{module}.{name}"' not in html]
    assert not missing, f"{module}: not in docs/{API_PAGES[module]}.md: {missing}"


def _public_objects():
    for module, _ in PUBLIC.items():
        for name in _all(module):
            yield pytest.param(module, name, id=f"{module}.{name}")


@pytest.mark.parametrize("module, name", list(_public_objects()))
def test_public_api_documents_its_arguments(module, name):
    """Functions: ``Args:``, ``Returns:`` and ``Raises:``; classes: ``Args:`` (their constructor) or
    ``Attributes:`` (a record), and their public methods ``Args:`` and ``Returns:``."""
    requires = {"vicreg.torch": "torch", "vicreg.jax": "jax"}.get(module)
    if requires:
        pytest.importorskip(requires)
    obj = getattr(importlib.import_module(module), name)
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        return  # a constant: see test_constants_are_documented_on_the_api_page
    doc = inspect.getdoc(obj) or ""
    if inspect.isfunction(obj):
        for section in ("Args:", "Returns:", "Raises:"):
            assert section in doc, f"{module}.{name}: no {section} section"
        return
    assert "Args:" in doc or "Attributes:" in doc, f"{module}.{name}: no Args: or Attributes: section"
    own = [m for m in ("__call__", "forward", "terms", "value_and_grad") if m in vars(obj)]
    for method in own:
        method_doc = inspect.getdoc(getattr(obj, method)) or ""
        for section in ("Args:", "Returns:"):
            assert section in method_doc, f"{module}.{name}.{method}: no {section} section"


def test_constants_are_documented_on_the_api_page():
    source = (ROOT / "vicreg" / "_checks.py").read_text(encoding="utf-8")
    assert re.search(r'^CONVENTIONS = .*\n"""', source, flags=re.MULTILINE), "CONVENTIONS has no docstring"


# --- the README ---------------------------------------------------------------------------------------


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def test_readme_is_a_short_first_page():
    assert len(_readme().splitlines()) < 200


def test_readme_holds_the_commands_ci_reads():
    lines = _readme().splitlines()
    main = lines[lines.index("# set up and run the main job") + 1]
    tests = lines[lines.index("# set up and run the tests") + 1]
    assert main.startswith("python3 -m venv .venv && .venv/bin/pip install -e")
    # CI runs this line: it must install every test dependency and run the whole suite
    assert '.venv/bin/pip install -e ".[test]"' in tests and ".venv/bin/python -m pytest" in tests
    assert not re.search(r" -m pytest .*(?:-k|-m|--deselect|tests/)", tests), "the whole suite, no selection"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "# set up and run the tests" in ci
    # the development page shows the same command, word for word
    assert f"\n{tests}\n" in (ROOT / "docs" / "development.md").read_text(encoding="utf-8")


def test_readme_and_docs_links_resolve():
    """Relative links of the README (to the docs pages, the licence) point at files that exist."""
    targets = re.findall(r"\]\((?!https?://|#)([^)#\s]+)(?:#[^)]*)?\)", _readme())
    assert targets
    for target in targets:
        assert (ROOT / target).exists(), target
