r"""The VICReg loss of ``K`` views and its analytic gradient, on checked arrays of the compute dtype, against
the Python array API standard.

.. math::

    \mathcal{L} = \lambda\, s + \mu\, v + \nu\, c

with the terms of :mod:`vicreg._terms`: for two views, ``s`` the invariance between them, ``v`` the
variance term of the pair and ``c = c(Z^1) + c(Z^2)``. For ``K`` views (VICRegL's global loss): ``s`` is
the mean of the invariance over the ordered pairs ``(i, j)``, ``i`` one of the first two views and ``j``
any other view; ``v`` is the mean of the views' hinges (``official``; twice that, ``paper``); ``c`` is
``2 / K`` times the sum of the views' covariance terms, so that ``K = 2`` is the loss above exactly. One
view (``K = 1``) has no invariance: that is the VCReg regulariser.

:func:`statistics` is the forward pass, :func:`gradient` the
backward pass reusing its statistics; the entry points (:mod:`vicreg._api`, :mod:`vicreg.torch`,
:mod:`vicreg.jax`) check the inputs, choose the collectives and the autodiff wrapper, and call these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from . import _rank_me, _terms
from ._config import Config, VCRegTerms, VCRegTermsWithRankMe, VICRegTerms, VICRegTermsWithRankMe
from ._native import lookup
from ._rank_me import uncentred_gram
from ._terms import (
    LOCAL,
    Centring,
    GramColumns,
    OffDiagonal,
    Reduce,
    centre,
    centred_gradient,
    choice,
    column_counts,
    covariance_term,
    gram_columns,
    gram_factors,
    invariance_term,
    off_diagonal,
    recentre,
    variance_term,
    view_of,
)

Array = Any


class Statistics(NamedTuple):
    """What the forward pass computes and the analytic gradient reuses: per view in the layout of
    :func:`positions_first` (``inputs``, ``views``), or stacked over the views (``columns``, ``var``,
    ``std``: the views on the first axis)."""

    inputs: tuple[Array, ...]  # the views, whose differences the invariance's gradient needs
    views: tuple[OffDiagonal, ...]  # each view's off-diagonal covariances, with its centred embeddings
    columns: GramColumns | None  # the Gram path's exact columns and scales of every view; None on d x d
    var: Array  # the unbiased variances, (K, d) or (K, p, d)
    std: Array  # sqrt(var + eps)
    invariance: Array
    variance: Array
    covariance: Array
    loss: Array
    per: int = 2  # the number of views the variance and covariance terms are averaged as
    rank_me: Array | None = None  # each view's RankMe, (K,), where asked for
    precision: str = "highest"  # the products' precision (vicreg.PRECISIONS), as resolved for these inputs


def invariance_pairs(views: int) -> tuple[tuple[int, int, float], ...]:
    """``(i, j, weight)`` for each pair of views whose invariance enters the loss, ``i < j``: the mean over the
    ordered pairs ``(i, j)``, ``i`` one of the first two views and ``j`` any other view, as VICRegL's global
    loss takes it. The pair of the first two views appears twice among the ``2 (K - 1)`` ordered pairs;
    ``weight`` counts that. For two views: ``((0, 1, 1.0),)``; for one view, none.

    >>> invariance_pairs(2)
    ((0, 1, 1.0),)
    >>> invariance_pairs(3)  # (0, 1), (1, 0), (0, 2), (1, 2) of 4 ordered pairs
    ((0, 1, 0.5), (0, 2, 0.25), (1, 2, 0.25))
    """
    if views < 2:
        return ()
    ordered = 2 * (views - 1)
    return ((0, 1, 2.0 / ordered), *((i, j, 1.0 / ordered) for j in range(2, views) for i in (0, 1)))


def positions_first(xp: Any, z: Array) -> Array:
    """A view in the layout of the statistics: ``(n, d)`` as it is; ``(n, ..., d)`` as ``(p, n, d)``, one
    ``(n, d)`` problem per position along the middle axes (laid out row-major where the library has layouts,
    so that the batched products read rows in order)."""
    if z.ndim == 2:
        return z
    n, d = z.shape[0], z.shape[-1]
    return lookup(xp).row_major(xp, xp.permute_dims(xp.reshape(z, (n, -1, d)), (1, 0, 2)))


def statistics(
    xp: Any,
    views: Sequence[Array],
    config: Config,
    *,
    n: int | None = None,
    reduce: Reduce = LOCAL,
    columns: int | None = None,
    centrings: Sequence[Centring] | None = None,
    per: int | None = None,
    rank_me: bool = False,
    precision: str | None = None,
) -> Statistics:
    """The forward pass on checked arrays of the compute dtype (``views``: ``K >= 1`` arrays of one shape).

    On one device the keywords keep their defaults. When the batch is split over devices, an adapter passes
    the global batch size ``n`` and the collectives ``reduce`` (see :class:`vicreg._terms.Reduce`); the result
    is then the loss of the global batch on every device, and the math stays here.

    The number of exact columns of the Gram path (see :func:`vicreg._terms.off_diagonal`), the same for every
    view, is ``columns`` where given. Otherwise, on one device, :func:`vicreg._terms.choice` tells which
    counts are exact for every view, a small boolean array computed where the variances are and read on the
    host once per call (the ``host_read`` primitive: one device-to-host transfer on a GPU), and the
    cheapest of them is taken; where the library cannot read it without breaking a trace
    (``torch.compile``, ``torch.func.vmap``, ``jax.jit``), and on a split batch, all ``n - 1``, which is exact
    whatever the data.
    ``centrings``, the views' :func:`centre_views` computed beforehand, replaces their centring here (the
    same numbers): the JAX adapter computes them once, outside the ``lax.switch`` that picks ``columns``
    from the variances.

    The views are processed one after another (each view's ``n x d`` arrays stay in the cache of a CPU, where
    a stack of all of them may not: at ``256 x 8192`` the products of a stack of two ran twice as slowly),
    the small per-dimension vectors of all of them together. Inputs ``(n, ..., d)`` (more than two axes) are
    one ``(n, d)`` problem per position along the middle axes (:func:`positions_first`), and every term is
    the mean over the positions of that position's term; :func:`gradient` returns to the inputs' shape.

    ``per`` is the number of views the variance and covariance terms are averaged as (``len(views)`` by
    default): the VCReg regulariser of one view is this loss of ``views = (z,)`` with ``per = 2``, half of
    what that view adds to the loss of a pair.

    ``precision`` is the level of the products (:data:`vicreg.PRECISIONS`): where given (an adapter's
    default, e.g. under ``torch.autocast``), else ``config.precision``, else ``"highest"``; float64 inputs
    always take ``"highest"``. The gradient takes the level of its statistics.

    ``rank_me=True`` adds each view's RankMe (:mod:`vicreg._rank_me`) from the matrices computed here: one
    symmetric eigenvalue solve per view (and position) more, no product of the ``n x d`` arrays but a
    matrix-vector one.

    >>> import numpy as np, vicreg
    >>> from vicreg._config import Config
    >>> z1, z2 = np.random.default_rng(0).standard_normal((2, 8, 32))
    >>> s = statistics(np, (z1, z2), Config())
    >>> bool(np.isclose(s.loss, vicreg.vicreg_loss(z1, z2))), s.var.shape   # the views' variances, stacked
    (True, (2, 32))
    """
    count, shape = len(views), tuple(views[0].shape)
    per = count if per is None else per
    positions = math.prod(shape[1:-1])
    zs = [positions_first(xp, z) for z in views]
    if len(shape) > 2:
        reduce = _along_rows(xp, reduce)
    rows, d = shape[0], shape[-1]
    n = rows if n is None else n
    ops = lookup(xp)
    level = products_precision(xp, zs[0], config, precision)
    sq_dist = None
    for i, j, weight in invariance_pairs(count):
        part = ops.sum_sq_difference(xp, zs[i], zs[j])
        part = part if part.ndim == 0 else xp.sum(part)
        part = part if weight == 1.0 else weight * part
        sq_dist = part if sq_dist is None else sq_dist + part
    # the invariance of each pair, averaged over the pairs and the positions (the mean over n * p rows)
    if sq_dist is None:  # one view: no invariance
        invariance = xp.zeros((), dtype=zs[0].dtype, device=ops.device(xp, zs[0]))
    else:
        invariance = invariance_term(reduce.total(sq_dist), n * positions, d, config.convention)
    if centrings is None:
        centred, centrings = zip(*(centre(xp, z, n, reduce) for z in zs))
    else:
        centred = tuple(recentre(xp, z, c) for z, c in zip(zs, centrings))
    # the per-dimension vectors of all views together, the n x d arrays one view after another
    var = xp.stack([c.var for c in centrings])
    k = _exact_columns(xp, var, n, d, reduce, columns)
    gram = gram_columns(xp, var, n, k) if _terms.use_gram(n, d) else None  # (tests force a path through it)
    offs = tuple(
        off_diagonal(xp, x, c, n, k, reduce, None if gram is None else view_of(gram, i), level)
        for i, (x, c) in enumerate(zip(centred, centrings))
    )
    # the views' terms averaged (each view's is itself the mean over its positions); "paper" doubles the
    # variance (v(z1) + v(z2) for two views), and both conventions take 2 / K times the sum of the views'
    # covariance terms (c(z1) + c(z2))
    std = xp.sqrt(var + config.eps)
    variance = variance_term(xp, std, config.variance_target)  # the mean over the views
    factor = (1.0 if config.convention == "official" else 2.0) * count / per
    variance = variance if factor == 1.0 else factor * variance
    covariance = covariance_term(xp.sum(xp.stack([off.sum for off in offs])), d, per, positions)
    loss = _weighted(config.sim_coeff, invariance) + _weighted(config.std_coeff, variance)
    loss = loss + _weighted(config.cov_coeff, covariance)
    ranks = None
    if rank_me:
        grams, noise = zip(
            *(
                uncentred_gram(xp, off, c, n, reduce, None if gram is None else view_of(gram, i))
                for i, (off, c) in enumerate(zip(offs, centrings))
            )
        )
        # (K,) or (K, p): one per view and position
        ranks = _rank_me.rank_me(xp, xp.stack(grams), xp.stack(noise), zs[0].dtype)
        ranks = ranks if ranks.ndim == 1 else xp.mean(xp.reshape(ranks, (count, -1)), axis=-1)
        if not reduce.local:  # equal on every device; the maximum over them says so to a tracer (JAX's types)
            ranks = reduce.maximum(ranks)
    return Statistics(tuple(zs), offs, gram, var, std, invariance, variance, covariance, loss, per, ranks, level)


def products_precision(xp: Any, z: Array, config: Config, precision: str | None = None) -> str:
    """The level of the products for the compute-dtype array ``z``: ``precision`` where given, else
    ``config.precision``, else ``"highest"``; always ``"highest"`` in float64."""
    level = precision if precision is not None else config.precision
    return "highest" if level is None or z.dtype == xp.float64 else level


def _weighted(coefficient: float, term: Array) -> Array:
    """``coefficient * term``, without the product where the coefficient is 1."""
    return term if coefficient == 1.0 else coefficient * term


def _exact_columns(xp: Any, var: Array, n: int, d: int, reduce: Reduce, columns: int | None) -> int:
    """The Gram path's number of exact columns (0 on the ``d x d`` path): ``columns`` where given, else the
    cheapest count :func:`vicreg._terms.choice` proves exact for every view, read on the host where the
    library allows it, else all ``n - 1``."""
    if not _terms.use_gram(n, d):
        return 0
    if columns is not None:
        return columns
    counts = column_counts(n, d)
    if not reduce.local or len(counts) == 1:
        return counts[-1]
    holds = lookup(xp).host_read(xp, choice(xp, var, n, counts))  # one read from the device, or None
    return counts[-1] if holds is None else next((k for k, ok in zip(counts, holds) if ok), counts[-1])


def centre_views(
    xp: Any, views: Sequence[Array], *, n: int | None = None, reduce: Reduce = LOCAL
) -> tuple[Centring, ...]:
    """The :class:`vicreg._terms.Centring` of each view, to pass back to :func:`statistics` as
    ``centrings``."""
    if views[0].ndim > 2:
        reduce = _along_rows(xp, reduce)
    n = views[0].shape[0] if n is None else n
    return tuple(centre(xp, positions_first(xp, z), n, reduce)[1] for z in views)


def _along_rows(xp: Any, reduce: Reduce) -> Reduce:
    """The collectives for a stack ``(B, rows, d)``: an adapter's ``gather_rows`` works along the first axis."""
    if reduce.local:
        return reduce
    gather_rows = reduce.gather_rows

    def gather(x: Array) -> Array:
        return xp.permute_dims(gather_rows(xp.permute_dims(x, (1, 0, 2))), (1, 0, 2))

    return reduce._replace(gather_rows=gather)


def terms_from_statistics(xp: Any, s: Statistics) -> VICRegTerms | VICRegTermsWithRankMe:
    """The :class:`vicreg.VICRegTerms` of the forward statistics: the loss and terms as computed, and the
    diagnostics ``std_mean`` and ``std_min`` from the views' variances."""
    fields = (s.loss, s.invariance, s.variance, s.covariance, *diagnostics(xp, s.var))
    return VICRegTerms(*fields) if s.rank_me is None else VICRegTermsWithRankMe(*fields, s.rank_me)


def vcreg_from_statistics(xp: Any, s: Statistics) -> VCRegTerms | VCRegTermsWithRankMe:
    """The :class:`vicreg.VCRegTerms` of the statistics of one view (``per = 2``)."""
    fields = (s.loss, s.variance, s.covariance, *diagnostics(xp, s.var))
    return VCRegTerms(*fields) if s.rank_me is None else VCRegTermsWithRankMe(*fields, s.rank_me[0])


def diagnostics(xp: Any, var: Array) -> tuple[Array, Array]:
    """``(std_mean, std_min)``: the mean and the minimum of the per-dimension standard deviations
    ``sqrt(var_j)`` (no ``eps``) over every view (and position)."""
    std = xp.sqrt(var)
    return xp.mean(std), xp.min(std)


def gradient(
    xp: Any,
    s: Statistics,
    config: Config,
    *,
    n: int | None = None,
    reduce: Reduce = LOCAL,
    shape: Any,
    scale: Any = 1.0,
) -> tuple[Array, ...]:
    r"""The analytic gradient of the loss with respect to each view, reusing the forward statistics, times
    ``scale``.

    For each view, with the ``d``-vectors ``std = sqrt(var + eps)`` and ``mask = [gamma - std > 0]``:

    .. math::

        \frac{\partial \mathcal L}{\partial z^i} = \sum_j a_{ij}\,(z^i - z^j) + zc \odot w + \kappa\, zc\,(C - D),

        w_j = -\frac{s\,\mu}{d\,(n-1)} \frac{\mathrm{mask}_j}{\mathrm{std}_j},\qquad
        \kappa = \frac{2}{K} \frac{4\nu}{d\,(n-1)},\qquad D = \operatorname{diag} C,

    with ``s = 1/K`` (official) or ``2/K`` (paper), and :math:`a_{ij} = 2 \lambda\, \omega_{ij} / (n d)`
    (official) or :math:`2 \lambda\, \omega_{ij} / n` (paper) for each pair of :func:`invariance_pairs` of
    weight :math:`\omega_{ij}`, with the opposite sign for ``z^j``. For two views: :math:`a (z^1 - z^2)`
    with :math:`a = 2\lambda / (nd)`, ``s = 1/2``, :math:`\kappa = 4\nu / (d (n-1))`. The centring needs no
    term of its own: every column of ``zc`` sums to zero (to rounding of the order of ``u`` times its
    spread, see :func:`vicreg._terms.centre`).

    ``zc (C - D)`` and the ``zc * w`` beside it come from :func:`vicreg._terms.centred_gradient`, which never
    cancels against the diagonal ``D``. It costs one more ``n x n x d`` product per
    view than the forward pass; no ``d x d`` matrix when ``2 n <= d``.

    On a batch split over devices (``n`` the global batch size, ``reduce`` as in :func:`statistics`) each
    device gets the exact gradient of its own rows. ``scale`` (a number or a 0-d array, e.g. the upstream
    gradient of the loss in a backward pass) is folded into the scalar factors. ``shape`` is the views'
    shape; for ``(n, ..., d)`` inputs each position's gradient is its own divided by ``p``, and the
    gradients come back from the layout of :func:`positions_first` to that shape. Each gradient is a new
    array of its view's shape.
    """
    count, per = len(s.views), s.per
    rows, d = shape[0], shape[-1]
    positions = math.prod(tuple(shape)[1:-1])
    n = rows if n is None else n
    if len(shape) > 2:
        reduce = _along_rows(xp, reduce)
    official = config.convention == "official"
    # Python floats first, then one product with scale (an array in a backward pass)
    a = 2.0 * config.sim_coeff / ((n * d if official else n) * positions)  # times scale, with each pair's weight
    kappa = ((2.0 / per) * 4.0 * config.cov_coeff / (d * (n - 1) * positions)) * scale
    cv = (-(1.0 if official else 2.0) / per * config.std_coeff / (d * (n - 1) * positions)) * scale
    w = xp.where(s.std < config.variance_target, cv / s.std, 0.0)  # 0 where the hinge is flat; NaN: 0 here
    if s.columns is None:  # d x d
        grads = [
            centred_gradient(xp, off, w[i, ...], kappa, reduce, precision=s.precision) for i, off in enumerate(s.views)
        ]
    else:
        weights, on_top = gram_factors(xp, s.columns, w, s.var, kappa)
        grads = [
            centred_gradient(
                xp,
                off,
                w[i, ...],
                kappa,
                reduce,
                view_of(s.columns, i),
                weights[i, ...],
                tuple(f[i, ...] for f in on_top),
                s.precision,
            )
            for i, off in enumerate(s.views)
        ]
    # the invariance: + a_ij (z_i - z_j) on view i, the opposite on view j
    ops = lookup(xp)
    for i, j, weight in invariance_pairs(count):
        gi, gj = ops.add_difference(xp, grads[i], grads[j], s.inputs[i], s.inputs[j], weight * a * scale)
        grads = [gi if v == i else gj if v == j else g for v, g in enumerate(grads)]
    return tuple(g if len(shape) == 2 else _rows_first(xp, g, shape) for g in grads)


def _rows_first(xp: Any, g: Array, shape: Any) -> Array:
    """``(p, n, d)`` back to ``shape`` ``(n, ..., d)``."""
    return xp.reshape(xp.permute_dims(g, (1, 0, 2)), tuple(shape))
