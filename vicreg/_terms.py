"""The three VICReg terms, each defined exactly once, against the Python array API standard.

Notation (REFERENCE.md): ``z`` has shape ``(n, d)``; ``zc = z - mean(z, axis=0)``;
``var_j = sum_i zc_ij^2 / (n - 1)`` (unbiased); ``C = zc^T zc / (n - 1)``.

Every function here takes the array namespace ``xp`` explicitly and uses only functions of the standard
(no ``linalg`` extension), so the same code runs on NumPy, CuPy, PyTorch, JAX and array-api-strict, under
``jax.jit`` and ``torch.compile``. The adapters (:mod:`vicreg.torch`, :mod:`vicreg.jax`) reuse these
functions on statistics they reduce across devices; nothing here knows about devices or autodiff.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import array_api_compat

Array = Any
Namespace = Any


def _identity(x: Array) -> Array:
    return x


def centre(xp: Namespace, z: Array, n: int | None = None, total: Any = _identity) -> tuple[Array, Array]:
    r"""Centred embeddings and their unbiased per-dimension variance.

    .. math::  zc = z - \bar z, \qquad \mathrm{var}_j = \frac{1}{n-1} \sum_i zc_{ij}^2

    Returns ``(zc, var)`` with shapes ``(rows, d)`` and ``(d,)``. On one device ``n`` is ``z.shape[0]``; a
    batch split over devices passes the global ``n`` and ``total``, the sum over devices of a local sum.

    The mean is subtracted twice. The rounding of the first mean leaves every column of ``z - mean``
    off by a constant of the order of ``u |mean|`` (``u`` the unit roundoff), which is all there is of a
    constant column, and which the analytic gradient would carry (it relies on the columns of ``zc``
    summing to zero); the second pass removes it, down to ``u`` times the spread of the column.
    """
    n = z.shape[0] if n is None else n
    zc = z - total(column_sum(xp, z)) / n
    zc = zc - total(column_sum(xp, zc)) / n
    var = total(column_sum(xp, zc * zc)) / (n - 1)
    return zc, var


def column_sum(xp: Namespace, x: Array) -> Array:
    """``sum(x, axis=0)`` of a matrix.

    NumPy sums along the first axis one row after another, with an error that grows with the number of
    rows; its matrix-vector product with a vector of ones is about three times as accurate and three
    times as fast. The other libraries' reductions are already blocked or pairwise.
    """
    if type(x).__module__ == "numpy":
        return xp.ones(x.shape[0], dtype=x.dtype) @ x
    return xp.sum(x, axis=0)


EXACT_COLUMNS = 8
"""How many of the largest-variance columns the Gram path treats exactly (see :func:`off_diagonal`)."""


def use_gram(n: int, d: int) -> bool:
    """Whether the covariance term goes through the ``n x n`` Gram matrix (``2 n <= d``) or ``d x d``.

    At ``2 n <= d`` the Gram work ``n^2 d`` is at most half the ``n d^2`` of the covariance, and the
    cancellation the Gram identity leaves (see :func:`off_diagonal`) is bounded by a factor 2 when the
    remaining variances are comparable; between ``d / 2`` and ``d`` the ``d x d`` matrix costs at most
    twice as much and has no cancellation at all.
    """
    return 2 * n <= d


class OffDiagonal(NamedTuple):
    r"""The off-diagonal part of ``S = zc^T zc = (n - 1) C`` of one view, in the form the loss and its
    gradient need (see :func:`off_diagonal`).

    ``sq_norm`` is :math:`\sum_{i \neq j} S_{ij}^2` (0-d, never negative). On the ``d x d`` path ``m`` is
    ``S`` with a zero diagonal and the other fields are ``None``. On the Gram path ``m`` is the Gram
    matrix of the columns outside the top ``k`` (``zc_L zc_L^T``: this device's rows of it when the batch
    is split), ``top`` the top ``k`` columns of ``zc`` (``rows x k``), ``cross`` the ``k x d`` matrix
    ``zc_top^T zc`` with its ``k`` diagonal entries of ``S`` zeroed, and ``rest`` the diagonal of ``S``
    with the top ``k`` entries zeroed (``d``): then :math:`zc\,(S - \mathrm{diag}\,S) =
    m\,zc + \mathrm{top}\,\mathrm{cross} - zc \odot \mathrm{rest}`.
    """

    sq_norm: Array
    m: Array
    top: Array | None = None
    cross: Array | None = None
    rest: Array | None = None


def off_diagonal(
    xp: Namespace,
    zc: Array,
    var: Array,
    n: int | None = None,
    total: Any = _identity,
    gather_rows: Any = _identity,
) -> OffDiagonal:
    r"""The off-diagonal second moments of one view, :math:`\sum_{i \neq j} S_{ij}^2` with
    :math:`S = zc^\top zc = (n-1)\,C`, computed without cancellation against the diagonal.

    **d x d path** (``2 n > d``): ``S`` is built, its diagonal set to zero and the rest squared and summed,
    as the official formulation does. Each entry carries a rounding error of at most about
    :math:`u\, n\, \|zc_i\| \|zc_j\|` (``u`` the unit roundoff), and nothing is subtracted.

    **Gram path** (``2 n <= d``). :math:`\|zc^\top zc\|_F = \|zc\, zc^\top\|_F`, so the sum of all squared
    entries of ``S`` comes from the ``n x n`` Gram matrix, but the off-diagonal sum is then a difference,
    :math:`\|G\|_F^2 - \sum_j S_{jj}^2`, whose rounding error scales with
    :math:`u\,\|G\|_F \operatorname{tr} G`. When one column has a much larger variance than the rest,
    or when the columns are nearly decorrelated, that error swamps the result. So the ``k`` columns of
    largest variance (``k = min(EXACT_COLUMNS, d)``, the set ``H``; ``L`` is the rest) are taken out and
    handled exactly:

    .. math::

        \sum_{i \neq j} S_{ij}^2 = \underbrace{\|zc_L zc_L^\top\|_F^2 - \sum_{j \in L} S_{jj}^2}_{L \times L}
            + 2 \sum_{i \in H,\, j \in L} S_{ij}^2 + \sum_{i \neq j \in H} S_{ij}^2 .

    The last two sums are entries of the ``k x d`` product ``zc_H^T zc`` (``O(n k d)``), squared directly.
    Only the ``L x L`` block keeps a subtraction, and its rounding error is bounded by
    :math:`c\,u\,\|zc_L zc_L^\top\|_F \operatorname{tr}(zc_L zc_L^\top)`: it scales with the variances
    *outside* the top ``k``, never with the largest ones, and relative to the result it is small
    whenever the block is not itself dominated by its diagonal. (If the ``L`` block's trace is at least
    ``2 (n - 1)`` times its largest variance, which holds for comparable variances at ``2 n <= d``, its
    off-diagonal sum is at least half its squared norm, so the subtraction loses at most a factor 2;
    one or a few dominant dimensions fall into ``H``.) The ``L x L`` part is clamped at 0, which only
    removes rounding error, so the term is never negative.

    Columns are chosen by :func:`largest` of the variances (ties broken by position) and kept by masks, so
    every shape is static: the selection runs under ``jax.jit`` and ``torch.compile``. The cost is one
    more ``n x d`` elementwise pass and an ``n x k x d`` product next to the ``n x n x d`` Gram product.

    On a batch split over devices (``n`` global, ``total`` and ``gather_rows`` the collectives, ``var``
    already global), each device owns its rows of the Gram matrix, ``zc_L,local @ zc_L,all^T``, whose
    squared norms add up over devices, and ``zc_H^T zc`` is the sum of the local products; the ``d x d``
    matrix is the sum over devices of the local products.
    """
    rows, d = zc.shape
    n = rows if n is None else n
    if not use_gram(n, d):
        s = total(zc.T @ zc)
        diagonal = xp.eye(d, dtype=xp.bool, device=_device(xp, zc))
        m = xp.where(diagonal, xp.zeros_like(s), s)
        return OffDiagonal(sum_sq(xp, m), m)
    k = min(EXACT_COLUMNS, d)
    s_diag = var * (n - 1)
    top_index = largest(xp, var, k)
    columns = xp.arange(d, dtype=top_index.dtype, device=_device(xp, zc))
    is_top_entry = xp.reshape(top_index, (k, 1)) == xp.reshape(columns, (1, d))  # k x d: (a, top_a)
    in_top = xp.any(is_top_entry, axis=0)
    keep = xp.astype(xp.logical_not(in_top), zc.dtype)  # 1 on L, 0 on H
    zc_rest = zc * keep
    m = zc_rest @ gather_rows(zc_rest).T
    rest = s_diag * keep
    within_rest = total(sum_sq(xp, m)) - sum_sq(xp, rest)
    within_rest = xp.where(within_rest > 0, within_rest, xp.zeros_like(within_rest))
    top = xp.take(zc, top_index, axis=1)
    cross = total(top.T @ zc)
    cross = xp.where(is_top_entry, xp.zeros_like(cross), cross)
    top_by_rest = sum_sq(xp, cross * keep)
    top_by_top = sum_sq(xp, cross * (1 - keep))
    return OffDiagonal(within_rest + 2 * top_by_rest + top_by_top, m, top, cross, rest)


def largest(xp: Namespace, v: Array, k: int) -> Array:
    """The indices of the ``k`` largest entries of the vector ``v``, largest first (ties: the first).

    ``k`` rounds of ``argmax``: ``O(k d)`` and static shapes, where a full ``argsort`` is ``O(d log d)``
    and, in XLA on CPU, several times slower; the standard has no ``top_k``.
    """
    columns = xp.arange(v.shape[0], device=_device(xp, v))
    taken = xp.asarray(-xp.inf, dtype=v.dtype, device=_device(xp, v))
    picks = []
    for _ in range(k):
        i = xp.argmax(v)
        picks.append(i)
        v = xp.where(columns == i, taken, v)
    return xp.stack(picks)


def _device(xp: Namespace, x: Array) -> Any:
    """The device of ``x`` for creating arrays beside it; ``None`` (the default) where it has none."""
    try:
        return array_api_compat.device(x)
    except Exception:  # e.g. a tracer without a device
        return None


def sum_sq(xp: Namespace, x: Array) -> Array:
    r"""``sum(x ** 2)`` over all elements, as a 0-d array.

    .. math::  \sum_{ij} x_{ij}^2 = \sum_i \langle x_{i\cdot}, x_{i\cdot} \rangle

    On NumPy a matrix is reduced row by row with ``vecdot`` (a BLAS dot product: one read of ``x`` instead
    of writing an ``x * x`` temporary and reading it back, 3x faster at ``256 x 8192``), then the row sums
    are summed; each row's dot product is short enough that the result is as accurate as the pairwise
    ``sum(x * x)`` (a flat ``vecdot`` over all ``n d`` elements would be as fast but about 50 times less
    accurate in float32). Elsewhere ``sum(x * x)``: JAX fuses it into one pass, and array-api-compat's
    generic ``vecdot`` for PyTorch and CuPy is a batched matmul, slower than the two ops it replaces.
    """
    if x.ndim >= 2 and type(x).__module__ == "numpy":
        return xp.sum(xp.vecdot(x, x))
    return xp.sum(x * x)


def hinge(xp: Namespace, x: Array) -> Array:
    """``max(0, x)`` elementwise, with the zero subgradient at ``x = 0`` of ``relu``."""
    return xp.where(x > 0, x, xp.zeros_like(x))


def invariance_term(sq_dist_sum: Array, n: int, d: int, convention: str) -> Array:
    r"""Invariance, from ``sq_dist_sum = sum_ij (z1_ij - z2_ij)^2``.

    official: :math:`\frac{1}{nd}\sum_{ij} (z^1_{ij} - z^2_{ij})^2` (``F.mse_loss``);
    paper:    :math:`\frac{1}{n}\sum_i \|z^1_i - z^2_i\|^2` (``d`` times the official value).
    """
    return sq_dist_sum / (n * d) if convention == "official" else sq_dist_sum / n


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
    return off_diagonal_sq_norm / ((n - 1) * (n - 1) * d)


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
