r"""RankMe (Garrido, Balestriero, Najman, LeCun, 2023), a collapse monitor: the exponential of the entropy of
the normalised singular values of the embeddings as given (not centred),

.. math::

    \mathrm{RankMe}(Z) = \exp\Big(-\sum_k p_k \log p_k\Big), \qquad
    p_k = \frac{\sigma_k(Z)}{\sum_l \sigma_l(Z)} + \epsilon, \qquad \epsilon = 10^{-7},

``k`` over the ``min(n, d)`` singular values (the paper's form, ``epsilon`` added to each ``p_k``). It is
``min(n, d)`` at most, about it for embeddings that fill their space, and 1 for embeddings of rank one.

The singular values are the square roots of the eigenvalues of ``Z Z^T`` (``n x n``) or ``Z^T Z``
(``d x d``), the matrices the loss builds anyway, centred: :func:`uncentred_gram` turns the loss's centred
Gram matrix back into the uncentred one with a rank-two update (``Z = Zc + 1 \mu^T``, so
:math:`Z Z^\top = Z_c Z_c^\top + (Z_c\mu) 1^\top + 1 (Z_c\mu)^\top + \|\mu\|^2 1 1^\top`), which needs
only ``Zc @ mean``; the ``d x d`` path's covariance matrix takes a rank-one update. Then one symmetric
eigenvalue solve of the small matrix.

**Accuracy.** An eigenvalue of a Gram matrix computed in floating point carries an absolute error of about
``u`` times the largest (``u`` the unit roundoff), so a singular value below about :math:`\sqrt{u}` times
the largest is noise: ``2.4e-4`` in float32 (``1.5e-8`` in float64), where an SVD of ``Z`` resolves
values down to about ``u``. Left in, such noise counts as rank: embeddings of rank one come out at 1.07
instead of 1.0004 in float32 at ``256 x 8192``. So eigenvalues below :data:`NOISE` ``* u`` times the
largest count as zero, as a numerical rank does: a singular value below ``sqrt(NOISE * u) = 1.4e-3``
(float32) or ``4.2e-8`` (float64) times the largest drops out. Embeddings whose spectrum ends above that
floor get RankMe to within about ``1e-5`` relative in float32; a spectrum with many values below it (a slow
decay over six decades, say) loses their share of the entropy, about 3% at ``256 x 8192``.
"""

from __future__ import annotations

import math
from typing import Any

from ._native import lookup
from ._terms import Centring, GramColumns, OffDiagonal, Reduce, per_column, per_row, power_of_two_scale, sum_sq

Array = Any

EPSILON = 1e-7
"""Added to each normalised singular value ``p_k`` before the entropy (the paper's form)."""

NOISE = 16.0
"""An eigenvalue at most ``NOISE * u`` times the largest counts as zero (``u`` the dtype's machine epsilon):
rounding puts the computed eigenvalues of a rank-deficient Gram matrix at up to about ``0.6 u`` times the
largest (measured, float32, ``32 x 32`` to ``1024 x 2048``)."""


def uncentred_gram(
    xp: Any, off: OffDiagonal, c: Centring, n: int, reduce: Reduce, columns: GramColumns | None
) -> tuple[Array, Array]:
    r"""``(M, noise)``: a matrix ``M`` whose eigenvalues are those of ``Z Z^T`` (Gram path) or ``Z^T Z``
    (``d x d`` path) times one positive power of two, from one view's covariance statistics
    (:func:`vicreg._terms.off_diagonal`, its :class:`vicreg._terms.Centring` and, on the Gram path, its
    :class:`vicreg._terms.GramColumns`), and the size ``noise`` (same units) that the rounding of the
    compute dtype's products is relative to: eigenvalues of ``M`` below :data:`NOISE` ``* u * noise`` cannot
    be told from zero.

    ``d x d`` path, with ``C`` the covariance matrix (``off.m`` with the variances on its diagonal):

    .. math::  Z^\top Z / (n - 1) = C + \tfrac{n}{n-1}\,\mu\mu^\top .

    Gram path, in the units of ``y = c_L zc`` (:class:`vicreg._terms.GramColumns`), ``G = y y^T`` (all rows,
    gathered on a split batch), ``T = c_L zc_H`` the exact columns (none for ``k = 0``) and ``m = c_L \mu``:

    .. math::  c_L^2\, Z Z^\top = G + T T^\top + v 1^\top + 1 v^\top + \|m\|^2\, 1 1^\top, \qquad
               v = c_L^2\, zc\,\mu = y\, m + T m_H .

    Both are scaled by a power of two ``rho^2`` (exact) that keeps every piece finite: ``rho`` brings the
    largest column norm of the mean part and of ``T`` to about 1 or below (the columns of ``y`` are there
    already). The pieces are added in float64 where the library has it (:func:`vicreg._native` ``widened``):
    the mean part may exceed the centred part by far more than float32 resolves, and the centred part is
    what the small singular values live in. ``noise`` is the size of what the compute dtype rounded:
    ``||C||_F``, or ``||G||_F`` plus ``||y|| ||m||`` for the one product of the compute dtype that meets the
    mean, ``y m`` (``T`` and its products are formed in the wider dtype). Nothing here is differentiated."""
    ops = lookup(xp)
    mu = ops.stop_gradient(xp, c.mean + c.correction)  # z = zc + 1 mu^T, (..., d)
    big = xp.max(xp.abs(mu), axis=-1)  # (...): one per matrix
    if columns is None:  # d x d: C + n / (n - 1) mu mu^T, times rho^2
        cov, var = ops.stop_gradient(xp, off.m), ops.stop_gradient(xp, c.var)
        rho, _ = power_of_two_scale(xp, xp.maximum(big, xp.sqrt(xp.max(var, axis=-1))))
        scaled_var = (var * per_column(xp, rho)) * per_column(xp, rho)
        cov = ops.widened(xp, (cov * _per_matrix(xp, rho)) * _per_matrix(xp, rho))
        scaled_mu = ops.widened(xp, mu * per_column(xp, rho))
        eye = xp.eye(cov.shape[-1], dtype=cov.dtype, device=ops.device(xp, cov))
        m = cov + eye * per_row(xp, ops.widened(xp, scaled_var))
        noise = xp.sqrt(sum_sq(xp, cov, axes=2) + sum_sq(xp, ops.widened(xp, scaled_var), axes=1))
        return m + (n / (n - 1)) * (per_column(xp, scaled_mu) * per_row(xp, scaled_mu)), noise
    y, g = ops.stop_gradient(xp, off.zc), ops.stop_gradient(xp, off.m)
    top = None if off.top is None else ops.stop_gradient(xp, off.top)
    inverse = ops.stop_gradient(xp, columns.inverse)  # 1 / c_L, a power of two, (...)
    if top is not None:
        big = xp.maximum(big, reduce.maximum(xp.max(xp.abs(top), axis=(-2, -1))))
    # rho = 2^-e with 2^e about c_L sqrt(n) max(|mu|, |zc_H|) and at least 1, from exponents (c_L times a
    # large mean may overflow); rho c_L is then an exact power of two as well
    e = xp.round(xp.log2(xp.clip(big, min=2.0**-64)) - xp.log2(inverse) + 0.5 * math.log2(n))
    e = xp.clip(e, min=0.0)
    rho, rho_c = 2.0**-e, 2.0 ** (-e - xp.log2(inverse))
    m = mu * per_column(xp, rho_c)  # rho c_L mu
    v = ops.widened(xp, (y @ per_column(xp, m)) * _per_matrix(xp, rho))  # rho^2 c_L^2 zc_L mu_L, (..., rows, 1)
    m = ops.widened(xp, m)  # the one product in the compute dtype is done: the rest in the wider one
    gram = ops.widened(xp, reduce.gather_rows(g))  # every row of G
    rho_w = _per_matrix(xp, ops.widened(xp, rho))
    gram = (gram * rho_w) * rho_w
    # what the compute dtype rounded, in the units of rho^2 as the rest: the product G (about u ||G||) and
    # y m (about u |y_i| |m| in row i: ||y|| ||m|| in all, ||y||^2 the trace of G); T and its products are
    # formed in the wider dtype. (The rank-two change v 1^T + 1 v^T has a norm up to sqrt(n) times that, but
    # where the mean is large, 1 lies in the span of the top eigenvectors and the small eigenvalues feel it
    # only at second order; measured, the bound without sqrt(n) keeps the noise out at 256 x 8192 where the
    # one with it drops real eigenvalues.)
    eye = xp.eye(gram.shape[-1], dtype=gram.dtype, device=ops.device(xp, gram))
    y_norm = xp.sqrt(xp.sum(gram * eye, axis=(-2, -1)))
    noise = xp.sqrt(sum_sq(xp, gram, axes=2)) + y_norm * xp.sqrt(sum_sq(xp, m, axes=1))
    if top is not None:
        t = ops.widened(xp, top * _per_matrix(xp, rho_c))  # rho c_L zc_H, (..., rows, k)
        m_top = ops.take_columns(xp, xp.expand_dims(m, axis=-2), columns.top_index)
        v = v + t @ xp.matrix_transpose(m_top)
        t = reduce.gather_rows(t)
        gram = gram + t @ xp.matrix_transpose(t)
    v = reduce.gather_rows(v)  # (..., n, 1)
    return gram + (v + xp.matrix_transpose(v)) + _per_matrix(xp, sum_sq(xp, m, axes=1)), noise


def _per_matrix(xp: Any, v: Array) -> Array:
    """A per-matrix scalar shaped to broadcast against a stack of matrices."""
    return v if v.ndim == 0 else xp.reshape(v, (*v.shape, 1, 1))


def rank_me(xp: Any, grams: Array, noise: Array, dtype: Any) -> Array:
    """RankMe of each matrix of the stack ``grams`` (``(..., m, m)``, from :func:`uncentred_gram`), ``(...)``:
    eigenvalues at most :data:`NOISE` ``* u * noise`` count as zero (``u`` the machine epsilon of ``dtype``,
    the compute dtype; ``noise`` the largest eigenvalue where ``grams`` is in that dtype itself), the others'
    square roots are the singular values. NaN where a matrix has a non-finite entry (the solver is given
    zeros there), and for embeddings that are all zero (``0 / 0``, as for an SVD)."""
    ops = lookup(xp)
    finite = xp.all(xp.isfinite(grams), axis=(-2, -1))
    safe = xp.where(_per_matrix(xp, finite), grams, 0.0)
    lam = ops.eigvalsh(xp, safe)
    top = xp.max(lam, axis=-1)
    if grams.dtype == dtype:  # not widened: the mean part's rounding too is relative to the largest
        noise = top
    floor = xp.expand_dims(NOISE * xp.finfo(dtype).eps * noise, axis=-1)
    s = xp.sqrt(xp.where(lam > floor, lam, 0.0))
    total = xp.sum(s, axis=-1, keepdims=True)
    defined = finite & (total[..., 0] > 0)  # all zeros: 0 / 0, NaN (without a division by zero here)
    p = s / xp.where(total > 0, total, 1.0) + EPSILON
    value = xp.exp(-xp.sum(p * xp.log(p), axis=-1))
    return xp.astype(xp.where(defined, value, xp.nan), dtype)
