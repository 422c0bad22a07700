"""The loss's configuration and the record of its terms: plain data, shared by every entry point."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from . import _checks

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


class VCRegTerms(NamedTuple):
    """The VCReg regulariser of one view, its two unweighted terms and the collapse diagnostics; every field
    is a 0-d array (see :func:`vicreg.vcreg_terms`).

    Attributes:
        loss: ``std_coeff * variance + cov_coeff * covariance``.
        variance: The view's variance hinge, halved in the "official" convention (its share of a pair's).
        covariance: The view's off-diagonal covariance term ``c(z)``.
        std_mean: The mean of the per-dimension standard deviations ``sqrt(var_j)`` (no ``eps``).
        std_min: Their minimum.
    """

    loss: Array
    variance: Array
    covariance: Array
    std_mean: Array
    std_min: Array


class VICRegTermsWithRankMe(NamedTuple):
    """:class:`VICRegTerms` and each view's RankMe, what ``vicreg_terms(..., rank_me=True)`` returns (a type of
    its own, so that :class:`VICRegTerms` keeps its six 0-d fields).

    Attributes:
        loss: As in :class:`VICRegTerms`.
        invariance: As in :class:`VICRegTerms`.
        variance: As in :class:`VICRegTerms`.
        covariance: As in :class:`VICRegTerms`.
        std_mean: As in :class:`VICRegTerms`.
        std_min: As in :class:`VICRegTerms`.
        rank_me: Each view's RankMe (see :func:`vicreg.rank_me`), a 1-D array of ``K`` values; not
            differentiated.
    """

    loss: Array
    invariance: Array
    variance: Array
    covariance: Array
    std_mean: Array
    std_min: Array
    rank_me: Array


class VCRegTermsWithRankMe(NamedTuple):
    """:class:`VCRegTerms` and the view's RankMe, what ``vcreg_terms(..., rank_me=True)`` returns.

    Attributes:
        loss: As in :class:`VCRegTerms`.
        variance: As in :class:`VCRegTerms`.
        covariance: As in :class:`VCRegTerms`.
        std_mean: As in :class:`VCRegTerms`.
        std_min: As in :class:`VCRegTerms`.
        rank_me: The view's RankMe (see :func:`vicreg.rank_me`), a 0-d array; not differentiated.
    """

    loss: Array
    variance: Array
    covariance: Array
    std_mean: Array
    std_min: Array
    rank_me: Array


@dataclass(frozen=True)
class Config:
    """The coefficients, the convention and the products' precision of the loss (``precision=None``: the
    entry point's default, see :data:`vicreg.PRECISIONS`), checked and stored as Python floats (so that the
    result's dtype follows the inputs alone, and the configuration is static under ``jax.jit``). The public
    :class:`vicreg.VICRegLoss` is this configuration with methods that compute the loss."""

    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0
    variance_target: float = 1.0
    eps: float = 1e-4
    convention: str = "official"
    precision: str | None = None

    def __post_init__(self) -> None:
        floats = _checks.check_options(
            self.sim_coeff,
            self.std_coeff,
            self.cov_coeff,
            self.variance_target,
            self.eps,
            self.convention,
            self.precision,
        )
        for name, value in zip(("sim_coeff", "std_coeff", "cov_coeff", "variance_target", "eps"), floats):
            object.__setattr__(self, name, value)
