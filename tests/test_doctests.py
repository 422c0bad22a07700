"""The ``>>>`` examples in the docstrings of ``vicreg``, run as tests: one test per module, skipped with
the reason when the module's framework is not installed."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import vicreg

MODULES = ["vicreg", *sorted(f"vicreg.{m.name}" for m in pkgutil.iter_modules(vicreg.__path__))]
REQUIRES = {"vicreg.torch": "torch", "vicreg.jax": "jax"}


def test_the_docstrings_have_examples():
    """The collector finds examples (a change in how they are written must not silently turn this off)."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = {
        name: sum(len(t.examples) for t in finder.find(importlib.import_module(name)))
        for name in ("vicreg", "vicreg._loss")
    }
    assert all(count > 0 for count in found.values()), found


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    pytest.importorskip("numpy")  # every example builds its inputs with NumPy or the framework
    if name in REQUIRES:
        pytest.importorskip(REQUIRES[name])
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for test in finder.find(module, name):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
