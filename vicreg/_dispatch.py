"""Which adapter's autodiff wrapper computes :func:`vicreg.vicreg_loss` on a framework's arrays.

PyTorch tensors go through :mod:`vicreg.torch`'s ``autograd.Function`` (the analytic backward; every order
of derivative and ``torch.func`` work), JAX arrays through :mod:`vicreg.jax`'s ``custom_jvp`` rule. Arrays of
libraries without autodiff (NumPy, CuPy, dask, ...) take the generic path of :mod:`vicreg._api`. The
framework is told from the arrays' type alone (no array-API dispatch, which ``torch.compile`` would trace),
and its adapter is imported here, when its arrays arrive, so ``import vicreg`` imports no framework.
"""

from __future__ import annotations

from typing import Any


def adapter(*views: Any) -> Any:
    """The adapter module of the views' framework when all are PyTorch tensors or all JAX arrays, whose
    ``local_loss(views, config)``, ``local_terms(views, config)`` and ``local_vcreg_terms(z, config)`` check
    and cast the inputs themselves; ``None`` otherwise (mixed libraries included, which the generic checks
    refuse). No gathering across processes or devices: the loss of the arrays given."""
    libraries = {_library(z) for z in views}
    if libraries == {"torch"}:
        from . import torch as torch_adapter

        return torch_adapter
    if libraries and libraries <= {"jax", "jaxlib"}:
        from . import jax as jax_adapter

        return jax_adapter
    return None


def _library(x: Any) -> str:
    return type(x).__module__.split(".")[0]
