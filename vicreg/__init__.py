"""vicreg: the VICReg self-supervised loss (Bardes, Ponce, LeCun, ICLR 2022), written once against the
Python array API standard, for NumPy, CuPy, PyTorch, JAX and any other array-API library.

>>> import numpy as np, vicreg
>>> rng = np.random.default_rng(0)
>>> z1, z2 = rng.standard_normal((2, 64, 128))
>>> loss = vicreg.vicreg_loss(z1, z2)
>>> terms = vicreg.vicreg_terms(z1, z2)     # loss, invariance, variance, covariance, std_mean, std_min
>>> loss, (g1, g2) = vicreg.value_and_grad(z1, z2)

Importing this package imports no array library: each is reached only through the arrays it is given.
Framework adapters live in :mod:`vicreg.torch` (``nn.Module``, distributed, autocast) and
:mod:`vicreg.jax` (``jit``, ``grad``, ``shard_map``).
"""

from ._api import (
    VICRegLoss,
    rank_me,
    value_and_grad,
    vcreg_loss,
    vcreg_terms,
    vcreg_value_and_grad,
    vicreg_loss,
    vicreg_terms,
)
from ._checks import CONVENTIONS, PRECISIONS
from ._config import VCRegTerms, VCRegTermsWithRankMe, VICRegTerms, VICRegTermsWithRankMe

__all__ = [
    "CONVENTIONS",
    "PRECISIONS",
    "VCRegTerms",
    "VCRegTermsWithRankMe",
    "VICRegLoss",
    "VICRegTerms",
    "VICRegTermsWithRankMe",
    "rank_me",
    "value_and_grad",
    "vcreg_loss",
    "vcreg_terms",
    "vcreg_value_and_grad",
    "vicreg_loss",
    "vicreg_terms",
]
__version__ = "0.1.0"
