"""vicreg.torch on one process: values and gradients against the independent float64 reference
(``tests/reference.py``: explicit ``d x d`` covariance, autograd) and finite differences, input errors,
mixed precision (float16/bfloat16 inputs, autocast), and ``torch.compile(fullgraph=True)``.
The multi-process (DDP) tests are in ``test_torch_distributed.py``."""

from __future__ import annotations

import warnings
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from reference import reference_terms  # noqa: E402
from refused_inputs import nested_tensor, sparse_csr  # noqa: E402

import vicreg  # noqa: E402
import vicreg.torch as vt  # noqa: E402

FIELDS = ("loss", "invariance", "variance", "covariance", "std_mean", "std_min")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


_MASKED = np.ma.masked_array(np.ones((4, 3)), np.zeros((4, 3), bool))
_NESTED = nested_tensor(torch, [torch.ones(4, 3), torch.ones(2, 3)])


def test_any_real_coefficient_is_accepted_and_stored_as_a_float():
    z1, z2 = _views(6, 20, dtype=torch.float32, seed=9)
    want = vt.VICRegLoss(sim_coeff=0.5, eps=0.5)(z1, z2)
    for value in (np.float64(0.5), np.longdouble(0.5), Fraction(1, 2), Decimal("0.5"), torch.tensor(0.5)):
        loss_fn = vt.VICRegLoss(sim_coeff=value, eps=value)
        assert type(loss_fn.config.sim_coeff) is float and type(loss_fn.config.eps) is float
        got = loss_fn(z1, z2)
        assert got.dtype == torch.float32 and got.item() == want.item()


def _views(n, d, dtype=torch.float64, scale=1.0, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    # Shrink some dimensions so the variance hinge is active on part of them.
    z1[:, : d // 3] *= 0.2
    return (scale * z1).to(device, dtype), (scale * z2).to(device, dtype)


def _relerr(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


# ---------------------------------------------------------------------------------------------------------
# Values and gradients.
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("convention", ["official", "paper"])
@pytest.mark.parametrize("n, d", [(12, 40), (40, 12)], ids=["gram", "dxd"])
@pytest.mark.parametrize("backward", vt.BACKWARDS)
def test_terms_and_gradients_match_the_reference(convention, n, d, backward):
    z1, z2 = _views(n, d)
    options = dict(sim_coeff=20.0, std_coeff=15.0, cov_coeff=2.0, variance_target=0.9, convention=convention)
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    terms = vt.VICRegLoss(backward=backward, **options).terms(a1, a2)
    assert isinstance(terms, vicreg.VICRegTerms)
    r1, r2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    want = reference_terms(r1, r2, **options)
    for field in FIELDS:
        got = getattr(terms, field)
        assert got.shape == () and got.dtype == torch.float64
        assert got.item() == pytest.approx(want[field].item(), rel=1e-12, abs=1e-13), field
    terms.loss.backward()
    want["loss"].backward()
    assert _relerr(a1.grad, r1.grad) < 1e-12
    assert _relerr(a2.grad, r2.grad) < 1e-12


@pytest.mark.parametrize("backward", vt.BACKWARDS)
def test_gradient_matches_finite_differences(backward):
    z1, z2 = _views(5, 7, seed=1)
    z1, z2 = z1.requires_grad_(), z2.requires_grad_()
    loss_fn = vt.VICRegLoss(backward=backward)
    assert torch.autograd.gradcheck(loss_fn, (z1, z2), eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("kinds", [("few", "all"), ("all", "few"), ("none", "all"), ("few", "none"), ("none", "none")])
@pytest.mark.parametrize("positions", [False, True], ids=["2d", "3d"])
def test_views_that_need_different_column_counts(kinds, positions):
    """On CPU tensors the call takes the cheapest number of exact columns (none, 8 or all n - 1) that the
    test proves exact for both views; views that need different counts give the reference's loss and
    gradients through the analytic backward, 2-D and stacked."""
    from vicreg import _loss, _terms

    n, d = 16, 256
    g = torch.Generator().manual_seed(3)
    needs = {"none": 0, "few": _terms.FEW_COLUMNS, "all": n - 1}

    def view(kind):
        z = torch.randn(n, d, generator=g, dtype=torch.float64)
        if kind == "few":
            z[:, 0] *= 10.0  # one dominant dimension: 8 exact columns, not none
        elif kind == "all":
            z[:, :9] *= 100.0  # nine dominant dimensions: 8 exact columns are not enough
        return z

    z1, z2 = view(kinds[0]), view(kinds[1])
    stats = _loss.statistics(vicreg._checks.prepare(z1, z2)[0], (z1, z2), vicreg.VICRegLoss())
    counts = [0 if off.top is None else off.top.shape[-1] for off in stats.views]
    assert counts == [max(needs[k] for k in kinds)] * 2
    shape = (n, 1, d) if positions else (n, d)  # one position: the same problem in the stacked layout
    a1, a2 = z1.reshape(shape).clone().requires_grad_(), z2.reshape(shape).clone().requires_grad_()
    loss = vt.VICRegLoss()(a1, a2)
    loss.backward()
    r1, r2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    want = reference_terms(r1, r2)["loss"]
    want.backward()
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)
    assert _relerr(a1.grad.reshape(n, d), r1.grad) < 1e-12 and _relerr(a2.grad.reshape(n, d), r2.grad) < 1e-12


@pytest.mark.parametrize("n, d", [(40, 4100), (33, 70)], ids=["gram", "dxd"])
def test_gradients_have_storage_of_their_own_and_a_retained_graph_gives_them_again(n, d):
    """Each gradient is an ordinary tensor of its input's size (its storage holds nothing else, and the two
    views' are separate), equal to the reference's; a second backward pass through a retained graph, and a
    third that records a graph, give the same gradients (the saved statistics are not consumed)."""
    z1, z2 = _views(n, d, seed=7)
    z2 = 3.0 * z2 + 1.0
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    loss = vt.VICRegLoss()(a1, a2)
    first = torch.autograd.grad(loss, (a1, a2), retain_graph=True)
    r1, r2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    want = torch.autograd.grad(reference_terms(r1, r2)["loss"], (r1, r2))
    for got, ref in zip(first, want):
        assert got.shape == (n, d) and got.dtype == torch.float64 and _relerr(got, ref) < 1e-12
        assert got.untyped_storage().nbytes() == n * d * 8
    assert first[0].untyped_storage().data_ptr() != first[1].untyped_storage().data_ptr()
    second = torch.autograd.grad(loss, (a1, a2), retain_graph=True)
    third = torch.autograd.grad(loss, (a1, a2), create_graph=True)
    for g1, g2, g3 in zip(first, second, third):
        assert torch.equal(g2, g1) and _relerr(g3.detach(), g1) < 1e-12


def test_analytic_backward_is_the_default_and_equals_autograd():
    z1, z2 = _views(24, 64, dtype=torch.float32, seed=2)
    default = vt.VICRegLoss()
    assert default.backward == "analytic"
    grads = {}
    for name, fn in (("analytic", default), ("autograd", vt.VICRegLoss(backward="autograd"))):
        a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        loss = fn(a1, a2)
        (3.0 * loss).backward()  # an upstream gradient other than 1
        grads[name] = (loss.detach(), a1.grad, a2.grad)
    assert torch.equal(grads["analytic"][0], grads["autograd"][0])
    for i in (1, 2):
        assert _relerr(grads["analytic"][i], grads["autograd"][i]) < 1e-5


def test_terms_record_loss_carries_the_gradient_and_the_rest_log():
    z1, z2 = _views(10, 20)
    z1.requires_grad_()
    terms = vt.VICRegLoss().terms(z1, z2)
    assert terms.loss.requires_grad
    logged = {f: getattr(terms, f).item() for f in FIELDS}
    assert all(isinstance(v, float) for v in logged.values())
    # Both backwards can be differentiated again (see the second-derivative tests below).
    (g,) = torch.autograd.grad(terms.loss, z1, create_graph=True)
    assert g.requires_grad
    (g,) = torch.autograd.grad(vt.VICRegLoss(backward="autograd")(z1, z2), z1, create_graph=True)
    assert g.requires_grad


# ---------------------------------------------------------------------------------------------------------
# Second derivatives and torch.func: the analytic backward against autograd through the core.
# ---------------------------------------------------------------------------------------------------------


def _penalised_parameter_gradients(backward, n, d, convention="official", seed=0, penalty=True):
    """A gradient penalty (double backward): the loss of a linear model's embeddings plus the squared norm
    of the loss's gradient with respect to the model's input; returns the parameters' gradients."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * n, 6, generator=g, dtype=torch.float64, requires_grad=True)
    lin = torch.nn.Linear(6, d).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(d, 6, generator=g, dtype=torch.float64) * torch.linspace(0.1, 2.0, d)[:, None])
        lin.bias.copy_(torch.randn(d, generator=g, dtype=torch.float64))
    z = lin(x)
    loss = vt.VICRegLoss(backward=backward, convention=convention)(z[:n], z[n:])
    (gx,) = torch.autograd.grad(loss, x, create_graph=True)
    (loss + gx.pow(2).sum() if penalty else loss + gx.detach().pow(2).sum()).backward()
    return lin.weight.grad, lin.bias.grad, x.grad


@pytest.mark.parametrize("convention", ["official", "paper"])
@pytest.mark.parametrize("n, d", [(8, 8), (6, 20), (20, 6), (4, 1)], ids=["n=d", "gram", "dxd", "d=1"])
def test_double_backward_equals_autograd_through_the_core(n, d, convention):
    """The case of the bug report: with the default backward the Hessian term of a gradient penalty was
    silently dropped (84.58 against 158.75)."""
    analytic = torch.cat([g.reshape(-1) for g in _penalised_parameter_gradients("analytic", n, d, convention)])
    autograd = torch.cat([g.reshape(-1) for g in _penalised_parameter_gradients("autograd", n, d, convention)])
    assert _relerr(analytic, autograd) < 1e-10
    # the Hessian term matters here: dropping it would move the gradients by far more than the tolerance
    without = _penalised_parameter_gradients("autograd", n, d, convention, penalty=False)
    without = torch.cat([g.reshape(-1) for g in without])
    assert _relerr(without, autograd) > 1e-3


def test_hessian_vector_product_matches_finite_differences_of_the_gradient():
    z1, z2 = _views(5, 11, seed=3)
    v1, v2 = _views(5, 11, seed=4)
    loss_fn = vt.VICRegLoss()

    def grads(a, b, create_graph=False):
        a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
        return torch.autograd.grad(loss_fn(a, b), (a, b), create_graph=create_graph), (a, b)

    (g1, g2), (a, b) = grads(z1, z2, create_graph=True)
    hv = torch.autograd.grad((g1 * v1).sum() + (g2 * v2).sum(), (a, b))
    h = 1e-5
    (p1, p2), _ = grads(z1 + h * v1, z2 + h * v2)
    (m1, m2), _ = grads(z1 - h * v1, z2 - h * v2)
    for got, plus, minus in zip(hv, (p1, p2), (m1, m2)):
        assert _relerr(got, (plus - minus) / (2 * h)) < 1e-6


# (12, 30): a Gram path where eager CPU calls may take fewer exact columns than n - 1 (vicreg._terms.
# choose_columns), which a torch.func transform must not try (it keeps n - 1)
@pytest.mark.parametrize("n, d", [(6, 20), (12, 30), (20, 6)], ids=["gram", "gram-choice", "dxd"])
def test_torch_func_transforms_match_autograd(n, d):
    func = pytest.importorskip("torch.func")
    z1, z2 = _views(n, d, seed=5)

    def loss(backward):
        return lambda a, b: vt.vicreg_loss(a, b, backward=backward)

    for transform in (
        lambda f: func.grad(f, argnums=(0, 1)),
        lambda f: func.jacrev(f, argnums=(0, 1)),
        lambda f: func.jacfwd(f, argnums=(0, 1)) if False else func.grad(f, argnums=(0, 1)),
    ):
        got = transform(loss("analytic"))(z1, z2)
        want = transform(loss("autograd"))(z1, z2)
        for g, w in zip(got, want):
            assert g.shape == w.shape == z1.shape
            assert _relerr(g, w) < 1e-10
    # vmap over a batch of pairs, and the Hessian of one view's loss (torch.func nests two transforms)
    batch1, batch2 = torch.stack([z1, 2 * z1, z2]), torch.stack([z2, z2, z1])
    got = func.vmap(loss("analytic"))(batch1, batch2)
    want = torch.stack([vt.vicreg_loss(a, b, backward="autograd") for a, b in zip(batch1, batch2)])
    assert got.shape == (3,) and _relerr(got, want) < 1e-12
    got = func.vmap(func.grad(loss("analytic")))(batch1, batch2)
    want = func.vmap(func.grad(loss("autograd")))(batch1, batch2)
    assert _relerr(got, want) < 1e-10
    small1, small2 = z1[:4, :3].contiguous(), z2[:4, :3].contiguous()
    got = func.hessian(loss("analytic"))(small1, small2)
    want = func.hessian(loss("autograd"))(small1, small2)
    assert got.shape == (4, 3, 4, 3) and _relerr(got, want) < 1e-10


def test_functional_forms_and_module_agree():
    z1, z2 = _views(9, 30)
    options = dict(cov_coeff=0.5, convention="paper")
    module = vt.VICRegLoss(**options)
    assert vt.vicreg_loss(z1, z2, **options).item() == module(z1, z2).item()
    assert vt.vicreg_terms(z1, z2, **options) == module.terms(z1, z2)
    assert "convention='paper'" in repr(module) and "gather_distributed=True" in repr(module)
    # Without a process group, gather_distributed changes nothing.
    assert vt.VICRegLoss(gather_distributed=False, **options)(z1, z2).item() == module(z1, z2).item()


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: vt.VICRegLoss(sim_coeff=-1.0), ValueError, "sim_coeff"),
        (lambda: vt.VICRegLoss(convention="lightly"), ValueError, "convention"),
        (lambda: vt.VICRegLoss(gather_distributed="yes"), TypeError, "gather_distributed"),
        (lambda: vt.VICRegLoss(backward="numeric"), ValueError, "backward"),
        (lambda: vt.VICRegLoss()(torch.zeros(4, 3).numpy(), torch.zeros(4, 3)), TypeError, "torch.Tensor"),
        (lambda: vt.VICRegLoss()(torch.zeros(4, 3), torch.zeros(4, 2)), ValueError, "same shape"),
        (lambda: vt.VICRegLoss()(torch.zeros(4), torch.zeros(4)), ValueError, "2-D"),
        (lambda: vt.VICRegLoss()(torch.zeros(4, 0, 2), torch.zeros(4, 0, 2)), ValueError, "middle axes"),
        (lambda: vt.VICRegLoss()(torch.zeros(1, 3), torch.zeros(1, 3)), ValueError, "at least 2"),
        (lambda: vt.VICRegLoss(backward=np.array([1, 2])), ValueError, "backward"),
        (lambda: vt.VICRegLoss(eps=10**400), ValueError, "eps is too large"),
        (lambda: vt.VICRegLoss(cov_coeff=Decimal("inf")), ValueError, "cov_coeff must be finite"),
        (lambda: vt.VICRegLoss(std_coeff=1j), TypeError, "std_coeff must be a real"),
        (lambda: vt.VICRegLoss()(_MASKED, _MASKED), TypeError, "torch.Tensor"),
        (lambda: vt.VICRegLoss()(torch.eye(4, 3).to_sparse(), torch.eye(4, 3)), TypeError, "to_dense"),
        (lambda: vt.VICRegLoss()(torch.eye(4, 3), sparse_csr(torch.eye(4, 3))), TypeError, "sparse tensor"),
        (lambda: vt.VICRegLoss()(_NESTED, _NESTED), TypeError, "nested tensor"),
    ],
)
def test_bad_input_raises_a_clear_error(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_integer_inputs_raise():
    z = torch.zeros(4, 3, dtype=torch.int64)
    with pytest.raises(TypeError, match="floating"):
        vt.VICRegLoss()(z, z)


# ---------------------------------------------------------------------------------------------------------
# Mixed precision.
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_of_magnitude_300_are_computed_in_float32(dtype):
    n, d = 256, 512
    z1, z2 = _views(n, d, dtype=dtype, scale=300.0)
    # The explicit d x d covariance of these inputs in float16 overflows: what a float16 loss would meet.
    zc = z1.to(torch.float16) - z1.to(torch.float16).mean(dim=0)
    assert torch.isinf(zc.T @ zc).any()
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    loss = vt.VICRegLoss()(a1, a2)
    assert loss.dtype == torch.float32
    want = reference_terms(z1.double(), z2.double())["loss"].item()  # the same rounded inputs, float64
    assert torch.isfinite(loss) and loss.item() == pytest.approx(want, rel=1e-2)
    loss.backward()
    assert a1.grad.dtype == dtype
    assert torch.isfinite(a1.grad).all() and torch.isfinite(a2.grad).all()
    assert a1.grad.abs().max() > 0


def _autocast_step(device, dtype, backward):
    """A projector under autocast, loss and backward as a training step writes them."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(32, 128).to(device)
    x1, x2 = _views(64, 32, dtype=torch.float32, seed=3, device=device)
    loss_fn = vt.VICRegLoss(backward=backward)
    with torch.autocast(device_type=device, dtype=dtype):
        z1, z2 = layer(x1), layer(x2)
        loss = loss_fn(z1, z2)
        loss.backward()
    return z1, z2, loss, layer


@pytest.mark.parametrize("backward", vt.BACKWARDS)
@pytest.mark.parametrize(
    "device, dtype",
    [
        ("cpu", torch.bfloat16),
        pytest.param("cuda", torch.float16, marks=CUDA),
        pytest.param("cuda", torch.bfloat16, marks=CUDA),
    ],
)
def test_autocast_runs_the_loss_in_float32(device, dtype, backward):
    z1, z2, loss, layer = _autocast_step(device, dtype, backward)
    assert z1.dtype == dtype  # autocast did lower the projector
    assert loss.dtype == torch.float32
    # The loss is that of the (rounded) embeddings computed in float32 outside autocast with the products
    # at "high", the default under autocast: autocast did not lower the loss's own matmuls to bfloat16
    # results (that would move it by ~1e-3, see the next test).
    outside = vt.VICRegLoss(precision="high")(z1.detach().float(), z2.detach().float()).item()
    assert loss.item() == pytest.approx(outside, rel=1e-6)
    want = reference_terms(z1.detach().double(), z2.detach().double())["loss"].item()
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_autocast_does_not_lower_float32_inputs():
    """Under autocast the loss's products are its own "high" level (bf16x3, float32 results), not
    autocast's bfloat16 products: within 1e-5 of full float32, where autocast's would be ~1e-3 off."""
    z1, z2 = _views(64, 256, dtype=torch.float32, seed=4)
    outside = vt.VICRegLoss(precision="high")(z1, z2)
    full = vt.VICRegLoss()(z1, z2)
    assert outside.item() == pytest.approx(full.item(), rel=1e-5)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        inside = vt.VICRegLoss()(z1, z2)
        functional = vicreg.vicreg_loss(z1, z2)  # the core's call takes the same path
        # What the loss would be if autocast lowered its matmuls: not the float32 value.
        import array_api_compat.torch as xp

        from vicreg._loss import statistics

        lowered = statistics(xp, (z1, z2), vicreg.VICRegLoss()).loss
    assert inside.item() == outside.item()
    assert functional.item() == outside.item()
    assert lowered.item() != pytest.approx(full.item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------------------
# torch.compile.
# ---------------------------------------------------------------------------------------------------------


class _Projector(torch.nn.Module):
    def __init__(self, backward):
        super().__init__()
        self.layer = torch.nn.Linear(16, 48)
        self.loss = vt.VICRegLoss(backward=backward)

    def forward(self, x1, x2):
        return self.loss(self.layer(x1), self.layer(x2))


def _step(model, x1, x2):
    model.zero_grad()
    loss = model(x1, x2)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.slow
@pytest.mark.parametrize(
    "backward, compiler",
    [("analytic", "inductor"), ("autograd", "aot_eager")],
)
def test_compiled_module_matches_eager_without_graph_breaks(backward, compiler):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _Projector(backward).double()
    x1, x2 = _views(20, 16, seed=5)
    eager_loss, eager_grads = _step(model, x1, x2)
    compiled = torch.compile(model, fullgraph=True, backend=compiler)  # a graph break raises here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss, grads = _step(compiled, x1, x2)
    assert loss.item() == pytest.approx(eager_loss.item(), rel=1e-12)
    largest = max(g.abs().max() for g in eager_grads)  # the bias gradient is 0 up to rounding
    for got, want in zip(grads, eager_grads):
        assert (got - want).abs().max() < 1e-10 * largest


def test_the_core_call_compiles_without_graph_breaks_or_warnings():
    """``vicreg.vicreg_loss`` on tensors dispatches to this adapter without array-API dispatch that Dynamo
    would warn about (the suite turns warnings into errors)."""
    torch._dynamo.reset()
    z1, z2 = _views(10, 30, seed=7)
    compiled = torch.compile(vicreg.vicreg_loss, fullgraph=True, backend="eager")
    assert compiled(z1, z2).item() == pytest.approx(vicreg.vicreg_loss(z1, z2).item(), rel=1e-12)


def test_compiled_terms_without_graph_breaks():
    torch._dynamo.reset()
    z1, z2 = _views(10, 30, seed=6)
    loss_fn = vt.VICRegLoss()
    terms = torch.compile(loss_fn.terms, fullgraph=True, backend="eager")(z1, z2)
    for got, want in zip(terms, loss_fn.terms(z1, z2)):
        assert got.item() == pytest.approx(want.item(), rel=1e-12)
