"""The core loss on every backend against the independent float64 reference in ``reference.py``."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction

import array_api_compat
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import reference_terms, reference_value_and_grad
from refused_inputs import as_matrix, nested_tensor, sparse_csr

import vicreg
from vicreg import _terms

TERMS = ("loss", "invariance", "variance", "covariance", "std_mean", "std_min")
SHAPES = [(2, 3), (4, 16), (8, 8), (16, 4), (33, 65), (65, 33), (100, 10)]
OPTIONS = [
    {},
    dict(sim_coeff=1.5, std_coeff=3.0, cov_coeff=0.7, variance_target=0.8, eps=1e-3),
    dict(sim_coeff=0.0, std_coeff=10.0, cov_coeff=2.0, variance_target=1.3, eps=0.0),
]


def views(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two correlated float64 views whose columns have spread-out scales, so that some dimensions sit
    below the variance target (hinge active) and some above, and their means are non-zero."""
    rng = np.random.default_rng(seed)
    scale = np.geomspace(0.2, 3.0, d)
    base = rng.standard_normal((n, d)) * scale + rng.standard_normal(d)
    z1 = base + 0.3 * rng.standard_normal((n, d))
    z2 = base @ (np.eye(d) + 0.1 * rng.standard_normal((d, d))) + 0.3 * rng.standard_normal((n, d))
    return z1, z2


def rel_err(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-300))


def assert_0d_like(out, backend, dtype: str) -> None:
    """A 0-d array of the backend's namespace, on its device, of the given dtype."""
    assert out.shape == ()
    assert array_api_compat.array_namespace(out) is backend.xp
    assert out.dtype == getattr(backend.xp, dtype)
    assert array_api_compat.device(out) == backend.device


# --- values -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("convention", vicreg.CONVENTIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("options", OPTIONS, ids=["default", "custom", "eps0"])
def test_terms_match_reference_float64(backend, convention, shape, options):
    z1, z2 = views(*shape)
    expected = reference_terms(z1, z2, convention=convention, **options)
    a, b = backend.asarray(z1), backend.asarray(z2)
    terms = vicreg.vicreg_terms(a, b, convention=convention, **options)
    assert isinstance(terms, vicreg.VICRegTerms)
    for name in TERMS:
        value = getattr(terms, name)
        assert_0d_like(value, backend, "float64")
        assert rel_err(backend.to_numpy(value), expected[name].item()) < 1e-10, name
    loss = vicreg.vicreg_loss(a, b, convention=convention, **options)
    assert_0d_like(loss, backend, "float64")
    assert rel_err(backend.to_numpy(loss), expected["loss"].item()) < 1e-10


@pytest.mark.parametrize("shape", [(64, 256), (256, 64), (128, 128)], ids=str)
def test_float32_close_to_float64(backend, shape):
    z1, z2 = views(*shape, seed=1)
    expected = reference_terms(z1, z2)
    terms = vicreg.vicreg_terms(backend.asarray(z1, "float32"), backend.asarray(z2, "float32"))
    assert terms.loss.dtype == backend.xp.float32
    for name in TERMS:
        assert rel_err(backend.to_numpy(getattr(terms, name)), expected[name].item()) < 1e-5, name


@pytest.mark.parametrize("shape", [(8, 8), (12, 30), (30, 12)], ids=str)
def test_gram_and_covariance_paths_agree(backend, shape, monkeypatch):
    """Force each path of the covariance term on the same data: the n x n Gram matrix and the d x d."""
    z1, z2 = views(*shape, seed=2)
    a, b = backend.asarray(z1), backend.asarray(z2)
    results = {}
    for gram in (True, False):
        monkeypatch.setattr(_terms, "use_gram", lambda n, d, gram=gram: gram)
        loss, (g1, g2) = vicreg.value_and_grad(a, b)
        results[gram] = [backend.to_numpy(x) for x in (loss, g1, g2)]
    for with_gram, with_cov in zip(results[True], results[False]):
        assert rel_err(with_gram, with_cov) < 1e-12


def test_reduced_precision_inputs_compute_in_float32(backend):
    """float16/bfloat16 embeddings of magnitude ~300: the float16 d x d product overflows, ours does not."""
    z1, z2 = views(16, 64, seed=3)
    z1, z2 = 300 * z1 / np.abs(z1).max(), 300 * z2 / np.abs(z2).max()
    dtypes = [t for t in ("float16", "bfloat16") if hasattr(backend.xp, t)]
    if not dtypes:  # the standard has neither; NumPy has float16 only
        pytest.skip(f"{backend.name} has neither float16 nor bfloat16")
    for dtype in dtypes:
        a, b = backend.asarray(z1, dtype), backend.asarray(z2, dtype)
        rounded = [backend.to_numpy(backend.xp.astype(x, backend.xp.float32)) for x in (a, b)]
        expected = reference_terms(*rounded)["loss"].item()
        loss, (g1, g2) = vicreg.value_and_grad(a, b)
        assert loss.dtype == backend.xp.float32
        assert g1.dtype == a.dtype and g2.dtype == b.dtype
        assert rel_err(backend.to_numpy(loss), expected) < 1e-4
        assert np.all(np.isfinite(backend.to_numpy(g1))) and np.all(np.isfinite(backend.to_numpy(g2)))


def test_mixed_float_dtypes_promote(backend):
    z1, z2 = views(6, 5, seed=4)
    loss = vicreg.vicreg_loss(backend.asarray(z1, "float32"), backend.asarray(z2, "float64"))
    assert loss.dtype == backend.xp.float64
    expected = reference_terms(z1.astype(np.float32).astype(np.float64), z2)["loss"].item()
    assert rel_err(backend.to_numpy(loss), expected) < 1e-10


# --- gradients --------------------------------------------------------------------------------------


@pytest.mark.parametrize("convention", vicreg.CONVENTIONS)
@pytest.mark.parametrize("shape", [(2, 3), (5, 7), (7, 5), (9, 9), (40, 70), (70, 40)], ids=str)
@pytest.mark.parametrize("options", OPTIONS[:2], ids=["default", "custom"])
def test_value_and_grad_matches_reference_autograd(backend, convention, shape, options):
    z1, z2 = views(*shape, seed=5)
    expected_loss, expected_grads = reference_value_and_grad(z1, z2, convention=convention, **options)
    a, b = backend.asarray(z1), backend.asarray(z2)
    loss, grads = vicreg.value_and_grad(a, b, convention=convention, **options)
    assert_0d_like(loss, backend, "float64")
    assert rel_err(backend.to_numpy(loss), expected_loss) < 1e-10
    for g, x, expected in zip(grads, (a, b), expected_grads):
        assert g.shape == x.shape and g.dtype == x.dtype
        assert array_api_compat.device(g) == backend.device
        assert rel_err(backend.to_numpy(g), expected) < 1e-10


def test_value_and_grad_matches_torch_autograd_through_the_core():
    torch = pytest.importorskip("torch")
    z1, z2 = views(10, 24, seed=6)
    t1 = torch.tensor(z1, requires_grad=True)
    t2 = torch.tensor(z2, requires_grad=True)
    vicreg.vicreg_loss(t1, t2).backward()
    _, (g1, g2) = vicreg.value_and_grad(z1, z2)
    assert rel_err(g1, t1.grad.numpy()) < 1e-12
    assert rel_err(g2, t2.grad.numpy()) < 1e-12


@pytest.mark.parametrize("convention", vicreg.CONVENTIONS)
def test_value_and_grad_matches_jax_grad(convention):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    z1, z2 = views(12, 20, seed=7)
    with jax.enable_x64(True):
        grad_fn = jax.jit(jax.value_and_grad(lambda a, b: vicreg.vicreg_loss(a, b, convention=convention), (0, 1)))
        loss, (g1, g2) = grad_fn(jnp.asarray(z1), jnp.asarray(z2))
        assert loss.dtype == jnp.float64
        loss, g1, g2 = float(loss), np.asarray(g1), np.asarray(g2)
    expected_loss, (e1, e2) = vicreg.value_and_grad(z1, z2, convention=convention)
    assert rel_err(loss, expected_loss) < 1e-12
    assert rel_err(g1, e1) < 1e-10 and rel_err(g2, e2) < 1e-10


@pytest.mark.parametrize("convention", vicreg.CONVENTIONS)
@pytest.mark.parametrize("shape", [(5, 7), (7, 5)], ids=str)
def test_value_and_grad_matches_finite_differences(convention, shape):
    """Fourth-order central differences, far from the hinge kinks (checked)."""
    z1, z2 = views(*shape, seed=8)
    options = dict(convention=convention, variance_target=1.0, eps=1e-4)
    for z in (z1, z2):  # keep every std at least 1e-2 away from the kink
        assert np.min(np.abs(np.sqrt(z.var(axis=0, ddof=1) + 1e-4) - 1.0)) > 1e-2
    _, (g1, g2) = vicreg.value_and_grad(z1, z2, **options)
    h = 1e-3

    def f(a, b):
        return float(vicreg.vicreg_loss(a, b, **options))

    for which, analytic in ((0, g1), (1, g2)):
        numeric = np.zeros_like(analytic)
        for idx in np.ndindex(*shape):
            pts = []
            for step in (2, 1, -1, -2):
                pair = [z1.copy(), z2.copy()]
                pair[which][idx] += step * h
                pts.append(f(*pair))
            numeric[idx] = (-pts[0] + 8 * pts[1] - 8 * pts[2] + pts[3]) / (12 * h)
        assert rel_err(analytic, numeric) < 1e-8


# --- properties ---------------------------------------------------------------------------------------

shapes = st.tuples(st.integers(2, 24), st.integers(1, 24))
seeds = st.integers(0, 2**32 - 1)
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _terms_np(z1, z2, **options) -> np.ndarray:
    t = vicreg.vicreg_terms(z1, z2, **options)
    return np.array([float(getattr(t, name)) for name in TERMS[:4]])


@PROPERTY
@given(shape=shapes, seed=seeds, convention=st.sampled_from(vicreg.CONVENTIONS))
def test_symmetric_in_the_two_views(shape, seed, convention):
    z1, z2 = views(*shape, seed=seed)
    np.testing.assert_allclose(
        _terms_np(z1, z2, convention=convention), _terms_np(z2, z1, convention=convention), rtol=1e-12
    )


@PROPERTY
@given(shape=shapes, seed=seeds)
def test_invariant_to_a_common_row_permutation(shape, seed):
    z1, z2 = views(*shape, seed=seed)
    perm = np.random.default_rng(seed).permutation(shape[0])
    np.testing.assert_allclose(_terms_np(z1, z2), _terms_np(z1[perm], z2[perm]), rtol=1e-10, atol=1e-12)


@PROPERTY
@given(shape=shapes, seed=seeds)
def test_variance_and_covariance_ignore_a_constant_shift(shape, seed):
    z1, z2 = views(*shape, seed=seed)
    rng = np.random.default_rng(seed + 1)
    shifted = _terms_np(z1 + rng.standard_normal(shape[1]), z2 + rng.standard_normal(shape[1]))
    np.testing.assert_allclose(shifted[2:], _terms_np(z1, z2)[2:], rtol=1e-8, atol=1e-12)
    c = rng.standard_normal(shape[1])
    np.testing.assert_allclose(_terms_np(z1 + c, z2 + c), _terms_np(z1, z2), rtol=1e-8, atol=1e-12)


@PROPERTY
@given(shape=shapes, seed=seeds, scale=st.floats(1.0, 5.0), convention=st.sampled_from(vicreg.CONVENTIONS))
def test_scaling_both_views(shape, seed, scale, convention):
    """With the hinge inactive (variance target 0), invariance scales by s^2 and covariance by s^4."""
    z1, z2 = views(*shape, seed=seed)
    options = dict(variance_target=0.0, convention=convention)
    base, scaled = _terms_np(z1, z2, **options), _terms_np(scale * z1, scale * z2, **options)
    assert base[2] == 0.0 and scaled[2] == 0.0
    np.testing.assert_allclose(scaled[1], scale**2 * base[1], rtol=1e-10)
    np.testing.assert_allclose(scaled[3], scale**4 * base[3], rtol=1e-8, atol=1e-9 * scale**4)


# --- known values -------------------------------------------------------------------------------------


def test_identical_views_have_zero_invariance(backend):
    z1, _ = views(9, 13, seed=9)
    terms = vicreg.vicreg_terms(backend.asarray(z1), backend.asarray(z1))
    assert float(backend.to_numpy(terms.invariance)) == 0.0


@pytest.mark.parametrize("convention, views_counted", [("official", 1), ("paper", 2)])
def test_constant_views(backend, convention, views_counted):
    """Complete collapse: every std is 0, the hinge gives gamma - sqrt(eps) per view, covariance 0."""
    gamma, eps = 1.0, 1e-4
    z = backend.asarray(np.full((8, 5), 3.0))
    terms = vicreg.vicreg_terms(z, z, variance_target=gamma, eps=eps, convention=convention)
    assert float(backend.to_numpy(terms.variance)) == pytest.approx(views_counted * (gamma - math.sqrt(eps)), rel=1e-12)
    assert float(backend.to_numpy(terms.covariance)) == 0.0
    assert float(backend.to_numpy(terms.std_mean)) == 0.0
    loss, (g1, g2) = vicreg.value_and_grad(z, z, variance_target=gamma, eps=eps, convention=convention)
    assert np.all(np.isfinite(backend.to_numpy(g1))) and np.all(np.isfinite(backend.to_numpy(g2)))
    expected = 25.0 * views_counted * (gamma - math.sqrt(eps))
    assert float(backend.to_numpy(loss)) == pytest.approx(expected, rel=1e-12)


def test_nan_propagates_without_a_check(backend):
    z1, z2 = views(6, 4, seed=10)
    z1[2, 1] = np.nan
    loss = vicreg.vicreg_loss(backend.asarray(z1), backend.asarray(z2))
    assert np.isnan(float(backend.to_numpy(loss)))


# --- frameworks -----------------------------------------------------------------------------------------


def test_jax_jit_matches_eager():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    z1, z2 = views(16, 40, seed=11)
    a, b = jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32)
    eager = vicreg.vicreg_terms(a, b)
    jitted = jax.jit(vicreg.vicreg_terms)(a, b)
    for name in TERMS:
        np.testing.assert_allclose(np.asarray(getattr(jitted, name)), np.asarray(getattr(eager, name)), rtol=1e-6)


def test_torch_autograd_through_vicreg_loss():
    torch = pytest.importorskip("torch")
    z1, z2 = views(10, 6, seed=12)
    t1 = torch.tensor(z1, requires_grad=True)
    t2 = torch.tensor(z2, requires_grad=True)
    loss = vicreg.vicreg_loss(t1, t2)
    assert isinstance(loss, torch.Tensor) and loss.requires_grad
    loss.backward()
    _, (e1, e2) = reference_value_and_grad(z1, z2)
    assert rel_err(t1.grad.numpy(), e1) < 1e-10 and rel_err(t2.grad.numpy(), e2) < 1e-10


def test_torch_tensors_take_the_analytic_backward():
    """``vicreg.vicreg_loss`` on tensors runs vicreg.torch's autograd.Function (inspect the graph), and its
    gradients equal autograd through the core and the independent reference."""
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as xp

    from vicreg._loss import statistics

    z1, z2 = views(12, 40, seed=16)
    for fn in (vicreg.vicreg_loss, lambda a, b: vicreg.vicreg_terms(a, b).loss):
        t1, t2 = torch.tensor(z1, requires_grad=True), torch.tensor(z2, requires_grad=True)
        loss = fn(t1, t2)
        assert "AnalyticVICReg" in type(loss.grad_fn).__name__
        loss.backward()
        a1, a2 = torch.tensor(z1, requires_grad=True), torch.tensor(z2, requires_grad=True)
        statistics(xp, (a1, a2), vicreg.VICRegLoss()).loss.backward()  # autograd through the core
        _, (e1, e2) = reference_value_and_grad(z1, z2)
        for got, core, ref in ((t1.grad, a1.grad, e1), (t2.grad, a2.grad, e2)):
            assert rel_err(got.numpy(), core.numpy()) < 1e-10
            assert rel_err(got.numpy(), ref) < 1e-10


def test_jax_arrays_take_the_custom_differentiation_rule():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from vicreg._loss import statistics

    z1, z2 = views(12, 40, seed=17)
    with jax.enable_x64(True):
        a, b = jnp.asarray(z1), jnp.asarray(z2)
        assert "custom_jvp_call" in str(jax.make_jaxpr(vicreg.vicreg_loss)(a, b))
        grad = jax.grad(vicreg.vicreg_loss, argnums=(0, 1))
        got = grad(a, b)
        autodiff = jax.grad(lambda x, y: statistics(jnp, (x, y), vicreg.VICRegLoss()).loss, argnums=(0, 1))(a, b)
        _, expected = reference_value_and_grad(z1, z2)
        for g, auto, ref in zip(got, autodiff, expected):
            assert rel_err(np.asarray(g), np.asarray(auto)) < 1e-10
            assert rel_err(np.asarray(g), ref) < 1e-10


@pytest.mark.parametrize("shape", [(3, 8), (6, 4)], ids=["gram", "dxd"])
def test_second_derivatives_of_the_headline_function(shape):
    """``jax.hessian`` and ``torch.func.hessian`` of ``vicreg.vicreg_loss`` (which dispatches to the
    adapters' rules) equal the Hessian of autodiff through the core's formulas, in float64."""
    from vicreg._loss import statistics

    z1, z2 = views(*shape, seed=18)
    config = vicreg.VICRegLoss()
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    with jax.enable_x64(True):
        a, b = jnp.asarray(z1), jnp.asarray(z2)
        # jitted: one compilation each instead of one per operation of the nested differentiation (a
        # fifth of the time); the adapter's rule is the same lax.switch eagerly and under jit
        got = jax.jit(jax.hessian(vicreg.vicreg_loss, argnums=(0, 1)))(a, b)
        want = jax.jit(jax.hessian(lambda x, y: statistics(jnp, (x, y), config).loss, argnums=(0, 1)))(a, b)
        for g_row, w_row in zip(got, want):
            for g, w in zip(g_row, w_row):
                assert g.shape == shape + shape
                assert rel_err(np.asarray(g), np.asarray(w)) < 1e-10
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as xp

    t1, t2 = torch.tensor(z1), torch.tensor(z2)
    got = torch.func.hessian(vicreg.vicreg_loss, argnums=(0, 1))(t1, t2)
    want = torch.func.hessian(lambda x, y: statistics(xp, (x, y), config).loss, argnums=(0, 1))(t1, t2)
    for g_row, w_row in zip(got, want):
        for g, w in zip(g_row, w_row):
            assert rel_err(g.numpy(), w.numpy()) < 1e-10


def test_config_object_is_immutable_and_callable():
    z1, z2 = views(6, 10, seed=13)
    loss_fn = vicreg.VICRegLoss(sim_coeff=10.0, convention="paper")
    with pytest.raises(dataclasses.FrozenInstanceError):
        loss_fn.sim_coeff = 1.0
    expected = reference_terms(z1, z2, sim_coeff=10.0, convention="paper")
    assert rel_err(loss_fn(z1, z2), expected["loss"].item()) < 1e-10
    assert rel_err(loss_fn.terms(z1, z2).covariance, expected["covariance"].item()) < 1e-10
    loss, _ = loss_fn.value_and_grad(z1, z2)
    assert rel_err(loss, expected["loss"].item()) < 1e-10
    assert loss_fn == vicreg.VICRegLoss(sim_coeff=10.0, convention="paper")
    assert hash(loss_fn) == hash(vicreg.VICRegLoss(sim_coeff=10.0, convention="paper"))


def test_import_vicreg_imports_no_array_framework():
    code = (
        "import sys, vicreg; "
        "print([m for m in ('numpy', 'torch', 'jax', 'cupy', 'array_api_strict') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- bad input ------------------------------------------------------------------------------------------

FUNCTIONS = [vicreg.vicreg_loss, vicreg.vicreg_terms, vicreg.value_and_grad]
_ok = np.zeros((4, 3))


def _bad_inputs():
    """(id, z1, z2, options, exception, message pattern) for each kind of bad input."""
    rng = np.random.default_rng(0)
    good = rng.standard_normal((4, 3))
    cases = [
        ("shapes-differ", good, rng.standard_normal((4, 5)), {}, ValueError, "same shape"),
        ("1-d", good[0], good[1], {}, ValueError, "2-D"),
        ("empty-middle-axis", good[:, :0, None], good[:, :0, None], {}, ValueError, "middle axes"),
        ("one-sample", good[:1], good[:1], {}, ValueError, "at least 2 samples"),
        ("zero-features", good[:, :0], good[:, :0], {}, ValueError, "zero features"),
        ("integer", good.astype(np.int64), good.astype(np.int64), {}, TypeError, "real floating"),
        ("boolean", good > 0, good > 0, {}, TypeError, "real floating"),
        ("complex", good.astype(np.complex128), good.astype(np.complex128), {}, TypeError, "real floating"),
        ("list", good.tolist(), good, {}, TypeError, "z1 must be an array"),
        ("none", good, None, {}, TypeError, "z2 must be an array"),
        ("convention", good, good, dict(convention="solo"), ValueError, "'official', 'paper'"),
        ("precision", good, good, dict(precision="tf32"), ValueError, "'highest', 'high', 'medium'"),
        ("precision-type", good, good, dict(precision=32), TypeError, "precision must be None or one of"),
        ("negative-coeff", good, good, dict(std_coeff=-1.0), ValueError, "std_coeff must be non-negative"),
        ("nan-coeff", good, good, dict(sim_coeff=float("nan")), ValueError, "sim_coeff must be finite"),
        ("negative-eps", good, good, dict(eps=-1e-4), ValueError, "eps must be non-negative"),
        ("negative-target", good, good, dict(variance_target=-1.0), ValueError, "variance_target"),
        ("string-coeff", good, good, dict(cov_coeff="1"), TypeError, "cov_coeff must be a real"),
        ("unknown-keyword", good, good, dict(lambda_param=25.0), TypeError, "lambda_param"),
        ("masked-array", np.ma.masked_array(good, good > 1), good, {}, TypeError, "masked array.*z1.filled"),
        ("matrix", good, as_matrix(good), {}, TypeError, r"numpy.asarray\(z2\)"),
        ("overflowing-coeff", good, good, dict(eps=10**400), ValueError, "eps is too large"),
        ("infinite-decimal", good, good, dict(eps=Decimal("1e400")), ValueError, "eps must be finite"),
        ("complex-coeff", good, good, dict(sim_coeff=1j), TypeError, "sim_coeff must be a real"),
        ("array-coeff", good, good, dict(std_coeff=np.ones(2)), TypeError, "std_coeff must be a real"),
        ("bool-coeff", good, good, dict(cov_coeff=True), TypeError, "cov_coeff must be a real"),
        ("numpy-bool-coeff", good, good, dict(cov_coeff=np.True_), TypeError, "cov_coeff must be a real"),
    ]
    return cases


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    "z1, z2, options, exc, match", [c[1:] for c in _bad_inputs()], ids=[c[0] for c in _bad_inputs()]
)
def test_bad_input_gets_a_clear_error(fn, z1, z2, options, exc, match):
    with pytest.raises(exc, match=match):
        fn(z1, z2, **options)


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_arrays_from_two_libraries(fn):
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="from_dlpack"):
        fn(np.zeros((4, 3)), torch.zeros(4, 3, dtype=torch.float64))


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_arrays_on_two_devices(fn):
    strict = pytest.importorskip("array_api_strict")
    a = strict.asarray(np.ones((4, 3)), device=strict.Device("CPU_DEVICE"))
    b = strict.asarray(np.ones((4, 3)), device=strict.Device("device1"))
    with pytest.raises(ValueError, match="different devices"):
        fn(a, b)
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="different devices"):
        fn(torch.ones(4, 3), torch.ones(4, 3, device="meta"))


@pytest.mark.parametrize("shape", [(6, 9), (9, 6)], ids=str)
def test_value_and_grad_leaves_its_inputs_alone(backend, shape):
    """The gradient reuses the buffers of its private statistics, never the caller's arrays."""
    z1, z2 = views(*shape, seed=14)
    a, b = backend.asarray(z1), backend.asarray(z2)
    vicreg.value_and_grad(a, b)
    np.testing.assert_array_equal(backend.to_numpy(a), z1)
    np.testing.assert_array_equal(backend.to_numpy(b), z2)


def test_sparse_and_nested_tensors_get_a_clear_error():
    torch = pytest.importorskip("torch")
    dense = torch.randn(6, 4, dtype=torch.float64)
    for fn in FUNCTIONS:
        with pytest.raises(TypeError, match=r"sparse tensor.*z1.to_dense\(\)"):
            fn(dense.to_sparse(), dense)
        with pytest.raises(TypeError, match=r"sparse tensor \(torch.sparse_csr\)"):
            fn(dense, sparse_csr(dense))
        nested = nested_tensor(torch, [dense, dense[:3]])
        with pytest.raises(TypeError, match="nested tensor"):
            fn(nested, nested)


@pytest.mark.parametrize(
    "coefficient",
    [
        np.float64(0.5),
        np.longdouble(0.5),
        np.float32(0.5),
        Fraction(1, 2),
        Decimal("0.5"),
        np.array(0.5),
    ],
    ids=["np.float64", "np.longdouble", "np.float32", "Fraction", "Decimal", "0-d ndarray"],
)
def test_any_real_coefficient_is_a_python_float_and_keeps_the_dtype(backend, coefficient):
    z1, z2 = views(8, 20, seed=15)
    a, b = backend.asarray(z1, "float32"), backend.asarray(z2, "float32")
    expected = vicreg.vicreg_loss(a, b, sim_coeff=0.5, cov_coeff=0.5, eps=0.5)
    for name in ("sim_coeff", "cov_coeff", "eps"):
        config = vicreg.VICRegLoss(**{name: coefficient})
        assert type(getattr(config, name)) is float and getattr(config, name) == 0.5
    loss = vicreg.vicreg_loss(a, b, sim_coeff=coefficient, cov_coeff=coefficient, eps=coefficient)
    assert_0d_like(loss, backend, "float32")
    assert float(backend.to_numpy(loss)) == float(backend.to_numpy(expected))
    torch = pytest.importorskip("torch")
    loss = vicreg.vicreg_loss(a, b, sim_coeff=torch.tensor(0.5), cov_coeff=0.5, eps=0.5)
    assert float(backend.to_numpy(loss)) == float(backend.to_numpy(expected))
