"""The products' precision levels (``precision=``, :data:`vicreg.PRECISIONS`): what each computes, against
independent float64 formulas; the default under ``torch.autocast`` and for bfloat16 JAX inputs; the GPU's
product on tensors without data. How each level compares with the official formulation under autocast on
the precision sweep's inputs is ``tests/test_precision.py``'s."""

from __future__ import annotations

import numpy as np
import pytest

import vicreg

torch = pytest.importorskip("torch")

from reference import reference_terms  # noqa: E402

SHAPES = [(32, 256), (256, 64)]  # the Gram path (2n <= d) and the d x d path


def _views(n, d, seed=0):
    rng = np.random.default_rng(seed)
    z1 = rng.standard_normal((n, d)) * rng.uniform(0.5, 3.0, d) + 2.0  # columns of several scales, an offset
    z2 = z1 + 0.3 * rng.standard_normal((n, d))
    return z1.astype(np.float32), z2.astype(np.float32)


def _bf16(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to bfloat16 (PyTorch's cast, ties to even), in float64."""
    return torch.tensor(x, dtype=torch.float32).to(torch.bfloat16).double().numpy()


def _covariance_of_rounded(z1: np.ndarray, z2: np.ndarray) -> float:
    """The covariance term ``c(z1) + c(z2)`` in float64, of the centred views rounded to bfloat16 before the
    explicit ``d x d`` product: what one bfloat16 pass with exact accumulation gives."""
    total = 0.0
    for z in (z1, z2):
        z = z.astype(np.float64)
        zc = _bf16((z - z.mean(axis=0)).astype(np.float32))
        n, d = zc.shape
        c = np.einsum("ki,kj->ij", zc, zc) / (n - 1)
        total += float(np.sum(np.where(np.eye(d, dtype=bool), 0.0, c) ** 2) / d)
    return total


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_medium_is_the_covariance_of_the_rounded_inputs(backend, shape):
    """At ``"medium"`` the covariance term is that of the centred embeddings rounded to bfloat16, and the
    other terms are float32's; at ``"highest"`` it is the exact one (the rounding is then visible: the
    two references differ by far more than the tolerance)."""
    z1, z2 = _views(*shape)
    exact = reference_terms(z1.astype(np.float64), z2.astype(np.float64))
    rounded = _covariance_of_rounded(z1, z2)
    assert abs(rounded - exact["covariance"].item()) > 1e-4 * rounded
    a, b = backend.asarray(z1), backend.asarray(z2)
    medium = vicreg.vicreg_terms(a, b, precision="medium")
    assert float(medium.covariance) == pytest.approx(rounded, rel=1e-5)
    assert float(medium.invariance) == pytest.approx(exact["invariance"].item(), rel=1e-5)
    assert float(medium.variance) == pytest.approx(exact["variance"].item(), rel=1e-5)
    highest = vicreg.vicreg_terms(a, b, precision="highest")
    assert float(highest.covariance) == pytest.approx(exact["covariance"].item(), rel=1e-5)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("level, loss_tol, grad_tol", [("high", 1e-5, 1e-4), ("medium", 1e-3, 3e-2)])
def test_each_level_against_the_float64_loss_and_gradient(backend, shape, level, loss_tol, grad_tol):
    """The loss and gradients at each level against the exact float64 ones (autograd through the explicit
    ``d x d`` reference): bf16x3 (``"high"``) to about ``2^-16`` per term, one bfloat16 pass (``"medium"``)
    to about ``2^-9``."""
    z1, z2 = _views(*shape)
    t1, t2 = (torch.tensor(z, dtype=torch.float64, requires_grad=True) for z in (z1, z2))
    want = reference_terms(t1, t2)["loss"]
    want.backward()
    loss, grads = vicreg.value_and_grad(backend.asarray(z1), backend.asarray(z2), precision=level)
    assert float(loss) == pytest.approx(want.item(), rel=loss_tol)
    for got, ref in zip(grads, (t1.grad.numpy(), t2.grad.numpy())):
        got = backend.to_numpy(got).astype(np.float64)
        assert np.max(np.abs(got - ref)) <= grad_tol * np.max(np.abs(ref))


@pytest.mark.parametrize("level", ["high", "medium"])
def test_float64_inputs_ignore_the_level(level):
    z1, z2 = (z.astype(np.float64) for z in _views(32, 256))
    assert vicreg.vicreg_loss(z1, z2, precision=level) == vicreg.vicreg_loss(z1, z2)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_torch_autocast_takes_high_by_default(shape):
    """Under ``torch.autocast`` the module, ``vicreg_loss`` and ``vcreg_loss`` compute what ``precision="high"``
    computes, forward and backward; outside it what ``"highest"`` does; a level by name holds in both."""
    import vicreg.torch as vt

    z1, z2 = (torch.tensor(z) for z in _views(*shape))

    def run(fn, autocast, **options):
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = fn(a, b, **options)
        loss.backward()
        return loss.detach(), a.grad, b.grad

    functions = {
        "module": lambda a, b, **o: vt.VICRegLoss(**o)(a, b),
        "vicreg_loss": vicreg.vicreg_loss,
        "vcreg_loss": lambda a, b, **o: vicreg.vcreg_loss(a, **o) + vicreg.vcreg_loss(b, **o),
    }
    for name, fn in functions.items():
        for got, want in zip(run(fn, True), run(fn, False, precision="high")):
            assert torch.equal(got, want), name
        for got, want in zip(run(fn, False), run(fn, False, precision="highest")):
            assert torch.equal(got, want), name
        for got, want in zip(run(fn, True, precision="medium"), run(fn, False, precision="medium")):
            assert torch.equal(got, want), name
    assert not torch.equal(run(functions["module"], False)[1], run(functions["module"], False, precision="high")[1])


def test_float16_autocast_stays_finite_where_the_official_formulation_overflows():
    """Under float16 autocast the official formulation's products overflow float16 (largest 65504) at a
    standard deviation of 300 (``C_jj`` is about 9e4): its loss is inf or NaN (its issue #27). Ours takes
    bfloat16 products, float32's range, and stays within 1e-4 of float64."""
    import vicreg.torch as vt
    from benchmarks.references import official_torch

    rng = np.random.default_rng(0)
    z1 = (300.0 * rng.standard_normal((64, 512))).astype(np.float32)
    z2 = z1 + rng.standard_normal((64, 512)).astype(np.float32)
    t1, t2 = torch.tensor(z1), torch.tensor(z2)
    with torch.autocast("cpu", dtype=torch.float16):
        theirs = official_torch(t1, t2)
        ours = vt.VICRegLoss()(t1, t2)
    assert not torch.isfinite(theirs)
    want = reference_terms(z1.astype(np.float64), z2.astype(np.float64))["loss"].item()
    assert ours.item() == pytest.approx(want, rel=1e-4)


def test_jax_bfloat16_inputs_take_high_by_default():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    import vicreg.jax as vj

    z1, z2 = (jnp.asarray(z, jnp.bfloat16) for z in _views(32, 256))
    grad = jax.grad(vj.vicreg_loss, argnums=(0, 1))
    assert vj.vicreg_loss(z1, z2) == vj.vicreg_loss(z1, z2, precision="high")
    assert vj.vicreg_loss(z1, z2) != vj.vicreg_loss(z1, z2, precision="highest")
    high = jax.grad(lambda a, b: vj.vicreg_loss(a, b, precision="high"), argnums=(0, 1))
    for got, want in zip(grad(z1, z2), high(z1, z2)):
        assert bool(jnp.all(got == want))
    f1, f2 = (z.astype(jnp.float32) for z in (z1, z2))
    assert vj.vicreg_loss(f1, f2) == vj.vicreg_loss(f1, f2, precision="highest")
    assert jax.jit(lambda a, b: vj.vicreg_loss(a, b, precision="medium"))(f1, f2) == pytest.approx(
        float(vicreg.vicreg_loss(np.asarray(f1), np.asarray(f2), precision="medium")), rel=1e-5
    )


@pytest.mark.parametrize("ndim", [2, 3])
def test_the_gpu_product_on_tensors_without_data(ndim):
    """A smoke test of the GPU's code path, not of values: on a GPU the product is one bfloat16 ``mm``/``bmm``
    with a float32 result (``out_dtype``); meta tensors take that path here, for its shapes and dtype (its
    values are checked by this file's ``torch-cuda`` cases on a GPU)."""
    import array_api_compat.torch as xp

    from vicreg._native import torch as native

    batch = (3,) if ndim == 3 else ()
    a = torch.empty(*batch, 5, 7, device="meta")
    b = torch.empty(*batch, 7, 4, device="meta")
    out = native.bf16_matmul(xp, a, b)
    assert out.shape == (*batch, 5, 4) and out.dtype == torch.float32


ENTRY_POINTS = {
    "vicreg.VICRegLoss": lambda p: vicreg.VICRegLoss(precision=p),
    "vicreg.vcreg_terms": lambda p: vicreg.vcreg_terms(np.ones((4, 3)), precision=p),
    "vicreg.vcreg_value_and_grad": lambda p: vicreg.vcreg_value_and_grad(np.ones((4, 3)), precision=p),
    "vicreg.torch.VICRegLoss": lambda p: __import__("vicreg.torch").torch.VICRegLoss(precision=p),
    "vicreg.torch.VCRegLoss": lambda p: __import__("vicreg.torch").torch.VCRegLoss(precision=p),
    "vicreg.jax.vicreg_loss": lambda p: __import__("vicreg.jax").jax.vicreg_loss(
        np.ones((4, 3), np.float32), np.ones((4, 3), np.float32), precision=p
    ),
    "vicreg.jax.vcreg_loss": lambda p: __import__("vicreg.jax").jax.vcreg_loss(
        np.ones((4, 3), np.float32), precision=p
    ),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_an_unknown_precision_gets_a_clear_error(entry):
    if "jax" in entry:
        pytest.importorskip("jax")
    with pytest.raises(ValueError, match="unknown precision 'tf32'"):
        ENTRY_POINTS[entry]("tf32")
    with pytest.raises(TypeError, match="precision must be None or one of 'highest', 'high', 'medium'"):
        ENTRY_POINTS[entry](1)


def test_torch_compile_rounds_as_eager_does():
    """Under ``torch.compile(fullgraph=True)`` the products round as in eager mode (inductor would fuse a
    cast to bfloat16 and back into nothing: the rounding is done on the bits there), and autocast's default
    is resolved while tracing."""
    import vicreg.torch as vt

    z1, z2 = (torch.tensor(z) for z in _views(32, 256))
    # the sums run in another order when compiled, which the covariance's subtraction can amplify to a few
    # 1e-6 (within "high"'s own accuracy); "medium" and "highest" differ by 1.7e-4 here
    medium, highest = (vt.VICRegLoss(precision=p)(z1, z2).item() for p in ("medium", "highest"))
    assert abs(medium - highest) > 5e-5 * highest
    for level in ("medium", "high"):
        compiled = torch.compile(vt.VICRegLoss(precision=level), fullgraph=True)(z1, z2)
        assert compiled.item() == pytest.approx(vt.VICRegLoss(precision=level)(z1, z2).item(), rel=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        compiled = torch.compile(vt.VICRegLoss(), fullgraph=True)(z1, z2)
    assert compiled.item() == pytest.approx(vt.VICRegLoss(precision="high")(z1, z2).item(), rel=1e-5)


def test_the_default_on_a_device_without_autocast():
    """A device type that autocast does not know (tensors without data, here) gets the full-precision
    default instead of autocast's error; a level by name is kept."""
    import vicreg.torch as vt
    from vicreg._config import Config

    meta = torch.device("meta")
    assert vt._precision(Config(), meta) is None
    assert vt._precision(Config(precision="medium"), meta) == "medium"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert vt._precision(Config(), torch.device("cpu")) == "high"
        assert vt._precision(Config(), meta) is None
