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


def product(xp: Namespace, a: Array, b: Array, precision: str = "highest") -> Array:
    r"""``a @ b`` at the products' ``precision`` (:data:`vicreg.PRECISIONS`), ``b_{16}(x)`` standing for ``x``
    rounded to bfloat16 (the ``bf16_round`` primitive) and every product of such inputs accumulated in
    float32 (the ``bf16_matmul`` primitive):

    .. math::

        \text{highest: } a\,b, \qquad \text{medium: } b_{16}(a)\, b_{16}(b), \qquad
        \text{high: } a_h b_h + (a_h b_l + a_l b_h),\quad a_h = b_{16}(a),\ a_l = b_{16}(a - a_h)

    ("high" is bf16x3: three bfloat16 products, each input carried in two bfloat16 parts, about ``2^-16``
    relative per term where "medium" is ``2^-9``.)
    """
    if precision == "highest":
        return a @ b
    ops = lookup(xp)
    if precision == "medium":
        return ops.bf16_matmul(xp, ops.bf16_round(xp, a), ops.bf16_round(xp, b))
    a_h, a_l = bf16_split(xp, a)
    b_h, b_l = bf16_split(xp, b)
    return ops.bf16_matmul(xp, a_h, b_h) + (ops.bf16_matmul(xp, a_h, b_l) + ops.bf16_matmul(xp, a_l, b_h))


def bf16_split(xp: Namespace, x: Array) -> tuple[Array, Array]:
    """``(x_h, x_l)``: ``x`` rounded to bfloat16, and the rest of it rounded to bfloat16 too."""
    rounded = lookup(xp).bf16_round
    h = rounded(xp, x)
    return h, rounded(xp, x - h)


def gram(xp: Namespace, y: Array, reduce: Reduce, precision: str) -> Array:
    r"""``y @ y_all^T`` (``y_all`` every device's rows; ``y`` itself on one device) at ``precision``
    (``"medium"``: ``y`` already rounded to bfloat16). At ``"high"`` on one device the product is symmetric,
    and two bfloat16 products make the three: :math:`y_h y_h^\top + (P + P^\top)`,
    :math:`P = y_h y_l^\top`."""
    if precision == "medium":
        return lookup(xp).bf16_matmul(xp, y, transpose(xp, reduce.gather_rows(y)))
    if precision != "high" or not reduce.local:
        return product(xp, y, transpose(xp, reduce.gather_rows(y)), precision)
    h, low = bf16_split(xp, y)
    cross = lookup(xp).bf16_matmul(xp, h, transpose(xp, low))
    return lookup(xp).bf16_matmul(xp, h, transpose(xp, h)) + (cross + transpose(xp, cross))


def power_of_two_scale(xp: Namespace, size: Array) -> tuple[Array, Array]:
    r"""``(c, 1 / c)``: a power of two ``c = 2^-e`` with ``2^e`` near ``size`` (elementwise), so that
    multiplying by ``c`` brings ``size`` to about 1 exactly, with no rounding, and its inverse. ``(0, inf)``
    where ``size`` is ``inf`` and NaN where it is NaN (an overflowed or NaN statistic: what they scale
    becomes NaN or inf, never a number). ``e`` is at least -64 (also for a ``size`` of 0), so that ``c`` is
    finite in float32; a finite ``size`` is at most about the square root of the dtype's largest number
    here, so ``1 / c`` is finite too.

    .. math::  e = \operatorname{round}(\log_2 \max(\mathrm{size}, 2^{-64})), \qquad c = 2^{-e}
    """
    # sizes below 2^-64 (columns of zeros included: no log2(0)) are scaled by 2^64 at most, which keeps
    # entries that their squares underflowed out of the variance below 1; an infinite size gives e = inf:
    # c = 0 and 1 / c = inf, so that what they scale becomes NaN or inf
    inverse = 2.0 ** xp.round(xp.log2(xp.clip(size, min=2.0**-64)))
    return inverse**-1.0, inverse  # the reciprocal of a power of two is exact


# --- centring -----------------------------------------------------------------------------------------


class Centring(NamedTuple):
    """What centring one view computes: the column ``mean`` of ``z``, the ``correction`` (the column mean of
    ``z - mean``, rounding residue) and the unbiased variance ``var``, each ``(d,)`` (``(p, d)`` for a
    stack). The centred embeddings are ``zc = (z - mean) - correction``."""

    mean: Array
    correction: Array
    var: Array


def centre(xp: Namespace, z: Array, n: int, reduce: Reduce = LOCAL) -> tuple[Array, Centring]:
    r"""``(zc, Centring(mean, correction, var))`` of one view (``n`` the global number of rows): the centred
    embeddings, a new array, and their column statistics.

    .. math::  \bar z = \frac1n \sum_i z_i, \qquad \mathrm{var}_j = \frac{1}{n-1}\sum_i (z_{ij} - \bar z_j)^2

    The mean is subtracted twice. The rounding of the first mean leaves every column of ``z - mean`` off by
    a constant of the order of ``u |mean|`` (``u`` the unit roundoff), which is all there is of a constant
    column, and which the analytic gradient would carry (it relies on the columns of ``zc`` summing to
    zero); the second subtraction, of that column mean (the ``correction``), removes it down to ``u`` times
    the spread of the column. The variance is then the sum of squares of ``zc`` itself: never negative, 0
    only where a column of ``zc`` is exactly 0.
    """
    ops = lookup(xp)

    def column_mean(x: Array) -> Array:
        return ops.column_mean(xp, x) if reduce.local else reduce.total(ops.column_sum(xp, x)) / n

    mean = column_mean(z)
    shifted = z - per_row(xp, mean)
    correction = column_mean(shifted)
    zc = ops.centred_columns(xp, shifted, correction)
    var = ops.column_var(xp, zc) if reduce.local else reduce.total(ops.column_sum_sq(xp, zc)) / (n - 1)
    return zc, Centring(mean, correction, var)


def recentre(xp: Namespace, z: Array, c: Centring) -> Array:
    """The ``zc`` of :func:`centre` again from ``z`` and its :class:`Centring`, by the same operations (so the
    same numbers): the JAX adapter centres the views once, outside the ``lax.switch`` that picks the number
    of exact columns from their variances, and the branches recentre (XLA fuses this into its readers)."""
    return lookup(xp).centred_columns(xp, z - per_row(xp, c.mean), c.correction)


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


def covariance_term(off_diagonal_sum: Array, d: int, views: int = 2, positions: int = 1) -> Array:
    r"""The off-diagonal covariance penalty: :math:`c(z)` of each view, summed over the two views (or ``2 / K``
    times the sum over ``K`` views, each view's term the mean over its ``p`` positions).

    .. math::  c(z) = \frac{1}{d} \sum_{i \neq j} C_{ij}^2

    ``off_diagonal_sum`` is :math:`\sum_{i \neq j} C_{ij}^2` summed over the views and positions (see
    :func:`off_diagonal`); divided after the sum, as the official formulation does, so that it overflows
    where that does.
    """
    return off_diagonal_sum / (d * views * positions / 2)


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


def largest_columns(xp: Namespace, var: Array, k: int) -> Array:
    """The positions of the ``k`` largest variances (of each vector of a stack), the largest first (a NaN
    counts as the largest, so that it goes into the exact columns)."""
    return lookup(xp).top_k(xp, var, k)[1]


def _columns_mask(xp: Namespace, index: Array, d: int) -> Array:
    """The ``(..., d)`` boolean mask of the columns ``index`` (``(..., k)``)."""
    columns = xp.arange(d, dtype=index.dtype, device=lookup(xp).device(xp, index))
    return xp.any(xp.expand_dims(index, axis=-1) == columns, axis=-2)


def columns_suffice(xp: Namespace, var: Array, n: int, k: int) -> Array:
    r"""Whether taking only the ``k`` largest-variance columns out of the Gram matrix keeps the Gram path
    exact: a 0-d boolean array, true when, for every view and position (every vector of ``var``, ``(..., d)``),
    with ``L`` the other columns,

    .. math::  \sum_{j \in L} \mathrm{var}_j \ \ge\ 2\,(n - 1) \max_{j \in L} \mathrm{var}_j,
               \qquad \sum_{j \in L} \mathrm{var}_j < \infty

    (the second: no variance of ``L`` overflowed; a NaN fails the first). That is the condition under which
    the ``L x L`` subtraction of :func:`off_diagonal` loses at most a factor 2 to cancellation. It is
    sufficient, not necessary: it fails wherever ``k`` columns may not be enough (one dimension, or a group
    of more than ``k``, whose variances dwarf the rest; constant columns beside a few live ones; a spectrum
    that falls off fast), and then the next count is tried, up to :func:`exact_columns`, which is exact
    either way. Both sides are over ``L`` alone (the top ``k`` masked out, nothing subtracted), so the test
    itself does not cancel; ``max`` over ``L`` is the ``(k + 1)``-th largest variance.
    """
    if k == 0:
        rest, head = var, xp.max(var, axis=-1)
    else:
        values = lookup(xp).top_k(xp, var, k + 1)[0]
        # outside the top k: below the k-th largest value (with ties at that value, fewer columns than L,
        # so a smaller sum: the test only gets stricter)
        rest = xp.where(var < values[..., k - 1 : k], var, 0.0)
        head = values[..., k]
    # NaN, and inf - inf (an overflowed variance, which is then the largest of L), fail the comparison
    return xp.all(xp.sum(rest, axis=-1) - 2 * (n - 1) * head >= 0)


def choice(xp: Namespace, var: Array, n: int, counts: tuple[int, ...]) -> Array:
    """Whether :func:`columns_suffice` proves each count of ``counts`` but the last exact for every view and
    position (``var``: their variances, ``(..., d)``): a boolean array, one entry per count, computed where
    the variances are (no host read here). The Gram path takes the first count that holds, the last (all
    :func:`exact_columns`, exact whatever the data) where none does."""
    return xp.stack([columns_suffice(xp, var, n, k) for k in counts[:-1]])


# --- the off-diagonal second moments ----------------------------------------------------------------------


class OffDiagonal(NamedTuple):
    r"""The off-diagonal covariances of one view, in the form the loss and its gradient need (see
    :func:`off_diagonal` and :func:`centred_gradient`).

    ``sum`` is :math:`\sum_{i \neq j} C_{ij}^2` (0-d, or one per position; never negative). ``zc`` is the
    view's centred embeddings as the gradient reads them.

    ``d x d`` path: ``zc`` as centred, ``m = C`` with a zero diagonal (``d x d``), nothing else.

    Gram path, with ``H`` the ``k`` exact columns (those of largest variance) and ``L`` the rest:

    * ``zc``: :math:`y = c_L\, zc`, zero in the columns of ``H`` (see :class:`GramColumns`);
    * ``m``: :math:`G = y\, y^\top` (this device's rows of it on a split batch);
    * ``top``: :math:`zc_H`, the columns of ``H`` as centred (``rows x k``);
    * ``cross``: :math:`C_{HL}` (``k x d``, zero in the columns of ``H``);
    * ``top_block``: :math:`C_{HH}` with a zero diagonal (``k x k``).

    With ``k = 0`` the ``H`` fields are ``None``.
    """

    sum: Array
    zc: Array
    m: Array
    top: Array | None = None
    cross: Array | None = None
    top_block: Array | None = None


class GramColumns(NamedTuple):
    r"""What the Gram path of :func:`off_diagonal` needs per dimension, computed for every view at once
    (:func:`gram_columns`; each field has the views, and positions, on its leading axes), then sliced for
    each view (:func:`view_of`).

    * ``top_index``: the ``k`` exact columns ``H`` (``(..., k)``), ``None`` for ``k = 0``;
    * ``exact``: the ``(..., d)`` boolean mask of ``H``, ``None`` for ``k = 0``;
    * ``scale``: the scale of each column, :math:`c_L` outside ``H`` and 0 on ``H`` (``(..., d)``, or
      ``(..., 1)`` for ``k = 0``, broadcast), with
      :math:`c_L` a power of two that brings the largest column of ``L`` to a norm of about 1
      (:func:`power_of_two_scale`), so that :math:`\|G\|_F \le 2 d` whatever the embeddings' magnitude;
    * ``inverse``: :math:`1 / c_L` (``(...)``);
    * ``unscale``: :math:`1 / ((n - 1)\, c_L^2)`, which brings a Gram entry of ``y`` to the units of ``C``
      (``(...)``);
    * ``diagonal``: :math:`\sum_{j \in L} S_{jj}^2` in the units of ``y``,
      :math:`((n-1)\, c_L^2)^2 \sum_{j \in L} \mathrm{var}_j^2` (``(...)``).
    """

    top_index: Array | None
    exact: Array | None
    scale: Array
    inverse: Array
    unscale: Array
    diagonal: Array


def gram_columns(xp: Namespace, var: Array, n: int, k: int) -> GramColumns:
    """The :class:`GramColumns` of every view (``var``: their variances, ``(..., d)``) for ``k`` exact
    columns: one selection of the top ``k`` and one computation of the scales for all of them."""
    index = exact = None
    rest = var
    if k > 0:
        index = largest_columns(xp, var, k)
        exact = _columns_mask(xp, index, var.shape[-1])
        rest = xp.where(exact, 0.0, var)
    scale, inverse = power_of_two_scale(xp, xp.sqrt((n - 1) * xp.max(rest, axis=-1)))
    columns = xp.expand_dims(scale, axis=-1)  # broadcast over the columns
    if exact is not None:
        columns = xp.where(exact, 0.0, columns)
    unscale = (inverse * inverse) / (n - 1)
    # S_jj = (n - 1) var_j in the units of y: var_j / unscale, divided before it is squared
    diagonal = sum_sq(xp, rest / xp.expand_dims(unscale, axis=-1), axes=1)
    return GramColumns(index, exact, columns, inverse, unscale, diagonal)


def view_of(columns: GramColumns, i: int) -> GramColumns:
    """View ``i``'s :class:`GramColumns` (the first axis of each field)."""
    return GramColumns(*(None if f is None else f[i, ...] for f in columns))


def off_diagonal(
    xp: Namespace,
    zc: Array,
    c: Centring,
    n: int,
    k: int,
    reduce: Reduce = LOCAL,
    columns: GramColumns | None = None,
    precision: str = "highest",
) -> OffDiagonal:
    r"""The off-diagonal covariances of one view, :math:`\sum_{i \neq j} C_{ij}^2`, computed without
    cancellation against the diagonal and without overflowing before the official formulation does.
    ``zc`` and ``c`` come from :func:`centre` (``zc`` is consumed: on the Gram path it becomes the scaled
    ``y`` where the library allows it); ``k`` is the number of exact columns (Gram path only), ``columns``
    the view's :class:`GramColumns` (computed here where not given).

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

    Columns are chosen by :func:`largest_columns`, so for a given ``k`` every shape is static: the selection
    runs under ``jax.jit`` and ``torch.compile``. The cost beside the ``n x n x d`` Gram product is the
    ``k x n x d`` product for ``S_HL`` here and one for ``zc_H C_HL`` in the gradient (each ``k / n`` of the
    Gram product: 3% at ``k = 8``, ``n = 256``; at ``k = n - 1`` one more Gram product each way, see
    :func:`use_gram`), and ``O(n^2 k)`` products. Memory: ``O(n^2)`` and the ``k x d`` block.

    On a batch split over devices (``n`` global, ``reduce`` the collectives, the centring already global, so
    every device picks the same columns), each device owns its rows of the Gram matrix,
    ``y_local @ y_all^T``, whose squared norms add up over devices; ``S_HL`` and the ``k x k`` block are the
    sums of the local ones, and so is the ``d x d`` matrix.
    """
    d = zc.shape[-1]
    if not use_gram(n, d):
        s = reduce.total(product(xp, transpose(xp, zc), zc, precision)) / (n - 1)
        diagonal = xp.eye(d, dtype=xp.bool, device=lookup(xp).device(xp, zc))
        m = xp.where(diagonal, xp.zeros_like(s), s)
        return OffDiagonal(sum_sq(xp, m, axes=2), zc, m)
    if columns is None:
        columns = gram_columns(xp, c.var, n, k)
    # the columns of H, before zc is scaled into y
    top = None if k == 0 else lookup(xp).take_columns(xp, zc, columns.top_index)
    y = lookup(xp).scale_columns(xp, zc, columns.scale)
    diagonal = columns.diagonal
    if precision == "medium":  # the Gram matrix of the rounded y, and the squared column norms of that same y
        rounded = lookup(xp).bf16_round(xp, y)
        g = gram(xp, rounded, reduce, precision)
        diagonal = sum_sq(xp, reduce.total(lookup(xp).column_sum_sq(xp, rounded)), axes=1)
    else:
        g = gram(xp, y, reduce, precision)
    # ||G_L||^2 - sum_L S_jj^2 in the units of y, then of C: times (1 / ((n - 1) c_L^2))^2, one factor at a time
    within = hinge(xp, reduce.total(sum_sq(xp, g, axes=2)) - diagonal)
    total = (within * columns.unscale) * columns.unscale
    if k == 0:
        return OffDiagonal(total, y, g)
    # H: each column scaled by its own power of two for the two products, then back to C's units
    top_scale, top_inverse = power_of_two_scale(xp, reduce.maximum(xp.max(xp.abs(top), axis=-2)) * float(n) ** 0.5)
    y_top = top * per_row(xp, top_scale)
    cross = reduce.total(product(xp, transpose(xp, y_top), y, precision)) / (n - 1)  # c_H c_L S_HL / (n - 1)
    cross = (cross * per_column(xp, top_inverse)) * _per_matrix(xp, columns.inverse)  # C_HL
    block = reduce.total(product(xp, transpose(xp, y_top), y_top, precision)) / (n - 1)
    block = (block * per_column(xp, top_inverse)) * per_row(xp, top_inverse)  # C_HH
    block = xp.where(xp.eye(k, dtype=xp.bool, device=lookup(xp).device(xp, block)), 0.0, block)
    total = total + 2 * sum_sq(xp, cross, axes=2) + sum_sq(xp, block, axes=2)
    return OffDiagonal(total, y, g, top, cross, block)


def _per_matrix(xp: Namespace, v: Array) -> Array:
    """A per-matrix scalar (``(...)``, or 0-d) shaped to broadcast against a stack of matrices ``(..., k, d)``."""
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
    w: Array,
    kappa: Any,
    reduce: Reduce = LOCAL,
    columns: GramColumns | None = None,
    weights: Array | None = None,
    on_top: tuple[Array, Array] | None = None,
    precision: str = "highest",
) -> Array:
    r"""The variance and covariance part of one view's gradient,

    .. math::  zc \odot w + \kappa\, zc\,(C - D), \qquad D = \operatorname{diag} C = \operatorname{diag}(\mathrm{var}),

    (``w`` a ``d``-vector of column weights, :math:`\kappa` a scalar) from :func:`off_diagonal`'s ``off``,
    without cancelling against the diagonal and without overflowing before the result does.

    ``d x d`` path: :math:`zc \odot w + zc\,(\kappa\, m)`, ``m`` being ``C`` with a zero diagonal.

    Gram path (``columns`` the view's :class:`GramColumns`), on the columns of ``L`` (where ``y = c_L zc``):

    .. math::  y \odot \underbrace{\frac{w - \kappa\,\mathrm{var}}{c_L}}_{\text{weights}}
               + \underbrace{\frac{\kappa}{(n-1)\,c_L^2}}_{\text{on\_top}} \frac{G}{c_L}\, y
               + (\kappa\, zc_H)\, C_{HL},

    where the only subtraction is against the variances outside the top ``k``; on the columns of ``H``:

    .. math::  zc_H \odot w_H + \frac{\kappa}{(n-1)\,c_L^2}\, G\, zc_H + (\kappa\, zc_H)\, C_{HH},

    an ``n x k`` block written into place, where the other products are zero since ``y`` and ``C_{HL}`` are.
    ``weights`` (zero on ``H``) and ``on_top`` are per-dimension and per-view factors that
    :func:`vicreg._loss.gradient` computes for every view at once (:func:`gram_factors`). The two products
    on ``L`` stay apart: :math:`(G_L + zc_H zc_H^\top)\, zc_L` in one product would round the entries of
    ``G_L`` to the scale of the large columns' Gram matrix (10 times the official float32 gradient error
    with a few columns at ``1e4``), while :math:`zc_H\, C_{HL}` is the official formulation's own product.
    The factors :math:`1 / c_L` are applied one at a time, on the ``n x n`` matrix. Besides these products,
    everything is ``O(n^2 k)`` or one pass over ``n x d``.
    """
    ops = lookup(xp)
    if columns is None:  # d x d
        return ops.multiply_add(xp, product(xp, off.zc, kappa * off.m, precision), off.zc, w)
    if weights is None or on_top is None:
        raise ValueError("vicreg: the Gram path's gradient needs the weights and factors of gram_factors")
    on_y = _per_matrix(xp, on_top[1])  # kappa / ((n - 1) c_L^3): G times this, times y, is in zc's units
    g_y = product(xp, off.m * on_y, reduce.gather_rows(off.zc), precision)
    if off.top is None:
        return ops.multiply_add(xp, g_y, off.zc, weights)
    scaled_g = off.m * _per_matrix(xp, on_top[0])  # kappa G / ((n - 1) c_L^2): G_L in zc's units, times kappa / (n - 1)
    p = ops.multiply_add(xp, g_y, off.zc, weights)
    scaled_top = kappa * off.top
    if precision == "highest":
        p = ops.add_product(xp, p, scaled_top, off.cross)
    else:
        p = p + product(xp, scaled_top, off.cross, precision)
    top_w = per_row(xp, _take(xp, w, columns.top_index))
    h = off.top * top_w + product(xp, scaled_g, reduce.gather_rows(off.top), precision)
    h = h + product(xp, scaled_top, off.top_block, precision)
    return ops.set_columns(xp, p, columns.top_index, h)


def gram_factors(
    xp: Namespace, columns: GramColumns, w: Array, var: Array, kappa: Any
) -> tuple[Array, tuple[Array, Array]]:
    """``(weights, on_top)`` of :func:`centred_gradient` for every view at once: ``(w - kappa var) / c_L``,
    zero on the exact columns, and the pair ``kappa / ((n - 1) c_L^2)``, ``kappa / ((n - 1) c_L^3)``."""
    weights = (w - kappa * var) * xp.expand_dims(columns.inverse, axis=-1)
    if columns.exact is not None:
        weights = xp.where(columns.exact, 0.0, weights)
    on_zc = kappa * columns.unscale
    return weights, (on_zc, on_zc * columns.inverse)
