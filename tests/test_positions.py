"""Embeddings of shape ``(n, ..., d)``: the loss of each position along the middle axes, averaged.

Checked against an independent float64 reference that loops over the positions with the explicit
``d x d`` covariance (``reference_positions_terms``), against lightly's ``VICRegLoss`` when lightly is
installed, and through every entry point: the core on every backend, ``value_and_grad``, the PyTorch module
with both backwards, ``vicreg.jax``, and the derivatives users take of them (autograd, a gradient penalty,
``torch.func``, ``jax.grad`` and ``jax.hessian``).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from reference import reference_positions_terms, reference_positions_value_and_grad, reference_terms

import vicreg

TOL = 1e-10
# (n, ..., d): 2 n <= d takes the Gram path, 2 n > d the d x d one (per position)
SHAPES = [(8, 5, 32), (8, 3, 2, 4), (6, 2, 40), (16, 4, 3), (5, 1, 7)]
PAPER = dict(sim_coeff=1.5, std_coeff=3.0, cov_coeff=0.5, variance_target=1.2, eps=1e-3, convention="paper")
OPTIONS = {"official": {}, "paper": PAPER}


def views(shape, seed=0):
    """Two correlated float64 views whose dimensions have spread-out scales (some hinges active)."""
    rng = np.random.default_rng(seed)
    scale = np.linspace(0.3, 2.0, shape[-1])
    z1 = rng.standard_normal(shape) * scale
    return z1, z1 + 0.5 * rng.standard_normal(shape) * scale


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.parametrize("options", list(OPTIONS), ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_terms_and_gradient_match_the_reference(backend, shape, options):
    kw = OPTIONS[options]
    z1, z2 = views(shape, seed=len(shape) + shape[-1])
    a, b = backend.asarray(z1), backend.asarray(z2)
    want = reference_positions_terms(z1, z2, **kw)
    terms = vicreg.vicreg_terms(a, b, **kw)
    for key, value in terms._asdict().items():
        assert backend.to_numpy(value).shape == ()
        assert float(backend.to_numpy(value)) == pytest.approx(want[key].item(), rel=TOL, abs=1e-14), key
    want_loss, want_grads = reference_positions_value_and_grad(z1, z2, **kw)
    loss, grads = vicreg.value_and_grad(a, b, **kw)
    assert float(backend.to_numpy(loss)) == pytest.approx(want_loss, rel=TOL)
    for g, want_g, z in zip(grads, want_grads, (a, b)):
        assert g.shape == z.shape and g.dtype == z.dtype
        assert vicreg_device(g) == vicreg_device(z)
        assert rel(backend.to_numpy(g), want_g) <= TOL
    # the inputs are left alone (the gradient reuses private buffers only)
    np.testing.assert_array_equal(backend.to_numpy(a), z1)


def vicreg_device(x):
    import array_api_compat

    return array_api_compat.device(x)


def test_one_position_is_the_two_dimensional_loss():
    z1, z2 = views((12, 20), seed=3)
    loss, (g1, _) = vicreg.value_and_grad(z1, z2)
    loss3, (g13, _) = vicreg.value_and_grad(z1[:, None], z2[:, None])
    assert float(loss3) == pytest.approx(float(loss), rel=1e-14)
    assert g13.shape == (12, 1, 20) and rel(g13[:, 0], g1) <= 1e-14


def test_positions_are_independent_problems():
    """Permuting the positions permutes the gradient and keeps the loss; each position's gradient is its
    own 2-D gradient divided by the number of positions."""
    z1, z2 = views((10, 3, 2, 16), seed=5)
    loss, (g1, _) = vicreg.value_and_grad(z1, z2)
    order = [2, 0, 1]
    loss_p, (g1_p, _) = vicreg.value_and_grad(z1[:, order], z2[:, order])
    assert float(loss_p) == pytest.approx(float(loss), rel=1e-13)
    assert rel(g1_p, g1[:, order]) <= 1e-13
    _, (alone, _) = vicreg.value_and_grad(z1[:, 1, 0], z2[:, 1, 0])
    assert rel(g1[:, 1, 0] * 6, alone) <= 1e-13


def test_float32_stays_exact_on_a_dominant_dimension_per_position():
    """One dimension at std 1000 in every position, n < d: the float32 result against float64 (the Gram
    path's cancellation, if it came back, would be off by orders of magnitude)."""
    rng = np.random.default_rng(0)
    z1 = rng.standard_normal((64, 3, 512))
    z1[:, :, 7] *= 1000.0
    z2 = z1 + 0.1 * rng.standard_normal(z1.shape)
    want, want_grads = vicreg.value_and_grad(z1, z2)
    got, grads = vicreg.value_and_grad(z1.astype(np.float32), z2.astype(np.float32))
    assert got.dtype == np.float32
    assert rel(got, want) <= 1e-5
    assert rel(grads[0], want_grads[0]) <= 1e-5


def test_fewer_than_two_dimensions_keeps_its_error():
    with pytest.raises(ValueError, match="2-D"):
        vicreg.vicreg_loss(np.zeros(4), np.zeros(4))


# --------------------------------------------------------------------------------------------------
# lightly's VICRegLoss, the definition this follows


needs_lightly = pytest.mark.skipif(
    importlib.util.find_spec("lightly") is None, reason="needs lightly (pip install lightly; in the test extra)"
)


def _lightly(z1, z2):
    import torch
    from lightly.loss import VICRegLoss

    t1 = torch.tensor(z1, requires_grad=True)
    t2 = torch.tensor(z2, requires_grad=True)
    loss = VICRegLoss()(t1, t2)
    loss.backward()
    return loss.item(), (t1.grad.numpy(), t2.grad.numpy())


@needs_lightly
@pytest.mark.parametrize("shape", [(8, 5, 32), (8, 3, 2, 4), (16, 4, 3)], ids=str)
def test_lightly_value_and_gradients(shape):
    """lightly's defaults are the official coefficients (25, 25, 1, eps 1e-4)."""
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    import vicreg.jax as vj
    import vicreg.torch as vt

    z1, z2 = views(shape, seed=11)
    want, want_grads = _lightly(z1, z2)
    results = {"numpy value_and_grad": vicreg.value_and_grad(z1, z2)}
    for name, call in {
        "torch vicreg_loss": vicreg.vicreg_loss,
        "torch module analytic": vt.VICRegLoss(),
        "torch module autograd": vt.VICRegLoss(backward="autograd"),
    }.items():
        t1, t2 = torch.tensor(z1, requires_grad=True), torch.tensor(z2, requires_grad=True)
        loss = call(t1, t2)
        loss.backward()
        results[name] = (loss.item(), (t1.grad.numpy(), t2.grad.numpy()))
    with jax.enable_x64(True):
        for name, fn in {"jax vicreg_loss": vicreg.vicreg_loss, "vicreg.jax": vj.vicreg_loss}.items():
            value, grads = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(jnp.asarray(z1), jnp.asarray(z2))
            assert value.dtype == jnp.float64
            results[name] = (float(value), tuple(np.asarray(g) for g in grads))
    for name, (loss, grads) in results.items():
        assert float(loss) == pytest.approx(want, rel=TOL), name
        for g, w in zip(grads, want_grads):
            assert rel(g, w) <= TOL, name


# --------------------------------------------------------------------------------------------------
# derivatives of every order


def test_torch_second_derivatives_match_autograd():
    torch = pytest.importorskip("torch")
    import vicreg.torch as vt

    z1, z2 = views((6, 2, 16), seed=2)  # Gram path
    x = torch.tensor(np.concatenate([z1, z2])[..., :4], requires_grad=True)

    def penalised(loss_fn):
        lin = torch.nn.Linear(4, 16).double()
        torch.nn.init.normal_(lin.weight, generator=torch.Generator().manual_seed(0))
        torch.nn.init.zeros_(lin.bias)
        z = lin(x)
        loss = loss_fn(z[:6], z[6:])
        (gx,) = torch.autograd.grad(loss, x, create_graph=True)
        (loss + gx.pow(2).sum()).backward()
        return lin.weight.grad.clone()

    want = penalised(lambda a, b: reference_positions_terms(a, b)["loss"])
    assert rel(penalised(vt.VICRegLoss()), want) <= TOL
    assert rel(penalised(vicreg.vicreg_loss), want) <= TOL

    from torch.func import grad, hessian

    a, b = torch.tensor(z1[:4, :, :3]), torch.tensor(z2[:4, :, :3])
    want_h = torch.autograd.functional.hessian(lambda u: reference_positions_terms(u, b)["loss"], a)
    assert rel(hessian(vt.vicreg_loss)(a, b), want_h) <= 1e-9
    assert rel(grad(vicreg.vicreg_loss)(a, b), reference_positions_value_and_grad(a.numpy(), b.numpy())[1][0]) <= TOL


def test_jax_hessian_matches_the_reference():
    jax = pytest.importorskip("jax")
    torch = pytest.importorskip("torch")
    import jax.numpy as jnp

    import vicreg.jax as vj

    z1, z2 = views((4, 2, 3), seed=8)
    b = torch.tensor(z2)
    want = torch.autograd.functional.hessian(lambda u: reference_positions_terms(u, b)["loss"], torch.tensor(z1))
    with jax.enable_x64(True):
        for fn in (vicreg.vicreg_loss, vj.vicreg_loss):
            h = jax.jit(jax.hessian(fn))(jnp.asarray(z1), jnp.asarray(z2))
            assert h.shape == (4, 2, 3, 4, 2, 3)
            assert rel(np.asarray(h), want.numpy()) <= 1e-9


def test_reference_of_one_position_is_the_two_dimensional_reference():
    """The positions reference reduces to the plain one: it is not checked against itself only."""
    z1, z2 = views((7, 9), seed=4)
    one = reference_positions_terms(z1[:, None], z2[:, None])
    plain = reference_terms(z1, z2)
    for key in plain:
        assert one[key].item() == pytest.approx(plain[key].item(), rel=1e-15)
