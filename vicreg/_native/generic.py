"""The generic versions of the primitives of :mod:`vicreg._native`: functions of the array API standard
only, for any library (array-api-strict runs these in the tests). Each takes the namespace ``xp`` first."""

from __future__ import annotations

from typing import Any

import array_api_compat

Array = Any


def column_sum(xp: Any, x: Array) -> Array:
    """``sum(x, axis=-2)``: the column sums of a matrix, or of each matrix of a stack."""
    return xp.sum(x, axis=-2)


def host_int(xp: Any, x: Array) -> int | None:
    """The value of a 0-d integer array as a Python ``int`` (a device-to-host read where the array lives on a
    device), or ``None`` where the library cannot read it without breaking a trace."""
    return int(x)


def take_columns(xp: Any, x: Array, index: Array) -> Array:
    """``x[..., :, index]``: the columns ``index`` (``(k,)``, or ``(..., k)``, one set per matrix of a stack).

    For a stack, ``take_along_axis`` where the namespace has it (the 2024.12 standard); else a product with
    the one-hot ``k x d`` matrix of each position, which is exact (every sum has one non-zero term)."""
    if index.ndim == 1:
        return xp.take(x, index, axis=-1)
    if hasattr(xp, "take_along_axis"):
        rows = xp.broadcast_to(xp.expand_dims(index, axis=-2), (*x.shape[:-1], index.shape[-1]))
        return xp.take_along_axis(x, rows, axis=-1)
    return x @ xp.matrix_transpose(_one_hot(xp, index, x.shape[-1], x.dtype))


def set_columns(xp: Any, p: Array, index: Array, h: Array) -> Array:
    """``p`` with ``h`` (``(..., rows, k)``) in its columns ``index``, where ``p`` is zero: ``p + h @ E``, ``E``
    the one-hot ``k x d`` matrix of ``index`` (exact: each entry of ``h @ E`` is one ``h`` times 1). The caller
    passes a fresh ``p`` (a native version may write into it)."""
    return p + h @ _one_hot(xp, index, p.shape[-1], p.dtype)


def row_major(xp: Any, x: Array) -> Array:
    """``x`` in row-major order; the standard has no notion of layout, so ``x`` itself."""
    return x


def _one_hot(xp: Any, index: Array, d: int, dtype: Any) -> Array:
    """The ``(..., k, d)`` matrix with a 1 at ``(i, index[i])`` and zeros elsewhere."""
    columns = xp.arange(d, dtype=index.dtype, device=device(xp, index))
    return xp.astype(xp.expand_dims(index, axis=-1) == columns, dtype)


def device(xp: Any, x: Array) -> Any:
    """The device of ``x``, to create arrays beside it; ``None`` (the default device) where it has none, as a
    traced value may not."""
    try:
        return array_api_compat.device(x)
    except Exception:
        return None
