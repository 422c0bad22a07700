"""The few primitives an array library may do better than the generic array-API code, looked up once per
namespace.

The math (:mod:`vicreg._terms`, :mod:`vicreg._loss`) is written against the array API standard alone. Where
it needs something the standard lacks, or that a library does faster or more accurately, it calls a
primitive of this small set through :func:`lookup`, which returns the generic version
(:mod:`vicreg._native.generic`, standard functions only, what array-api-strict runs in the tests) with the
library's own versions put in its place where its module defines them:

==================  =====================================================  ==============================
primitive           what it computes                                       native versions
==================  =====================================================  ==============================
``column_sum``      ``sum(x, axis=-2)``                                    NumPy (accuracy and speed)
``host_int``        a 0-d integer array read on the host, or ``None``      PyTorch, JAX (where no read is
                    where reading it would break a trace                   allowed)
``take_columns``    ``x[..., :, index]``                                   (generic everywhere)
``set_columns``     ``p`` with ``h`` written into its columns ``index``    NumPy, PyTorch, JAX (a scatter
                    (``p`` is zero there)                                  instead of a product)
``row_major``       ``x`` laid out in row-major order                      NumPy, PyTorch
``device``          the device of ``x``, to create arrays beside it        PyTorch (read directly)
==================  =====================================================  ==============================

Each native version says in its docstring what it gains and where it was measured. A native module knows
nothing of VICReg, and imports its library when it is first looked up, that is when the library's arrays
have arrived: ``import vicreg`` imports none.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace
from typing import Any

from . import generic

PRIMITIVES = ("column_sum", "host_int", "take_columns", "set_columns", "row_major", "device")
"""The names of the primitives; each is ``f(xp, ...)``."""

_NATIVE = {
    "array_api_compat.numpy": "numpy",
    "numpy": "numpy",
    "array_api_compat.torch": "torch",
    "jax.numpy": "jax",
}
"""The native module (of this package) for each array namespace that has one, by the namespace's name."""

_cache: dict[str, SimpleNamespace] = {}


def lookup(xp: Any) -> SimpleNamespace:
    """The primitives for the namespace ``xp``: its library's native versions where its module defines them,
    the generic ones otherwise. Built once per namespace and cached (a plain dict, which ``torch.compile``
    traces without a graph break)."""
    name = getattr(xp, "__name__", "")
    found = _cache.get(name)
    if found is None:
        found = _cache[name] = _build(name)
    return found


def _build(name: str) -> SimpleNamespace:
    chosen = {p: getattr(generic, p) for p in PRIMITIVES}
    module = _NATIVE.get(name)
    if module is not None:
        native = importlib.import_module(f"{__name__}.{module}")
        chosen.update({p: getattr(native, p) for p in PRIMITIVES if hasattr(native, p)})
    return SimpleNamespace(**chosen)
