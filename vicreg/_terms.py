r"""The three VICReg terms and the covariance term's exact computation, each defined once, against the Python
array API standard.

Notation: ``z`` has shape ``(n, d)``; ``zc = z - mean(z, axis=0)``; ``var_j = sum_i zc_ij^2 / (n - 1)``
(unbiased); ``S = zc^T zc`` and ``C = S / (n - 1)``. Every function also takes a stack of such problems,
one per position, with the rows on the second-to-last axis: ``z`` of shape ``(p, n, d)``, per-dimension
vectors ``(p, d)`` and per-position scalars ``(p,)`` (:mod:`vicreg._loss` brings ``(n, ..., d)`` inputs
into that layout). Products are then batched matrix products, never a Python loop over positions.

Only functions of the standard are used, through the namespace ``xp`` (no ``linalg`` extension, no
in-place update, no ``out=``), so that the same code runs on NumPy, CuPy, PyTorch, JAX, dask and
array-api-strict, under ``jax.jit`` and ``torch.compile``. What the standard lacks, or a library does
better, is one of the primitives of :mod:`vicreg._native`, reached through ``lookup(xp)``.

When the batch is split over devices, the callers pass :class:`Reduce`: the sums, maxima and row gathers
across devices. Nothing here knows about devices, autodiff or a particular library.

Overflow. Every quantity that can grow with the fourth power of the embeddings is computed on scaled
columns (powers of two, so the scaling itself is exact) and brought back to the units of ``C`` one factor
at a time: a result overflows where the official formulation's ``C_ij^2`` and their sum overflow, not
before, and never turns into ``inf - inf``. NaN and Inf in the inputs reach every term: no ``where`` or
clamp here maps a NaN to a number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from ._native import lookup

Array = Any
Namespace = Any


def identity(x: Array) -> Array:
    """What a reduction across devices is on one device."""
    return x


class Reduce(NamedTuple):
    """The reductions across devices of a batch whose rows are split over them (each the identity on one
    device): ``total`` sums a per-device sum over the devices, ``maximum`` takes the elementwise maximum over
    the devices, ``gather_rows`` concatenates every device's rows in device order along the first axis."""

    total: Callable[[Array], Array] = identity
    maximum: Callable[[Array], Array] = identity
    gather_rows: Callable[[Array], Array] = identity

    @property
    def local(self) -> bool:
        """Whether the batch is all on this device."""
        return self.total is identity


LOCAL = Reduce()


# --- elementwise helpers ----------------------------------------------------------------------------------


def hinge(xp: Namespace, x: Array) -> Array:
    """``max(0, x)`` elementwise: 0 at ``x <= 0`` (``-inf`` included), ``x`` elsewhere, NaN included."""
    return xp.clip(x, min=0.0)


def per_row(xp: Namespace, v: Array) -> Array:
    """A per-column vector ``(..., d)`` shaped to broadcast against the rows of ``(..., rows, d)``."""
    return v if v.ndim <= 1 else xp.expand_dims(v, axis=-2)


def per_column(xp: Namespace, v: Array) -> Array:
    """A per-row vector ``(..., k)`` shaped to broadcast against the columns of ``(..., k, d)``."""
    return xp.expand_dims(v, axis=-1)


def transpose(xp: Namespace, x: Array) -> Array:
    """The transpose of a matrix, or of each matrix of a stack."""
    return xp.matrix_transpose(x)


def sum_sq(xp: Namespace, x: Array, axes: int) -> Array:
    r"""``sum(x ** 2)`` over the last ``axes`` axes (one sum per matrix, or vector, of a stack), row by row
    first: each partial sum is short, so rounding grows with the row length plus the number of rows.

    .. math::  \sum_{ij} x_{ij}^2 = \sum_i \big(\sum_j x_{ij}^2\big)
    """
    rows = xp.sum(x * x, axis=-1)
    return rows if axes == 1 else xp.sum(rows, axis=-1)


def power_of_two_scale(xp: Namespace, size: Array) -> tuple[Array, Array]:
    r"""``(c, 1 / c)``: a power of two ``c = 2^-e`` with ``2^e`` near ``size`` (elementwise), so that
    multiplying by ``c`` brings ``size`` to about 1 exactly, with no rounding, and its inverse. ``c = 1``
    where ``size`` is 0; ``(0, inf)`` where ``size`` is ``inf`` and NaN where it is NaN (an overflowed or NaN
    statistic: what they scale becomes NaN or inf, never a number). ``e`` is at least the dtype's smallest
    normal exponent, so that ``c`` is finite for a tiny ``size``; a finite ``size`` is at most about the
    square root of the dtype's largest number here, so ``1 / c`` is finite too.

    .. math::  e = \operatorname{round}(\log_2 \mathrm{size}), \qquad c = 2^{-e}
    """
    limit = float(int(math.log2(float(xp.finfo(size.dtype).max))) - 2)
    # an infinite size gives e = inf: c = 0 and 1 / c = inf, so that what they scale becomes NaN or inf
    e = xp.clip(xp.round(xp.log2(xp.where(size == 0, 1.0, size))), min=-limit)
    return 2.0 ** (-e), 2.0**e


# --- centring -----------------------------------------------------------------------------------------


class Centring(NamedTuple):
    """What centring one view computes: the column ``mean`` of ``z``, the ``correction`` (the column mean of
    ``z - mean``, rounding residue) and the unbiased variance ``var``, each ``(d,)`` (``(p, d)`` for a
    stack). The centred embeddings are ``zc = (z - mean) - correction``."""

    mean: Array
    correction: Array
    var: Array


def centre(xp: Namespace, z: Array, n: int, reduce: Reduce = LOCAL) -> tuple[Array, Centring]:
    r"""``(z - mean, Centring(mean, correction, var))`` of one view (``n`` the global number of rows).

    .. math::  \bar z = \frac1n \sum_i z_i, \qquad \mathrm{var}_j = \frac{1}{n-1}\sum_i (z_{ij} - \bar z_j)^2

    The mean is subtracted twice. The rounding of the first mean leaves every column of ``z - mean`` off by
    a constant of the order of ``u |mean|`` (``u`` the unit roundoff), which is all there is of a constant
    column, and which the analytic gradient would carry (it relies on the columns of ``zc`` summing to
    zero); the second subtraction (:func:`centred`) removes it down to ``u`` times the spread of the column.
    The variance uses :math:`\sum_i (x_{ij} - c_j)^2 = \sum_i x_{ij}^2 - n c_j^2`, exact for ``c`` the
    column mean of ``x = z - mean``; ``n c_j^2`` is tiny unless the column is constant, where the two are
    equal and rounding may leave a negative number, which :func:`hinge` sets to 0.
    """
    ops = lookup(xp)
    mean = reduce.total(ops.column_sum(xp, z)) / n
    shifted = z - per_row(xp, mean)
    correction = reduce.total(ops.column_sum(xp, shifted)) / n
    squares = reduce.total(ops.column_sum(xp, shifted * shifted)) - n * (correction * correction)
    return shifted, Centring(mean, correction, hinge(xp, squares) / (n - 1))


def centred(xp: Namespace, shifted: Array, c: Centring) -> Array:
    """``zc = (z - mean) - correction`` from :func:`centre`'s ``z - mean``."""
    return shifted - per_row(xp, c.correction)


# --- the three terms ------------------------------------------------------------------------------------


def invariance_term(sq_dist_sum: Array, n: int, d: int, convention: str) -> Array:
    r"""Invariance, from ``sq_dist_sum = sum_ij (z1_ij - z2_ij)^2``.

    official: :math:`\frac{1}{nd}\sum_{ij} (z^1_{ij} - z^2_{ij})^2` (``F.mse_loss``);
    paper:    :math:`\frac{1}{n}\sum_i \|z^1_i - z^2_i\|^2` (``d`` times the official value).
    """
    return sq_dist_sum / float(n * d) if convention == "official" else sq_dist_sum / float(n)


def variance_term(xp: Namespace, std: Array, variance_target: float) -> Array:
    r"""The hinge on the standard deviation of one view (a mean over views and positions too, for a stack),
    from ``std = sqrt(var + eps)``.

    .. math::  v(z) = \frac{1}{d} \sum_j \max\left(0, \gamma - \sqrt{\mathrm{var}_j + \epsilon}\right)
    """
    return xp.mean(hinge(xp, variance_target - std))


def covariance_term(off_diagonal_sum: Array, d: int) -> Array:
    r"""The off-diagonal covariance penalty of one view.

    .. math::  c(z) = \frac{1}{d} \sum_{i \neq j} C_{ij}^2

    ``off_diagonal_sum`` is :math:`\sum_{i \neq j} C_{ij}^2` (see :func:`off_diagonal`); divided by ``d``
    after the sum, as the official formulation does, so that it overflows where that does.
    """
    return off_diagonal_sum / float(d)


def combine(variance_1: Array, variance_2: Array, covariance_1: Array, covariance_2: Array, convention: str) -> tuple:
    """The variance and covariance terms of the pair of views, as the convention defines them.

    official: variance ``(v(z1) + v(z2)) / 2``; paper: ``v(z1) + v(z2)``. Covariance ``c(z1) + c(z2)`` in both.
    Returns ``(variance, covariance)``.
    """
    variance = variance_1 + variance_2
    if convention == "official":
        variance = variance / 2
    return variance, covariance_1 + covariance_2


# --- which path, and how many exact columns ---------------------------------------------------------------


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


FEW_COLUMNS = 8
"""How many columns the Gram path takes out when :func:`columns_suffice` says that is enough (and none is
not)."""


def exact_columns(n: int, d: int) -> int:
    """``min(n - 1, d)``: the most columns that centred embeddings of ``n`` rows can hold mutually
    decorrelated (they span at most ``n - 1`` dimensions), so the count of exact columns that is exact
    whatever the data."""
    return min(n - 1, d)


def column_counts(n: int, d: int) -> tuple[int, ...]:
    """The numbers of exact columns the Gram path chooses from, cheapest first: ``0`` (the plain Gram
    identity), :data:`FEW_COLUMNS` and :func:`exact_columns`, without repeats. :func:`choice` picks the
    first that :func:`columns_suffice` proves exact; the last always is."""
    counts: list[int] = []
    for k in (0, min(FEW_COLUMNS, exact_columns(n, d)), exact_columns(n, d)):
        if not counts or k > counts[-1]:
            counts.append(k)
    return tuple(counts)


def largest_first(xp: Namespace, var: Array) -> Array:
    """The variances from the largest down (of each vector of a stack), for :func:`columns_suffice`. A NaN
    comes first."""
    return xp.sort(var, axis=-1, descending=True, stable=True)


def largest_columns(xp: Namespace, var: Array, k: int) -> Array:
    """The positions of the ``k`` largest variances (of each vector of a stack), the largest first; the same
    order as :func:`largest_first` (a NaN first, so that it goes into the exact columns)."""
    return xp.argsort(var, axis=-1, descending=True, stable=True)[..., :k]


def columns_suffice(xp: Namespace, ordered: Array, n: int, k: int) -> Array:
    r"""Whether taking only the ``k`` largest-variance columns out of the Gram matrix keeps the Gram path
    exact (``ordered``: the variances from the largest down, :func:`largest_first`, of every view and
    position): a 0-d boolean array, true when, for every view and position, with ``L`` the other columns,

    .. math::  \sum_{j \in L} \mathrm{var}_j \ \ge\ 2\,(n - 1) \max_{j \in L} \mathrm{var}_j,
               \qquad \sum_{j \in L} \mathrm{var}_j < \infty

    (the second: no variance of ``L`` overflowed; a NaN fails the first). That is the condition under which
    the ``L x L`` subtraction of :func:`off_diagonal` loses at most a factor 2 to cancellation. It is
    sufficient, not necessary: it fails wherever ``k`` columns may not be enough (one dimension, or a group
    of more than ``k``, whose variances dwarf the rest; constant columns beside a few live ones; a spectrum
    that falls off fast), and then the next count is tried, up to :func:`exact_columns`, which is exact
    either way. Both sides are over ``L`` alone (a slice of the ordered variances, nothing subtracted), so
    the test itself does not cancel.
    """
    rest = ordered[..., k:]
    total = xp.sum(rest, axis=-1)
    return xp.all((total >= 2 * (n - 1) * rest[..., 0]) & (total < math.inf))


def choice(xp: Namespace, ordered: Array, n: int, counts: tuple[int, ...]) -> Array:
    """The position in ``counts`` of the first count that :func:`columns_suffice` proves exact for every view
    and position (``ordered``: their variances from the largest down, ``(B, d)``), the last (all
    :func:`exact_columns`) where none is: a 0-d integer array, computed where the variances are (no host
    read here)."""
    chosen = xp.asarray(len(counts) - 1, device=lookup(xp).device(xp, ordered))
    for i in reversed(range(len(counts) - 1)):
        chosen = xp.where(columns_suffice(xp, ordered, n, counts[i]), i, chosen)
    return chosen


# --- the off-diagonal second moments ----------------------------------------------------------------------


class OffDiagonal(NamedTuple):
    r"""The off-diagonal covariances of one view, in the form the loss and its gradient need (see
    :func:`off_diagonal` and :func:`vicreg._loss.gradient`).

    ``sum`` is :math:`\sum_{i \neq j} C_{ij}^2` (0-d, or one per position; never negative). ``zc`` is the
    view's centred embeddings as the gradient reads them.

    ``d x d`` path: ``zc`` as centred, ``m = C`` with a zero diagonal (``d x d``), nothing else.

    Gram path, with ``H`` the ``k`` exact columns (those of largest variance) and ``L`` the rest:

    * ``zc``: :math:`y = c_L\, zc`, zero in the columns of ``H``, with :math:`c_L` a power of two that
      brings the largest column of ``L`` to a norm of about 1;
    * ``m``: :math:`G = y\, y^\top` (this device's rows of it on a split batch);
    * ``inverse``: :math:`1 / c_L` (0-d, or one per matrix of a stack);
    * ``top``: :math:`zc_H`, the columns of ``H`` as centred (``rows x k``), ``top_index`` their positions
      (``k``) and ``exact`` the ``(d,)`` mask of ``H``;
    * ``cross``: :math:`C_{HL}` (``k x d``, zero in the columns of ``H``);
    * ``top_block``: :math:`C_{HH}` with a zero diagonal (``k x k``).

    With ``k = 0`` the ``H`` fields are ``None``.
    """

    sum: Array
    zc: Array
    m: Array
    inverse: Array | None = None
    top: Array | None = None
    top_index: Array | None = None
    exact: Array | None = None
    cross: Array | None = None
    top_block: Array | None = None


def off_diagonal(
    xp: Namespace,
    shifted: Array,
    c: Centring,
    n: int,
    k: int,
    reduce: Reduce = LOCAL,
) -> OffDiagonal:
    r"""The off-diagonal covariances of one view, :math:`\sum_{i \neq j} C_{ij}^2`, computed without
    cancellation against the diagonal and without overflowing before the official formulation does.
    ``shifted`` and ``c`` come from :func:`centre`; ``k`` is the number of exact columns (Gram path only).

    **d x d path** (``2 n > d``): :math:`C = zc^\top zc / (n-1)` is built, its diagonal set to zero and the
    rest squared and summed, as the official formulation does. Each entry carries a rounding error of at most
    about :math:`u\, n\, \|zc_i\| \|zc_j\| / (n-1)` (``u`` the unit roundoff); nothing is subtracted, and
    it overflows exactly where the official formulation does.

    **Gram path** (``2 n <= d``). :math:`\|zc^\top zc\|_F = \|zc\, zc^\top\|_F`, so the sum of all squared
    entries of ``S = zc^T zc`` comes from the ``n x n`` Gram matrix, but the off-diagonal sum is then a
    difference, :math:`\|G\|_F^2 - \sum_j S_{jj}^2`, whose rounding error scales with
    :math:`u\,\|G\|_F \operatorname{tr} G`. When one column has a much larger variance than the rest, or
    when the columns are nearly decorrelated, that error swamps the result. So the ``k`` columns of largest
    variance (the set ``H``, ``L`` the rest) are taken out of the Gram matrix and handled without
    subtraction:

    .. math::

        (n-1)^2 \sum_{i \neq j} C_{ij}^2 = \Big(\|G_L\|_F^2 - \sum_{j \in L} S_{jj}^2\Big)
            + 2\, \|S_{HL}\|_F^2 + \sum_{i \neq j \in H} S_{ij}^2,
        \qquad G_L = zc_L zc_L^\top .

    The middle term is the ``H x L`` block of ``S`` itself (a ``k x n x d`` product), squared and summed:
    each entry is computed as the official formulation computes it, so its error is the official one.
    (Reading the block's norm off the Gram matrix instead, as :math:`\sum_{h \in H} zc_h^\top G_L\, zc_h`
    for ``n^2 k`` work, is not exact: the rounding of ``G_L`` is of the order of :math:`u\,\|G_L\|`, and a
    large column ``zc_h`` in the null space of ``G_L`` (a dimension that only tells apart rows the other
    dimensions hold equal) turns it into an error of :math:`u\,\|G_L\|\,\|zc_h\|^2` on a block that is
    zero: 0.4% of the float32 loss at ``4 x 8`` with one such column at ``1e4``.) The last term is the
    official formulation restricted to ``H`` (``k x n x k``). Only the ``L x L`` block keeps a subtraction,
    and its rounding error is bounded by about :math:`u\,\|G_L\|_F \operatorname{tr} G_L`: it scales with
    the variances *outside* the top ``k``, never with the largest ones.

    Which ``k``. The subtraction is harmless when ``L`` is not dominated by its diagonal: if
    :math:`\operatorname{tr} G_L \ge 2 (n - 1) \max_{j \in L} S_{jj}`, its off-diagonal sum is at least
    half :math:`\|G_L\|_F^2` (a centred Gram matrix has rank at most ``n - 1``, so
    :math:`\|G_L\|_F^2 \ge (\operatorname{tr} G_L)^2 / (n - 1)`, while
    :math:`\sum_{j \in L} S_{jj}^2 \le \max_L S_{jj} \operatorname{tr} G_L \le \|G_L\|_F^2 / 2`), and the
    subtraction loses at most a factor 2: the float32 error of the ``L x L`` part is then within twice the
    relative error of :math:`\|G_L\|_F^2` itself, about :math:`n u`. :func:`columns_suffice` tests exactly
    this, for ``L`` all the columns (``k = 0``: the Gram identity as it stands, for embeddings of
    comparable variances) and then all but the top 8. What breaks it is a group of dimensions whose
    variances dwarf the others' and whose mutual covariances are tiny next to their variances: the Gram
    matrix cannot tell their off-diagonal entries from the rounding of the diagonal ones. Centred columns
    span at most ``n - 1`` dimensions, so such a group has at most ``n - 1`` members, and with ``k = n - 1``
    all of them fall into ``H``, whatever their number: that count is exact whatever the data, and is used
    where both tests fail or no test is run. The ``L x L`` part is clamped at 0, which only removes rounding
    error, and the other two are sums of squares, so the term is never negative.

    **Scale.** The Gram matrix is that of :math:`y = c_L\, zc_L`, with :math:`c_L` a power of two (exact)
    that brings the largest column of ``L`` to a norm of about 1, so that :math:`\|G\|_F \le 2d` whatever the
    embeddings' magnitude; the ``H`` columns are scaled each by its own power of two (from its largest
    entry) for their two products. Every part is then brought back to the units of ``C`` one factor at a
    time, each factor a power of two or ``1 / (n - 1)``, so that a part overflows only where its value in
    those units does. (Squaring ``S`` or ``G`` unscaled would overflow at ``n^2 d^2`` times less: at
    ``64 x 512`` in float32, at a standard deviation of ``1e8`` where the official loss is ``1.6e33``.)

    Columns are chosen by :func:`largest_first`, so for a given ``k`` every shape is static: the selection
    runs under ``jax.jit`` and ``torch.compile``. The cost beside the ``n x n x d`` Gram product is the
    ``k x n x d`` product for ``S_HL`` here and one for ``zc_H C_HL`` in the gradient (each ``k / n`` of the
    Gram product: 3% at ``k = 8``, ``n = 256``; at ``k = n - 1`` one more Gram product each way, see
    :func:`use_gram`), and ``O(n^2 k)`` products. Memory: ``O(n^2)`` and the ``k x d`` block.

    On a batch split over devices (``n`` global, ``reduce`` the collectives, the centring already global, so
    every device picks the same columns), each device owns its rows of the Gram matrix,
    ``y_local @ y_all^T``, whose squared norms add up over devices; ``S_HL`` and the ``k x k`` block are the
    sums of the local ones, and so is the ``d x d`` matrix.
    """
    ops = lookup(xp)
    d = shifted.shape[-1]
    if not use_gram(n, d):
        zc = centred(xp, shifted, c)
        s = reduce.total(transpose(xp, zc) @ zc) / (n - 1)
        diagonal = xp.eye(d, dtype=xp.bool, device=ops.device(xp, zc))
        m = xp.where(diagonal, xp.zeros_like(s), s)
        return OffDiagonal(sum_sq(xp, m, axes=2), zc, m)
    var = c.var
    rest_var, exact, index, top = var, None, None, None
    if k > 0:
        index = largest_columns(xp, var, k)
        columns = xp.arange(d, dtype=index.dtype, device=ops.device(xp, index))
        exact = xp.any(xp.expand_dims(index, axis=-1) == columns, axis=-2)
        rest_var = xp.where(exact, xp.zeros_like(var), var)
        top = ops.take_columns(xp, shifted, index) - per_row(xp, _take(xp, c.correction, index))
    # c_L: the largest column of L to a norm of about 1; the columns of H to zero
    scale, inverse = power_of_two_scale(xp, xp.sqrt((n - 1) * xp.max(rest_var, axis=-1)))
    column_scale = xp.broadcast_to(xp.expand_dims(scale, axis=-1), var.shape)
    if exact is not None:
        column_scale = xp.where(exact, xp.zeros_like(column_scale), column_scale)
    y = centred(xp, shifted, c) * per_row(xp, column_scale)
    g = y @ transpose(xp, reduce.gather_rows(y))
    # ||G_L||^2 - sum_L S_jj^2 in the units of y (diagonal of y^T y: (n - 1) var c_L^2), then of C
    diagonal = rest_var * xp.expand_dims((n - 1) * (scale * scale), axis=-1)
    within = hinge(xp, reduce.total(sum_sq(xp, g, axes=2)) - sum_sq(xp, diagonal, axes=1))
    total = _times(within / float((n - 1) * (n - 1)), inverse, 4)
    if k == 0:
        return OffDiagonal(total, y, g, inverse)
    # H: each column scaled by its own power of two for the two products, then back to C's units
    top_scale, top_inverse = power_of_two_scale(xp, reduce.maximum(xp.max(xp.abs(top), axis=-2)) * float(n) ** 0.5)
    y_top = top * per_row(xp, top_scale)
    cross = reduce.total(transpose(xp, y_top) @ y) / (n - 1)  # c_H c_L S_HL / (n - 1)
    cross = (cross * per_column(xp, top_inverse)) * _per_matrix(xp, inverse)  # C_HL
    block = reduce.total(transpose(xp, y_top) @ y_top) / (n - 1)
    block = (block * per_column(xp, top_inverse)) * per_row(xp, top_inverse)  # C_HH
    block = xp.where(xp.eye(k, dtype=xp.bool, device=ops.device(xp, block)), xp.zeros_like(block), block)
    total = total + 2 * sum_sq(xp, cross, axes=2) + sum_sq(xp, block, axes=2)
    return OffDiagonal(total, y, g, inverse, top, index, exact, cross, block)


def _times(x: Array, factor: Array, times: int) -> Array:
    """``x * factor ** times``, one factor at a time: it overflows (or underflows) only where the result
    does, never in ``factor ** times`` alone."""
    for _ in range(times):
        x = x * factor
    return x


def _per_matrix(xp: Namespace, v: Array) -> Array:
    """A per-position scalar ``(p,)`` (or 0-d) shaped to broadcast against ``(p, k, d)``."""
    return v if v.ndim == 0 else xp.reshape(v, (*v.shape, 1, 1))


def _take(xp: Namespace, v: Array, index: Array) -> Array:
    """``v[..., index]``: the entries ``index`` of a vector, or of each vector of a stack."""
    if index.ndim == 1:
        return xp.take(v, index, axis=-1)
    return lookup(xp).take_columns(xp, xp.expand_dims(v, axis=-2), index)[..., 0, :]


# --- the gradient of one view ---------------------------------------------------------------------------


def centred_gradient(
    xp: Namespace,
    off: OffDiagonal,
    var: Array,
    w: Array,
    kappa: Any,
    n: int,
    reduce: Reduce = LOCAL,
) -> Array:
    r"""The variance and covariance part of one view's gradient,

    .. math::  zc \odot w + \kappa\, zc\,(C - D), \qquad D = \operatorname{diag} C = \operatorname{diag}(\mathrm{var}),

    (``w`` a ``d``-vector of column weights, :math:`\kappa` a scalar) from :func:`off_diagonal`'s ``off``,
    without cancelling against the diagonal and without overflowing before the result does.

    ``d x d`` path: :math:`zc \odot w + zc\,(\kappa\, m)`, ``m`` being ``C`` with a zero diagonal.

    Gram path, on the columns of ``L`` (where ``y = c_L zc``):

    .. math::  y \odot \frac{w - \kappa\,\mathrm{var}}{c_L} + \frac{\kappa}{(n-1)\,c_L^3}\, G\, y
               + (\kappa\, zc_H)\, C_{HL},

    where the only subtraction is against the variances outside the top ``k``; on the columns of ``H``:

    .. math::  zc_H \odot w_H + \frac{\kappa}{(n-1)\,c_L^2}\, G\, zc_H + (\kappa\, zc_H)\, C_{HH},

    an ``n x k`` block written into place, where the other products are zero since ``y`` and ``C_{HL}`` are.
    The two products on ``L`` stay apart: :math:`(G_L + zc_H zc_H^\top)\, zc_L` in one product would round
    the entries of ``G_L`` to the scale of the large columns' Gram matrix (10 times the official float32
    gradient error with a few columns at ``1e4``), while :math:`zc_H\, C_{HL}` is the official formulation's
    own product. The factors :math:`1 / c_L` are applied to the ``n x n`` matrix one at a time. With
    ``k = 0`` only the first two terms remain. Besides these products, everything is ``O(n^2 k)`` or one
    pass over ``n x d``.
    """
    ops = lookup(xp)
    if off.inverse is None:  # d x d
        return off.zc * per_row(xp, w) + off.zc @ (kappa * off.m)
    inverse = _per_matrix(xp, off.inverse)
    weights = (w - kappa * var) * xp.expand_dims(off.inverse, axis=-1)
    if off.exact is not None:
        weights = xp.where(off.exact, xp.zeros_like(weights), weights)
    factor = (kappa / (n - 1)) * inverse * inverse  # kappa / ((n - 1) c_L^2): G_L in zc's units
    if off.top is None:
        return off.zc * per_row(xp, weights) + (off.m * (factor * inverse)) @ reduce.gather_rows(off.zc)
    on_top = off.m * factor
    p = off.zc * per_row(xp, weights) + (on_top * inverse) @ reduce.gather_rows(off.zc)
    scaled_top = kappa * off.top
    p = p + scaled_top @ off.cross
    top_w = per_row(xp, _take(xp, w, off.top_index))
    h = off.top * top_w + on_top @ reduce.gather_rows(off.top) + scaled_top @ off.top_block
    return ops.set_columns(xp, p, off.top_index, h)
