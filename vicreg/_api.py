"""The public entry points for arrays of any array-API library: the loss of two views (or more), its terms,
its analytic gradient, and the VCReg regulariser of one view.

They check the inputs, then hand PyTorch tensors and JAX arrays to their adapter's autodiff wrapper
(:mod:`vicreg._dispatch`) and compute anything else with the generic statistics of :mod:`vicreg._loss`,
products at full float32 precision (:mod:`vicreg._precision`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from . import _checks
from ._config import Config, VCRegTerms, VCRegTermsWithRankMe, VICRegTerms, VICRegTermsWithRankMe
from ._dispatch import adapter
from ._loss import gradient, statistics, terms_from_statistics, vcreg_from_statistics
from ._precision import full_precision

Array = Any


@dataclass(frozen=True)
class VICRegLoss(Config):
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
        precision: The precision of the loss's float32 matrix products: ``None`` (automatic: ``"high"``
            under ``torch.autocast`` and for bfloat16 or float16 JAX inputs, ``"highest"`` otherwise),
            ``"highest"``, ``"high"`` or ``"medium"``; see :data:`vicreg.PRECISIONS`.

    Any real number is accepted for the five coefficients (``int``, ``float``, ``Fraction``, ``Decimal``,
    NumPy and PyTorch scalars); each is stored as a Python float, so the result's dtype follows the inputs
    alone.

    Raises:
        TypeError: A coefficient is not a real number (or is a boolean, a complex number, an array of
            more than one element, or a traced JAX value).
        ValueError: A coefficient is negative, NaN, infinite or too large for a float, or the convention
            or the precision is unknown.
    """

    def __call__(self, z1: Array, z2: Array, *views: Array) -> Array:
        """The loss of a pair of views (or of more: ``loss_fn(z1, z2, z3, ...)``, see :func:`vicreg.vicreg_loss`).

        On PyTorch tensors and JAX arrays the result carries the analytic gradient of :mod:`vicreg.torch`
        and :mod:`vicreg.jax` (``loss.backward()``, ``jax.grad``); other libraries have no autodiff: use
        :meth:`value_and_grad`.

        Args:
            z1: The first view's embeddings, an ``(n, d)`` (or ``(n, ..., d)``) real floating array, ``n >= 2``.
            z2: The second view's, of the same shape, library and device.
            *views: More views, of the same shape, library and device.

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
        framework = adapter(z1, z2, *views)
        if framework is not None:
            return framework.local_loss((z1, z2, *views), self)
        return self.terms(z1, z2, *views).loss

    def terms(self, z1: Array, z2: Array, *views: Array, rank_me: bool = False) -> VICRegTerms | VICRegTermsWithRankMe:
        """The loss, its three unweighted terms and the collapse diagnostics.

        Args:
            z1: The first view's embeddings, an ``(n, d)`` (or ``(n, ..., d)``) real floating array, ``n >= 2``.
            z2: The second view's, of the same shape, library and device.
            *views: More views, of the same shape, library and device.
            rank_me: Also each view's RankMe (:func:`vicreg.rank_me`), from the matrices the loss builds.

        Returns:
            A :class:`vicreg.VICRegTerms` of 0-d arrays of the inputs' library and device; only ``loss``
            needs to be differentiated. With ``rank_me=True`` a :class:`vicreg.VICRegTermsWithRankMe`.

        Raises:
            TypeError: As for :meth:`__call__`.
            ValueError: As for :meth:`__call__`.
        """
        _checks.check_flag("rank_me", rank_me)
        framework = adapter(z1, z2, *views)
        if framework is not None:
            return framework.local_terms((z1, z2, *views), self, rank_me)
        xp, *inputs = _checks.prepare(z1, z2, *views)
        with full_precision(xp):
            terms = terms_from_statistics(xp, statistics(xp, inputs, self, rank_me=rank_me))
        return type(terms)(*(_checks.zero_d(xp, t) for t in terms))

    def value_and_grad(self, z1: Array, z2: Array, *views: Array) -> tuple[Array, tuple[Array, ...]]:
        """The loss and its analytic gradient, for libraries without autodiff; see
        :func:`vicreg.value_and_grad`.

        Args:
            z1: The first view's embeddings, an ``(n, d)`` (or ``(n, ..., d)``) real floating array, ``n >= 2``.
            z2: The second view's, of the same shape, library and device.
            *views: More views, of the same shape, library and device.

        Returns:
            ``(loss, (g1, g2, ...))``: the loss as :meth:`__call__` returns it and the gradient with respect
            to each view, each of its input's shape, dtype and device.

        Raises:
            TypeError: As for :meth:`__call__`.
            ValueError: As for :meth:`__call__`.
        """
        return _value_and_grad((z1, z2, *views), self)


def _value_and_grad(
    views: tuple[Array, ...], config: Config, per: int | None = None
) -> tuple[Array, tuple[Array, ...]]:
    """The loss of ``views`` and the analytic gradient with respect to each, in its own dtype."""
    xp, *inputs = _checks.prepare(*views)  # in the compute dtype
    with full_precision(xp):
        stats = statistics(xp, inputs, config, per=per)
        grads = gradient(xp, stats, config, shape=inputs[0].shape)
    grads = tuple(g if g.dtype == z.dtype else xp.astype(g, z.dtype) for g, z in zip(grads, views))
    return _checks.zero_d(xp, stats.loss), grads


def vicreg_loss(
    z1: Array,
    z2: Array,
    *views: Array,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    variance_target: float = 1.0,
    eps: float = 1e-4,
    convention: str = "official",
    precision: str | None = None,
) -> Array:
    """The VICReg loss of two views, for arrays of any array-API library.

    See :class:`VICRegLoss` for the formula, the conventions and the dtypes. On PyTorch tensors the result
    is differentiable with ``loss.backward()`` and on JAX arrays with ``jax.grad``, through the analytic
    gradient of :mod:`vicreg.torch` and :mod:`vicreg.jax`; for NumPy and CuPy use :func:`value_and_grad`.

    >>> import numpy as np, vicreg
    >>> z = np.random.default_rng(0).standard_normal((64, 128))
    >>> float(vicreg.vicreg_loss(z, z, std_coeff=0.0, cov_coeff=0.0))  # identical views: no invariance
    0.0

    More than two views (two global crops and several local ones, as VICRegL trains), ``vicreg_loss(z1,
    z2, z3, ...)``: the invariance is the mean, over the ordered pairs ``(i, j)`` with ``i`` one of the first
    two views and ``j`` any other view, of the pair's invariance (VICRegL's global loss); the variance term
    is the mean of the views' hinges (twice that in the "paper" convention); the covariance term is
    ``2 / K`` times the sum of the views' covariance terms, so that two views give the loss above exactly
    (VICRegL averages the covariance terms: half of this, for its ``cov_coeff``). One Gram product per view.

    >>> z1, z2, z3 = np.random.default_rng(1).standard_normal((3, 64, 128))
    >>> terms = vicreg.vicreg_terms(z1, z2, z3)
    >>> pairs = [vicreg.vicreg_terms(a, b).invariance for a, b in ((z1, z2), (z1, z3), (z2, z3))]
    >>> bool(np.isclose(terms.invariance, (2 * pairs[0] + pairs[1] + pairs[2]) / 4))
    True

    Args:
        z1: The first view's embeddings, an ``(n, d)`` or ``(n, ..., d)`` real floating array (``n`` samples, ``d``
            features), ``n >= 2``.
        z2: The second view's embeddings, of the same shape, library and device.
        *views: More views (crops), of the same shape, library and device; see below.
        sim_coeff: The weight of the invariance term.
        std_coeff: The weight of the variance term.
        cov_coeff: The weight of the covariance term.
        variance_target: ``gamma``, the standard deviation the variance hinge pushes towards.
        eps: Added to each variance inside the hinge's square root.
        convention: ``"official"`` (what ``facebookresearch/vicreg`` computes) or ``"paper"``.
        precision: The precision of the loss's float32 matrix products: ``None`` (automatic: ``"high"``
            under ``torch.autocast`` and for bfloat16 or float16 JAX inputs, ``"highest"`` otherwise),
            ``"highest"``, ``"high"`` or ``"medium"``; see :data:`vicreg.PRECISIONS`.

    Returns:
        The loss, a 0-d array of the inputs' library and device, in their dtype (float32 for float16 and
        bfloat16 inputs).

    Raises:
        TypeError: An input is not an array of a real floating dtype, is a masked, sparse or nested array
            or an ``ndarray`` subclass, or the two come from different libraries; a coefficient is not a
            real number.
        ValueError: Shapes with fewer than 2 dimensions or that differ, fewer than 2 samples, zero features,
            an empty middle axis, inputs on two devices; a negative or non-finite coefficient; an unknown
            convention or precision.
    """
    config = VICRegLoss(sim_coeff, std_coeff, cov_coeff, variance_target, eps, convention, precision)
    return config(z1, z2, *views)


def vicreg_terms(
    z1: Array,
    z2: Array,
    *views: Array,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    variance_target: float = 1.0,
    eps: float = 1e-4,
    convention: str = "official",
    precision: str | None = None,
    rank_me: bool = False,
) -> VICRegTerms | VICRegTermsWithRankMe:
    """The loss, its unweighted terms and the collapse diagnostics.

    >>> import numpy as np, vicreg
    >>> z1, z2 = np.random.default_rng(0).standard_normal((2, 64, 128))
    >>> {name: round(float(value), 3) for name, value in vicreg.vicreg_terms(z1, z2)._asdict().items()}
    {'loss': 53.494, 'invariance': 1.939, 'variance': 0.039, 'covariance': 4.051, 'std_mean': 0.993, 'std_min': 0.774}

    Args:
        z1: The first view's embeddings, an ``(n, d)`` (or ``(n, ..., d)``) real floating array, ``n >= 2``.
        z2: The second view's embeddings, of the same shape, library and device.
        *views: More views (crops), of the same shape, library and device; see below.
        sim_coeff: The weight of the invariance term.
        std_coeff: The weight of the variance term.
        cov_coeff: The weight of the covariance term.
        variance_target: ``gamma``, the standard deviation the variance hinge pushes towards.
        eps: Added to each variance inside the hinge's square root.
        convention: ``"official"`` or ``"paper"``.
        precision: The precision of the loss's float32 matrix products: ``None`` (automatic: ``"high"``
            under ``torch.autocast`` and for bfloat16 or float16 JAX inputs, ``"highest"`` otherwise),
            ``"highest"``, ``"high"`` or ``"medium"``; see :data:`vicreg.PRECISIONS`.
        rank_me: Also each view's RankMe (:func:`rank_me`), computed from the matrices the loss builds
            anyway: one symmetric eigenvalue solve per view more. Not differentiated.

    Returns:
        A :class:`VICRegTerms` of 0-d arrays of the inputs' library and device: ``loss``, the unweighted
        ``invariance``, ``variance`` and ``covariance``, and ``std_mean``, ``std_min``. With
        ``rank_me=True``, a :class:`VICRegTermsWithRankMe`: the same and ``rank_me``, one value per view.

    Raises:
        TypeError: As for :func:`vicreg_loss`.
        ValueError: As for :func:`vicreg_loss`.
    """
    config = VICRegLoss(sim_coeff, std_coeff, cov_coeff, variance_target, eps, convention, precision)
    return config.terms(z1, z2, *views, rank_me=rank_me)


def value_and_grad(
    z1: Array,
    z2: Array,
    *views: Array,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    variance_target: float = 1.0,
    eps: float = 1e-4,
    convention: str = "official",
    precision: str | None = None,
) -> tuple[Array, tuple[Array, ...]]:
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
        *views: More views (crops), of the same shape, library and device; see below.
        sim_coeff: The weight of the invariance term.
        std_coeff: The weight of the variance term.
        cov_coeff: The weight of the covariance term.
        variance_target: ``gamma``, the standard deviation the variance hinge pushes towards.
        eps: Added to each variance inside the hinge's square root.
        convention: ``"official"`` or ``"paper"``.
        precision: The precision of the loss's float32 matrix products: ``None`` (automatic: ``"high"``
            under ``torch.autocast`` and for bfloat16 or float16 JAX inputs, ``"highest"`` otherwise),
            ``"highest"``, ``"high"`` or ``"medium"``; see :data:`vicreg.PRECISIONS`.

    Returns:
        ``(loss, (g1, g2))``: the loss as :func:`vicreg_loss` returns it, and ``g1 = dloss/dz1``,
        ``g2 = dloss/dz2``, each of its input's shape, dtype and device, two arrays of their own.

    Raises:
        TypeError: As for :func:`vicreg_loss`.
        ValueError: As for :func:`vicreg_loss`.
    """
    config = VICRegLoss(sim_coeff, std_coeff, cov_coeff, variance_target, eps, convention, precision)
    return config.value_and_grad(z1, z2, *views)


def vcreg_loss(
    z: Array,
    *,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    variance_target: float = 1.0,
    eps: float = 1e-4,
    convention: str = "official",
    precision: str | None = None,
) -> Array:
    r"""The VCReg regulariser of one view's embeddings: VICReg's variance and covariance terms, without an
    invariance (as used to regularise supervised training).

    .. math::  \mathrm{VCReg}(z) = \mu\, s\, v(z) + \nu\, c(z), \qquad s = \tfrac12\ (\text{official})
               \ \text{or}\ 1\ (\text{paper}),

    so that the VICReg loss of a pair is ``sim_coeff * invariance + vcreg_loss(z1) + vcreg_loss(z2)``
    exactly, in either convention. On PyTorch tensors and JAX arrays it is differentiable (the analytic
    gradient of :mod:`vicreg.torch` and :mod:`vicreg.jax`); for NumPy and CuPy use
    :func:`vcreg_value_and_grad`.

    >>> import numpy as np, vicreg
    >>> z1, z2 = np.random.default_rng(0).standard_normal((2, 64, 128))
    >>> pair = vicreg.vicreg_terms(z1, z2)
    >>> bool(np.isclose(pair.loss, 25 * pair.invariance + vicreg.vcreg_loss(z1) + vicreg.vcreg_loss(z2)))
    True

    Args:
        z: The embeddings, an ``(n, d)`` or ``(n, ..., d)`` real floating array, ``n >= 2``.
        std_coeff: The weight of the variance term.
        cov_coeff: The weight of the covariance term.
        variance_target: ``gamma``, the standard deviation the variance hinge pushes towards.
        eps: Added to each variance inside the hinge's square root.
        convention: ``"official"`` or ``"paper"``.
        precision: The precision of the loss's float32 matrix products: ``None`` (automatic: ``"high"``
            under ``torch.autocast`` and for bfloat16 or float16 JAX inputs, ``"highest"`` otherwise),
            ``"highest"``, ``"high"`` or ``"medium"``; see :data:`vicreg.PRECISIONS`.

    Returns:
        The regulariser, a 0-d array of the input's library and device (float32 for float16 and bfloat16).

    Raises:
        TypeError: As for :func:`vicreg_loss`.
        ValueError: As for :func:`vicreg_loss`.
    """
    return vcreg_terms(
        z,
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
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    variance_target: float = 1.0,
    eps: float = 1e-4,
    convention: str = "official",
    precision: str | None = None,
    rank_me: bool = False,
) -> VCRegTerms | VCRegTermsWithRankMe:
    """The VCReg regulariser of one view with its terms and the collapse diagnostics; see :func:`vcreg_loss`.

    Args:
        z: The embeddings, an ``(n, d)`` or ``(n, ..., d)`` real floating array, ``n >= 2``.
        std_coeff: The weight of the variance term.
        cov_coeff: The weight of the covariance term.
        variance_target: ``gamma``, the standard deviation the variance hinge pushes towards.
        eps: Added to each variance inside the hinge's square root.
        convention: ``"official"`` or ``"paper"``.
        precision: The precision of the loss's float32 matrix products: ``None`` (automatic: ``"high"``
            under ``torch.autocast`` and for bfloat16 or float16 JAX inputs, ``"highest"`` otherwise),
            ``"highest"``, ``"high"`` or ``"medium"``; see :data:`vicreg.PRECISIONS`.
        rank_me: Also the view's RankMe (:func:`rank_me`), from the matrices computed here anyway.

    Returns:
        A :class:`vicreg.VCRegTerms` of 0-d arrays: ``loss``, the unweighted ``variance`` (half the view's
        hinge in the "official" convention) and ``covariance``, ``std_mean``, ``std_min``. With
        ``rank_me=True`` a :class:`vicreg.VCRegTermsWithRankMe`, with the view's ``rank_me`` too.

    Raises:
        TypeError: As for :func:`vicreg_loss`.
        ValueError: As for :func:`vicreg_loss`.
    """
    config = Config(0.0, std_coeff, cov_coeff, variance_target, eps, convention, precision)
    _checks.check_flag("rank_me", rank_me)
    framework = adapter(z, z)
    if framework is not None:
        return framework.local_vcreg_terms(z, config, rank_me)
    xp, a = _checks.prepare(z)
    with full_precision(xp):
        terms = vcreg_from_statistics(xp, statistics(xp, (a,), config, per=2, rank_me=rank_me))
    return type(terms)(*(_checks.zero_d(xp, t) for t in terms))


def rank_me(z: Array) -> Array:
    r"""RankMe (Garrido et al., 2023) of the embeddings ``z`` as given (not centred): the exponential of the
    entropy of their normalised singular values, a smooth count of the dimensions they use (``min(n, d)`` at
    most; 1 at complete collapse).

    .. math::  \mathrm{RankMe}(z) = \exp\Big(-\sum_k p_k \log p_k\Big), \qquad
               p_k = \frac{\sigma_k(z)}{\sum_l \sigma_l(z)} + 10^{-7}

    (the paper's form, the constant ``1e-7`` added to each ``p_k``). The singular values come from the
    eigenvalues of the ``n x n`` (``d x d`` when ``n > d / 2``) Gram matrix that the loss builds; to get it
    beside the loss at the cost of one eigenvalue solve, pass ``rank_me=True`` to :func:`vicreg_terms`. In
    float32, singular values below about ``1.4e-3`` times the largest count as zero (``4e-8`` in float64):
    below that, the squared values of a Gram matrix are rounding noise. Not differentiated (a monitor). On a
    ``(n, ..., d)`` input, the mean over the positions of each ``(n, d)`` slice's.

    >>> import numpy as np, vicreg
    >>> z = np.random.default_rng(0).standard_normal((256, 64))
    >>> round(float(vicreg.rank_me(z)), 1)                     # nearly all 64 dimensions
    61.8
    >>> round(float(vicreg.rank_me(np.outer(z[:, 0], z[0]))), 4)  # rank one: collapsed
    1.0001

    Args:
        z: The embeddings, an ``(n, d)`` or ``(n, ..., d)`` real floating array, ``n >= 2``.

    Returns:
        RankMe, a 0-d array of the input's library and device (float32 for float16 and bfloat16). NaN where
        ``z`` has a NaN or an infinity, where its squares overflow, and where it is all zeros.

    Raises:
        TypeError: As for :func:`vicreg_loss`; also where the array library has no ``linalg.eigvalsh``.
        ValueError: As for :func:`vicreg_loss`.
    """
    return cast(VCRegTermsWithRankMe, vcreg_terms(z, rank_me=True)).rank_me


def vcreg_value_and_grad(
    z: Array,
    *,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    variance_target: float = 1.0,
    eps: float = 1e-4,
    convention: str = "official",
    precision: str | None = None,
) -> tuple[Array, Array]:
    """The VCReg regulariser of one view and its analytic gradient, for array libraries without autodiff.

    >>> import numpy as np, vicreg
    >>> z = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32)
    >>> loss, g = vicreg.vcreg_value_and_grad(z)
    >>> loss.dtype, g.shape
    (dtype('float32'), (64, 128))

    Args:
        z: The embeddings, an ``(n, d)`` or ``(n, ..., d)`` real floating array, ``n >= 2``.
        std_coeff: The weight of the variance term.
        cov_coeff: The weight of the covariance term.
        variance_target: ``gamma``, the standard deviation the variance hinge pushes towards.
        eps: Added to each variance inside the hinge's square root.
        convention: ``"official"`` or ``"paper"``.
        precision: The precision of the loss's float32 matrix products: ``None`` (automatic: ``"high"``
            under ``torch.autocast`` and for bfloat16 or float16 JAX inputs, ``"highest"`` otherwise),
            ``"highest"``, ``"high"`` or ``"medium"``; see :data:`vicreg.PRECISIONS`.

    Returns:
        ``(loss, g)``: the regulariser as :func:`vcreg_loss` returns it and its gradient, of ``z``'s shape,
        dtype and device.

    Raises:
        TypeError: As for :func:`vicreg_loss`.
        ValueError: As for :func:`vicreg_loss`.
    """
    config = Config(0.0, std_coeff, cov_coeff, variance_target, eps, convention, precision)
    loss, (g,) = _value_and_grad((z,), config, per=2)
    return loss, g
