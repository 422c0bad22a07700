"""The generic versions of the primitives of :mod:`vicreg._native`: functions of the array API standard
only, for any library (array-api-strict runs these in the tests). Each takes the namespace ``xp`` first."""

from __future__ import annotations

from typing import Any

import array_api_compat

Array = Any


def column_sum(xp: Any, x: Array) -> Array:
    """``sum(x, axis=-2)``: the column sums of a matrix, or of each matrix of a stack."""
    return xp.sum(x, axis=-2)


def host_read(xp: Any, x: Array) -> tuple[bool, ...] | None:
    """The values of a 1-D boolean array as Python booleans (a read from the device where the array lives on
    one), or ``None`` where the library cannot read them without breaking a trace."""
    return tuple(bool(x[i]) for i in range(x.shape[0]))


def column_mean(xp: Any, x: Array) -> Array:
    """``mean(x, axis=-2)``: the column means of a matrix (of each matrix of a stack)."""
    return xp.mean(x, axis=-2)


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


def top_k(xp: Any, v: Array, k: int) -> tuple[Array, Array]:
    """``(values, indices)`` of the ``k`` largest entries of ``v`` along its last axis, the largest first (a
    NaN counts as the largest): a stable descending ``argsort``, of which the first ``k``."""
    index = xp.argsort(v, axis=-1, descending=True, stable=True)[..., :k]
    if v.ndim == 1:
        return xp.take(v, index), index
    return take_columns(xp, xp.expand_dims(v, axis=-2), index)[..., 0, :], index


def column_sum_sq(xp: Any, x: Array) -> Array:
    """``sum(x * x, axis=-2)``: the column sums of squares of a matrix (of each matrix of a stack)."""
    return column_sum(xp, x * x)


def column_var(xp: Any, x: Array) -> Array:
    """The unbiased variance of each column of ``x``, whose columns sum to zero: ``sum(x * x, axis=-2) /
    (rows - 1)``."""
    return column_sum_sq(xp, x) / (x.shape[-2] - 1)


def sum_sq_difference(xp: Any, a: Array, b: Array) -> Array:
    """``sum((a - b) ** 2)`` over the last two axes (one sum per matrix of a stack), row by row first: each
    partial sum is short, so rounding grows with the row length plus the number of rows."""
    diff = a - b
    return xp.sum(xp.sum(diff * diff, axis=-1), axis=-1)


def add_difference(xp: Any, p: Array, q: Array, a: Array, b: Array, c: Any) -> tuple[Array, Array]:
    """``(p + c * (a - b), q - c * (a - b))`` (``c`` a number or a 0-d array): the invariance's part of the
    gradients of a pair of views. The caller passes fresh ``p`` and ``q`` that it does not read again: a
    native version may write the results into them."""
    shift = c * (a - b)
    return p + shift, q - shift


def centred_columns(xp: Any, x: Array, correction: Array) -> Array:
    """``x - correction``, ``correction`` per column (``(..., d)``, broadcast over the rows of ``x``). The
    caller passes a fresh ``x`` that it does not read again: a native version may write the result into it."""
    return x - xp.expand_dims(correction, axis=-2)


def scale_columns(xp: Any, x: Array, scale: Array) -> Array:
    """``x * scale``, ``scale`` per column (``(..., d)`` or ``(..., 1)``, broadcast over the rows). The
    caller passes a fresh ``x`` that it does not read again: a native version may write the result into it."""
    return x * xp.expand_dims(scale, axis=-2)


def multiply_add(xp: Any, p: Array, x: Array, w: Array) -> Array:
    """``p + x * w`` (``w`` per column, ``(..., d)``, broadcast over the rows of ``x``). The caller passes a
    fresh ``p`` that it does not read again: a native version may write the result into it."""
    return p + x * xp.expand_dims(w, axis=-2)


def add_product(xp: Any, p: Array, a: Array, b: Array) -> Array:
    """``p + a @ b``. The caller passes a fresh ``p`` that it does not read again: a native version may write
    the result into it."""
    return p + a @ b


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


def eigvalsh(xp: Any, m: Array) -> Array:
    """The eigenvalues of a symmetric matrix (of each matrix of a stack), ascending: the standard's
    ``linalg.eigvalsh``, an optional extension; ``TypeError`` where the namespace lacks it."""
    linalg = getattr(xp, "linalg", None)
    if linalg is None or not hasattr(linalg, "eigvalsh"):
        name = getattr(xp, "__name__", "this array library")
        raise TypeError(
            f"vicreg: RankMe needs eigenvalues (the array API's linalg.eigvalsh), which {name} does not "
            f"provide; convert the embeddings to NumPy first, e.g. numpy.asarray(z)"
        )
    return linalg.eigvalsh(m)


def stop_gradient(xp: Any, x: Array) -> Array:
    """``x`` as a constant for the library's autodiff (a monitor has no gradient); ``x`` itself where the
    library has none."""
    return x


def widened(xp: Any, x: Array) -> Array:
    """``x`` in float64, where the library (and device) has it; ``x`` itself otherwise. For the small matrices
    of RankMe, whose pieces differ in magnitude by more than float32 can add without loss."""
    return xp.astype(x, xp.float64) if hasattr(xp, "float64") else x


def bf16_round(xp: Any, x: Array) -> Array:
    """``x`` (float32) rounded to 8 significant bits, bfloat16's, to nearest, kept in float32: Veltkamp's
    split, ``c = (2^16 + 1) x``, ``hi = c - (c - x)`` (the standard has no bfloat16 and no bit casts).
    ``x`` itself at ``|x| >= 2^100`` (where ``c`` could overflow), for NaN and Inf; subnormals keep 8
    significant bits."""
    inside = xp.abs(x) < 2.0**100
    x_in = xp.where(inside, x, 0.0)
    c = x_in * 65537.0
    return xp.where(inside, c - (c - x_in), x)


def bf16_matmul(xp: Any, a: Array, b: Array) -> Array:
    """``a @ b`` of float32 ``a`` and ``b`` whose entries are bfloat16 numbers (:func:`bf16_round`'s),
    accumulated and returned in float32: what a GPU's tensor cores compute in one bfloat16 pass, here a
    float32 product (each term of which is exact)."""
    return a @ b
