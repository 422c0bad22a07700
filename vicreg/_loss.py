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

The views are processed as one stack (``(K p, n, d)``, with ``p`` positions for inputs ``(n, ..., d)``), so
every operation runs once for all of them. :func:`statistics` is the forward pass, :func:`gradient` the
backward pass reusing its statistics; the entry points (:mod:`vicreg._api`, :mod:`vicreg.torch`,
:mod:`vicreg.jax`) check the inputs, choose the collectives and the autodiff wrapper, and call these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from ._config import Config, VICRegTerms
from ._native import lookup
from ._terms import (
    LOCAL,
    Centring,
    OffDiagonal,
    Reduce,
    centre,
    centred_gradient,
    choice,
    column_counts,
    covariance_term,
    invariance_term,
    largest_first,
    off_diagonal,
    per_row,
    sum_sq,
    use_gram,
    variance_term,
)

Array = Any


class Statistics(NamedTuple):
    """What the forward pass computes and the analytic gradient reuses. ``view`` and ``var`` are the stack of
    every view (and position): ``(K p, ...)``, view after view."""

    diffs: tuple[Array, ...]  # z_i - z_j for each pair of invariance_pairs(K), in the layout of stack_views
    view: OffDiagonal  # the off-diagonal covariances of every view, with its centred embeddings
    var: Array  # the unbiased variances of every view, (K p, d)
    std: Array  # sqrt(var + eps)
    invariance: Array
    variance: Array
    covariance: Array
    loss: Array


def invariance_pairs(views: int) -> tuple[tuple[int, int, float], ...]:
    """``(i, j, weight)`` for each pair of views whose invariance enters the loss, ``i < j``: the mean over the
    ordered pairs ``(i, j)``, ``i`` one of the first two views and ``j`` any other view, as VICRegL's global
    loss takes it. The pair of the first two views appears twice among the ``2 (K - 1)`` ordered pairs;
    ``weight`` counts that. For two views: ``((0, 1, 1.0),)``; for one view, none."""
    if views < 2:
        return ()
    ordered = 2 * (views - 1)
    return ((0, 1, 2.0 / ordered), *((i, j, 1.0 / ordered) for j in range(2, views) for i in (0, 1)))


def stack_views(xp: Any, views: Sequence[Array]) -> Array:
    """The views as one stack ``(K p, n, d)``: ``(n, d)`` views as ``(K, n, d)``; ``(n, ..., d)`` views as one
    ``(n, d)`` problem per position along the middle axes, view after view (one copy, row-major)."""
    if views[0].ndim == 2:
        return xp.stack(tuple(views))
    n, d = views[0].shape[0], views[0].shape[-1]
    each = [xp.permute_dims(xp.reshape(z, (n, -1, d)), (1, 0, 2)) for z in views]
    stacked = xp.stack(each)
    return xp.reshape(stacked, (-1, n, d))


def statistics(
    xp: Any,
    views: Sequence[Array],
    config: Config,
    *,
    n: int | None = None,
    reduce: Reduce = LOCAL,
    columns: int | None = None,
    centring: Centring | None = None,
) -> Statistics:
    """The forward pass on checked arrays of the compute dtype (``views``: ``K >= 1`` arrays of one shape).

    On one device the keywords keep their defaults. When the batch is split over devices, an adapter passes
    the global batch size ``n`` and the collectives ``reduce`` (see :class:`vicreg._terms.Reduce`); the result
    is then the loss of the global batch on every device, and the math stays here.

    The number of exact columns of the Gram path (see :func:`vicreg._terms.off_diagonal`) is ``columns``
    where given. Otherwise, on one device, :func:`vicreg._terms.choice` picks the cheapest count that is
    exact for every view, a 0-d array read on the host once per call (the ``host_int`` primitive); where the
    library cannot read it without breaking a trace (``torch.compile``, ``torch.func``, ``jax.jit``), and on
    a split batch, all ``n - 1``, which is exact whatever the data. ``centring``, the views'
    :func:`centre_views` computed beforehand, replaces their centring here (the same numbers): the JAX
    adapter computes it once, outside the ``lax.switch`` that picks ``columns`` from the variances.

    Inputs ``(n, ..., d)`` (more than two axes) are one ``(n, d)`` problem per position along the middle
    axes (:func:`stack_views`), and every term is the mean over the positions of that position's term;
    :func:`gradient` returns to the inputs' shape.
    """
    count, shape = len(views), tuple(views[0].shape)
    positions = math.prod(shape[1:-1])
    z = stack_views(xp, views)
    layout = positions if len(shape) > 2 else None  # how _view finds a view in the stack
    reduce = _along_rows(xp, reduce)  # the stack's rows are on its second axis
    rows, d = shape[0], shape[-1]
    n = rows if n is None else n
    diffs, sq_dist = [], None
    for i, j, weight in invariance_pairs(count):
        diff = _view(z, i, layout) - _view(z, j, layout)
        diffs.append(diff)
        part = sum_sq(xp, diff, axes=2)
        part = part if part.ndim == 0 else xp.sum(part)
        part = part if weight == 1.0 else weight * part
        sq_dist = part if sq_dist is None else sq_dist + part
    # the invariance of each pair, averaged over the pairs and the positions (the mean over n * p rows)
    if sq_dist is None:  # one view: no invariance
        invariance = xp.zeros((), dtype=z.dtype, device=lookup(xp).device(xp, z))
    else:
        invariance = invariance_term(reduce.total(sq_dist), n * positions, d, config.convention)
    if centring is None:
        shifted, centring = centre(xp, z, n, reduce)
    else:
        shifted = z - per_row(xp, centring.mean)
    k = _exact_columns(xp, centring.var, n, d, reduce, columns)
    view = off_diagonal(xp, shifted, centring, n, k, reduce)
    # the views' terms averaged (each view's is itself the mean over its positions); "paper" doubles the
    # variance (v(z1) + v(z2) for two views), and both conventions take 2 / K times the sum of the views'
    # covariance terms (c(z1) + c(z2))
    std = xp.sqrt(centring.var + config.eps)
    variance = variance_term(xp, std, config.variance_target)
    if config.convention != "official":
        variance = 2 * variance
    covariance = 2 * xp.mean(covariance_term(view.sum, d))
    loss = config.sim_coeff * invariance + config.std_coeff * variance + config.cov_coeff * covariance
    return Statistics(tuple(diffs), view, centring.var, std, invariance, variance, covariance, loss)


def _view(z: Array, i: int, positions: int | None) -> Array:
    """View ``i`` of the stack: ``(n, d)`` for ``(n, d)`` inputs (``positions`` None), else ``(p, n, d)``."""
    return z[i, ...] if positions is None else z[i * positions : (i + 1) * positions, ...]


def _exact_columns(xp: Any, var: Array, n: int, d: int, reduce: Reduce, columns: int | None) -> int:
    """The Gram path's number of exact columns (0 on the ``d x d`` path): ``columns`` where given, else the
    cheapest count :func:`vicreg._terms.choice` proves exact, read on the host where the library allows it,
    else all ``n - 1``."""
    if not use_gram(n, d):
        return 0
    if columns is not None:
        return columns
    counts = column_counts(n, d)
    if not reduce.local or len(counts) == 1:
        return counts[-1]
    chosen = lookup(xp).host_int(xp, choice(xp, largest_first(xp, var), n, counts))
    return counts[-1] if chosen is None else counts[chosen]


def centre_views(xp: Any, views: Sequence[Array], *, n: int | None = None, reduce: Reduce = LOCAL) -> Centring:
    """The :class:`vicreg._terms.Centring` of the stack of views, to pass back to :func:`statistics` as
    ``centring``."""
    reduce = _along_rows(xp, reduce)
    n = views[0].shape[0] if n is None else n
    return centre(xp, stack_views(xp, views), n, reduce)[1]


def _along_rows(xp: Any, reduce: Reduce) -> Reduce:
    """The collectives for a stack ``(B, rows, d)``: an adapter's ``gather_rows`` works along the first axis."""
    if reduce.local:
        return reduce
    gather_rows = reduce.gather_rows

    def gather(x: Array) -> Array:
        return xp.permute_dims(gather_rows(xp.permute_dims(x, (1, 0, 2))), (1, 0, 2))

    return reduce._replace(gather_rows=gather)


def terms_from_statistics(xp: Any, s: Statistics) -> VICRegTerms:
    """The :class:`vicreg.VICRegTerms` of the forward statistics: the loss and terms as computed, and the
    diagnostics ``std_mean`` and ``std_min`` from the views' variances."""
    return VICRegTerms(s.loss, s.invariance, s.variance, s.covariance, *diagnostics(xp, s.var))


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

    ``zc (C - D)`` and the ``zc * w`` beside it come from :func:`vicreg._terms.centred_gradient`, for every
    view at once, which never cancels against the diagonal ``D``. It costs one more ``n x n x d`` product per
    view than the forward pass; no ``d x d`` matrix when ``2 n <= d``.

    On a batch split over devices (``n`` the global batch size, ``reduce`` as in :func:`statistics`) each
    device gets the exact gradient of its own rows. ``scale`` (a number or a 0-d array, e.g. the upstream
    gradient of the loss in a backward pass) is folded into the scalar factors. ``shape`` is the views'
    shape; for ``(n, ..., d)`` inputs each position's gradient is its own divided by ``p``, and the
    gradients come back from the stack's layout to that shape. Each gradient is a new array of its view's
    shape (for two views and more; one view's is the stack's only matrix).
    """
    stacked, d = s.view.zc.shape[0], s.view.zc.shape[-1]
    positions = math.prod(tuple(shape)[1:-1])
    count = stacked // positions
    rows = s.view.zc.shape[-2]
    n = rows if n is None else n
    reduce = _along_rows(xp, reduce)
    official = config.convention == "official"
    # Python floats first, then one product with scale (an array in a backward pass)
    a = 2.0 * config.sim_coeff / ((n * d if official else n) * positions)  # times scale, with each pair's weight
    kappa = ((2.0 / count) * 4.0 * config.cov_coeff / (d * (n - 1) * positions)) * scale
    cv = ((1.0 if official else 2.0) / count * config.std_coeff / (d * (n - 1) * positions)) * scale
    w = xp.where(s.std >= config.variance_target, 0.0, -cv / s.std)
    g = centred_gradient(xp, s.view, s.var, w, kappa, n, reduce)
    layout = positions if len(shape) > 2 else None
    # the invariance: + a_ij (z_i - z_j) on view i, the opposite on view j, one product per pair
    shifts = [(i, j, (weight * a * scale) * diff) for (i, j, weight), diff in zip(invariance_pairs(count), s.diffs)]
    grads = []
    for view in range(count):
        gv = _view(g, view, layout)
        for i, j, shift in shifts:
            gv = gv + shift if view == i else (gv - shift if view == j else gv)
        grads.append(gv if layout is None else _rows_first(xp, gv, shape))
    return tuple(grads)


def _rows_first(xp: Any, g: Array, shape: Any) -> Array:
    """``(p, n, d)`` back to ``shape`` ``(n, ..., d)``."""
    return xp.reshape(xp.permute_dims(g, (1, 0, 2)), tuple(shape))
