"""More than two views (VICRegL's global loss) and the VCReg regulariser of one view, on every backend,
against the independent float64 references of ``reference.py``: ``reference_views_terms`` (explicit
``d x d`` covariances, the K-view definition), ``vicregl_global_loss`` (VICRegL written from its
definition) and ``reference_terms`` (two views), with gradients by torch autograd through them."""

from __future__ import annotations

import numpy as np
import pytest
from reference import reference_terms, reference_views_terms, vicregl_global_loss

import vicreg

torch = pytest.importorskip("torch")

# n < d / 2 takes the Gram path, n >= d / 2 the d x d path
SHAPES = [(6, 40), (24, 10), (3, 1)]
PAPER = dict(sim_coeff=1.5, std_coeff=3.0, cov_coeff=0.7, variance_target=1.2, eps=1e-3, convention="paper")
OPTIONS = {"official": {}, "paper": PAPER}
TERMS = ("loss", "invariance", "variance", "covariance")
TOL = 1e-12


def crops(k: int, n: int, d: int, seed: int = 0) -> list[np.ndarray]:
    """``k`` correlated float64 views with spread-out column scales (some dimensions below the variance
    target, some above) and non-zero means."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, d)) * np.geomspace(0.2, 3.0, d) + rng.standard_normal(d)
    return [base + 0.4 * rng.standard_normal((n, d)) for _ in range(k)]


def rel(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-300))


def reference_grads(views, **options) -> tuple[float, list[np.ndarray]]:
    """The loss of ``reference_views_terms`` and its gradient with respect to every view, by autograd."""
    ts = [torch.tensor(z, dtype=torch.float64, requires_grad=True) for z in views]
    loss = reference_views_terms(ts, **options)["loss"]
    return loss.item(), [g.numpy() for g in torch.autograd.grad(loss, ts)]


def reference_vcreg(z, **options) -> dict:
    """VCReg from the two-view reference: ``reference_terms(z, z)`` has no invariance, a variance term of
    one hinge ("official": the mean of two equal ones; "paper": their sum) and twice ``c(z)``; VCReg is half
    of it in either convention. Its autograd gradient (through both arguments) is VCReg's."""
    t = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    terms = reference_terms(t, t, **{**options, "sim_coeff": 0.0})
    out = {key: terms[key] / 2 for key in ("loss", "variance", "covariance")}
    (g,) = torch.autograd.grad(out["loss"], (t,))
    return {**{k: v.item() for k, v in out.items()}, "grad": g.numpy()}


# --- the core on every backend ----------------------------------------------------------------------


@pytest.mark.parametrize("convention", list(OPTIONS))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("k", [2, 3, 4])
def test_k_views_match_the_reference(backend, k, shape, convention):
    options = OPTIONS[convention]
    views = crops(k, *shape, seed=k)
    got = vicreg.vicreg_terms(*(backend.asarray(z) for z in views), **options)
    want = reference_views_terms(views, **options)
    for key in TERMS:
        assert rel(backend.to_numpy(getattr(got, key)), want[key].item()) < TOL, key
    if k == 2:  # two views: the loss of a pair as it always was, by the two-view reference
        pair = reference_terms(*views, **options)
        for key in (*TERMS, "std_mean", "std_min"):
            assert rel(backend.to_numpy(getattr(got, key)), pair[key].item()) < TOL, key
    stds = np.sqrt(np.concatenate([np.var(z, axis=0, ddof=1) for z in views]))
    assert rel(backend.to_numpy(got.std_min), stds.min()) < TOL
    assert rel(backend.to_numpy(got.std_mean), stds.mean()) < TOL


@pytest.mark.parametrize("convention", list(OPTIONS))
@pytest.mark.parametrize("shape", SHAPES[:2], ids=str)
@pytest.mark.parametrize("k", [3, 4])
def test_k_views_gradient_matches_autograd(backend, k, shape, convention):
    """The analytic gradient of every view: ``value_and_grad`` where the library has no autodiff, else
    through the library's own (``backward``, ``jax.grad``), which runs the same analytic rule."""
    options = OPTIONS[convention]
    views = crops(k, *shape, seed=10 + k)
    xs = [backend.asarray(z) for z in views]
    if backend.name.startswith("torch"):
        for x in xs:
            x.requires_grad_(True)
        loss = vicreg.vicreg_loss(*xs, **options)
        loss.backward()
        grads = [x.grad for x in xs]
    elif backend.name.startswith("jax"):
        import jax

        fn = jax.value_and_grad(lambda *v: vicreg.vicreg_loss(*v, **options), argnums=tuple(range(k)))
        loss, grads = fn(*xs)
    else:
        loss, grads = vicreg.value_and_grad(*xs, **options)
    want_loss, want = reference_grads(views, **options)
    assert len(grads) == k
    assert rel(backend.to_numpy(loss), want_loss) < TOL
    for g, w in zip(grads, want):
        assert rel(backend.to_numpy(g), w) < 1e-10


@pytest.mark.parametrize("k", [3, 5])
def test_vicregl_global_loss_is_this_loss_with_half_the_covariance_weight(k):
    """VICRegL averages the views' covariance terms where this loss takes 2 / K times their sum."""
    views = crops(k, 8, 32, seed=3)
    want = vicregl_global_loss(views, inv_coeff=25.0, var_coeff=25.0, cov_coeff=1.0).item()
    assert rel(vicreg.vicreg_loss(*views, cov_coeff=0.5), want) < TOL


def test_positions_with_k_views_are_the_mean_over_positions():
    views = [z.reshape(5, 2, 12) for z in crops(3, 5, 24, seed=4)]
    per_position = [reference_views_terms([z[:, p] for z in views])["loss"].item() for p in range(2)]
    assert rel(vicreg.vicreg_loss(*views), np.mean(per_position)) < TOL


def test_a_view_that_does_not_match_is_named():
    z1, z2, z3 = crops(3, 6, 8)
    with pytest.raises(ValueError, match="z1 and z3 must have the same shape"):
        vicreg.vicreg_loss(z1, z2, z3[:, :7])
    with pytest.raises(TypeError, match="z3"):
        vicreg.vicreg_loss(z1, z2, z3.tolist())
    with pytest.raises(TypeError, match="z1 and z3 come from different array libraries"):
        vicreg.vicreg_loss(z1, z2, torch.tensor(z3))


@pytest.mark.parametrize("convention", list(OPTIONS))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_vcreg_identity_and_reference(backend, shape, convention):
    """``vicreg_loss(z1, z2) == sim_coeff * invariance + vcreg_loss(z1) + vcreg_loss(z2)`` to 1e-12, and each
    VCReg term against the reference."""
    options = OPTIONS[convention]
    vc = {k: v for k, v in options.items() if k != "sim_coeff"}
    z1, z2 = crops(2, *shape, seed=7)
    a, b = backend.asarray(z1), backend.asarray(z2)
    pair = vicreg.vicreg_terms(a, b, **options)
    sim = options.get("sim_coeff", 25.0)
    total = sim * backend.to_numpy(pair.invariance)
    total = total + backend.to_numpy(vicreg.vcreg_loss(a, **vc)) + backend.to_numpy(vicreg.vcreg_loss(b, **vc))
    assert rel(total, backend.to_numpy(pair.loss)) < TOL
    terms = vicreg.vcreg_terms(a, **vc)
    want = reference_vcreg(z1, **options)
    for key in ("loss", "variance", "covariance"):
        assert rel(backend.to_numpy(getattr(terms, key)), want[key]) < TOL, key
    std = np.sqrt(np.var(z1, axis=0, ddof=1))
    assert rel(backend.to_numpy(terms.std_min), std.min()) < TOL
    assert rel(backend.to_numpy(terms.std_mean), std.mean()) < TOL


@pytest.mark.parametrize("convention", list(OPTIONS))
@pytest.mark.parametrize("shape", SHAPES[:2], ids=str)
def test_vcreg_gradient(backend, shape, convention):
    options = OPTIONS[convention]
    vc = {k: v for k, v in options.items() if k != "sim_coeff"}
    (z,) = crops(1, *shape, seed=8)
    want = reference_vcreg(z, **options)
    x = backend.asarray(z)
    if backend.name.startswith("torch"):
        x.requires_grad_(True)
        vicreg.vcreg_loss(x, **vc).backward()
        loss, g = None, x.grad
    elif backend.name.startswith("jax"):
        import jax

        loss, g = jax.value_and_grad(lambda v: vicreg.vcreg_loss(v, **vc))(x)
    else:
        loss, g = vicreg.vcreg_value_and_grad(x, **vc)
        assert g.dtype == x.dtype and g.shape == x.shape
    if loss is not None:
        assert rel(backend.to_numpy(loss), want["loss"]) < TOL
    assert rel(backend.to_numpy(g), want["grad"]) < 1e-10


def test_vcreg_float32_and_bad_input():
    (z,) = crops(1, 16, 64, seed=9)
    loss, g = vicreg.vcreg_value_and_grad(z.astype(np.float32))
    assert loss.dtype == np.float32 and g.dtype == np.float32
    assert rel(loss, reference_vcreg(z)["loss"]) < 1e-5
    with pytest.raises(ValueError, match="at least 2 samples"):
        vicreg.vcreg_loss(z[:1])
    with pytest.raises(ValueError, match="2-D"):
        vicreg.vcreg_loss(z[0])
    with pytest.raises(ValueError, match="std_coeff"):
        vicreg.vcreg_loss(z, std_coeff=-1.0)
    with pytest.raises(ValueError, match="unknown convention"):
        vicreg.vcreg_loss(z, convention="Paper")


# --- PyTorch: the module, both backwards ------------------------------------------------------------


@pytest.mark.parametrize("backward", ["analytic", "autograd"])
@pytest.mark.parametrize("shape", SHAPES[:2], ids=str)
@pytest.mark.parametrize("k", [3, 4])
def test_torch_module_k_views(k, shape, backward):
    import vicreg.torch as vt

    views = crops(k, *shape, seed=20 + k)
    want_loss, want = reference_grads(views, **PAPER)
    ts = [torch.tensor(z, requires_grad=True) for z in views]
    module = vt.VICRegLoss(backward=backward, **PAPER)
    loss = module(*ts)
    loss.backward()
    assert rel(loss.item(), want_loss) < TOL
    for t, w in zip(ts, want):
        assert rel(t.grad.numpy(), w) < 1e-10
    terms = module.terms(*(t.detach() for t in ts))
    ref = reference_views_terms(views, **PAPER)
    for key in TERMS:
        assert rel(getattr(terms, key).item(), ref[key].item()) < TOL, key


@pytest.mark.parametrize("backward", ["analytic", "autograd"])
def test_torch_module_k_views_second_derivative(backward):
    """The analytic backward is itself differentiable: a Hessian-vector product against the reference's."""
    import vicreg.torch as vt

    views = crops(3, 5, 12, seed=30)
    direction = np.random.default_rng(31).standard_normal((5, 12))

    def hvp(loss_of):
        ts = [torch.tensor(z, requires_grad=True) for z in views]
        (g,) = torch.autograd.grad(loss_of(ts), ts[2:], create_graph=True)
        (h,) = torch.autograd.grad((g * torch.tensor(direction)).sum(), ts[2:])
        return h.numpy()

    module = vt.VICRegLoss(backward=backward)
    assert rel(hvp(lambda ts: module(*ts)), hvp(lambda ts: reference_views_terms(ts)["loss"])) < 1e-9


@pytest.mark.parametrize("backward", ["analytic", "autograd"])
@pytest.mark.parametrize("convention", list(OPTIONS))
def test_torch_vcreg_module(backward, convention):
    import vicreg.torch as vt

    options = {k: v for k, v in OPTIONS[convention].items() if k != "sim_coeff"}
    (z,) = crops(1, 6, 40, seed=40)
    want = reference_vcreg(z, **OPTIONS[convention])
    t = torch.tensor(z, requires_grad=True)
    module = vt.VCRegLoss(backward=backward, **options)
    loss = module(t)
    loss.backward()
    assert rel(loss.item(), want["loss"]) < TOL
    assert rel(t.grad.numpy(), want["grad"]) < 1e-10
    terms = module.terms(t.detach())
    assert rel(terms.covariance.item(), want["covariance"]) < TOL
    assert "sim_coeff" not in repr(module)


# --- JAX: jit and grad ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES[:2], ids=str)
def test_jax_k_views_jit_and_grad(shape):
    jax = pytest.importorskip("jax")
    import vicreg.jax as vj

    views = crops(4, *shape, seed=50)
    want_loss, want = reference_grads(views, **PAPER)
    with jax.enable_x64(True):
        xs = [jax.numpy.asarray(z) for z in views]
        fn = jax.jit(jax.value_and_grad(lambda *v: vj.vicreg_loss(*v, **PAPER), argnums=(0, 1, 2, 3)))
        loss, grads = fn(*xs)
        assert rel(loss, want_loss) < TOL
        for g, w in zip(grads, want):
            assert rel(g, w) < 1e-10
        # a view that is not differentiated: the others' gradients are unchanged
        g3 = jax.grad(lambda c: vj.vicreg_loss(xs[0], xs[1], c, xs[3], **PAPER))(xs[2])
        assert rel(g3, want[2]) < 1e-10
        # forward over the analytic rule: a Hessian-vector product
        direction = np.random.default_rng(51).standard_normal(shape)
        grad3 = jax.grad(lambda c: vj.vicreg_loss(xs[0], xs[1], c, xs[3]))
        hessian_vector = jax.jvp(grad3, (xs[2],), (jax.numpy.asarray(direction),))[1]
        ts = [torch.tensor(z, requires_grad=True) for z in views]
        (g,) = torch.autograd.grad(reference_views_terms(ts)["loss"], ts[2:3], create_graph=True)
        (h,) = torch.autograd.grad((g * torch.tensor(direction)).sum(), ts[2:3])
        assert rel(hessian_vector, h.numpy()) < 1e-9


def test_jax_vcreg_jit_grad_and_terms():
    jax = pytest.importorskip("jax")
    import vicreg.jax as vj

    (z,) = crops(1, 6, 40, seed=60)
    want = reference_vcreg(z, **PAPER)
    options = {k: v for k, v in PAPER.items() if k != "sim_coeff"}
    with jax.enable_x64(True):
        x = jax.numpy.asarray(z)
        loss, g = jax.jit(jax.value_and_grad(lambda v: vj.vcreg_loss(v, **options)))(x)
        assert rel(loss, want["loss"]) < TOL and rel(g, want["grad"]) < 1e-10
        terms = vj.vcreg_terms(x, **options)
        assert type(terms).__name__ == "VCRegTerms" and rel(terms.variance, want["variance"]) < TOL


def test_torch_compile_k_views_and_vcreg():
    """Under ``torch.compile`` (whole graph), three views and VCReg give the eager values and gradients."""
    import vicreg.torch as vt

    views = crops(3, 6, 40, seed=70)
    want_loss, want = reference_grads(views)
    ts = [torch.tensor(z, requires_grad=True) for z in views]
    loss = torch.compile(lambda *v: vt.vicreg_loss(*v), fullgraph=True)(*ts)
    loss.backward()
    assert rel(loss.item(), want_loss) < TOL
    for t, w in zip(ts, want):
        assert rel(t.grad.numpy(), w) < 1e-10
    t = torch.tensor(views[0], requires_grad=True)
    vc = torch.compile(vt.VCRegLoss(), fullgraph=True)(t)
    vc.backward()
    ref = reference_vcreg(views[0])
    assert rel(vc.item(), ref["loss"]) < TOL and rel(t.grad.numpy(), ref["grad"]) < 1e-10
