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
``column_mean``     ``mean(x, axis=-2)``                                   NumPy (accuracy)
``host_read``       a small boolean array read on the host at once, or     NumPy, PyTorch, JAX, CuPy, dask
                    ``None`` where reading it would break a trace          (one read; none where traced)
``take_columns``    ``x[..., :, index]``                                   (generic everywhere)
``set_columns``     ``p`` with ``h`` written into its columns ``index``    NumPy, PyTorch, JAX (a scatter
                    (``p`` is zero there)                                  instead of a product)
``top_k``           the ``k`` largest entries of a vector and their        NumPy, PyTorch, JAX (a partial
                    positions                                              selection instead of a sort)
``column_sum_sq``   ``sum(x * x, axis=-2)``                                PyTorch (blocks, no temporary)
``column_var``      the unbiased variance of centred columns               NumPy (accuracy), PyTorch (one
                                                                           kernel; blocks on the CPU)
``sum_sq_differ..`` ``sum((a - b) ** 2)`` per matrix                       NumPy (blocks, dots), PyTorch
                                                                           (blocks, no temporary)
``centred_columns`` ``x - correction``, per column                        PyTorch (in place)
``scale_columns``   ``x * scale``, per column                              PyTorch (in place)
``multiply_add``    ``p + x * w``, ``w`` per column                        PyTorch (in place)
``add_product``     ``p + a @ b``                                          PyTorch (in place)
``add_difference``  ``(p + c (a - b), q - c (a - b))``                     NumPy (blocks), PyTorch (in
                                                                           place)
``row_major``       ``x`` laid out in row-major order                      NumPy, PyTorch
``device``          the device of ``x``, to create arrays beside it        PyTorch (read directly)
``eigvalsh``        the eigenvalues of a symmetric matrix (RankMe)         dask (computed, NumPy's solver)
``stop_gradient``   ``x`` as a constant for autodiff (RankMe)              PyTorch, JAX
``widened``         ``x`` in float64 where the library has it (RankMe)     PyTorch (not on MPS), JAX (only
                                                                           with x64 enabled)
``bf16_round``      float32 ``x`` rounded to bfloat16, in float32          NumPy, CuPy (bits), PyTorch,
                                                                           JAX (casts)
``bf16_matmul``     ``a @ b`` of inputs that are bfloat16 numbers,         PyTorch on CUDA, JAX (tensor
                    float32 accumulation and result                        cores)
==================  =====================================================  ==============================

The elementwise primitives (``centred_columns``, ``scale_columns``, ``multiply_add``, ``add_product``,
``add_difference``) take fresh first arguments that the caller does not read again: their generic
versions return a new array, a native version may write the results into them instead of allocating one
more ``n x d`` array (on a CPU, each fresh array of that size is mapped page by page, which costs about as
much as the pass itself).

Each native version says in its docstring what it gains and where it was measured. A native module knows
nothing of VICReg, and imports its library when it is first looked up, that is when the library's arrays
have arrived: ``import vicreg`` imports none.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace
from typing import Any

from . import generic

PRIMITIVES = (
    "column_sum",
    "column_mean",
    "host_read",
    "take_columns",
    "set_columns",
    "top_k",
    "column_sum_sq",
    "column_var",
    "sum_sq_difference",
    "centred_columns",
    "scale_columns",
    "multiply_add",
    "add_product",
    "add_difference",
    "row_major",
    "device",
    "eigvalsh",
    "stop_gradient",
    "widened",
    "bf16_round",
    "bf16_matmul",
)
"""The names of the primitives; each is ``f(xp, ...)``."""

_NATIVE = {
    "array_api_compat.numpy": "numpy",
    "numpy": "numpy",
    "array_api_compat.torch": "torch",
    "jax.numpy": "jax",
    "array_api_compat.cupy": "cupy",
    "array_api_compat.dask.array": "dask",
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
