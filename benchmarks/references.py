r"""The implementations the benchmark times against ``vicreg``, each written in one framework.

These are *references*, not library code: they exist to be timed and to be checked against the core
(``tests/test_benchmarks.py``), and the library never calls them.

* ``official_*``: the formulation of the official code (facebookresearch/vicreg, ``main_vicreg.py``) and of
  every public port we know, written straightforwardly in each framework: centre each view, take the
  unbiased per-dimension variance, build the explicit ``d x d`` covariance

  .. math::  C = \frac{zc^\top zc}{n - 1}

  and square-sum its off-diagonal entries, read through a strided view of the flattened matrix. Its
  memory is ``O(d^2)`` per view (256 MiB in float32 at the official ``d = 8192``), its work ``O(n d^2)``.
  NumPy and CuPy have no autodiff, so their forward+backward reference is the hand-derived gradient of the
  same ``d x d`` formulation:

  .. math::

      \frac{\partial \mathcal L}{\partial z^1} = \frac{2\lambda}{nd}(z^1 - z^2)
          - \frac{\mu}{2 d (n-1)}\, zc \odot \frac{[\gamma - \mathrm{std} > 0]}{\mathrm{std}}
          + \frac{4\nu}{d (n-1)}\, zc\, \mathrm{offdiag}(C),

  followed by the centring projection (subtracting each column's mean), as a direct derivation has it.
* ``handwritten_torch``: the formulas ``vicreg`` itself uses (``n x n`` Gram matrix when ``2 n <= d``,
  with the largest-variance columns treated exactly), typed straight into PyTorch without the array-API
  layer. It measures what the array-API dispatch costs on small inputs (issue item 6).
* ``lightly_torch``: ``lightly.loss.VICRegLoss`` when lightly is installed.

All take the coefficients of the official convention; ``variance_target`` is fixed at 1 in lightly, so
the benchmark uses the defaults throughout.
"""

from __future__ import annotations

from typing import Any

SIM, STD, COV, GAMMA, EPS = 25.0, 25.0, 1.0, 1.0, 1e-4


def _off_diagonal(c: Any) -> Any:
    """The ``d (d - 1)`` off-diagonal entries of a square matrix, as a strided view (no copy in NumPy
    and PyTorch): dropping the first entry of the flattened matrix leaves ``d - 1`` rows of length
    ``d + 1`` whose last entry is a diagonal one."""
    d = c.shape[0]
    return c.reshape(-1)[1:].reshape(d - 1, d + 1)[:, :-1]


# --- NumPy and CuPy (module passed as ``xp``: ``numpy`` or ``cupy``) ---------------------------------


def official_numpy(xp: Any, z1: Any, z2: Any) -> Any:
    """The official formulation's loss in NumPy or CuPy (explicit ``d x d`` covariance)."""
    n, d = z1.shape
    invariance = xp.mean((z1 - z2) ** 2)
    variance = 0.0
    covariance = 0.0
    for z in (z1, z2):
        zc = z - z.mean(axis=0)
        std = xp.sqrt(zc.var(axis=0, ddof=1) + EPS)
        variance = variance + xp.mean(xp.maximum(GAMMA - std, 0)) / 2
        c = (zc.T @ zc) / (n - 1)
        covariance = covariance + xp.sum(_off_diagonal(c) ** 2) / d
    return SIM * invariance + STD * variance + COV * covariance


def official_numpy_value_and_grad(xp: Any, z1: Any, z2: Any) -> tuple[Any, tuple[Any, Any]]:
    """``(loss, (g1, g2))`` of the official formulation, gradient derived by hand with ``d x d`` matrices."""
    n, d = z1.shape
    diff = z1 - z2
    loss = SIM * xp.mean(diff**2)
    grads = []
    for z in (z1, z2):
        zc = z - z.mean(axis=0)
        std = xp.sqrt(zc.var(axis=0, ddof=1) + EPS)
        gap = GAMMA - std
        loss = loss + STD * xp.mean(xp.maximum(gap, 0)) / 2
        off = (zc.T @ zc) / (n - 1)
        xp.fill_diagonal(off, 0)
        loss = loss + COV * xp.sum(off**2) / d
        g = (4 * COV / (d * (n - 1))) * (zc @ off)
        g -= (STD / (2 * d * (n - 1))) * zc * ((gap > 0) / std)
        grads.append(g - g.mean(axis=0))
    a = 2 * SIM / (n * d)
    return loss, (grads[0] + a * diff, grads[1] - a * diff)


# --- PyTorch -----------------------------------------------------------------------------------------


def official_torch(z1: Any, z2: Any) -> Any:
    """The official formulation in PyTorch (``F.mse_loss``, ``Tensor.var``, ``d x d`` covariance)."""
    import torch
    import torch.nn.functional as F

    n, d = z1.shape
    loss = SIM * F.mse_loss(z1, z2)
    for z in (z1, z2):
        zc = z - z.mean(dim=0)
        std = torch.sqrt(zc.var(dim=0) + EPS)
        loss = loss + STD * torch.mean(F.relu(GAMMA - std)) / 2
        c = (zc.T @ zc) / (n - 1)
        loss = loss + COV * _off_diagonal(c).pow(2).sum() / d
    return loss


def handwritten_torch(z1: Any, z2: Any) -> Any:
    """The formulas of ``vicreg`` typed directly in PyTorch, float32 compute for half-precision inputs as
    the core does: two-pass centring, and on the Gram path (``2 n <= d``) the ``n - 1`` largest-variance
    columns treated exactly beside the Gram matrix of the rest; else the ``d x d`` matrix with a zero diagonal."""
    import torch

    if z1.dtype in (torch.float16, torch.bfloat16):
        z1, z2 = z1.float(), z2.float()
    n, d = z1.shape
    diff = z1 - z2
    loss = SIM * (diff * diff).sum() / (n * d)
    for z in (z1, z2):
        zc = z - z.sum(dim=0) / n
        zc = zc - zc.sum(dim=0) / n
        var = (zc * zc).sum(dim=0) / (n - 1)
        loss = loss + STD * torch.relu(GAMMA - torch.sqrt(var + EPS)).mean() / 2
        if 2 * n <= d:
            index = var.topk(n - 1).indices
            top = zc[:, index]
            rest = zc.index_fill(1, index, 0)
            gram = rest @ rest.T
            within = (gram * gram).sum() - ((var * (n - 1)).index_fill(0, index, 0) ** 2).sum()
            cross = top.T @ rest  # the top columns' block of zc^T zc
            top_gram = (top.T @ top).fill_diagonal_(0)
            off = within.clamp(min=0) + 2 * (cross * cross).sum() + (top_gram * top_gram).sum()
        else:
            s = (zc.T @ zc).fill_diagonal_(0)
            off = (s * s).sum()
        loss = loss + COV * off / ((n - 1) * (n - 1) * d)
    return loss


def lightly_torch() -> Any:
    """``lightly.loss.VICRegLoss`` with the default coefficients, or ``None`` when lightly is missing."""
    try:
        from lightly.loss import VICRegLoss
    except Exception:  # not installed, or its import fails against this torch
        return None
    return VICRegLoss(lambda_param=SIM, mu_param=STD, nu_param=COV, eps=EPS)


# --- JAX ---------------------------------------------------------------------------------------------


def official_jax(z1: Any, z2: Any) -> Any:
    """The official formulation in ``jax.numpy`` (meant to run under ``jax.jit``)."""
    import jax.numpy as jnp

    n, d = z1.shape
    loss = SIM * jnp.mean((z1 - z2) ** 2)
    for z in (z1, z2):
        zc = z - z.mean(axis=0)
        std = jnp.sqrt(zc.var(axis=0, ddof=1) + EPS)
        loss = loss + STD * jnp.mean(jnp.maximum(GAMMA - std, 0)) / 2
        c = (zc.T @ zc) / (n - 1)
        loss = loss + COV * jnp.sum(_off_diagonal(c) ** 2) / d
    return loss
