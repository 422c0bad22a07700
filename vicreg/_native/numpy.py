"""NumPy's versions of the primitives of :mod:`vicreg._native`."""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any


def column_sum(xp: Any, x: Array) -> Array:
    """``sum(x, axis=-2)`` as a matrix-vector product with a vector of ones.

    NumPy reduces along the first axis of a row-major matrix by adding one row after another, whose rounding
    error grows with the number of rows; BLAS's matrix-vector product accumulates in blocks. At ``256 x 8192``
    in float32 it is about three times as accurate (and as fast) on the column sums that centring needs.
    """
    return np.ones(x.shape[-2], dtype=x.dtype) @ x


def column_mean(xp: Any, x: Array) -> Array:
    """:func:`column_sum` divided by the number of rows, for the same accuracy."""
    return column_sum(xp, x) / x.shape[-2]


def column_var(xp: Any, x: Array) -> Array:
    """``sum(x * x, axis=-2) / (rows - 1)`` with the column sum a matrix-vector product (:func:`column_sum`)."""
    return column_sum(xp, x * x) / (x.shape[-2] - 1)


def host_read(xp: Any, x: Array) -> tuple[bool, ...]:
    """``x.tolist()``: the values at once."""
    return tuple(x.tolist())


def set_columns(xp: Any, p: Array, index: Array, h: Array) -> Array:
    """``p[..., :, index] = h``, written into the fresh ``p`` the caller passes: ``k`` columns written where
    the generic version multiplies by a ``k x d`` one-hot matrix (``n k d`` operations; at ``k = n - 1`` as
    much as a Gram product)."""
    if index.ndim == 1:
        p[:, index] = h
    else:
        np.put_along_axis(p, np.expand_dims(index, axis=-2), h, axis=-1)
    return p


def top_k(xp: Any, v: Array, k: int) -> tuple[Array, Array]:
    """The ``k`` largest entries by ``argpartition`` (``O(d)``), then those ``k`` sorted, where the generic
    version sorts all ``d``. NumPy orders a NaN after every number, so it counts as the largest here too."""
    d = v.shape[-1]
    part = np.argpartition(v, d - k, axis=-1)[..., d - k :]
    values = np.take_along_axis(v, part, axis=-1)
    order = np.flip(np.argsort(values, axis=-1, kind="stable"), axis=-1)
    return np.take_along_axis(values, order, axis=-1), np.take_along_axis(part, order, axis=-1)


#: Elements per block of rows in the passes below: the one temporary, small enough to stay in a CPU's cache.
_BLOCK = 1 << 16


def _row_blocks(x: Array) -> tuple[int, list[slice]]:
    rows, width = x.shape[-2], max(1, x.shape[-1])
    step = max(1, min(rows, _BLOCK // width))
    return step, [slice(start, start + step) for start in range(0, rows, step)]


def add_difference(xp: Any, p: Array, q: Array, a: Array, b: Array, c: Any) -> tuple[Array, Array]:
    """``(p + c (a - b), q - c (a - b))`` added into the fresh ``p`` and ``q``, a block of rows at a time: the
    scaled difference of one block is the only temporary, where the generic version allocates four arrays
    of the inputs' size. In the projector harness (``python -m benchmarks.projector --libraries numpy
    --without add_difference``, 256 x 8192 float32, 2-core CPU) the generic version took 1.15x the time of
    the loss's forward+backward."""
    step, blocks = _row_blocks(a)
    scratch = np.empty((*a.shape[:-2], step, a.shape[-1]), dtype=np.result_type(a, b, c))
    for rows in blocks:
        shift = scratch[..., : a[..., rows, :].shape[-2], :]
        np.subtract(a[..., rows, :], b[..., rows, :], out=shift)
        shift *= c
        p[..., rows, :] += shift
        q[..., rows, :] -= shift
    return p, q


def sum_sq_difference(xp: Any, a: Array, b: Array) -> Array:
    """``sum((a - b) ** 2)`` over the last two axes, row by row first (each row a dot product), a block of
    rows at a time: the difference of one block is the only temporary, where the generic version allocates
    two arrays of the inputs' size. In the projector harness (``--without sum_sq_difference``, as for
    :func:`add_difference`) the generic version took 1.18x the time of the loss's forward+backward."""
    step, blocks = _row_blocks(a)
    scratch = np.empty((*a.shape[:-2], step, a.shape[-1]), dtype=np.result_type(a, b))
    rows_sums = []
    for rows in blocks:
        diff = np.subtract(a[..., rows, :], b[..., rows, :], out=scratch[..., : a[..., rows, :].shape[-2], :])
        rows_sums.append(np.vecdot(diff, diff))
    return np.sum(np.concatenate(rows_sums, axis=-1), axis=-1)


def row_major(xp: Any, x: Array) -> Array:
    """A row-major copy of ``x`` where it is not one already: the positions of ``(n, ..., d)`` inputs are
    brought to the front as ``(p, n, d)`` views, whose batched products NumPy runs far slower than on
    contiguous matrices."""
    return np.ascontiguousarray(x)


def bf16_round(xp: Any, x: Array) -> Array:
    """``x`` rounded to the nearest bfloat16, ties to even, on the bits: where the generic version needs
    four passes and stops at ``|x|`` of about ``5e33``. (NumPy has no bfloat16 of its own.)"""
    return round_bits(np, x)


def round_bits(lib: Any, x: Array) -> Array:
    """Float32 ``x`` rounded to bfloat16 by integer arithmetic on its bits (``lib``: NumPy or CuPy): add
    half of the 16 dropped bits (and the last kept bit, for ties to even), then clear them. NaN stays NaN
    (its payload could carry into the exponent)."""
    bits = x.view(lib.uint32)
    bits = (bits + lib.uint32(0x7FFF) + ((bits >> 16) & lib.uint32(1))) & lib.uint32(0xFFFF0000)
    return lib.where(lib.isnan(x), x, bits.view(lib.float32))
