"""Collapse monitoring on NumPy embeddings: per-dimension standard deviation, effective rank and RankMe.

VICReg collapses in two ways: *complete* collapse, every dimension's standard deviation
going to 0, and *dimensional* collapse, a few directions carrying all the variance (low effective rank).
"""

from __future__ import annotations

import numpy as np

import vicreg

#: ``collapsed`` is reported when the final mean per-dimension std is below this fraction of gamma.
COLLAPSE_FRACTION = 0.05
#: A warning is logged when the mean per-dimension std falls below this fraction of gamma.
WARN_FRACTION = 0.2


def std_per_dim(z: np.ndarray) -> np.ndarray:
    """Unbiased per-dimension standard deviation of ``(n, d)`` embeddings, ``sqrt(var_j)``."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"embeddings must be (n, d) with n >= 2, got shape {z.shape}")
    return z.std(axis=0, ddof=1)


def effective_rank(z: np.ndarray) -> float:
    r"""Effective rank (Roy & Vetterli, 2007) of the centred embeddings ``z`` (``(n, d)``).

    .. math:: \mathrm{erank}(Z) = \exp\Big(-\sum_k p_k \log p_k\Big),\qquad p_k = \sigma_k / \sum_l \sigma_l

    with ``sigma_k`` the singular values of ``Z - mean(Z)``. Between 1 (all variance on one direction)
    and ``min(n, d)`` (all singular values equal); 0 for constant embeddings.
    """
    z = np.asarray(z, dtype=np.float64)
    s = np.linalg.svd(z - z.mean(axis=0), compute_uv=False)
    total = s.sum()
    if not np.isfinite(total) or total <= 1e-12 * max(1.0, float(np.abs(z).max(initial=0.0))) * len(s):
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def embedding_stats(z: np.ndarray) -> dict[str, float]:
    """``{"std_mean", "std_min", "effective_rank", "rank_me"}`` of ``(n, d)`` embeddings: the effective rank
    of the centred embeddings, and RankMe (:func:`vicreg.rank_me`) of the embeddings as they are."""

    std = std_per_dim(z)
    return {
        "std_mean": float(std.mean()),
        "std_min": float(std.min()),
        "effective_rank": effective_rank(z),
        "rank_me": float(vicreg.rank_me(np.asarray(z, dtype=np.float64))),
    }


def is_collapsed(std_mean: float, variance_target: float = 1.0) -> bool:
    """True when the mean per-dimension std is below ``COLLAPSE_FRACTION * variance_target`` (or NaN)."""
    return not (std_mean >= COLLAPSE_FRACTION * variance_target)


def collapse_warning(std_mean: float, variance_target: float = 1.0) -> str | None:
    """A warning line when the std falls towards collapse, else ``None``."""
    if is_collapsed(std_mean, variance_target):
        return (
            f"COLLAPSE: mean per-dimension std {std_mean:.4f} < {COLLAPSE_FRACTION} x gamma "
            f"({COLLAPSE_FRACTION * variance_target:g}); the embeddings are (nearly) constant. Is the "
            "variance term on (std_coeff > 0)?"
        )
    if std_mean < WARN_FRACTION * variance_target:
        return f"warning: mean per-dimension std {std_mean:.4f} is falling towards collapse (< {WARN_FRACTION} x gamma)"
    return None
