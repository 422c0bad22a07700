"""The VICReg loss of a pair of views, its terms, and its analytic gradient.

The loss (convention "official" by default)::

    loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance

with the terms of :mod:`vicreg._terms`. The public functions accept any array-API arrays; the computation
never builds the ``d x d`` covariance when ``2 n <= d`` (it uses the ``n x n`` Gram matrix, which has the
same Frobenius norm, with the largest-variance columns (none where the variances are comparable, else 8,
or ``n - 1`` where 8 would not do) treated exactly so that nothing cancels against the diagonal; see
:func:`vicreg._terms.off_diagonal`), so at the official ``d = 8192`` it needs ``O(n^2)`` extra memory
instead of ``O(d^2)``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from . import _checks, _terms
from ._precision import in_full_precision
from ._terms import (
    Centring,
    OffDiagonal,
    _library,
    add_difference,
    centre,
    centred_gradient,
    centring,
    combine,
    covariance_term,
    difference,
    invariance_term,
    off_diagonal,
    recentre,
    sum_sq_difference,
    variance_term,
)

Array = Any


class VICRegTerms(NamedTuple):
    """The loss, its unweighted terms and collapse diagnostics; every field is a 0-d array.

    A ``NamedTuple``, so JAX treats it as a pytree and it crosses ``jax.jit`` boundaries;
    ``terms._asdict()`` gives a dict for logging.

    >>> import numpy as np, vicreg
    >>> z1, z2 = np.random.default_rng(0).standard_normal((2, 32, 64))
    >>> terms = vicreg.vicreg_terms(z1, z2)
    >>> terms._fields
    ('loss', 'invariance', 'variance', 'covariance', 'std_mean', 'std_min')
    >>> bool(terms.loss == 25 * terms.invariance + 25 * terms.variance + terms.covariance)
    True

    Attributes:
        loss: The weighted loss, ``sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance``;
            the only field a backward pass needs.
        invariance: The unweighted invariance term, as the convention defines it.
        variance: The unweighted variance (hinge) term of the pair of views, as the convention defines it.
        covariance: The unweighted covariance term, ``c(z1) + c(z2)``.
        std_mean: The mean, over both views and all ``d`` dimensions, of the per-dimension standard
            deviation ``sqrt(var_j)`` (unbiased, without ``eps``): healthy training keeps it near
            ``variance_target``; complete collapse sends it to 0.
        std_min: The minimum of the same standard deviations: a dimension that collapses shows here first.
    """

    loss: Array
    invariance: Array
    variance: Array
    covariance: Array
    std_mean: Array
    std_min: Array


class _Statistics(NamedTuple):
    """What the forward pass computes and the analytic gradient reuses."""

    diff: Any  # z1 - z2, as vicreg._terms.difference forms it (an array, or the pair (z1, z2))
    zc1: Array  # centred; on the Gram path with the top columns zeroed (they are in off1.top)
    zc2: Array
    var1: Array
    var2: Array
    off1: OffDiagonal  # the off-diagonal second moments of view 1 (Gram path or d x d)
    off2: OffDiagonal
    invariance: Array
    variance: Array
    covariance: Array
    loss: Array


@dataclass(frozen=True)
class VICRegLoss:
    r"""The VICReg loss as an immutable, callable configuration.

    .. math::

        \mathcal{L} = \lambda\, s(Z^1, Z^2) + \mu\, v(Z^1, Z^2) + \nu\, [c(Z^1) + c(Z^2)]

    with ``lambda = sim_coeff``, ``mu = std_coeff``, ``nu = cov_coeff``, ``gamma = variance_target``.
    ``convention="official"`` (default) computes what ``facebookresearch/vicreg`` computes: the invariance
    ``s`` is ``mean((z1 - z2)^2)`` over all ``n d`` elements and the variance term ``v`` averages the two
    views' hinges. ``convention="paper"`` follows the paper's equations: invariance
    ``(1/n) sum_i ||z1_i - z2_i||^2`` and the two views' hinges summed. Both use the unbiased variance and
    the actual batch size.

    For any array-API arrays (NumPy, CuPy, PyTorch, JAX):

    >>> import numpy as np, vicreg
    >>> z1, z2 = np.random.default_rng(0).standard_normal((2, 32, 64))
    >>> loss_fn = vicreg.VICRegLoss(sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0)
    >>> loss = loss_fn(z1, z2)                           # 0-d array, same library and device as z1
    >>> terms = loss_fn.terms(z1, z2)                    # VICRegTerms(loss, invariance, variance, ...)
    >>> loss, (g1, g2) = loss_fn.value_and_grad(z1, z2)  # the analytic gradient
    >>> loss.shape, g1.shape
    ((), (32, 64))

    Embeddings with more axes, ``(n, ..., d)`` (local features, patch or token embeddings), are one
    ``(n, d)`` problem per position along the middle axes, and the loss and each term are the means over
    the positions, as lightly's ``VICRegLoss`` defines them; the positions are batched into the same
    matrix products, and gradients come back in the inputs' shape.

    >>> z1, z2 = np.random.default_rng(0).standard_normal((2, 32, 7, 64))  # 7 positions
    >>> each = [float(loss_fn(z1[:, p], z2[:, p])) for p in range(7)]
    >>> bool(np.isclose(float(loss_fn(z1, z2)), np.mean(each), rtol=1e-12))
    True

    Inputs are two ``(n, d)`` real floating arrays of one library and device, ``n >= 2``. float16 and
    bfloat16 inputs are computed in float32 and the loss and terms come back in float32; otherwise they
    come back in the inputs' (promoted) dtype. NaN or Inf in the inputs propagates to the result: no check
    looks at values, so nothing forces a device synchronisation or breaks ``jax.jit``.

    Args:
        sim_coeff: ``lambda``, the weight of the invariance term (default 25).
        std_coeff: ``mu``, the weight of the variance term (default 25).
        cov_coeff: ``nu``, the weight of the covariance term (default 1).
        variance_target: ``gamma``, the standard deviation below which the variance hinge is active
            (default 1).
        eps: Added to each variance inside the square root of the hinge (default ``1e-4``).
        convention: ``"official"`` (default) or ``"paper"``; see :data:`vicreg.CONVENTIONS`.

    Any real number is accepted for the five coefficients (``int``, ``float``, ``Fraction``, ``Decimal``,
    NumPy and PyTorch scalars); each is stored as a Python float, so the result's dtype follows the inputs
    alone.

    Raises:
        TypeError: A coefficient is not a real number (or is a boolean, a complex number, an array of
            more than one element, or a traced JAX value).
        ValueError: A coefficient is negative, NaN, infinite or too large for a float, or the convention
            is unknown.
    """

    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0
    variance_target: float = 1.0
    eps: float = 1e-4
    convention: str = "official"

    def __post_init__(self) -> None:
        floats = _checks.check_options(
            self.sim_coeff,
            self.std_coeff,
            self.cov_coeff,
            self.variance_target,
            self.eps,
            self.convention,
        )
        # any real number is accepted; stored as a Python float, so the result's dtype follows the inputs
        for name, value in zip(("sim_coeff", "std_coeff", "cov_coeff", "variance_target", "eps"), floats):
            object.__setattr__(self, name, value)

    def __call__(self, z1: Array, z2: Array) -> Array:
        """The loss of a pair of views.

        On PyTorch tensors and JAX arrays the result carries the analytic gradient of :mod:`vicreg.torch`
        and :mod:`vicreg.jax` (``loss.backward()``, ``jax.grad``); other libraries have no autodiff: use
        :meth:`value_and_grad`.

        Args:
            z1: The first view's embeddings, an ``(n, d)`` (or ``(n, ..., d)``) real floating array, ``n >= 2``.
            z2: The second view's, of the same shape, library and device.

        Returns:
            The loss, a 0-d array of the inputs' library and device, in their dtype (float32 for float16
            and bfloat16 inputs).

        Raises:
            TypeError: An input is not an array, is an ``ndarray`` subclass, a masked, sparse or nested
                array, or has an integer, boolean or complex dtype; or the two come from different
                libraries.
            ValueError: The inputs have fewer than 2 dimensions, differ in shape, have fewer than 2 rows, no
                columns or an empty middle axis, or are on different devices.
        """
        framework = _framework_terms(z1, z2)
        if framework is not None:
            return framework(z1, z2, self).loss
        xp, z1, z2 = _checks.prepare(z1, z2)
        return _checks.zero_d(xp, statistics(xp, z1, z2, self).loss)

    def terms(self, z1: Array, z2: Array) -> VICRegTerms:
        """The loss, its three unweighted terms and the collapse diagnostics.

        Args:
            z1: The first view's embeddings, an ``(n, d)`` (or ``(n, ..., d)``) real floating array, ``n >= 2``.
            z2: The second view's, of the same shape, library and device.

        Returns:
            A :class:`vicreg.VICRegTerms` of 0-d arrays of the inputs' library and device; only ``loss``
            needs to be differentiated.

        Raises:
            TypeError: As for :meth:`__call__`.
            ValueError: As for :meth:`__call__`.
        """
        framework = _framework_terms(z1, z2)
        if framework is not None:
            return framework(z1, z2, self)
        xp, z1, z2 = _checks.prepare(z1, z2)
        terms = terms_from_statistics(xp, statistics(xp, z1, z2, self))
        return VICRegTerms(*(_checks.zero_d(xp, t) for t in terms))

    def value_and_grad(self, z1: Array, z2: Array) -> tuple[Array, tuple[Array, Array]]:
        """The loss and its analytic gradient, for libraries without autodiff; see
        :func:`vicreg.value_and_grad`.

        Args:
            z1: The first view's embeddings, an ``(n, d)`` (or ``(n, ..., d)``) real floating array, ``n >= 2``.
            z2: The second view's, of the same shape, library and device.

        Returns:
            ``(loss, (g1, g2))``: the loss as :meth:`__call__` returns it and ``dloss/dz1``,
            ``dloss/dz2``, each of its input's shape, dtype and device.

        Raises:
            TypeError: As for :meth:`__call__`.
            ValueError: As for :meth:`__call__`.
        """
        xp, a, b = _checks.prepare(z1, z2)  # a, b: in the compute dtype
        stats = statistics(xp, a, b, self)
        # The statistics are private here, so the gradient may reuse their buffers; not when an autograd
        # graph (PyTorch) may still need them.
        tracked = getattr(z1, "requires_grad", False) or getattr(z2, "requires_grad", False)
        g1, g2 = gradient(xp, stats, self, overwrite=not tracked, shape=a.shape)
        if g1.dtype != z1.dtype:
            g1 = xp.astype(g1, z1.dtype)
        if g2.dtype != z2.dtype:
            g2 = xp.astype(g2, z2.dtype)
        return _checks.zero_d(xp, stats.loss), (g1, g2)


_identity = _terms._identity  # one identity: vicreg._terms tells a local call by it


def _framework_terms(z1: Array, z2: Array) -> Callable[[Array, Array, VICRegLoss], VICRegTerms] | None:
    """The autodiff-aware wrapper of the inputs' framework, ``f(z1, z2, config) -> VICRegTerms`` (it checks
    and casts the inputs itself), when both are PyTorch tensors or both JAX arrays; ``None`` otherwise
    (libraries without autodiff, NumPy and CuPy, or a mixed pair, which the generic checks refuse).

    PyTorch tensors go through :mod:`vicreg.torch`'s ``autograd.Function`` (the analytic backward, one
    ``n x n x d`` product per view where autograd through the Gram product needs two; every order of
    derivative and ``torch.func`` work), JAX arrays through :mod:`vicreg.jax`'s ``custom_jvp`` rule. The
    framework is told from the arrays' type alone (no array-API dispatch, which ``torch.compile`` would
    trace), and its adapter imported here, when its arrays arrive (the framework is loaded by then), so
    ``import vicreg`` imports none. No gathering across processes or devices: the functional core computes
    the loss of the arrays it is given.
    """
    first, second = _library(z1), _library(z2)
    if first == second == "torch":
        from . import torch as adapter

        return adapter._local_terms
    if first.startswith("jax") and second.startswith("jax"):
        from . import jax as adapter  # type: ignore[no-redef]

        return adapter._local_terms
    return None


@in_full_precision
def statistics(
    xp: Any,
    z1: Array,
    z2: Array,
    config: VICRegLoss,
    *,
    n: int | None = None,
    total: Callable[[Array], Array] = _identity,
    gather_rows: Callable[[Array], Array] = _identity,
    columns: int | None = None,
    centrings: tuple[Centring, Centring] | None = None,
    apart: Callable[[Array], Array] | None = None,
) -> _Statistics:
    """The forward pass on checked arrays of the compute dtype.

    On one device the keywords keep their defaults. When the batch is split over devices, an adapter
    passes the global batch size ``n``, ``total`` (the sum over devices of a local sum, e.g. an all-reduce)
    and ``gather_rows`` (every device's rows concatenated in device order along the first axis, e.g. an
    all-gather); the result is then the loss of the global batch on every device, and the math stays here.
    ``columns`` fixes how many columns the Gram path treats exactly (see :func:`vicreg._terms.off_diagonal`;
    by default :func:`vicreg._terms.choose_columns` picks it). ``centrings``, the two views' :func:`centre_views`
    computed beforehand, replaces their centring here by :func:`vicreg._terms.recentre` (the same numbers):
    the JAX adapter computes them once, outside the ``lax.switch`` that picks ``columns`` from their
    variances. ``apart``, for a compiler that fuses (``jax.lax.optimization_barrier``), makes the
    invariance's sum of squares read ``z1 - apart(z2)`` in a fusion of its own (the same numbers), so
    that the difference :func:`gradient` reads is recomputed where it is read instead of being written
    to memory (one ``n x d`` array less in XLA's scratch memory, and one write and read less).

    Inputs of shape ``(n, ..., d)`` are brought into the layout ``(p, n, d)`` of :mod:`vicreg._terms`
    (``p`` the number of positions along the middle axes; a copy) and every term is the mean over the
    positions of that position's term; the statistics stay in that layout, and :func:`gradient` returns
    to the inputs' shape when given it.
    """
    positions = _positions(z1.shape)
    if z1.ndim > 2:
        z1, z2 = positions_first(xp, z1), positions_first(xp, z2)
        if gather_rows is not _identity:
            gather_rows = _along_rows(xp, gather_rows)
    rows, d = z1.shape[-2:]
    n = rows if n is None else n
    diff = difference(xp, z1, z2)
    # the invariance of each position, averaged: the mean over all n * positions rows
    apart_diff = diff if apart is None else z1 - apart(z2)
    invariance = invariance_term(total(sum_sq_difference(xp, apart_diff)), n * positions, d, config.convention)
    # one process on the Gram path: spare rows below zc for the cheap count of exact columns (see centre)
    spare = _terms.few_columns(n, d) if total is _identity and _terms.use_gram(n, d) else 0
    if centrings is None:
        buffers = _terms.spare_rows(xp, z1, spare)
        zc1, var1, columns1, stack1 = centre(xp, z1, n, total, buffers[0])
        zc2, var2, columns2, stack2 = centre(xp, z2, n, total, buffers[1])
    else:
        (zc1, var1, columns1), (zc2, var2, columns2) = (_recentred(xp, z, c) for z, c in zip((z1, z2), centrings))
        stack1 = stack2 = None
    zc1, off1 = off_diagonal(xp, zc1, var1, n, total, gather_rows, columns1, columns, stack1)
    zc2, off2 = off_diagonal(xp, zc2, var2, n, total, gather_rows, columns2, columns, stack2)
    variance, covariance = combine(
        variance_term(xp, var1, config.variance_target, config.eps),  # the mean over positions too
        variance_term(xp, var2, config.variance_target, config.eps),
        _mean(xp, covariance_term(off1.sq_norm, n, d)),
        _mean(xp, covariance_term(off2.sq_norm, n, d)),
        config.convention,
    )
    loss = config.sim_coeff * invariance + config.std_coeff * variance + config.cov_coeff * covariance
    return _Statistics(diff, zc1, zc2, var1, var2, off1, off2, invariance, variance, covariance, loss)


def centre_views(
    xp: Any,
    z1: Array,
    z2: Array,
    *,
    n: int | None = None,
    total: Callable[[Array], Array] = _identity,
    apart: Callable[[Array], Array] | None = None,
) -> tuple[Centring, Centring]:
    """The :class:`vicreg._terms.Centring` of each view (mean, correction, variance) in the layout of
    :func:`statistics` (``(p, d)`` for inputs ``(n, ..., d)``), to pass back to it as ``centrings``;
    ``apart`` as in :func:`vicreg._terms.centring`."""
    if z1.ndim > 2:
        z1, z2 = positions_first(xp, z1), positions_first(xp, z2)
    return centring(xp, z1, n, total, apart=apart)[1], centring(xp, z2, n, total, apart=apart)[1]


def _recentred(xp: Any, z: Array, c: Centring) -> tuple[Array, Array, Callable[[Array], Array]]:
    """:func:`vicreg._terms.centre`'s ``(zc, var, read_columns)`` from a centring computed beforehand."""
    return recentre(xp, z, c), c.var, lambda index: recentre(xp, z, c, index)


def _positions(shape: Any) -> int:
    """The number of positions along the middle axes of an ``(n, ..., d)`` shape (1 for ``(n, d)``)."""
    return math.prod(shape[1:-1])


def positions_first(xp: Any, z: Array) -> Array:
    """``(n, ..., d)`` as ``(p, n, d)``: one ``(n, d)`` problem per position along the middle axes, each
    contiguous (a copy, so that the batched products read rows in order)."""
    n, d = z.shape[0], z.shape[-1]
    stacked = xp.permute_dims(xp.reshape(z, (n, -1, d)), (1, 0, 2))
    library = _library(z)
    if library == "torch":
        return stacked.contiguous()
    if library in ("numpy", "cupy"):
        return importlib.import_module(library).ascontiguousarray(stacked)
    return stacked


def rows_first(xp: Any, g: Array, shape: Any) -> Array:
    """The inverse of :func:`positions_first`: ``(p, n, d)`` back to ``shape`` ``(n, ..., d)``."""
    return xp.reshape(xp.permute_dims(g, (1, 0, 2)), tuple(shape))


def _along_rows(xp: Any, gather_rows: Callable[[Array], Array]) -> Callable[[Array], Array]:
    """An adapter's ``gather_rows`` (along the first axis) for a stack ``(p, rows, d)``."""

    def gather(x: Array) -> Array:
        return xp.permute_dims(gather_rows(xp.permute_dims(x, (1, 0, 2))), (1, 0, 2))

    return gather


def _mean(xp: Any, x: Array) -> Array:
    """The mean over positions of a per-position value (as is for one position, a 0-d array)."""
    return x if x.ndim == 0 else xp.mean(x)


def terms_from_statistics(xp: Any, s: _Statistics) -> VICRegTerms:
    """The :class:`VICRegTerms` of the forward statistics: the loss and terms as computed, and the
    diagnostics ``std_mean`` and ``std_min`` from the two views' variances."""
    std1, std2 = xp.sqrt(s.var1), xp.sqrt(s.var2)
    std_mean = (xp.mean(std1) + xp.mean(std2)) / 2
    std_min = xp.minimum(xp.min(std1), xp.min(std2))
    return VICRegTerms(s.loss, s.invariance, s.variance, s.covariance, std_mean, std_min)


@in_full_precision
def gradient(
    xp: Any,
    s: _Statistics,
    config: VICRegLoss,
    *,
    n: int | None = None,
    gather_rows: Callable[[Array], Array] = _identity,
    overwrite: bool = False,
    scale: Any = 1.0,
    shape: Any = None,
) -> tuple[Array, Array]:
    r"""The analytic gradient of the loss, reusing the forward statistics, times ``scale``.

    For each view, with ``S = zc^T zc``, ``D = diag(S)``, the ``d``-vectors ``std = sqrt(var + eps)`` and
    ``mask = [gamma - std > 0]``:

    .. math::

        \frac{\partial \mathcal L}{\partial z^1} = a\,(z^1 - z^2) + zc \odot w + k\, zc\,(S - D),\qquad
        a = \frac{2\lambda}{n d}\ (\text{official})\ \text{or}\ \frac{2\lambda}{n}\ (\text{paper}),

        w_j = -\frac{s\,\mu}{d\,(n-1)} \frac{\mathrm{mask}_j}{\mathrm{std}_j},\qquad
        k = \frac{4\nu}{d\,(n-1)^2},

    with ``s = 1/2`` (official) or ``1`` (paper), and the opposite sign on the invariance part for ``z^2``.
    The centring needs no term of its own: every column of ``zc`` sums to zero (to rounding of the
    order of ``u`` times its spread, see :func:`vicreg._terms.centre`).

    ``zc (S - D)`` and the ``zc * w`` beside it come from :func:`vicreg._terms.centred_gradient`, which never
    cancels against the diagonal ``D``: on the ``d x d`` path ``S`` has a zero diagonal; on the Gram path
    the only subtraction involves the columns outside the ``k`` of largest variance (0, 8, or ``n - 1`` where 8
    would not be exact, see :func:`vicreg._terms.off_diagonal`). Costs one more
    ``n x n x d`` product per view than the forward pass; no ``d x d`` matrix when ``2 n <= d``.

    On a batch split over devices (``n`` the global batch size, ``gather_rows`` as in :func:`statistics`)
    each device's rows of ``G_L zc`` are its rows of the Gram matrix times the gathered ``zc``, so each
    device gets the exact gradient of its own rows. With ``overwrite=True`` the gradients are built in the
    buffers of ``s.zc1`` and ``s.zc2`` (and ``s.diff`` is scaled in place): the statistics are destroyed,
    and the only new ``n x d`` array at any time is one product, so the peak memory is the three
    statistics plus one ``n x d`` array (for libraries whose arrays are immutable, e.g. JAX, the operators
    rebind instead). PyTorch tensors are updated with fused ``addcmul_`` instead of a temporary.

    ``scale`` (a number or a 0-d array, e.g. the upstream gradient of the loss in a backward pass) is
    folded into the scalar factors, so it costs no pass over an ``n x d`` array.

    For ``(n, ..., d)`` inputs the loss is the mean over the ``p`` positions, so each position's gradient
    is its own divided by ``p``; ``shape``, the inputs' shape, brings the gradients back from the
    statistics' ``(p, n, d)`` layout (see :func:`statistics`).
    """
    rows, d = s.zc1.shape[-2:]
    n = rows if n is None else n
    positions = 1 if s.zc1.ndim == 2 else s.zc1.shape[0]
    if s.zc1.ndim > 2 and gather_rows is not _identity:
        gather_rows = _along_rows(xp, gather_rows)
    official = config.convention == "official"
    a = 2.0 * config.sim_coeff / ((n * d if official else n) * positions) * scale
    k = 4.0 * config.cov_coeff / (d * (n - 1) * (n - 1) * positions) * scale
    cv = (0.5 if official else 1.0) * config.std_coeff / (d * (n - 1) * positions) * scale
    grads = []
    for zc, var, off in ((s.zc1, s.var1, s.off1), (s.zc2, s.var2, s.off2)):
        std = xp.sqrt(var + config.eps)
        active = (config.variance_target - std) > 0
        w = -cv * xp.where(active, 1.0 / std, xp.zeros_like(std))
        grads.append(centred_gradient(xp, zc, off, w, k, gather_rows, overwrite))
    g1, g2 = add_difference(xp, grads[0], grads[1], s.diff, a, overwrite)  # +- a (z1 - z2)
    if g1.ndim > 2:
        g1, g2 = rows_first(xp, g1, shape), rows_first(xp, g2, shape)
    return g1, g2


def vicreg_loss(
    z1: Array,
    z2: Array,
    *,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    variance_target: float = 1.0,
    eps: float = 1e-4,
    convention: str = "official",
) -> Array:
    """The VICReg loss of two views, for arrays of any array-API library.

    See :class:`VICRegLoss` for the formula, the conventions and the dtypes. On PyTorch tensors the result
    is differentiable with ``loss.backward()`` and on JAX arrays with ``jax.grad``, through the analytic
    gradient of :mod:`vicreg.torch` and :mod:`vicreg.jax`; for NumPy and CuPy use :func:`value_and_grad`.

    >>> import numpy as np, vicreg
    >>> z = np.random.default_rng(0).standard_normal((64, 128))
    >>> float(vicreg.vicreg_loss(z, z, std_coeff=0.0, cov_coeff=0.0))  # identical views: no invariance
    0.0

    Args:
        z1: The first view's embeddings, an ``(n, d)`` or ``(n, ..., d)`` real floating array (``n`` samples, ``d``
            features), ``n >= 2``.
        z2: The second view's embeddings, of the same shape, library and device.
        sim_coeff: The weight of the invariance term.
        std_coeff: The weight of the variance term.
        cov_coeff: The weight of the covariance term.
        variance_target: ``gamma``, the standard deviation the variance hinge pushes towards.
        eps: Added to each variance inside the hinge's square root.
        convention: ``"official"`` (what ``facebookresearch/vicreg`` computes) or ``"paper"``.

    Returns:
        The loss, a 0-d array of the inputs' library and device, in their dtype (float32 for float16 and
        bfloat16 inputs).

    Raises:
        TypeError: An input is not an array of a real floating dtype, is a masked, sparse or nested array
            or an ``ndarray`` subclass, or the two come from different libraries; a coefficient is not a
            real number.
        ValueError: Shapes with fewer than 2 dimensions or that differ, fewer than 2 samples, zero features,
            an empty middle axis, inputs on two devices; a negative or non-finite coefficient; an unknown
            convention.
    """
    config = VICRegLoss(sim_coeff, std_coeff, cov_coeff, variance_target, eps, convention)
    return config(z1, z2)


def vicreg_terms(
    z1: Array,
    z2: Array,
    *,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    variance_target: float = 1.0,
    eps: float = 1e-4,
    convention: str = "official",
) -> VICRegTerms:
    """The loss, its unweighted terms and the collapse diagnostics.

    >>> import numpy as np, vicreg
    >>> z1, z2 = np.random.default_rng(0).standard_normal((2, 64, 128))
    >>> {name: round(float(value), 3) for name, value in vicreg.vicreg_terms(z1, z2)._asdict().items()}
    {'loss': 53.494, 'invariance': 1.939, 'variance': 0.039, 'covariance': 4.051, 'std_mean': 0.993, 'std_min': 0.774}

    Args:
        z1: The first view's embeddings, an ``(n, d)`` (or ``(n, ..., d)``) real floating array, ``n >= 2``.
        z2: The second view's embeddings, of the same shape, library and device.
        sim_coeff: The weight of the invariance term.
        std_coeff: The weight of the variance term.
        cov_coeff: The weight of the covariance term.
        variance_target: ``gamma``, the standard deviation the variance hinge pushes towards.
        eps: Added to each variance inside the hinge's square root.
        convention: ``"official"`` or ``"paper"``.

    Returns:
        A :class:`VICRegTerms` of 0-d arrays of the inputs' library and device: ``loss``, the unweighted
        ``invariance``, ``variance`` and ``covariance``, and ``std_mean``, ``std_min``.

    Raises:
        TypeError: As for :func:`vicreg_loss`.
        ValueError: As for :func:`vicreg_loss`.
    """
    config = VICRegLoss(sim_coeff, std_coeff, cov_coeff, variance_target, eps, convention)
    return config.terms(z1, z2)


def value_and_grad(
    z1: Array,
    z2: Array,
    *,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    variance_target: float = 1.0,
    eps: float = 1e-4,
    convention: str = "official",
) -> tuple[Array, tuple[Array, Array]]:
    """The loss and its analytic gradient, for array libraries without autodiff (NumPy, CuPy).

    The work is two ``n x n x d`` products per view (one ``d x d x n`` when ``n >= d``) plus a few passes
    over the inputs. At a hinge kink (``std_j == variance_target`` exactly) it takes the zero subgradient,
    as ``relu`` does. The inputs are never modified.

    >>> import numpy as np, vicreg
    >>> z1, z2 = np.random.default_rng(0).standard_normal((2, 64, 128)).astype(np.float32)
    >>> loss, (g1, g2) = vicreg.value_and_grad(z1, z2)
    >>> loss.dtype, g1.shape, g2.dtype
    (dtype('float32'), (64, 128), dtype('float32'))

    Args:
        z1: The first view's embeddings, an ``(n, d)`` (or ``(n, ..., d)``) real floating array, ``n >= 2``.
        z2: The second view's embeddings, of the same shape, library and device.
        sim_coeff: The weight of the invariance term.
        std_coeff: The weight of the variance term.
        cov_coeff: The weight of the covariance term.
        variance_target: ``gamma``, the standard deviation the variance hinge pushes towards.
        eps: Added to each variance inside the hinge's square root.
        convention: ``"official"`` or ``"paper"``.

    Returns:
        ``(loss, (g1, g2))``: the loss as :func:`vicreg_loss` returns it, and ``g1 = dloss/dz1``,
        ``g2 = dloss/dz2``, each of its input's shape, dtype and device. Where ``2 n <= d`` on NumPy
        arrays and PyTorch CPU tensors, the two are built in one buffer the call allocates (as views of
        it, with a few spare rows each), which either keeps alive.

    Raises:
        TypeError: As for :func:`vicreg_loss`.
        ValueError: As for :func:`vicreg_loss`.
    """
    config = VICRegLoss(sim_coeff, std_coeff, cov_coeff, variance_target, eps, convention)
    return config.value_and_grad(z1, z2)
