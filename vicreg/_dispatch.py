"""Which adapter's autodiff wrapper computes :func:`vicreg.vicreg_loss` on a framework's arrays.

PyTorch tensors go through :mod:`vicreg.torch`'s ``autograd.Function`` (the analytic backward; every order
of derivative and ``torch.func`` work), JAX arrays through :mod:`vicreg.jax`'s ``custom_jvp`` rule. Arrays of
libraries without autodiff (NumPy, CuPy, dask, ...) take the generic path of :mod:`vicreg._api`. The
framework is told from the arrays' type alone (no array-API dispatch, which ``torch.compile`` would trace),
and its adapter is imported here, when its arrays arrive, so ``import vicreg`` imports no framework.
"""

from __future__ import annotations

from typing import Any


def adapter(z1: Any, z2: Any) -> Any:
    """The adapter module of the inputs' framework when both are PyTorch tensors or both JAX arrays, whose
    ``local_loss(z1, z2, config)`` and ``local_terms(z1, z2, config)`` check and cast the inputs themselves;
    ``None`` otherwise (a mixed pair included, which the generic checks refuse). No gathering across
    processes or devices: the loss of the arrays given."""
    first, second = _library(z1), _library(z2)
    if first == second == "torch":
        from . import torch as torch_adapter

        return torch_adapter
    if first in ("jax", "jaxlib") and second in ("jax", "jaxlib"):
        from . import jax as jax_adapter

        return jax_adapter
    return None


def _library(x: Any) -> str:
    return type(x).__module__.split(".")[0]
