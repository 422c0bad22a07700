"""The three VICReg terms, each defined exactly once, against the Python array API standard.

Notation: ``z`` has shape ``(n, d)``; ``zc = z - mean(z, axis=0)``;
``var_j = sum_i zc_ij^2 / (n - 1)`` (unbiased); ``C = zc^T zc / (n - 1)``. Every function also takes a
stack of such problems, one per position, with the rows on the second-to-last axis: ``z`` of shape
``(p, n, d)``, per-dimension vectors of shape ``(p, d)`` and per-position scalars of shape ``(p,)``
(:mod:`vicreg._loss` brings ``(n, ..., d)`` inputs into that layout). Products are then batched
matrix products over the positions, never a Python loop.

Every function here takes the array namespace ``xp`` explicitly and is written with functions of the
standard (no ``linalg`` extension), so the same code runs on NumPy, CuPy, PyTorch, JAX and
array-api-strict, under ``jax.jit`` and ``torch.compile``. A few helpers take a faster route where the
array's library has one (a matrix-vector product for NumPy's column sums, in-place column updates for
NumPy, CuPy and PyTorch, scatters in JAX, PyTorch's ``topk`` and ``addcmul_``, JAX's ``lax.top_k``,
NumPy's and CuPy's ``argpartition``), each beside its standard fallback, which array-api-strict
exercises in the tests. The adapters (:mod:`vicreg.torch`, :mod:`vicreg.jax`) reuse these functions on
statistics they reduce across devices; nothing here knows about devices or autodiff.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

import array_api_compat

Array = Any
Namespace = Any


def _identity(x: Array) -> Array:
    return x


class Centring(NamedTuple):
    """What centring one view computes (see :func:`centre`): the column ``mean`` of ``z``, the column
    ``correction`` (the mean of ``z - mean``, rounding residue), and the unbiased variance ``var``, all
    ``(d,)`` (``(p, d)`` for a stack). ``zc = (z - mean) - correction``, see :func:`recentre`."""

    mean: Array
    correction: Array
    var: Array


def centring(
    xp: Namespace,
    z: Array,
    n: int | None = None,
    total: Any = _identity,
    *,
    apart: Any = None,
    out: Array | None = None,
) -> tuple[Array, Centring]:
    r"""Centred embeddings and their unbiased per-dimension variance, ``(zc, Centring(mean, correction, var))``.

    .. math::  zc = z - \bar z, \qquad \mathrm{var}_j = \frac{1}{n-1} \sum_i zc_{ij}^2

    ``zc`` has shape ``(rows, d)``, the vectors ``(d,)``. On one device ``n`` is ``z.shape[0]``; a batch
    split over devices passes the global ``n`` and ``total``, the sum over devices of a local sum.

    The mean is subtracted twice. The rounding of the first mean leaves every column of ``z - mean``
    off by a constant of the order of ``u |mean|`` (``u`` the unit roundoff), which is all there is of a
    constant column, and which the analytic gradient would carry (it relies on the columns of ``zc``
    summing to zero); the second pass, in place, removes it down to ``u`` times the spread of the column.

    ``apart``, for a compiler that fuses (``jax.lax.optimization_barrier``), makes the sum of squares
    subtract the mean again rather than share the first ``z - mean``: each column sum then reads ``z``
    in a fusion of its own, where a shared ``z - mean`` would be written to memory and read twice.
    The numbers are the same. ``out``, an array of ``z``'s shape and dtype (a view of a larger buffer, see
    :func:`centre`), receives ``zc`` instead of a new array.
    """
    n = z.shape[-2] if n is None else n
    # sum_i (zc_ij - c_j)^2 = sum_i zc_ij^2 - n c_j^2 exactly, as the correction c is the column mean of zc;
    # n c_j^2 is tiny unless the column is constant, where both are equal and the clamp keeps var >= 0.
    mean = total(column_sum(xp, z)) / n
    zc = z - _per_row(xp, mean) if out is None else _subtract_into(z, _per_row(xp, mean), out)
    correction = total(column_sum(xp, zc)) / n
    if apart is not None:
        zc = z - _per_row(xp, apart(mean))
    squares = total(column_sum_sq(xp, zc)) - n * (correction * correction)
    if getattr(zc, "requires_grad", False):  # autograd saved zc for zc * zc: no in-place change
        zc = zc - _per_row(xp, correction)
    else:
        zc -= _per_row(xp, correction)  # in place on a fresh array (JAX rebinds)
    var = xp.where(squares > 0, squares, xp.zeros_like(squares)) / (n - 1)
    return zc, Centring(mean, correction, var)


def recentre(xp: Namespace, z: Array, c: Centring, index: Array | None = None) -> Array:
    """``zc`` of :func:`centring` again from ``z`` and its :class:`Centring`, by the same operations (so the
    same numbers); with ``index``, only the columns ``zc[..., :, index]``. Lets XLA recompute ``zc``
    where it is read instead of keeping it in memory, and the JAX adapter take the centring out of the
    ``lax.switch`` that picks the number of exact columns."""
    if index is None:
        return (z - _per_row(xp, c.mean)) - _per_row(xp, c.correction)
    top_mean, top_correction = take_entries(xp, c.mean, index), take_entries(xp, c.correction, index)
    return (take_columns(xp, z, index) - _per_row(xp, top_mean)) - _per_row(xp, top_correction)


def centre(
    xp: Namespace, z: Array, n: int | None = None, total: Any = _identity, stack: Array | None = None
) -> tuple[Array, Array, Callable[[Array], Array] | None, Array | None]:
    """:func:`centring` as ``(zc, var, read_columns, stack)``. For JAX arrays ``read_columns(index)`` is
    ``zc[:, index]`` by :func:`recentre`, which lets XLA keep ``zc`` out of memory when only a masked
    copy of it is needed later; for eager libraries it is ``None`` (read the columns of ``zc``).

    ``stack``, an uninitialised buffer like ``z`` with ``k`` spare rows below (from
    :func:`spare_rows`), receives ``zc`` in its first rows. Where :func:`off_diagonal` takes ``k``
    columns out it writes ``S_HL`` into the spare rows, so that :func:`centred_gradient`'s two products
    are one, without a copy of ``zc``.
    """
    out = None if stack is None else stack[..., : z.shape[-2], :]
    zc, c = centring(xp, z, n, total, out=out)
    if not _library(z).startswith("jax"):
        return zc, c.var, None, stack  # eager: zc is in memory, and its columns are read directly
    return zc, c.var, lambda index: recentre(xp, z, c, index), None


def spare_rows(xp: Namespace, z: Array, spare: int) -> tuple[Array, Array] | tuple[None, None]:
    """Two uninitialised arrays like ``z`` with ``spare`` more rows (second-to-last axis), one per view,
    where the cheap column count can be chosen (:func:`choose_columns`) and results can be written into
    views of an array: NumPy, and PyTorch CPU tensors in eager mode outside autograd; else ``(None, None)``.

    Both are views of one allocation: the analytic gradients are built in these buffers
    (:func:`centred_gradient` with ``overwrite=True``), so a PyTorch call allocates this one large block
    and returns it as the two gradients. glibc's malloc maps a block that large (16.5 MiB at
    ``256 x 8192``, float32) afresh, and freeing it raises two of its thresholds: blocks up to that size
    then come from the heap, and free memory at the top of the heap is kept up to twice that size
    instead of being returned to the system. Two blocks of half the size set that limit only to their
    sum, which the call's other arrays exceed, so every call gave its memory back and faulted it in again,
    page by page: about 5,000 page faults per call, 15-25% of its time on a 2-core CPU; none now.
    """
    if spare <= 0 or not (_library(z) == "numpy" or _writable_on_host(z)):
        return None, None
    shape = (2, *z.shape[:-2], z.shape[-2] + spare, z.shape[-1])
    both = xp.empty(shape, dtype=z.dtype, device=_device(xp, z))
    return both[0], both[1]


def _subtract_into(a: Array, b: Array, out: Array) -> Array:
    """``a - b`` written into ``out`` (NumPy or PyTorch; see :func:`spare_rows`)."""
    if _library(out) == "torch":
        import torch

        return torch.sub(a, b, out=out)
    import numpy as np

    return np.subtract(a, b, out=out)


def _matmul_into(a: Array, b: Array, out: Array) -> Array:
    """``a @ b`` written into ``out`` (NumPy or PyTorch; see :func:`spare_rows`)."""
    if _library(out) == "torch":
        import torch

        return torch.matmul(a, b, out=out)
    import numpy as np

    return np.matmul(a, b, out=out)


def _compiling() -> bool:
    """Whether ``torch.compile`` is tracing (where views written through ``out=`` are best avoided)."""
    import torch

    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def column_sum(xp: Namespace, x: Array) -> Array:
    """``sum(x, axis=-2)``: the column sums of a matrix (of each matrix of a stack).

    NumPy sums along the first axis one row after another, with an error that grows with the number of
    rows; its matrix-vector product with a vector of ones is about three times as accurate and three
    times as fast. The other libraries' reductions are already blocked or pairwise.
    """
    if _library(x) == "numpy":
        return xp.ones(x.shape[-2], dtype=x.dtype) @ x
    return xp.sum(x, axis=-2)


def column_sum_sq(xp: Namespace, x: Array) -> Array:
    """``sum(x * x, axis=-2)``: the column sums of squares of a matrix (of each matrix of a stack).

    For a PyTorch CPU tensor in eager mode that no autograd graph needs, a block of 32 rows accumulates
    the squares in place (``addcmul_``), one block of the rows after another, and is then summed: no
    ``x * x`` temporary of ``x``'s size (at ``256 x 8192`` an 8 MiB array that glibc may hand back to the
    system and map afresh, page by page, on every call). Each column's sum is then 8 partial sums of 32
    rows each added in turn, as short as the one-pass reduction's. Elsewhere ``column_sum(x * x)``, which
    JAX fuses into one pass.
    """
    if _writable_on_host(x):
        return xp.sum(_block_sums(xp, x, x), axis=-2)
    return column_sum(xp, x * x)


_BLOCK_ROWS = 32
"""Rows per block of :func:`_block_sums`."""


def _block_sums(xp: Namespace, a: Array, b: Array) -> Array:
    """``a * b`` (PyTorch tensors of one shape ``(..., rows, d)``) summed block by block of
    :data:`_BLOCK_ROWS` rows into one block, in place (``addcmul_``): ``(..., min(rows, 32), d)``, whose row
    ``r`` holds the sum of rows ``r``, ``r + 32``, ``r + 64``, ... No ``a * b`` temporary of ``a``'s size."""
    rows = min(_BLOCK_ROWS, a.shape[-2])
    acc = xp.zeros((*a.shape[:-2], rows, a.shape[-1]), dtype=a.dtype, device=_device(xp, a))
    for start in range(0, a.shape[-2], rows):
        block_a, block_b = a[..., start : start + rows, :], b[..., start : start + rows, :]
        acc[..., : block_a.shape[-2], :].addcmul_(block_a, block_b)
    return acc


def difference(xp: Namespace, a: Array, b: Array) -> Any:
    """``a - b``, the views' difference, as :func:`sum_sq_difference` and :func:`add_difference` take it:
    an array, or, for PyTorch CPU matrices of more than :data:`_BLOCK_ROWS` rows in eager mode that no
    autograd graph needs (:func:`_writable_on_host`), the pair ``(a, b)`` itself, whose difference those
    two form one block of rows at a time instead of writing an ``n x d`` array (at ``256 x 8192`` 8 MiB,
    which glibc may map afresh, page by page, on every call). NumPy keeps the array: its blocks were no
    faster there."""
    if a.ndim == 2 and a.shape[-2] > _BLOCK_ROWS and _writable_on_host(a) and _writable_on_host(b):
        return (a, b)
    return a - b


def _difference_blocks(xp: Namespace, diff: tuple[Array, Array]) -> Any:
    """``(rows, a[rows] - b[rows])`` for each block of :data:`_BLOCK_ROWS` rows of the pair ``diff`` of
    :func:`difference`, the differences written one after another into one small buffer."""
    a, b = diff
    buffer = xp.empty((_BLOCK_ROWS, a.shape[-1]), dtype=a.dtype, device=_device(xp, a))
    for start in range(0, a.shape[-2], _BLOCK_ROWS):
        rows = slice(start, start + _BLOCK_ROWS)
        block = buffer[: a[rows].shape[-2]]
        yield rows, _subtract_into(a[rows], b[rows], block)


def sum_sq_difference(xp: Namespace, diff: Any) -> Array:
    """``sum((a - b) ** 2)`` of the views' :func:`difference` ``diff``, as a 0-d array: :func:`sum_sq` of
    the array, or, for the pair, the same blocked sums (:func:`_block_sums`) of each block's difference
    (the same numbers)."""
    if not isinstance(diff, tuple):
        return sum_sq(xp, diff)
    a = diff[0]
    acc = xp.zeros((_BLOCK_ROWS, a.shape[-1]), dtype=a.dtype, device=_device(xp, a))
    for _, block in _difference_blocks(xp, diff):
        acc[: block.shape[-2]].addcmul_(block, block)
    return xp.sum(xp.sum(acc, axis=-1))


def add_difference(xp: Namespace, g1: Array, g2: Array, diff: Any, a: float, overwrite: bool = False) -> Any:
    """``(g1 + a * diff, g2 - a * diff)`` for the views' :func:`difference` ``diff`` (``a`` a number, or a
    0-d array), in place in ``g1`` and ``g2`` where the library allows it (they are fresh gradients).

    PyTorch (:func:`fused_multiply_add`): each block of the pair's difference, or the array, added to both
    in one pass each, no ``a * diff`` temporary. Elsewhere ``a * diff`` is formed once (in ``diff``'s
    buffer with ``overwrite=True``) and added to one and subtracted from the other."""
    if isinstance(diff, tuple):
        for rows, block in _difference_blocks(xp, diff):
            fused_multiply_add(g1[rows])(block, a)
            fused_multiply_add(g2[rows])(block, -a)
        return g1, g2
    if fused_multiply_add(diff) is not None:
        return fused_multiply_add(g1)(diff, a), fused_multiply_add(g2)(diff, -a)
    if overwrite:
        diff *= a
        scaled = diff
    else:
        scaled = a * diff
    g1 += scaled
    g2 -= scaled
    return g1, g2


def _writable_on_host(x: Array) -> bool:
    """Whether ``x`` is a PyTorch CPU tensor in eager mode (:func:`_on_host`) that no autograd graph needs:
    results can be written into views of it or of arrays like it, and accumulated in place."""
    if _library(x) != "torch" or not _on_host(x):
        return False
    import torch  # already imported: a tensor is at hand

    return not (torch.is_grad_enabled() and x.requires_grad)


def _per_row(xp: Namespace, v: Array) -> Array:
    """A per-column vector ``(..., d)`` shaped to broadcast against the rows of ``(..., rows, d)``: as is
    for one matrix, with a unit row axis for a stack."""
    return v if v.ndim <= 1 else xp.expand_dims(v, axis=-2)


def transpose(xp: Namespace, x: Array) -> Array:
    """The transpose of a matrix, or of each matrix of a stack."""
    return x.T if x.ndim == 2 else xp.matrix_transpose(x)


def take_columns(xp: Namespace, x: Array, index: Array) -> Array:
    """``x[..., :, index]``: the columns ``index`` (``(k,)``, or ``(..., k)`` for a stack) of ``x``."""
    if index.ndim == 1:
        return xp.take(x, index, axis=-1)
    rows_index = xp.broadcast_to(xp.expand_dims(index, axis=-2), (*x.shape[:-1], index.shape[-1]))
    return xp.take_along_axis(x, rows_index, axis=-1)


def take_entries(xp: Namespace, v: Array, index: Array) -> Array:
    """``v[..., index]``: the entries ``index`` of a vector ``(d,)``, or of each vector of a stack."""
    return xp.take(v, index) if index.ndim == 1 else xp.take_along_axis(v, index, axis=-1)


def exact_columns(n: int, d: int) -> int:
    """How many of the largest-variance columns the Gram path treats exactly (see :func:`off_diagonal`):
    ``min(n - 1, d)``, the most columns that centred embeddings of ``n`` rows can hold mutually
    decorrelated (they span at most ``n - 1`` dimensions)."""
    return min(n - 1, d)


FEW_COLUMNS = 8
"""How many columns the Gram path takes out when :func:`few_columns_suffice` says that is enough (and
none does not)."""


def few_columns(n: int, d: int) -> int:
    """``min(FEW_COLUMNS, exact_columns(n, d))``: the cheap choice of :func:`off_diagonal`'s ``k``."""
    return min(FEW_COLUMNS, exact_columns(n, d))


def few_columns_suffice(xp: Namespace, var: Array, n: int) -> Array:
    """:func:`columns_suffice` for ``k`` = :func:`few_columns`."""
    return columns_suffice(xp, var, n, few_columns(n, var.shape[-1]))


def columns_suffice(xp: Namespace, var: Array, n: int, k: int) -> Array:
    r"""Whether taking only the ``k`` largest-variance columns out of the Gram matrix (none for ``k = 0``)
    keeps the Gram path exact: a 0-d boolean array, true when, with ``L`` the other columns,

    .. math::  \sum_{j \in L} \mathrm{var}_j \ \ge\ 2\,(n - 1) \max_{j \in L} \mathrm{var}_j

    (for every position of a stack). That is the condition under which the ``L x L`` subtraction of
    :func:`off_diagonal` loses at most a factor 2 to cancellation. It is sufficient, not necessary: it
    fails wherever ``k`` columns may not be enough (one dimension, or a group of more than ``k``, whose
    variances dwarf the rest, constant columns beside a few live ones, a spectrum that falls off fast), and
    then :func:`choose_columns` tries the next count, up to all :func:`exact_columns`, which is exact either
    way. Both sums are over ``L`` alone (the top columns are masked out, not subtracted), so the test itself
    does not cancel; an error of a few ulps in it only moves the factor 2 by as much.
    """
    d = var.shape[-1]
    rest = var if k == 0 else var * _columns_mask(xp, largest(xp, var, k), d, var.dtype)
    return xp.all(xp.sum(rest, axis=-1) >= 2 * (n - 1) * xp.max(rest, axis=-1))


def column_counts(n: int, d: int) -> tuple[int, ...]:
    """The numbers of exact columns the Gram path chooses from, cheapest first: ``0`` (the plain Gram
    identity), :func:`few_columns` and :func:`exact_columns`, without repeats; :func:`choose_columns`
    takes the first that :func:`columns_suffice` proves exact, and the last, which always is, otherwise."""
    counts: list[int] = []
    for k in (0, few_columns(n, d), exact_columns(n, d)):
        if not counts or k > counts[-1]:
            counts.append(k)
    return tuple(counts)


def choose_columns(xp: Namespace, var: Array, n: int, d: int, local: bool = True) -> int:
    """:func:`off_diagonal`'s ``k`` when the caller does not fix it. Where the variances are in host memory
    and evaluated eagerly (NumPy, array-api-strict, PyTorch CPU tensors outside ``torch.compile`` and
    ``torch.func``; ``local``, one process), the test of :func:`columns_suffice` costs a pass over ``d``
    numbers per count and picks the first count of :func:`column_counts` that it proves exact: ``0``,
    :func:`few_columns` or :func:`exact_columns`. Elsewhere the choice would need a device-to-host
    synchronisation, a graph break, data-dependent shapes under ``jit`` or the same decision on every rank,
    so it is :func:`exact_columns` (the JAX adapter makes the same choice with ``lax.switch`` over traced
    branches)."""
    counts = column_counts(n, d)
    if local and _on_host(var):
        for k in counts[:-1]:
            if bool(columns_suffice(xp, var, n, k)):
                return k
    return counts[-1]


def _on_host(v: Array) -> bool:
    """Whether ``bool()`` of a value computed from ``v`` is a cheap host read that changes nothing traced:
    NumPy and array-api-strict arrays, and PyTorch tensors on the CPU in eager mode."""
    library = _library(v)
    if library in ("numpy", "array_api_strict"):
        return True
    return library == "torch" and v.device.type == "cpu" and not _under_functorch() and not _compiling()


def use_gram(n: int, d: int) -> bool:
    """Whether the covariance term goes through the ``n x n`` Gram matrix (``2 n <= d``) or ``d x d``.

    Forward and backward, per view, the Gram path costs about ``2 n (n + k) d`` multiply-adds (two
    ``n x n x d`` products, and two ``k x n x d`` ones for the ``k`` largest-variance columns treated
    exactly, see :func:`off_diagonal`), against ``2 n d^2`` for the ``d x d`` path. With ``k = n - 1``
    that is ``4 n^2 d``: equal at ``2 n = d``, half of it at ``4 n = d`` and 6% at ``32 n = d``
    (``256 x 8192``; with ``k = 8`` there, 3%; with ``k = 0``, nothing), with ``O(n^2 + k d)`` scratch
    memory instead of ``O(d^2)``. At ``2 n > d`` the ``d x d`` matrix is cheaper, and it has no
    cancellation at all.
    """
    return 2 * n <= d


class OffDiagonal(NamedTuple):
    r"""The off-diagonal second moments of one view, ``S = zc^T zc = (n - 1) C``, in the form the loss and
    its gradient need (see :func:`off_diagonal` and :func:`centred_gradient`).

    ``sq_norm`` is :math:`\sum_{i \neq j} S_{ij}^2` (0-d, or one per position for a stack; never
    negative). On the ``d x d`` path ``m`` is ``S`` with a zero diagonal and the other fields are
    ``None``. On the Gram path, with ``H`` the ``k`` columns of largest variance and ``L`` the rest
    (``zc`` then holds zeros in the columns of ``H``):

    * ``m``: ``G_L = zc_L zc_L^T``, the Gram matrix of ``L`` (this device's rows of it on a split batch);
    * ``top``: ``zc_H``, the columns of ``H`` (``rows x k``), and ``top_index``, their positions (``k``);
    * ``top_gram``: ``zc_H^T zc_H`` with a zero diagonal (``k x k``);
    * ``rest``: the diagonal of ``S`` on ``L``, zero on ``H`` (``d``);
    * ``cross``: ``S_HL = zc_H^T zc_L``, the ``H x L`` block of ``S`` itself (``k x d``, zero in the
      columns of ``H``; summed over devices on a split batch);
    * ``stack``: where :func:`centre` gave spare rows, the buffer whose rows are ``zc`` and then
      ``cross`` (``(rows + k) x d``), else ``None``.

    With ``k = 0`` (no column taken out, ``L`` all of them) only ``m`` and ``rest`` are set: ``top`` is
    ``None`` there, and ``rest`` is what tells this case from the ``d x d`` path.
    """

    sq_norm: Array
    m: Array
    top: Array | None = None
    top_index: Array | None = None
    top_gram: Array | None = None
    rest: Array | None = None
    cross: Array | None = None
    stack: Array | None = None


def off_diagonal(
    xp: Namespace,
    zc: Array,
    var: Array,
    n: int | None = None,
    total: Any = _identity,
    gather_rows: Any = _identity,
    read_columns: Callable[[Array], Array] | None = None,
    columns: int | None = None,
    stack: Array | None = None,
) -> tuple[Array, OffDiagonal]:
    r"""The off-diagonal second moments of one view, :math:`\sum_{i \neq j} S_{ij}^2` with
    :math:`S = zc^\top zc = (n-1)\,C`, computed without cancellation against the diagonal.

    Returns ``(zc, off)``. On the Gram path the ``k`` columns of largest variance move from ``zc`` into
    ``off.top``: the returned ``zc`` holds zeros there (the caller's array is zeroed in place when its
    library allows it and no autograd graph may need it). ``read_columns(index)``, if given, reads
    ``zc[:, index]``, and ``stack``, if given, is ``zc`` with spare rows below it (see :func:`centre`).

    **d x d path** (``2 n > d``): ``S`` is built, its diagonal set to zero and the rest squared and summed,
    as the official formulation does. Each entry carries a rounding error of at most about
    :math:`u\, n\, \|zc_i\| \|zc_j\|` (``u`` the unit roundoff), and nothing is subtracted.

    **Gram path** (``2 n <= d``). :math:`\|zc^\top zc\|_F = \|zc\, zc^\top\|_F`, so the sum of all squared
    entries of ``S`` comes from the ``n x n`` Gram matrix, but the off-diagonal sum is then a difference,
    :math:`\|G\|_F^2 - \sum_j S_{jj}^2`, whose rounding error scales with
    :math:`u\,\|G\|_F \operatorname{tr} G`. When one column has a much larger variance than the rest, or
    when the columns are nearly decorrelated, that error swamps the result. So the ``k`` columns of
    largest variance (the set ``H``, ``L`` the rest; ``k`` is 0, :func:`few_columns`, 8, or
    :func:`exact_columns`, ``n - 1``, see below) are taken out of the Gram matrix and handled without
    subtraction:

    .. math::

        \sum_{i \neq j} S_{ij}^2 = \Big(\|G_L\|_F^2 - \sum_{j \in L} S_{jj}^2\Big)
            + 2\, \|zc_H^\top zc_L\|_F^2 + \sum_{i \neq j \in H} S_{ij}^2,
        \qquad G_L = zc_L zc_L^\top .

    The middle term is the ``H x L`` block of ``S`` itself, ``cross = zc_H^T zc_L`` (a ``k x n x d``
    product), squared and summed: each entry is computed as the official formulation computes it, so its
    error is the official one. (Reading the block's norm off the Gram matrix instead, as
    :math:`\sum_{h \in H} zc_h^\top G_L\, zc_h` for ``n^2 k`` work, is not exact: the rounding of
    ``G_L`` is of the order of :math:`u\,\|G_L\|`, and a large column ``zc_h`` that lies in the null
    space of ``G_L`` (a dimension that only tells apart rows the other dimensions hold equal) turns it into
    an error of :math:`u\,\|G_L\|\,\|zc_h\|^2` on a block that is zero: 0.4% of the float32 loss at
    ``4 x 8`` with one such column at ``1e4``, and 1e-9 in float64.) The last term is the official
    formulation restricted to ``H`` (``k x n x k``). Only the ``L x L`` block keeps a subtraction, and its
    rounding error is bounded by about :math:`u\,\|G_L\|_F \operatorname{tr} G_L`: it scales with the
    variances *outside* the top ``k``, never with the largest ones.

    Which ``k``. The subtraction is harmless when ``L`` is not dominated by its diagonal: if
    :math:`\operatorname{tr} G_L \ge 2 (n - 1) \max_{j \in L} S_{jj}` (comparable variances at
    ``2 n <= d``), its off-diagonal sum is at least half :math:`\|G_L\|_F^2` (a centred Gram matrix has
    rank at most ``n - 1``, so :math:`\|G_L\|_F^2 \ge (\operatorname{tr} G_L)^2 / (n - 1)`, while
    :math:`\sum_{j \in L} S_{jj}^2 \le \max_L S_{jj} \operatorname{tr} G_L \le \|G_L\|_F^2 / 2`), and
    the subtraction loses at most a factor 2: the float32 error of the ``L x L`` part is then within twice
    the relative error of :math:`\|G_L\|_F^2` itself, about :math:`n u`. :func:`columns_suffice` tests
    exactly this condition, for ``L`` all the columns and then the columns outside the top 8, and the first
    ``k`` for which it holds is used: ``k = 0`` (no column out: the Gram identity as it stands, as cheap
    as the cancelling formula, for embeddings of comparable variances), then ``k = 8``.
    What breaks it is a group of dimensions whose variances dwarf the others' and whose mutual
    covariances are tiny next to their variances: for such a group the Gram matrix cannot tell the
    off-diagonal entries from the rounding of the diagonal ones. Centred columns span at most ``n - 1``
    dimensions, so such a group has at most ``n - 1`` members, and with ``k = n - 1`` all of them fall
    into ``H``, whatever their number. So ``k = n - 1`` whenever both tests fail, and wherever the test is
    not run (:func:`choose_columns`: CuPy, PyTorch on a GPU, under ``torch.compile`` or ``torch.func``,
    and a batch split over processes, where it would need a device-to-host synchronisation, a graph break
    or one decision on every rank, take ``n - 1``; the JAX adapter branches with ``lax.switch``). The ``L x L``
    part is clamped at 0, which only removes rounding error, and the other two are sums of squares, so the
    term is never negative.

    Columns are chosen by :func:`largest` of the variances, so for a given ``k`` every shape is static: the
    selection runs under ``jax.jit`` and ``torch.compile``. The cost beside the ``n x n x d`` Gram product
    is the ``k x n x d`` product ``cross`` here and ``zc_H cross`` in the gradient (each ``k / n`` of the
    Gram product: 3% at ``k = 8``, ``n = 256``; at ``k = n - 1`` one more Gram product each way, see
    :func:`use_gram`), and ``O(n^2 k)`` products (``top_gram`` here, ``G_L zc_H`` and ``zc_H top_gram`` in
    the gradient). Memory: ``O(n^2)`` and the ``k x d`` block ``cross``. With ``k = 0`` none of this: ``off``
    holds the Gram matrix and the diagonal ``rest`` alone. ``columns`` fixes ``k`` (the JAX adapter traces
    each of :func:`column_counts`); by default :func:`choose_columns` picks it.

    On a batch split over devices (``n`` global, ``total`` and ``gather_rows`` the collectives, ``var``
    already global, so every device picks the same columns), each device owns its rows of the Gram
    matrix, ``zc_L,local @ zc_L,all^T``, whose squared norms add up over devices; ``cross`` and the
    ``k x k`` product are the sums of the local ones, and so is the ``d x d`` matrix.
    """
    rows, d = zc.shape[-2:]
    n = rows if n is None else n
    if not use_gram(n, d):
        s = total(transpose(xp, zc) @ zc)
        diagonal = xp.eye(d, dtype=xp.bool, device=_device(xp, zc))
        m = xp.where(diagonal, xp.zeros_like(s), s)
        return zc, OffDiagonal(sum_sq(xp, m, axes=2), m)
    k = choose_columns(xp, var, n, d, local=total is _identity) if columns is None else columns
    rest = var * (n - 1)
    if k > 0:  # move the columns of H out of zc (k = 0: the Gram identity as it stands)
        index = largest(xp, var, k)
        keep = _columns_mask(xp, index, d, zc.dtype)  # 0 on H
        top = take_columns(xp, zc, index) if read_columns is None else read_columns(index)
        zc = _zero_columns(xp, zc, index, keep)
        rest = rest * keep
    m = gram(xp, zc) if gather_rows is _identity else zc @ transpose(xp, gather_rows(zc))
    within = _clamp(xp, total(sum_sq(xp, m, axes=2)) - sum_sq(xp, rest, axes=1))
    if k == 0:  # columns_suffice(var, 0) proved the L x L subtraction exact with L all the columns
        return zc, OffDiagonal(within, m, rest=rest)
    # S_HL = zc_H^T zc_L (zero in the columns of H, as zc is), into the spare rows below zc if it has k
    if stack is not None and stack.shape[-2] == rows + k:
        cross = _matmul_into(transpose(xp, top), zc, stack[..., rows:, :])
    else:
        cross, stack = total(transpose(xp, top) @ zc), None
    top_gram = total(transpose(xp, top) @ top)
    top_gram = xp.where(xp.eye(k, dtype=xp.bool, device=_device(xp, zc)), xp.zeros_like(top_gram), top_gram)
    sq_norm = within + 2 * sum_sq(xp, cross, axes=2) + sum_sq(xp, top_gram, axes=2)
    return zc, OffDiagonal(sq_norm, m, top, index, top_gram, rest, cross, stack)


def _clamp(xp: Namespace, x: Array) -> Array:
    """``max(x, 0)`` for a sum of squares that rounding may have pushed below zero."""
    return xp.where(x > 0, x, xp.zeros_like(x))


def centred_gradient(
    xp: Namespace,
    zc: Array,
    off: OffDiagonal,
    w: Array,
    k: Any,
    gather_rows: Any = _identity,
    overwrite: bool = False,
) -> Array:
    r"""The variance and covariance part of one view's gradient, :math:`zc \odot w + k\, zc\,(S - D)`
    (``w`` a ``d``-vector of column weights, ``k`` a scalar, ``D = diag S``), from ``off`` and the ``zc``
    that :func:`off_diagonal` returned, without cancelling against the diagonal.

    ``d x d`` path: :math:`zc \odot w + zc\,(k\,m)`, ``m`` being ``S`` with a zero diagonal. Gram path, on
    the columns of ``L``:

    .. math::  zc_L \odot (w - k\,\mathrm{rest}) + k\,(G_L\, zc_L + zc_H\, \mathrm{cross}),

    where the only subtraction is against the variances outside the top ``k`` (``off.top``'s columns); on
    the columns of ``H``:

    .. math::  zc_H \odot w_H + k\,(G_L\, zc_H + zc_H\, \mathrm{top\_gram}),

    an ``n x k`` block written into place, where the products' columns are zero since ``zc``'s and
    ``cross``'s are. The two products on ``L`` stay apart: :math:`(G_L + zc_H zc_H^\top)\, zc_L` in one
    product would round the entries of ``G_L`` to the scale of the large columns' Gram matrix (10 times
    the official float32 gradient error with a few columns at ``1e4``), while :math:`zc_H\, \mathrm{cross}`
    is the official formulation's own product. Where :func:`off_diagonal` wrote ``cross`` below ``zc``
    (``off.stack``), they are one matrix product, :math:`[G_L,\ zc_H]\,[zc;\ \mathrm{cross}]`
    (``n x (n + k) x d``); elsewhere :func:`add_low_rank` adds the second. With ``k = 0`` (no ``top``) it
    is :math:`zc \odot (w - k\,\mathrm{rest}) + k\,G\, zc` on all columns. Besides these products,
    everything is ``O(n^2 k)`` or one pass over ``n x d``. With ``overwrite=True`` the result is built in
    ``zc``'s buffer (destroying it).
    """
    if off.rest is None:  # d x d
        p = zc @ (k * off.m)
    elif off.top is None:  # Gram path, no exact columns
        w = w - k * off.rest
        if overwrite and zc.ndim == 2 and _writable_on_host(zc):
            return _gradient_into_stack(xp, k * off.m, zc, w)
        p = wide_product(xp, k * off.m, gather_rows(zc))
    else:
        top_w = _per_row(xp, take_entries(xp, w, off.top_index))
        h = off.top * top_w + k * (off.m @ gather_rows(off.top) + off.top @ off.top_gram)
        w = w - k * off.rest
        # G_L zc_L + zc_H S_HL, this device's rows: one product [G_L, zc_H] @ [zc; S_HL] where S_HL lies
        # below zc already
        if off.stack is not None:
            left = xp.concat([k * off.m, k * off.top], axis=-1)
            if overwrite and zc.ndim == 2 and _writable_on_host(zc):
                return _gradient_into_stack(xp, left, off.stack, w, off.top_index, h)
            p = wide_product(xp, left, off.stack)
        else:
            p = add_low_rank(xp, (k * off.m) @ gather_rows(zc), k * off.top, off.cross)
        p = _set_columns(xp, p, off.top_index, h)  # zero there, since zc and cross are
    w = _per_row(xp, w)
    if overwrite:
        g = zc
        g *= w
        g += p
        return g
    add = fused_multiply_add(p)
    if add is not None:
        return add(zc, w)
    g = p
    g += zc * w
    return g


def gram(xp: Namespace, x: Array) -> Array:
    r"""The Gram matrix ``x @ x^T`` of the rows of a matrix ``x`` (of each matrix of a stack).

    For a PyTorch CPU matrix in eager mode that no autograd graph needs (:func:`_writable_on_host`) with at
    least 128 rows, the symmetry is used: with ``a`` the first half of the rows and ``b`` the rest,

    .. math::  x x^\top = \begin{bmatrix} a a^\top & a b^\top \\ (a b^\top)^\top & b b^\top \end{bmatrix},

    three products of half the rows, three quarters of the work (BLAS's symmetric rank-k update, which
    NumPy's ``x @ x.T`` calls, is not exposed by PyTorch). Each entry is still one dot product of two
    rows, and the two off-diagonal blocks mirror each other exactly. About 10% faster at ``256 x 8192``
    on a 2-core CPU, 18% at ``512 x 8192``; slower under 128 rows. Elsewhere ``x @ x^T`` (XLA's
    products of half the rows were no faster, and JAX would not write the blocks in place).
    """
    rows = x.shape[-2]
    if x.ndim != 2 or rows < 128 or not _writable_on_host(x):
        return x @ transpose(xp, x)
    import torch  # already imported: a tensor is at hand

    half = rows // 2
    a, b = x[:half], x[half:]
    g = torch.empty((rows, rows), dtype=x.dtype, device=x.device)
    torch.mm(a, a.T, out=g[:half, :half])
    torch.mm(a, b.T, out=g[:half, half:])
    torch.mm(b, b.T, out=g[half:, half:])
    g[half:, :half] = g[:half, half:].T
    return g


_COLUMN_BLOCK = 2048
"""Columns per block of :func:`wide_product`."""


def wide_product(xp: Namespace, a: Array, b: Array) -> Array:
    """``a @ b`` for a short, wide ``b`` (``rows x d`` with ``d`` much larger than ``rows``, as ``zc``).

    For PyTorch CPU matrices in eager mode that no autograd graph needs (:func:`_writable_on_host`), the
    product is written into one output block of :data:`_COLUMN_BLOCK` columns after another: each block
    is an ordinary product of ``a`` with a block of ``b``'s columns, so every entry is the same dot
    product as in ``a @ b``. The library's one call on all ``d`` columns is about 10% slower at
    ``256 x 264 x 8192`` on a 2-core CPU (see ``docs/benchmarks.md``). Elsewhere ``a @ b``.
    """
    d = b.shape[-1]
    if a.ndim != 2 or d < 2 * _COLUMN_BLOCK or not (_writable_on_host(a) and _writable_on_host(b)):
        return a @ b
    import torch  # already imported: a tensor is at hand

    out = torch.empty((a.shape[0], d), dtype=b.dtype, device=b.device)
    for _ in _products_by_columns(a, b, out):
        pass
    return out


def _products_by_columns(a: Array, b: Array, out: Array | None = None) -> Any:
    """``(columns, a @ b[:, columns])`` for each block of :data:`_COLUMN_BLOCK` columns of ``b`` (PyTorch
    matrices), each product written into ``out[:, columns]``, or, without ``out``, into one small block
    reused from one to the next (so valid until the next is yielded)."""
    import torch  # already imported: a tensor is at hand

    d = b.shape[-1]
    if out is None:
        block = torch.empty((a.shape[0], min(d, _COLUMN_BLOCK)), dtype=b.dtype, device=b.device)
    for start in range(0, d, _COLUMN_BLOCK):
        columns = slice(start, start + _COLUMN_BLOCK)
        part = b[:, columns]
        target = block[:, : part.shape[1]] if out is None else out[:, columns]
        yield columns, torch.mm(a, part, out=target)


def _gradient_into_stack(
    xp: Namespace, left: Array, stack: Array, w: Array, index: Array | None = None, h: Array | None = None
) -> Array:
    """:func:`centred_gradient` with ``overwrite=True`` for a PyTorch CPU matrix in eager mode: ``zc * w +
    left @ stack`` (``zc`` the first rows of ``stack``) built in ``zc``'s buffer, then ``h`` written into
    the columns ``index``, where both terms are zero. The product is taken :data:`_COLUMN_BLOCK` columns
    at a time (as :func:`wide_product`) into one small block, and each block of ``zc``'s columns is
    overwritten once its product is done (the product of a block of columns reads only those columns),
    so no ``n x d`` array is allocated. The same numbers as ``wide_product(left, stack).addcmul_(zc, w)``.
    (In NumPy the blocks with their multiply-adds took 15% longer than one product and one pass, which
    NumPy keeps.)"""
    import torch  # already imported: a tensor is at hand

    zc = stack[: left.shape[0]]
    for columns, product in _products_by_columns(left, stack):
        target = zc[:, columns]
        torch.addcmul(product, target, w[columns], out=target)  # one pass, as p.addcmul_(zc, w)
    return zc if index is None else _set_columns(xp, zc, index, h)


def add_low_rank(xp: Namespace, y: Array, a: Array, b: Array) -> Array:
    """``y + a @ b`` for a thin ``a`` (``rows x k``, or a stack of them). For JAX arrays with ``k`` at most
    :data:`FEW_COLUMNS`, a sum of ``k`` outer products, which XLA fuses with the passes over ``y`` that
    follow instead of writing ``a @ b`` to memory and reading it back; for PyTorch (outside ``torch.func``)
    an ``addmm_`` into ``y``; else the product added."""
    library = _library(y)
    if library.startswith("jax") and a.shape[-1] <= FEW_COLUMNS:
        for h in range(a.shape[-1]):
            y = y + a[..., :, h : h + 1] * b[..., h : h + 1, :]
        return y
    if library == "torch" and not _under_functorch():
        return y.addmm_(a, b) if y.ndim == 2 else y.baddbmm_(a, b)
    return y + a @ b


def fused_multiply_add(y: Array) -> Any:
    """For a PyTorch tensor, ``f(x, a)`` that does ``y += x * a`` in place in one pass (``addcmul_``, or
    ``add_`` with ``alpha`` for a Python number) and returns ``y``; ``None`` for other libraries, which
    have no such operation in the standard (NumPy gets the same effect from the gradient's in-place
    ``overwrite`` mode)."""
    if _library(y) != "torch" or _under_functorch():
        return None

    def add(x: Array, a: Any) -> Array:
        if isinstance(a, (int, float)):
            return y.add_(x, alpha=a)
        return y.addcmul_(x, a)

    return add


def _under_functorch() -> bool:
    """Whether a ``torch.func`` transform is active (``vmap`` has no batching rule for ``addcmul_``)."""
    import torch  # already imported: a tensor is at hand

    level = getattr(getattr(torch._C, "_functorch", None), "maybe_current_level", None)
    return level is None or level() is not None


def _library(x: Array) -> str:
    """The top-level module of ``x``'s type: ``"numpy"``, ``"torch"``, ``"jax"``/``"jaxlib"``, ..."""
    return type(x).__module__.split(".")[0]


def _columns_mask(xp: Namespace, index: Array, d: int, dtype: Any) -> Array:
    """A ``(d,)`` (or, for a stack, ``(..., d)``) array of ``dtype``: 0 at ``index``, 1 elsewhere. A scatter
    of ``k`` entries where the library has one (``O(d)``), else a comparison with every column (``O(k d)``)."""
    library = _library(index)
    device = _device(xp, index)
    if library in ("numpy", "cupy", "torch"):
        mask = xp.ones((*index.shape[:-1], d), dtype=dtype, device=device)
        if library == "torch":
            return mask.scatter(-1, index, 0)  # out of place: under vmap the index may be batched
        importlib.import_module(library).put_along_axis(mask, index, 0, axis=-1)
        return mask
    if library.startswith("jax"):
        if index.ndim == 1:
            return xp.ones(d, dtype=dtype).at[index].set(0)
        stack = xp.reshape(xp.arange(index.shape[0]), (-1, 1))
        return xp.ones((index.shape[0], d), dtype=dtype).at[stack, index].set(0)
    columns = xp.arange(d, dtype=index.dtype, device=device)
    return xp.astype(xp.all(xp.expand_dims(index, axis=-1) != columns, axis=-2), dtype)


def _zero_columns(xp: Namespace, zc: Array, index: Array, keep: Array) -> Array:
    """``zc`` with the columns ``index`` set to zero: in place (``k`` columns written) where the library
    allows it, else ``zc * keep`` (``keep`` the 0/1 mask of the other columns; in place for a stack where
    the library allows it)."""
    library = _library(zc)
    in_place = library in ("numpy", "cupy") or (library == "torch" and not zc.requires_grad)
    if index.ndim == 1 and in_place:  # one matrix: write only its k columns
        if library == "torch":
            return zc.index_fill_(1, index, 0)
        _write_columns(zc, index, 0)
        return zc
    mask = _per_row(xp, keep)  # a stack (or an immutable array): one pass
    if in_place:
        zc *= mask
        return zc
    return zc * mask


def _write_columns(x: Array, index: Array, value: Any) -> None:
    """``x[:, index] = value`` for a NumPy or CuPy matrix ``x``. A C-contiguous NumPy matrix is written
    through flat indices into its flattened view, three times as fast as NumPy's two-axis fancy indexing
    at ``256 x 8192``."""
    if _library(x) == "numpy" and x.flags.c_contiguous:
        import numpy as np

        rows, d = x.shape
        flat = (np.arange(rows, dtype=index.dtype)[:, None] * d + index).reshape(-1)
        x.reshape(-1)[flat] = value.reshape(-1) if isinstance(value, np.ndarray) else value
    else:
        x[:, index] = value


def _set_columns(xp: Namespace, p: Array, index: Array, h: Array) -> Array:
    """``p``, which is zero in its columns ``index`` (distinct), with ``h`` (``rows x k``) written there: in
    place where the library allows it, a scatter in JAX, else a product with a one-hot matrix."""
    library = _library(p)  # p is a fresh product, never a leaf of an autograd graph: in place is safe
    if library == "torch":
        if index.ndim == 1:  # an add into zeros is a copy; index_copy_ has no torch.func batching rule
            return p.index_add_(1, index, h)
        return p.scatter_(-1, xp.broadcast_to(xp.expand_dims(index, axis=-2), h.shape), h)
    if library in ("numpy", "cupy"):
        if index.ndim == 1:
            _write_columns(p, index, h)
        else:
            importlib.import_module(library).put_along_axis(p, xp.expand_dims(index, axis=-2), h, axis=-1)
        return p
    if hasattr(p, "at"):  # JAX: a scatter, which XLA fuses with what follows
        if index.ndim == 1:
            return p.at[:, index].set(h)
        stack = xp.reshape(xp.arange(index.shape[0]), (-1, 1, 1))
        rows = xp.reshape(xp.arange(p.shape[-2]), (1, -1, 1))
        return p.at[stack, rows, xp.expand_dims(index, axis=-2)].set(h)
    # the standard has no scatter: a product with the one-hot k x d matrix (of each position)
    columns = xp.arange(p.shape[-1], dtype=index.dtype, device=_device(xp, p))
    one_hot = xp.astype(xp.expand_dims(index, axis=-1) == columns, p.dtype)
    return p + h @ one_hot


def largest(xp: Namespace, v: Array, k: int) -> Array:
    """The indices of the ``k`` largest entries of the vector ``v`` (of each vector of a stack, along the
    last axis), in no particular order.

    The standard has no ``top_k``: PyTorch's ``topk`` and JAX's ``lax.top_k`` where the vector is theirs,
    NumPy's and CuPy's ``argpartition`` (``O(d)``), else a descending ``argsort`` (``O(d log d)``); all
    have static output shapes. Which of equal variances is picked does not matter for the result; on a
    split batch every device sees the same all-reduced variances and picks the same ones.
    """
    library = _library(v)
    if library == "torch":
        return v.topk(k).indices
    if library.startswith("jax"):
        import jax

        return jax.lax.top_k(v, k)[1]
    if library in ("numpy", "cupy"):  # a partial sort, O(d)
        return importlib.import_module(library).argpartition(-v, k - 1, axis=-1)[..., :k]
    return xp.argsort(v, axis=-1, descending=True, stable=True)[..., :k]


def _device(xp: Namespace, x: Array) -> Any:
    """The device of ``x`` for creating arrays beside it; ``None`` (the default) where it has none."""
    if _library(x) == "torch":  # directly: torch.compile would trace array-api-compat's cached checks
        return x.device
    try:
        return array_api_compat.device(x)
    except Exception:  # e.g. a tracer without a device
        return None


def sum_sq(xp: Namespace, x: Array, axes: int | None = None) -> Array:
    r"""``sum(x ** 2)`` over all elements, as a 0-d array; with ``axes``, over the last ``axes`` axes only
    (one sum per matrix, or vector, of a stack). See :func:`sum_products`.

    .. math::  \sum_{ij} x_{ij}^2 = \sum_i \langle x_{i\cdot}, x_{i\cdot} \rangle
    """
    return sum_products(xp, x, x, axes)


def sum_products(xp: Namespace, a: Array, b: Array, axes: int | None = None) -> Array:
    r"""``sum(a * b)`` over all elements (``a``, ``b`` of one shape), as a 0-d array; with ``axes``, over
    the last ``axes`` axes only.

    Always row by row first, then the row sums: each partial sum is short, so rounding grows with the
    row length plus the number of rows rather than with their product. JAX's reduction of a whole matrix
    on the CPU loses that: summing ``G_L zc_H * zc_H`` (64 x 63, one dominant column) in one reduction
    was off by 2.3e-6, row by row by 1e-7. On NumPy each row is a ``vecdot`` (a BLAS dot product: one
    read of the inputs instead of writing an ``a * b`` temporary and reading it back, 3x faster at
    ``256 x 8192``; a flat ``vecdot`` over all elements would be as fast but about 50 times less accurate
    in float32). Elsewhere ``sum(a * b, axis=-1)``: JAX fuses it into one pass, and PyTorch's and CuPy's
    ``vecdot`` multiply and sum just the same (array-api-compat's generic one for PyTorch is a batched
    matmul, slower still).
    """
    axes = a.ndim if axes is None else axes
    if axes == a.ndim == 2 and a.shape[0] > _BLOCK_ROWS and _writable_on_host(a) and _writable_on_host(b):
        # a whole PyTorch CPU matrix, eager: row blocks accumulated in place, no a * b temporary (see
        # column_sum_sq)
        return xp.sum(xp.sum(_block_sums(xp, a, b), axis=-1))
    rows = xp.vecdot(a, b) if _library(a) == "numpy" else xp.sum(a * b, axis=-1)
    return rows if axes == 1 else xp.sum(rows, axis=tuple(range(-(axes - 1), 0)))


def hinge(xp: Namespace, x: Array) -> Array:
    """``max(0, x)`` elementwise, with the zero subgradient at ``x = 0`` of ``relu``."""
    return xp.where(x > 0, x, xp.zeros_like(x))


def invariance_term(sq_dist_sum: Array, n: int, d: int, convention: str) -> Array:
    r"""Invariance, from ``sq_dist_sum = sum_ij (z1_ij - z2_ij)^2``.

    official: :math:`\frac{1}{nd}\sum_{ij} (z^1_{ij} - z^2_{ij})^2` (``F.mse_loss``);
    paper:    :math:`\frac{1}{n}\sum_i \|z^1_i - z^2_i\|^2` (``d`` times the official value).
    """
    return sq_dist_sum / float(n * d) if convention == "official" else sq_dist_sum / float(n)


def variance_term(xp: Namespace, var: Array, variance_target: float, eps: float) -> Array:
    r"""The hinge on the standard deviation of one view.

    .. math::  v(z) = \frac{1}{d} \sum_j \max\left(0, \gamma - \sqrt{\mathrm{var}_j + \epsilon}\right)
    """
    return xp.mean(hinge(xp, variance_target - xp.sqrt(var + eps)))


def covariance_term(off_diagonal_sq_norm: Array, n: int, d: int) -> Array:
    r"""The off-diagonal covariance penalty of one view.

    .. math::  c(z) = \frac{1}{d} \sum_{i \neq j} C_{ij}^2 = \frac{1}{d\,(n-1)^2} \sum_{i \neq j} S_{ij}^2,
               \qquad S = zc^\top zc

    ``off_diagonal_sq_norm`` is :math:`\sum_{i \neq j} S_{ij}^2` (see :func:`off_diagonal`).
    """
    # a Python float: (n - 1)^2 d passes 2^31 at n = d = 1300, past JAX's default integer width
    return off_diagonal_sq_norm / float((n - 1) * (n - 1) * d)


def combine(
    variance_1: Array,
    variance_2: Array,
    covariance_1: Array,
    covariance_2: Array,
    convention: str,
) -> tuple[Array, Array]:
    """The variance and covariance terms of the pair of views, as the convention defines them.

    official: variance ``(v(z1) + v(z2)) / 2``; paper: ``v(z1) + v(z2)``. Covariance ``c(z1) + c(z2)`` in both.
    Returns ``(variance, covariance)``.
    """
    variance = variance_1 + variance_2
    if convention == "official":
        variance = variance / 2
    return variance, covariance_1 + covariance_2
