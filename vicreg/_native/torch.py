"""PyTorch's versions of the primitives of :mod:`vicreg._native`."""

from __future__ import annotations

from typing import Any

import torch

Array = Any


def host_int(xp: Any, x: Array) -> int | None:
    """The value of a 0-d integer tensor (one device-to-host read on a GPU); ``None`` while ``torch.compile``
    traces or a ``torch.func`` transform runs, where a read would break the graph or is refused."""
    if _tracing():
        return None
    return int(x.item())


def set_columns(xp: Any, p: Array, index: Array, h: Array) -> Array:
    """``p`` with ``h`` in its columns ``index``, by ``index_copy`` (one matrix) or ``scatter`` (a stack),
    out of place, so that autograd and ``torch.func`` may differentiate through it; the generic version
    multiplies by a ``k x d`` one-hot matrix."""
    if index.ndim == 1:
        return p.index_copy(-1, index, h)
    return p.scatter(-1, index.unsqueeze(-2).expand(h.shape), h)


def row_major(xp: Any, x: Array) -> Array:
    """``x.contiguous()``: the ``(p, n, d)`` view of ``(n, ..., d)`` inputs copied once, rather than by
    every batched product that reads it."""
    return x.contiguous()


def device(xp: Any, x: Array) -> Any:
    """``x.device``, read directly (the generic version goes through array-api-compat's cached checks, which
    ``torch.compile`` would trace)."""
    return x.device


def _tracing() -> bool:
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling():
        return True
    level = getattr(getattr(torch._C, "_functorch", None), "maybe_current_level", None)
    return level is None or level() is not None
