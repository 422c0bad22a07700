r"""VICReg for JAX: pure functions that compose with ``jit``, ``grad``, ``vmap`` and ``shard_map``.

The loss of two views ``z1``, ``z2`` of shape ``(n, d)`` (convention ``"official"``)::

    loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance

.. math::

    s = \frac{1}{nd}\sum_{ij}(z^1_{ij} - z^2_{ij})^2,\qquad
    v(z) = \frac1d \sum_j \max\!\big(0, \gamma - \sqrt{\mathrm{var}_j + \epsilon}\big),\qquad
    c(z) = \frac1d \sum_{i \ne j} C_{ij}^2,

    \mathcal L = \lambda s + \mu\,\tfrac12\,[v(z^1) + v(z^2)] + \nu\,[c(z^1) + c(z^2)],

with the unbiased variance ``var_j = sum_i zc_ij^2 / (n - 1)`` and ``C = zc^T zc / (n - 1)``. The math is
the core's (:mod:`vicreg._loss`); this module adds what JAX users need:

* **Gradient.** ``jax.grad`` of :func:`vicreg_loss` uses the core's analytic gradient through a
  ``jax.custom_jvp`` rule (a JVP is :math:`\langle \nabla_{z^1}\mathcal L, \dot z^1\rangle +
  \langle \nabla_{z^2}\mathcal L, \dot z^2\rangle`). Under ``jit`` this is one ``n x n x d`` product
  per view for the backward pass where JAX's autodiff of the Gram product needs two, about twice as
  fast in all (``n = 256, d = 8192``, CPU), and equal to autodiff to rounding. Being a JVP rule (not a
  ``custom_vjp``), it keeps forward mode (``jax.jvp``, ``jax.jacfwd``) and higher derivatives
  (``jax.hessian``) working: those differentiate the analytic gradient, which is written in ``jax.numpy``.
* **Data parallelism.** Inside ``jax.shard_map`` (or ``jax.pmap``, or ``jax.vmap`` with an
  ``axis_name``) over a batch split by rows, pass ``axis_name``: the sums that make the statistics are
  ``psum``-reduced over that axis (column sums, squared distances, variances) and the centred rows are
  ``all_gather``-ed so that each device computes its own rows of the global ``n x n`` Gram matrix
  ``zc_local @ zc_all^T``, whose squared norms ``psum`` to :math:`\|zc^\top zc\|_F^2`. The result is the
  loss of the global batch, replicated over the axis (so ``out_specs=P()`` holds), and its ``jax.grad``
  with respect to each device's rows is the single-device gradient of those rows. Nothing ``d x d`` is
  ever formed or communicated while the global batch is narrower than ``d``; the traffic is the
  ``n x d`` gather of each view. The gradient uses the same analytic rule, each device's rows of
  ``G zc`` being ``G_local @ zc_all`` (one ``psum`` of a scalar more), when the core's ``gradient``
  takes ``n`` and ``gather_rows``; otherwise JAX autodiff, also exact (the transposes of ``psum`` and
  ``all_gather`` carry the cross-device terms) at one more product per view and a reduce-scatter.
* **Precision.** float16 and bfloat16 inputs are computed in float32 (the loss is float32; gradients come
  back in the input dtype). The products run at ``"highest"`` matmul precision whatever
  ``jax_default_matmul_precision`` says, because the covariance term sums squares of products whose
  relative error TF32 or one-pass bfloat16 products (about 1e-3) would carry straight into the loss on
  GPUs and TPUs; on CPU this changes nothing.

Usage:

>>> import jax, jax.numpy as jnp, vicreg.jax as vj
>>> from jax.sharding import PartitionSpec as P
>>> z1, z2 = jax.random.normal(jax.random.key(0), (2, 32, 64))
>>> loss = vj.vicreg_loss(z1, z2)                                     # 0-d array
>>> g1, g2 = jax.jit(jax.grad(vj.vicreg_loss, argnums=(0, 1)))(z1, z2)
>>> terms = vj.vicreg_terms(z1, z2)                                   # VICRegTerms(loss, invariance, ...)
>>> jax.vmap(vj.vicreg_loss)(jnp.stack([z1, z2]), jnp.stack([z2, z1])).shape   # (k, n, d) -> (k,)
(2,)
>>> # data parallel: each device holds n / devices rows; the loss is the global batch's
>>> mesh = jax.make_mesh((jax.device_count(),), ("batch",))
>>> f = jax.jit(jax.shard_map(lambda a, b: vj.vicreg_loss(a, b, axis_name="batch"), mesh=mesh,
...                           in_specs=(P("batch"), P("batch")), out_specs=P()))
>>> rows = jax.NamedSharding(mesh, P("batch"))
>>> global_loss = f(jax.device_put(z1, rows), jax.device_put(z2, rows))
>>> abs(float(global_loss) - float(loss)) < 1e-4 * float(loss)
True
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Hashable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from . import _checks, _loss, _terms
from ._config import Config, VCRegTerms, VCRegTermsWithRankMe, VICRegTerms, VICRegTermsWithRankMe
from ._precision import full_precision

__all__ = [
    "VCRegTerms",
    "VCRegTermsWithRankMe",
    "VICRegTerms",
    "VICRegTermsWithRankMe",
    "rank_me",
    "sharded_vicreg_loss",
    "sharded_vicreg_terms",
    "vcreg_loss",
    "vcreg_terms",
    "vicreg_loss",
    "vicreg_terms",
]

Array = Any
AxisName = Any  # a hashable axis name or a tuple of them

# --------------------------------------------------------------------------------------------------
# input checks (metadata only: they work on tracers, under jit, vmap and shard_map)


def _as_jax(name: str, z: Any) -> Array:
    _checks.check_kind(name, z)  # e.g. a NumPy masked array, whose masked entries would count as data
    if isinstance(z, jax.Array):
        return z
    if isinstance(z, np.ndarray):
        return jnp.asarray(z)
    raise TypeError(
        f"vicreg.jax: {name} must be a JAX array (or a NumPy array), got {type(z).__name__}; "
        f"for PyTorch tensors use vicreg.torch, for other array libraries vicreg.vicreg_loss"
    )


def _axis_size(axis_name: AxisName) -> int:
    try:
        return int(jax.lax.axis_size(axis_name))
    except NameError as err:
        raise ValueError(
            f"vicreg.jax: axis_name={axis_name!r} is not bound here; pass it only inside jax.shard_map "
            f"(or jax.pmap, or jax.vmap(..., axis_name=...)) over that mesh axis, or use "
            f"sharded_vicreg_loss on the global arrays"
        ) from err


def _prepare(
    views: tuple[Any, ...], axis_name: AxisName | None, config: Config
) -> tuple[tuple[Array, ...], int | None, Config]:
    """Check the views, cast them to the compute dtype and return ``(views, n, config)``; ``n`` is the global
    batch size over ``axis_name`` (``None`` without one), ``config`` the configuration with the products'
    precision chosen where it leaves the choice (:func:`_precision`). Shapes are checked as the global
    batch's, so a device may hold a single row when the global batch has two or more."""
    views = tuple(_as_jax(f"z{i + 1}", z) for i, z in enumerate(views))
    n = None
    if axis_name is None or any(z.ndim < 2 for z in views):
        _checks.check_views(jnp, views)  # with an axis: raises the core's error for the wrong rank
    else:
        size = _axis_size(axis_name)
        # the core's check on the global shapes: every device holds the same number of rows
        _checks.check_views(jnp, tuple(jax.ShapeDtypeStruct((z.shape[0] * size, *z.shape[1:]), z.dtype) for z in views))
        n = views[0].shape[0] * size
    dtype = _checks.compute_dtype(jnp, *views)
    return tuple(z.astype(dtype) for z in views), n, _precision(config, views)


def _precision(config: Config, views: tuple[Array, ...]) -> Config:
    """``config``, with ``precision="medium"`` where it leaves the choice (``None``) and the inputs are
    bfloat16 or float16: their products then take bfloat16 inputs, as a network's layers in those dtypes
    do; float32 and float64 inputs keep the core's ``"highest"``."""
    if config.precision is not None or not any(z.dtype in (jnp.bfloat16, jnp.float16) for z in views):
        return config
    return dataclasses.replace(config, precision="high")


# --------------------------------------------------------------------------------------------------
# the core's statistics (with collectives over axis_name when the rows are split over devices), and
# the core's analytic gradient as the JVP of the loss


def _reduce(axis_name: AxisName | None) -> _terms.Reduce:
    """The reductions that make the statistics of the global batch over ``axis_name``: ``psum``, ``pmax`` and
    the ``all_gather`` of every device's rows in device order (the identities without an axis)."""
    if axis_name is None:
        return _terms.LOCAL
    return _terms.Reduce(
        total=lambda x: jax.lax.psum(x, axis_name),
        maximum=lambda x: jax.lax.pmax(jax.lax.stop_gradient(x), axis_name),  # scales: no gradient
        gather_rows=lambda x: jax.lax.all_gather(x, axis_name, axis=0, tiled=True),
    )


def _fields(
    config: Config,
    axis_name: AxisName | None,
    n: int | None,
    per: int,
    views: tuple[Array, ...],
    columns: int | None = None,
    centrings: Any = None,
    rank_me: bool = False,
) -> tuple[Any, Any]:
    with full_precision(jnp):
        stats = _loss.statistics(
            jnp,
            views,
            config,
            n=n,
            reduce=_reduce(axis_name),
            columns=columns,
            centrings=centrings,
            per=per,
            rank_me=rank_me,
        )
    return _loss.terms_from_statistics(jnp, stats), stats


def _column_counts(axis_name: AxisName | None, z1: Array) -> tuple[int, ...] | None:
    """The Gram path's candidate numbers of exact columns, :func:`vicreg._terms.column_counts` (``0``, 8
    and ``n - 1``), when the data must choose between them; ``None`` where there is no choice to make: the
    ``d x d`` path, a single candidate, and rows split over devices (which take the core's default, all
    ``n - 1``)."""
    n, d = z1.shape[0], z1.shape[-1]
    if axis_name is not None or not _terms.use_gram(n, d):
        return None
    counts = _terms.column_counts(n, d)
    return counts if len(counts) > 1 else None


def _choice(centrings: Any, n: int, counts: tuple[int, ...]) -> Array:
    """The position in ``counts`` of the first count that :func:`vicreg._terms.columns_suffice` proves exact
    for every view (and position), from their variances (:func:`vicreg._terms.choice`); the last where none
    is."""
    holds = _terms.choice(jnp, jnp.stack([c.var for c in centrings]), n, counts)
    return jnp.where(jnp.any(holds), jnp.argmax(holds), len(counts) - 1)


def _centre_views(*views: Array) -> Any:
    """:func:`vicreg._loss.centre_views` of the views."""
    return _loss.centre_views(jnp, views)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3, 4))
def _fields_rule(
    config: Config, axis_name: AxisName | None, n: int | None, per: int, rank_me: bool, *views: Array
) -> Any:
    """The fields of the loss of ``views`` (``per``, ``rank_me``: see :func:`vicreg._loss.statistics`; a
    :class:`vicreg.VICRegTerms`, or :class:`vicreg.VICRegTermsWithRankMe`), with the Gram
    path's number of exact columns chosen from the data as the core does on NumPy: the views are centred
    once, :func:`vicreg._terms.choice` is computed from their variances, and
    ``lax.switch`` runs the branch of the first count it proves exact (every branch is traced with static
    shapes; under ``vmap`` with a batched choice, all run and a select picks). The branches take the
    centrings as they are (:func:`vicreg._loss.centre_views`), so the test adds no pass over the data."""
    counts = _column_counts(axis_name, views[0])
    if counts is None:
        return _fields(config, axis_name, n, per, views, rank_me=rank_me)[0]
    centrings = _centre_views(*views)

    def branch(columns: int) -> Any:
        return lambda c: _fields(config, axis_name, n, per, views, columns, c, rank_me)[0]

    return jax.lax.switch(_choice(centrings, views[0].shape[0], counts), [branch(k) for k in counts], centrings)


def _fields_jvp(
    config: Config,
    axis_name: AxisName | None,
    n: int | None,
    per: int,
    rank_me: bool,
    primals: tuple[Array, ...],
    tangents: tuple[Any, ...],
) -> tuple[Any, Any]:
    r"""JVP of all fields. The loss's tangent is :math:`\sum_k \langle g_k, \dot z^k\rangle` with the
    ``g_k`` the core's analytic gradient (summed over devices when the rows
    are split); the other fields' tangents are JAX's own (reverse mode drops them when only the loss is
    differentiated, so they cost nothing then). A view whose tangent is a symbolic zero (not
    differentiated) contributes nothing, and ``jit`` then drops its half of the gradient computation.
    Where :func:`_fields_rule` branches on the number of columns, the centrings and their tangents are
    computed before the branch and enter it as primals and tangents of their own."""
    live = [not isinstance(t, SymbolicZero) for t in tangents]
    # zeros_like the primal: on split rows it carries the primal's device-varying type, as a tangent must
    dense = tuple(t if keep else jnp.zeros_like(p) for p, t, keep in zip(primals, tangents, live))
    reduce = _reduce(axis_name)

    def run(columns: int | None, centrings: Any = None, centrings_dot: Any = None) -> Any:
        if centrings is None:
            terms, terms_dot, stats = jax.jvp(
                lambda *vs: _fields(config, axis_name, n, per, vs, columns, rank_me=rank_me),
                primals,
                dense,
                has_aux=True,
            )
        else:
            terms, terms_dot, stats = jax.jvp(
                lambda vs, c: _fields(config, axis_name, n, per, vs, columns, c, rank_me),
                (primals, centrings),
                (dense, centrings_dot),
                has_aux=True,
            )
        with full_precision(jnp):
            grads = _loss.gradient(jnp, stats, config, n=n, reduce=reduce, shape=primals[0].shape)
        return terms, terms_dot, grads

    # the gradients leave the branch as they are: the loss's tangent (linear in the tangents) is formed
    # out here, so that reverse mode scales them by the cotangent outside the branch too, where XLA folds
    # a cotangent of 1 (jax.grad) away instead of making two more passes over n x d arrays
    counts = _column_counts(axis_name, primals[0])
    if counts is None:
        terms, terms_dot, grads = run(None)
    else:
        centrings, centrings_dot = jax.jvp(_centre_views, primals, dense)

        def branch(columns: int) -> Any:
            return lambda c, c_dot: run(columns, c, c_dot)

        choice = _choice(centrings, primals[0].shape[0], counts)
        terms, terms_dot, grads = jax.lax.switch(choice, [branch(k) for k in counts], centrings, centrings_dot)
    loss_dot = jnp.zeros((), terms.loss.dtype)
    for g, t, keep in zip(grads, tangents, live):
        if keep:
            loss_dot = loss_dot + jnp.sum(g * t)
    if axis_name is not None:
        loss_dot = jax.lax.psum(loss_dot, axis_name)  # each device's rows move the global loss
    return terms, terms_dot._replace(loss=loss_dot)


_fields_rule.defjvp(_fields_jvp, symbolic_zeros=True)


def local_loss(views: tuple[Array, ...], config: Config) -> Array:
    """What :func:`vicreg.vicreg_loss` computes on JAX arrays: :func:`local_terms`' loss."""
    return local_terms(views, config).loss


def local_terms(views: tuple[Array, ...], config: Config, rank_me: bool = False) -> Any:
    """What :func:`vicreg.vicreg_loss` and :func:`vicreg.vicreg_terms` compute on JAX arrays: the core's
    checks, then the terms with the analytic differentiation rule, products at highest precision."""
    views, _, config = _prepare(views, None, config)
    return _fields_rule(config, None, None, len(views), rank_me, *views)


def local_vcreg_terms(z: Array, config: Config, rank_me: bool = False) -> Any:
    """What :func:`vicreg.vcreg_terms` computes on a JAX array."""
    return _vcreg_terms(z, config, None, rank_me)


def _hashable(axis_name: AxisName | None) -> AxisName | None:
    return tuple(axis_name) if isinstance(axis_name, list) else axis_name  # a static argument of the rule


def _vcreg_terms(z: Array, config: Config, axis_name: AxisName | None, rank_me: bool = False) -> Any:
    _checks.check_flag("rank_me", rank_me)
    axis_name = _hashable(axis_name)
    (z,), n, config = _prepare((z,), axis_name, config)
    t = _fields_rule(config, axis_name, n, 2, rank_me, z)  # one view, its terms averaged as one of two
    fields = (t.loss, t.variance, t.covariance, t.std_mean, t.std_min)
    return VCRegTermsWithRankMe(*fields, t.rank_me[0]) if rank_me else VCRegTerms(*fields)


def vicreg_terms(
    z1: Array,
    z2: Array,
    *views: Array,
    axis_name: AxisName | None = None,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    variance_target: float = 1.0,
    eps: float = 1e-4,
    convention: str = "official",
    precision: str | None = None,
    rank_me: bool = False,
) -> VICRegTerms | VICRegTermsWithRankMe:
    r"""The loss, its unweighted terms and the collapse diagnostics, as a :class:`vicreg.VICRegTerms` of
    0-d JAX arrays (a pytree). Every field is differentiable (but ``rank_me``).

    ``std_mean`` and ``std_min`` are the mean and minimum over all views and all ``d`` dimensions of
    :math:`\sqrt{\mathrm{var}_j}` (no ``eps``): near ``variance_target`` when healthy, 0 at collapse.
    With ``axis_name`` every field is the global batch's, replicated over the axis.

    Args:
        z1: The first view's embeddings, an ``(n, d)`` or ``(n, ..., d)`` real floating JAX array (NumPy arrays are
            converted), ``n >= 2`` (the global ``n`` with ``axis_name``).
        z2: The second view's embeddings, of the same shape.
        *views: More views (crops), of the same shape; see :func:`vicreg_loss`.
        axis_name: The mesh axis (or tuple of axes) the batch rows are split over; see
            :func:`vicreg_loss`.
        sim_coeff: The weight of the invariance term.
        std_coeff: The weight of the variance term.
        cov_coeff: The weight of the covariance term.
        variance_target: ``gamma``, the standard deviation the variance hinge pushes towards.
        eps: Added to each variance inside the hinge's square root.
        convention: ``"official"`` or ``"paper"``.
        precision: The precision of the loss's float32 matrix products (:data:`vicreg.PRECISIONS`): ``None``
            (default) takes ``"high"`` (bf16x3: ``lax.DotAlgorithmPreset.BF16_BF16_F32`` products of each
            input's two bfloat16 parts, float32 accumulation) for bfloat16 or float16 inputs and
            ``"highest"`` for float32 ones; or a level by name. Static under ``jit``.
        rank_me: Also each view's RankMe (:func:`vicreg.rank_me`; the global batch's with ``axis_name``),
            from the matrices the loss builds: one eigenvalue solve per view more. Not differentiated.

    Returns:
        ``VICRegTerms(loss, invariance, variance, covariance, std_mean, std_min)`` of 0-d JAX arrays; with
        ``rank_me=True`` a :class:`vicreg.VICRegTermsWithRankMe`, whose ``rank_me`` has one value per view.

    Raises:
        TypeError: As for :func:`vicreg_loss`.
        ValueError: As for :func:`vicreg_loss`.
    """
    config = Config(sim_coeff, std_coeff, cov_coeff, variance_target, eps, convention, precision)  # validates them
    _checks.check_flag("rank_me", rank_me)
    axis_name = _hashable(axis_name)
    inputs, n, config = _prepare((z1, z2, *views), axis_name, config)
    return _fields_rule(config, axis_name, n, len(inputs), rank_me, *inputs)


def vicreg_loss(
    z1: Array,
    z2: Array,
    *views: Array,
    axis_name: AxisName | None = None,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    variance_target: float = 1.0,
    eps: float = 1e-4,
    convention: str = "official",
    precision: str | None = None,
) -> Array:
    r"""The VICReg loss of two views (or more), a 0-d JAX array; pure, so it composes with ``jit``, ``grad``,
    ``vmap`` and ``shard_map``.

    .. math::

        \mathcal L = \lambda\, s(z^1, z^2) + \mu\, v + \nu\, [c(z^1) + c(z^2)]

    with ``lambda = sim_coeff``, ``mu = std_coeff``, ``nu = cov_coeff``, ``gamma = variance_target`` and
    the terms of the ``convention`` (``"official"``: ``s`` the mean squared difference over all ``n d``
    elements and ``v = (v(z^1) + v(z^2)) / 2``; ``"paper"``: ``s = (1/n) sum_i ||z^1_i - z^2_i||^2`` and
    ``v = v(z^1) + v(z^2)``); see :class:`vicreg.VICRegLoss`. With ``K > 2`` views the invariance is the
    mean of the pairs' (the first two views against every other), the variance the mean of the views' and
    the covariance ``2 / K`` times their sum, as :func:`vicreg.vicreg_loss` computes.

    >>> import jax, vicreg.jax as vj
    >>> z1, z2 = jax.random.normal(jax.random.key(0), (2, 32, 64))
    >>> loss, (g1, g2) = jax.jit(jax.value_and_grad(vj.vicreg_loss, argnums=(0, 1)))(z1, z2)
    >>> loss.shape, g1.shape
    ((), (32, 64))

    Args:
        z1: The first view's embeddings, an ``(n, d)`` or ``(n, ..., d)`` real floating JAX array (NumPy arrays are
            converted), ``n >= 2`` (the global ``n`` with ``axis_name``). float16 and bfloat16 are
            computed in float32 and the loss is float32; ``jax.grad`` returns gradients in the inputs'
            dtype.
        z2: The second view's embeddings, of the same shape.
        *views: More views (crops), of the same shape.
        axis_name: The mesh axis (or tuple of axes) the batch rows are split over, when called inside
            ``jax.shard_map``, ``jax.pmap`` or a named ``jax.vmap``. Every device must hold the same
            number of rows (``shard_map`` needs equal blocks); the result is the global batch's loss,
            replicated over the axis. ``None`` (default): the arrays are the whole batch.
        sim_coeff: The weight of the invariance term. This and the other coefficients are Python numbers,
            static under ``jit`` (checked when called), as in :class:`vicreg.VICRegLoss`.
        std_coeff: The weight of the variance term.
        cov_coeff: The weight of the covariance term.
        variance_target: ``gamma``, the standard deviation the variance hinge pushes towards.
        eps: Added to each variance inside the hinge's square root.
        convention: ``"official"`` or ``"paper"``.
        precision: The precision of the loss's float32 matrix products (:data:`vicreg.PRECISIONS`): ``None``
            (default) takes ``"high"`` (bf16x3: ``lax.DotAlgorithmPreset.BF16_BF16_F32`` products of each
            input's two bfloat16 parts, float32 accumulation) for bfloat16 or float16 inputs and
            ``"highest"`` for float32 ones; or a level by name. Static under ``jit``.

    Returns:
        The loss, a 0-d JAX array (float32 for float16 and bfloat16 inputs).

    Raises:
        TypeError: An input is not a JAX or NumPy array, or not real floating; a coefficient is not a
            real number.
        ValueError: Wrong rank, mismatched shapes, fewer than 2 samples, a negative or non-finite
            coefficient, an unknown convention, or an ``axis_name`` that is not bound.
    """
    return vicreg_terms(
        z1,
        z2,
        *views,
        axis_name=axis_name,
        sim_coeff=sim_coeff,
        std_coeff=std_coeff,
        cov_coeff=cov_coeff,
        variance_target=variance_target,
        eps=eps,
        convention=convention,
        precision=precision,
    ).loss


def vcreg_terms(
    z: Array,
    *,
    axis_name: AxisName | None = None,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    variance_target: float = 1.0,
    eps: float = 1e-4,
    convention: str = "official",
    precision: str | None = None,
    rank_me: bool = False,
) -> VCRegTerms | VCRegTermsWithRankMe:
    """The VCReg regulariser of one view with its terms and diagnostics, 0-d JAX arrays; see
    :func:`vcreg_loss`.

    Args:
        z: The embeddings, an ``(n, d)`` or ``(n, ..., d)`` real floating JAX array, ``n >= 2`` (global).
        axis_name: The mesh axis (or tuple of axes) the rows are split over; see :func:`vicreg_loss`.
        std_coeff: The weight of the variance term.
        cov_coeff: The weight of the covariance term.
        variance_target: ``gamma``, the standard deviation the variance hinge pushes towards.
        eps: Added to each variance inside the hinge's square root.
        convention: ``"official"`` or ``"paper"``.
        precision: The precision of the loss's float32 matrix products (:data:`vicreg.PRECISIONS`): ``None``
            (default) takes ``"high"`` (bf16x3: ``lax.DotAlgorithmPreset.BF16_BF16_F32`` products of each
            input's two bfloat16 parts, float32 accumulation) for bfloat16 or float16 inputs and
            ``"highest"`` for float32 ones; or a level by name. Static under ``jit``.
        rank_me: Also the view's RankMe (see :func:`rank_me`).

    Returns:
        ``VCRegTerms(loss, variance, covariance, std_mean, std_min)`` of 0-d JAX arrays; with ``rank_me=True``
        a :class:`vicreg.VCRegTermsWithRankMe`.

    Raises:
        TypeError: As for :func:`vicreg_loss`.
        ValueError: As for :func:`vicreg_loss`.
    """
    config = Config(0.0, std_coeff, cov_coeff, variance_target, eps, convention, precision)
    return _vcreg_terms(z, config, axis_name, rank_me)


def rank_me(z: Array, *, axis_name: AxisName | None = None) -> Array:
    """RankMe of the embeddings ``z`` (see :func:`vicreg.rank_me`), a 0-d JAX array, not differentiated
    (``jax.grad`` gives zeros); jit-able. With ``axis_name`` inside ``shard_map`` (rows split over the axis),
    that of the global batch, replicated.

    >>> import jax, vicreg.jax as vj
    >>> value = jax.jit(vj.rank_me)(jax.random.normal(jax.random.key(0), (256, 16)))
    >>> 14 < float(value) <= 16
    True

    Args:
        z: The embeddings, an ``(n, d)`` or ``(n, ..., d)`` real floating JAX array, ``n >= 2`` (global).
        axis_name: The mesh axis (or tuple of axes) the rows are split over; see :func:`vicreg_loss`.

    Returns:
        RankMe, a 0-d JAX array (float32 for float16 and bfloat16 inputs).

    Raises:
        TypeError: As for :func:`vicreg_loss`.
        ValueError: As for :func:`vicreg_loss`.
    """
    return _vcreg_terms(z, Config(), axis_name, rank_me=True).rank_me


def vcreg_loss(
    z: Array,
    *,
    axis_name: AxisName | None = None,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    variance_target: float = 1.0,
    eps: float = 1e-4,
    convention: str = "official",
    precision: str | None = None,
) -> Array:
    r"""The VCReg regulariser of one view, :math:`\mu\, s\, v(z) + \nu\, c(z)` with ``s = 1/2`` ("official")
    or ``1`` ("paper"), a 0-d JAX array with the analytic ``jax.grad``; ``vicreg_loss(z1, z2)`` is
    ``sim_coeff * invariance + vcreg_loss(z1) + vcreg_loss(z2)``. See :func:`vicreg.vcreg_loss`.

    >>> import jax, vicreg.jax as vj
    >>> z = jax.random.normal(jax.random.key(0), (32, 64))
    >>> jax.grad(vj.vcreg_loss)(z).shape
    (32, 64)

    Args:
        z: The embeddings, an ``(n, d)`` or ``(n, ..., d)`` real floating JAX array, ``n >= 2`` (global).
        axis_name: The mesh axis (or tuple of axes) the rows are split over; see :func:`vicreg_loss`.
        std_coeff: The weight of the variance term.
        cov_coeff: The weight of the covariance term.
        variance_target: ``gamma``, the standard deviation the variance hinge pushes towards.
        eps: Added to each variance inside the hinge's square root.
        convention: ``"official"`` or ``"paper"``.
        precision: The precision of the loss's float32 matrix products (:data:`vicreg.PRECISIONS`): ``None``
            (default) takes ``"high"`` (bf16x3: ``lax.DotAlgorithmPreset.BF16_BF16_F32`` products of each
            input's two bfloat16 parts, float32 accumulation) for bfloat16 or float16 inputs and
            ``"highest"`` for float32 ones; or a level by name. Static under ``jit``.

    Returns:
        The regulariser, a 0-d JAX array (float32 for float16 and bfloat16 inputs).

    Raises:
        TypeError: As for :func:`vicreg_loss`.
        ValueError: As for :func:`vicreg_loss`.
    """
    return vcreg_terms(
        z,
        axis_name=axis_name,
        std_coeff=std_coeff,
        cov_coeff=cov_coeff,
        variance_target=variance_target,
        eps=eps,
        convention=convention,
        precision=precision,
    ).loss


# --------------------------------------------------------------------------------------------------
# convenience: global arrays in, shard_map over a mesh axis inside


def _axis_names(axis_name: AxisName) -> tuple[Hashable, ...]:
    return tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (axis_name,)


def _sharded(fn: Any, views: tuple[Array, ...], mesh: Mesh | None, axis_name: AxisName, options: dict[str, Any]) -> Any:
    names = _axis_names(axis_name)
    if mesh is None:
        if len(names) != 1:
            raise ValueError("vicreg.jax: pass mesh= when axis_name names several mesh axes")
        mesh = jax.make_mesh((jax.device_count(),), names)  # type: ignore[arg-type]  # hashable names
    missing = [a for a in names if a not in mesh.shape]
    if missing:
        raise ValueError(f"vicreg.jax: axis_name {missing[0]!r} is not an axis of the mesh (axes: {tuple(mesh.shape)})")
    size = math.prod(mesh.shape[a] for a in names)
    views = tuple(_as_jax(f"z{i + 1}", z) for i, z in enumerate(views))
    _checks.check_views(jnp, views)
    n = views[0].shape[0]
    if n % size:
        raise ValueError(
            f"vicreg.jax: a batch of n = {n} rows does not split evenly over the {size} devices of mesh "
            f"axis {axis_name!r} (shard_map needs equal blocks); use a batch size divisible by {size}, "
            f"e.g. {n - n % size} or {n - n % size + size}"
        )
    axis = names[0] if len(names) == 1 else names
    return _sharded_fn(fn, mesh, axis, len(views), tuple(sorted(options.items())))(*views)


@functools.lru_cache(maxsize=64)
def _sharded_fn(fn: Any, mesh: Mesh, axis: AxisName, count: int, options: tuple[tuple[str, Any], ...]) -> Any:
    spec = PartitionSpec(axis)
    local = functools.partial(fn, axis_name=axis, **dict(options))
    mapped = jax.shard_map(local, mesh=mesh, in_specs=(spec,) * count, out_specs=PartitionSpec())
    names = _axis_names(axis)
    types = {mesh.axis_types[mesh.axis_names.index(a)] for a in names}
    sharding = NamedSharding(mesh, spec)

    def place(z: Array) -> Array:
        # move rows to their blocks wherever the inputs live (shard_map itself refuses a mismatch)
        if types == {AxisType.Explicit}:
            return jax.reshard(z, sharding)
        if types == {AxisType.Auto}:
            return jax.lax.with_sharding_constraint(z, sharding)
        return z

    return jax.jit(lambda *views: mapped(*(place(z) for z in views)))


def sharded_vicreg_loss(
    z1: Array,
    z2: Array,
    *views: Array,
    mesh: Mesh | None = None,
    axis_name: AxisName = "batch",
    **options: Any,
) -> Array:
    """:func:`vicreg_loss` of global ``(n, d)`` arrays whose rows are split over ``mesh``'s ``axis_name``
    with ``jax.shard_map``: each device computes on its ``n / size`` rows with collectives, and the result
    (replicated) equals the single-device loss. Differentiable and jit-able.

    >>> import jax, vicreg.jax as vj
    >>> z1, z2 = jax.random.normal(jax.random.key(0), (2, 8 * jax.device_count(), 64))
    >>> loss = vj.sharded_vicreg_loss(z1, z2)    # a 1-D mesh "batch" over every device
    >>> abs(float(loss) - float(vj.vicreg_loss(z1, z2))) < 1e-4 * float(loss)
    True

    Args:
        z1: The first view's embeddings, a global ``(n, d)`` or ``(n, ..., d)`` real floating JAX array;
            ``n`` must divide evenly over the devices of the axis.
        z2: The second view's embeddings, of the same shape.
        *views: More views, of the same shape.
        mesh: The device mesh (default ``None``: a 1-D mesh over all devices, its axis named
            ``axis_name``).
        axis_name: The mesh axis, or tuple of axes, the rows are split over (default ``"batch"``).
        **options: :func:`vicreg_loss`'s coefficients, convention and precision.

    Returns:
        The loss of the global batch, a 0-d JAX array, replicated.

    Raises:
        ValueError: ``n`` is not divisible by the number of devices on the axis; ``axis_name`` is not an
            axis of ``mesh``, or names several axes without a ``mesh``; or as for :func:`vicreg_loss`.
        TypeError: As for :func:`vicreg_loss`.
    """
    return _sharded(vicreg_loss, (z1, z2, *views), mesh, axis_name, options)


def sharded_vicreg_terms(
    z1: Array,
    z2: Array,
    *views: Array,
    mesh: Mesh | None = None,
    axis_name: AxisName = "batch",
    **options: Any,
) -> VICRegTerms:
    """:func:`vicreg_terms` of global arrays split over a mesh axis; see :func:`sharded_vicreg_loss`.

    Args:
        z1: The first view's embeddings, a global ``(n, d)`` or ``(n, ..., d)`` real floating JAX array.
        z2: The second view's embeddings, of the same shape.
        *views: More views, of the same shape.
        mesh: The device mesh (default ``None``: a 1-D mesh over all devices).
        axis_name: The mesh axis, or tuple of axes, the rows are split over (default ``"batch"``).
        **options: :func:`vicreg_terms`'s coefficients, convention and precision.

    Returns:
        The :class:`vicreg.VICRegTerms` of the global batch, 0-d JAX arrays, replicated.

    Raises:
        ValueError: As for :func:`sharded_vicreg_loss`.
        TypeError: As for :func:`vicreg_loss`.
    """
    return _sharded(vicreg_terms, (z1, z2, *views), mesh, axis_name, options)
