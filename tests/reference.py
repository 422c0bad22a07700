"""An independent float64 reference for the VICReg loss, written straight from the formulas.

It differs from the library on purpose: it builds the explicit ``d x d`` covariance matrix, reads the
variances off its diagonal and the penalised entries through an off-diagonal mask, and averages the
invariance per sample. It runs in PyTorch so that autograd gives independent reference gradients.
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULTS = dict(sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, variance_target=1.0, eps=1e-4, convention="official")


def reference_terms(z1, z2, **options) -> dict[str, torch.Tensor]:
    """The loss and its terms for float64 tensors (or arrays) ``z1``, ``z2``; tensors keep their graph."""
    o = {**DEFAULTS, **options}
    z1 = z1 if isinstance(z1, torch.Tensor) else torch.tensor(np.asarray(z1), dtype=torch.float64)
    z2 = z2 if isinstance(z2, torch.Tensor) else torch.tensor(np.asarray(z2), dtype=torch.float64)
    n, d = z1.shape
    diagonal = torch.eye(d, dtype=torch.bool, device=z1.device)

    def covariance_matrix(z):
        centred = z - z.sum(dim=0, keepdim=True) / n
        return torch.einsum("ki,kj->ij", centred, centred) / (n - 1)

    def hinge(c):
        std = torch.sqrt(torch.diagonal(c) + o["eps"])
        return torch.relu(o["variance_target"] - std).sum() / d

    def off_diagonal_penalty(c):  # the diagonal masked out: zeros, not a subtraction
        return c.masked_fill(diagonal, 0.0).pow(2).sum() / d

    c1, c2 = covariance_matrix(z1), covariance_matrix(z2)
    per_sample = ((z1 - z2) ** 2).sum(dim=1)
    if o["convention"] == "official":
        invariance = per_sample.mean() / d
        variance = (hinge(c1) + hinge(c2)) / 2
    else:
        invariance = per_sample.mean()
        variance = hinge(c1) + hinge(c2)
    covariance = off_diagonal_penalty(c1) + off_diagonal_penalty(c2)
    loss = o["sim_coeff"] * invariance + o["std_coeff"] * variance + o["cov_coeff"] * covariance
    stds = torch.cat([torch.diagonal(c1), torch.diagonal(c2)]).sqrt()
    return dict(
        loss=loss,
        invariance=invariance,
        variance=variance,
        covariance=covariance,
        std_mean=stds.mean(),
        std_min=stds.min(),
    )


def reference_value_and_grad(z1, z2, **options):
    """``(loss, (grad_z1, grad_z2))`` of the reference, by torch autograd, as float64 NumPy."""
    t1 = torch.tensor(np.asarray(z1, dtype=np.float64), requires_grad=True)
    t2 = torch.tensor(np.asarray(z2, dtype=np.float64), requires_grad=True)
    loss = reference_terms(t1, t2, **options)["loss"]
    g1, g2 = torch.autograd.grad(loss, (t1, t2))
    return loss.item(), (g1.numpy(), g2.numpy())


def reference_positions_terms(z1, z2, **options) -> dict[str, torch.Tensor]:
    """The loss of ``(n, ..., d)`` embeddings as lightly's ``VICRegLoss`` defines it: each position along
    the middle axes is an ``(n, d)`` problem of its own, and the loss and its three terms are the means
    over positions (lightly's invariance is the mean squared difference over all elements, its variance
    and covariance terms the means over positions). Computed here one position at a time, with
    :func:`reference_terms`; ``std_mean`` is the mean over positions (each has the same ``2 d``
    dimensions) and ``std_min`` the minimum."""
    z1 = z1 if isinstance(z1, torch.Tensor) else torch.tensor(np.asarray(z1), dtype=torch.float64)
    z2 = z2 if isinstance(z2, torch.Tensor) else torch.tensor(np.asarray(z2), dtype=torch.float64)
    n, d = z1.shape[0], z1.shape[-1]
    a, b = z1.reshape(n, -1, d), z2.reshape(n, -1, d)
    each = [reference_terms(a[:, p], b[:, p], **options) for p in range(a.shape[1])]
    out = {key: torch.stack([t[key] for t in each]).mean() for key in each[0] if key != "std_min"}
    out["std_min"] = torch.stack([t["std_min"] for t in each]).min()
    return out


def reference_positions_value_and_grad(z1, z2, **options):
    """``(loss, (grad_z1, grad_z2))`` of :func:`reference_positions_terms`, by torch autograd, as float64
    NumPy."""
    t1 = torch.tensor(np.asarray(z1, dtype=np.float64), requires_grad=True)
    t2 = torch.tensor(np.asarray(z2, dtype=np.float64), requires_grad=True)
    loss = reference_positions_terms(t1, t2, **options)["loss"]
    loss.backward()
    return loss.item(), (t1.grad.numpy(), t2.grad.numpy())


def reference_views_terms(views, **options) -> dict[str, torch.Tensor]:
    """The loss of ``K >= 2`` views as defined for this library, from the formulas: the invariance is the
    mean, over the ordered pairs ``(i, j)`` with ``i`` one of the first two views and ``j`` any other view,
    of the pair's invariance; the variance is the mean over the views of their hinges (twice that in the
    "paper" convention); the covariance is ``2 / K`` times the sum of the views' covariance terms. Each view's
    statistics come from :func:`reference_terms`' formulas (explicit ``d x d`` covariance)."""
    o = {**DEFAULTS, **options}
    views = [z if isinstance(z, torch.Tensor) else torch.tensor(np.asarray(z), dtype=torch.float64) for z in views]
    k = len(views)
    pairs = [(i, j) for i in range(2) for j in range(k) if j != i]
    # a pair's invariance and each view's variance and covariance terms, by the two-view reference (whose
    # variance term is the mean of the two views' hinges, "official", and covariance the sum of their terms)
    plain = {**o, "sim_coeff": 1.0, "std_coeff": 1.0, "cov_coeff": 1.0, "convention": "official"}
    invariance = sum(reference_terms(views[i], views[j], **plain)["invariance"] for i, j in pairs) / len(pairs)
    if o["convention"] != "official":
        invariance = invariance * views[0].shape[1]
    hinges = [reference_terms(z, z, **plain)["variance"] for z in views]  # (v + v) / 2 = v
    covariances = [reference_terms(z, z, **plain)["covariance"] / 2 for z in views]  # c + c
    variance = sum(hinges) / k * (1.0 if o["convention"] == "official" else 2.0)
    covariance = 2.0 / k * sum(covariances)
    loss = o["sim_coeff"] * invariance + o["std_coeff"] * variance + o["cov_coeff"] * covariance
    return dict(loss=loss, invariance=invariance, variance=variance, covariance=covariance)


def vicregl_global_loss(views, inv_coeff=25.0, var_coeff=25.0, cov_coeff=1.0):
    """VICRegL's global loss (``main_vicregl.py``, ``global_loss``), written here from its definition: the
    invariance summed over ``i`` in the first two views and ``j`` over all the others (``j != i``), divided by
    the number of such pairs; the variance and the covariance terms of every view, averaged over the views
    (each view's variance term ``mean(relu(1 - std))``, its covariance term the off-diagonal squares over
    ``d``), with the batch size of the views. ``inv_coeff * inv + var_coeff * var + cov_coeff * cov``."""
    views = [z if isinstance(z, torch.Tensor) else torch.tensor(np.asarray(z), dtype=torch.float64) for z in views]
    k, (n, d) = len(views), views[0].shape
    inv, pairs = 0.0, 0
    for i in range(2):
        for j in range(k):
            if j != i:
                inv = inv + torch.nn.functional.mse_loss(views[i], views[j])
                pairs += 1
    inv = inv / pairs
    var, cov = 0.0, 0.0
    for z in views:
        x = z - z.mean(dim=0)
        std = torch.sqrt(x.var(dim=0) + 1e-4)
        var = var + torch.mean(torch.relu(1.0 - std))
        c = (x.T @ x) / (n - 1)
        cov = cov + c.masked_fill(torch.eye(d, dtype=torch.bool), 0.0).pow(2).sum() / d
    return inv_coeff * inv + var_coeff * var / k + cov_coeff * cov / k
