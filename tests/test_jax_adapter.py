"""vicreg.jax on one device: values, jit, grad (analytic JVP rule vs autodiff), forward mode, vmap,
named-axis collectives (simulated devices with a named vmap), mixed precision and input errors.

The reference is written independently of the core: float64, the explicit d x d covariance matrix, the
diagonal masked out, and JAX autodiff for its derivatives.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy
vj = pytest.importorskip("vicreg.jax")

from refused_inputs import as_matrix  # noqa: E402

import vicreg  # noqa: E402

DEFAULTS = dict(sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, variance_target=1.0, eps=1e-4, convention="official")
OTHER = dict(sim_coeff=1.5, std_coeff=3.0, cov_coeff=0.5, variance_target=1.2, eps=1e-3, convention="paper")
# (n, d): the Gram path (n < d) and the d x d path (n >= d)
SHAPES = [(12, 20), (30, 7)]


def reference_terms(z1, z2, sim_coeff, std_coeff, cov_coeff, variance_target, eps, convention):
    """float64 VICReg with the explicit d x d covariance: (loss, inv, var, cov)."""
    n, d = z1.shape

    def view(z):
        zc = z - jnp.mean(z, axis=0, keepdims=True)
        cov = zc.T @ zc / (n - 1)
        std = jnp.sqrt(jnp.diagonal(cov) + eps)
        v = jnp.sum(jnp.maximum(variance_target - std, 0.0)) / d
        off = jnp.where(jnp.eye(d, dtype=bool), 0.0, cov)
        return v, jnp.sum(off**2) / d

    v1, c1 = view(z1)
    v2, c2 = view(z2)
    per_sample = jnp.sum((z1 - z2) ** 2, axis=1)
    if convention == "official":
        inv, var = jnp.mean(per_sample) / d, (v1 + v2) / 2
    else:
        inv, var = jnp.mean(per_sample), v1 + v2
    cov = c1 + c2
    return sim_coeff * inv + std_coeff * var + cov_coeff * cov, inv, var, cov


OPTIONS = tuple(DEFAULTS)
reference_terms = jax.jit(reference_terms, static_argnames=OPTIONS)


def reference_loss(z1, z2, **kw):
    return reference_terms(z1, z2, **{**DEFAULTS, **kw})[0]


@functools.partial(jax.jit, static_argnames=("index", *OPTIONS))
def reference_grad(z1, z2, index=0, **kw):
    """Autodiff gradient of field ``index`` (0 loss, 1 invariance, 2 variance, 3 covariance)."""
    return jax.grad(lambda a, b: reference_terms(a, b, **kw)[index], argnums=(0, 1))(z1, z2)


def pair(n, d, seed=0, dtype=np.float64):
    """Two correlated views whose per-dimension std straddles 1, so the hinge is active on some
    dimensions and not on others."""
    rng = np.random.default_rng(seed)
    scale = np.linspace(0.3, 2.0, d)
    z1 = rng.standard_normal((n, d)) * scale
    z2 = z1 + 0.5 * rng.standard_normal((n, d)) * scale
    return z1.astype(dtype), z2.astype(dtype)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kw", [DEFAULTS, OTHER], ids=["official", "paper"])
def test_value_terms_and_gradient_match_reference(x64, shape, kw):
    z1, z2 = map(jnp.asarray, pair(*shape))
    terms = jax.jit(functools.partial(vj.vicreg_terms, **kw))(z1, z2)
    ref = reference_terms(z1, z2, **kw)
    for got, want in zip(terms[:4], ref):
        assert got.shape == () and got.dtype == jnp.float64
        assert rel(got, want) < 1e-12
    std = np.sqrt(np.concatenate([np.var(np.asarray(z), axis=0, ddof=1) for z in (z1, z2)]))
    assert rel(terms.std_mean, std.mean()) < 1e-12
    assert rel(terms.std_min, std.min()) < 1e-12
    assert rel(vj.vicreg_loss(z1, z2, **kw), ref[0]) < 1e-12  # eager

    # the analytic gradient (custom JVP rule) against autodiff of the independent d x d formula
    grad = jax.jit(jax.grad(functools.partial(vj.vicreg_loss, **kw), argnums=(0, 1)))(z1, z2)
    want = reference_grad(z1, z2, **kw)
    for g, w in zip(grad, want):
        assert g.dtype == jnp.float64 and rel(g, w) < 1e-9


def test_gradient_matches_finite_differences(x64):
    z1, z2 = map(jnp.asarray, pair(6, 9, seed=3))
    g1, _ = jax.jit(jax.grad(vj.vicreg_loss, argnums=(0, 1)))(z1, z2)
    rng = np.random.default_rng(1)
    direction = jnp.asarray(rng.standard_normal(z1.shape))
    h = 1e-6
    loss = jax.jit(vj.vicreg_loss)
    fd = (loss(z1 + h * direction, z2) - loss(z1 - h * direction, z2)) / (2 * h)
    assert abs(float(jnp.sum(g1 * direction)) - float(fd)) < 1e-6 * max(1.0, abs(float(fd)))


def test_every_field_of_terms_is_differentiable(x64):
    """The JVP rule supplies the loss's tangent analytically and the other fields' by autodiff."""
    z1, z2 = map(jnp.asarray, pair(10, 14, seed=4))
    for index, field in ((1, "invariance"), (2, "variance"), (3, "covariance")):
        got = jax.jit(
            jax.grad(lambda a, b: getattr(vj.vicreg_terms(a, b), field), argnums=(0, 1))  # noqa: B023
        )(z1, z2)
        want = reference_grad(z1, z2, index=index, **DEFAULTS)
        for g, w in zip(got, want):
            assert rel(g, w) < 1e-9, field
    # value_and_grad with the terms as auxiliary output, as a training step would log them
    (loss, terms), _grads = jax.jit(
        jax.value_and_grad(lambda a, b: (lambda t: (t.loss, t))(vj.vicreg_terms(a, b)), has_aux=True)
    )(z1, z2)
    assert rel(loss, reference_loss(z1, z2, **DEFAULTS)) < 1e-12 and rel(terms.loss, loss) == 0


def test_forward_mode_and_second_derivatives(x64):
    """A JVP rule (not a custom_vjp) keeps jax.jvp, jacfwd and Hessian-vector products working."""
    z1, z2 = map(jnp.asarray, pair(7, 11, seed=5))
    rng = np.random.default_rng(2)
    t1, t2 = (jnp.asarray(rng.standard_normal(z1.shape)) for _ in range(2))
    ref = reference_loss

    @functools.partial(jax.jit, static_argnums=0)
    def derivatives(f, a, b):
        dot = jax.jvp(f, (a, b), (t1, t2))[1]
        jac = jax.jacfwd(f)(a, b)
        # Hessian-vector product: forward over the (analytic) reverse
        hvp = jax.jvp(jax.grad(f, argnums=(0, 1)), (a, b), (t1, t2))[1]
        return dot, jac, hvp

    dot, jac, hvp = derivatives(vj.vicreg_loss, z1, z2)
    dot_ref, _, hvp_ref = derivatives(ref, z1, z2)
    assert rel(dot, dot_ref) < 1e-9
    assert rel(jac, reference_grad(z1, z2, **DEFAULTS)[0]) < 1e-9
    for h, w in zip(hvp, hvp_ref):
        assert rel(h, w) < 1e-8


def test_vmap_over_pairs(x64):
    k, n, d = 3, 9, 13
    views = [pair(n, d, seed=s) for s in range(k)]
    z1s = jnp.stack([jnp.asarray(a) for a, _ in views])
    z2s = jnp.stack([jnp.asarray(b) for _, b in views])
    losses = jax.jit(jax.vmap(vj.vicreg_loss))(z1s, z2s)
    assert losses.shape == (k,)
    grads = jax.jit(jax.vmap(jax.grad(vj.vicreg_loss)))(z1s, z2s)
    for i in range(k):
        assert rel(losses[i], reference_loss(z1s[i], z2s[i])) < 1e-12
        assert rel(grads[i], reference_grad(z1s[i], z2s[i], **DEFAULTS)[0]) < 1e-9
    terms = jax.jit(jax.vmap(vj.vicreg_terms))(z1s, z2s)
    assert terms.covariance.shape == (k,)


@pytest.mark.parametrize("shape", [(12, 20), (24, 5)])
def test_named_axis_gives_global_batch_loss_and_gradient(x64, shape):
    """A named vmap stands in for 4 devices: psum/all_gather over the axis must give the loss of the
    whole batch on every 'device', and the gradient of one replica's output the whole-batch gradient."""
    devices = 4
    n, d = shape
    z1, z2 = map(jnp.asarray, pair(n, d, seed=6))

    def per_device(a, b):
        return vj.vicreg_loss(a, b, axis_name="dev", **OTHER)

    split = lambda z: z.reshape(devices, n // devices, d)  # noqa: E731
    losses = jax.jit(jax.vmap(per_device, axis_name="dev"))(split(z1), split(z2))
    want = reference_loss(z1, z2, **OTHER)
    assert losses.shape == (devices,)
    assert max(rel(x, want) for x in losses) < 1e-12

    grad = jax.grad(lambda a, b: jax.vmap(per_device, axis_name="dev")(a, b)[0], argnums=(0, 1))
    got = jax.jit(grad)(split(z1), split(z2))
    ref = reference_grad(z1, z2, **OTHER)
    for g, w in zip(got, ref):
        assert rel(g.reshape(n, d), w) < 1e-9

    terms = jax.jit(jax.vmap(lambda a, b: vj.vicreg_terms(a, b, axis_name="dev", **OTHER), axis_name="dev"))(
        split(z1), split(z2)
    )
    single = jax.jit(functools.partial(vj.vicreg_terms, **OTHER))(z1, z2)
    for got_field, want_field in zip(terms, single):
        assert max(rel(x, want_field) for x in got_field) < 1e-12


def test_one_row_per_device_is_a_valid_global_batch(x64):
    z1, z2 = map(jnp.asarray, pair(4, 6, seed=7))
    losses = jax.jit(jax.vmap(lambda a, b: vj.vicreg_loss(a, b, axis_name="dev"), axis_name="dev"))(
        z1[:, None, :], z2[:, None, :]
    )
    assert max(rel(x, reference_loss(z1, z2)) for x in losses) < 1e-12


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_is_computed_in_float32(dtype):
    """Embeddings of magnitude ~300: the d x d second moment of the centred embeddings overflows
    float16 (shown below), while vicreg.jax computes in float32 and stays within 1% of float64 on the
    same rounded inputs. Gradients come back in the input dtype."""
    n, d = 64, 32
    rng = np.random.default_rng(8)
    z1 = 300.0 * rng.standard_normal((n, d))
    z2 = z1 + 30.0 * rng.standard_normal((n, d))
    a, b = jnp.asarray(z1, dtype=dtype), jnp.asarray(z2, dtype=dtype)
    if dtype == "float16":
        zc = a - jnp.mean(a, axis=0)
        assert bool(jnp.isinf(zc.T @ zc).any()), "the naive float16 covariance should overflow"

    loss = jax.jit(vj.vicreg_loss)(a, b)
    assert loss.dtype == jnp.float32 and bool(jnp.isfinite(loss))
    with jax.enable_x64(True):
        rounded = (
            jnp.asarray(np.asarray(a.astype(jnp.float32)), dtype=jnp.float64),
            jnp.asarray(np.asarray(b.astype(jnp.float32)), dtype=jnp.float64),
        )
        want = float(reference_loss(*rounded))
        want_grad = [np.asarray(w) for w in reference_grad(*rounded, **DEFAULTS)]
    assert abs(float(loss) - want) < 0.01 * abs(want)

    g1, g2 = jax.jit(jax.grad(vj.vicreg_loss, argnums=(0, 1)))(a, b)
    assert g1.dtype == a.dtype and g2.dtype == b.dtype
    for g, w in zip((g1, g2), want_grad):
        # float16 cannot hold every entry of this gradient (up to ~1e5): where the float64 gradient
        # rounds to inf, so must ours; elsewhere it is the float64 gradient to the dtype's precision
        g = np.asarray(g.astype(jnp.float32), np.float64)
        representable = np.isfinite(np.asarray(jnp.asarray(w, jnp.float32).astype(dtype), np.float64))
        if dtype == "bfloat16":
            assert representable.all()
        np.testing.assert_array_equal(np.isfinite(g), representable)
        assert rel(g[representable], w[representable]) < 0.02  # 8 or 11 significant bits
    terms = jax.jit(vj.vicreg_terms)(a, b)
    assert all(t.dtype == jnp.float32 for t in terms)


def test_products_run_at_highest_precision():
    """The covariance term is a difference of large numbers: the adapter pins 'highest' matmul
    precision, even under a lower global default (TF32 or one-pass bfloat16 on GPUs and TPUs)."""
    z = jnp.ones((8, 16), jnp.float32)
    with jax.default_matmul_precision("bfloat16"):
        text = jax.jit(jax.grad(vj.vicreg_loss, argnums=(0, 1))).lower(z, z).as_text()
    dots = [line for line in text.splitlines() if "dot_general" in line and "precision" in line]
    assert dots and all("HIGHEST" in line for line in dots)


def test_the_compiled_gradient_sorts_nothing():
    """The exact-column test reads the ``k``-th and ``(k + 1)``-th largest variances, and the column choice the
    indices of the largest alone: XLA turned such a ``TopK`` into a sort of all ``d`` variances (2 ms of an
    18 ms gradient at 256 x 8192 on a 2-core CPU) until each output got a barrier of its own. Every branch
    of the compiled gradient (0, 8 and ``n - 1`` exact columns) keeps the partial selection."""
    z = jnp.ones((32, 128), jnp.float32)
    text = jax.jit(jax.grad(vj.vicreg_loss, argnums=(0, 1))).lower(z, z).compile().as_text()
    assert "TopK" in text and " sort(" not in text


def test_numpy_inputs_are_accepted(x64):
    z1, z2 = pair(8, 5, seed=9)
    assert rel(vj.vicreg_loss(z1, z2), vicreg.vicreg_loss(z1, z2)) < 1e-12


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        (([[1.0, 2.0]], [[1.0, 2.0]]), {}, TypeError, "z1 must be a JAX array"),
        ((np.ones((4, 3), np.float32), "x"), {}, TypeError, "z2 must be a JAX array"),
        ((np.ones(4, np.float32), np.ones(4, np.float32)), {}, ValueError, "2-D"),
        ((np.ones((4, 3), np.float32), np.ones((4, 2), np.float32)), {}, ValueError, "same shape"),
        ((np.ones((1, 3), np.float32), np.ones((1, 3), np.float32)), {}, ValueError, "at least 2"),
        ((np.ones((4, 3), np.int32), np.ones((4, 3), np.int32)), {}, TypeError, "floating"),
        ((np.ones((4, 3), np.float32),) * 2, {"std_coeff": -1.0}, ValueError, "std_coeff"),
        ((np.ones((4, 3), np.float32),) * 2, {"convention": "solo"}, ValueError, "convention"),
        ((np.ones((4, 3), np.float32),) * 2, {"axis_name": "batch"}, ValueError, "not bound"),
        ((np.ma.masked_array(np.ones((4, 3))), np.ones((4, 3))), {}, TypeError, "masked array"),
        ((np.ones((4, 3)), as_matrix(np.ones((4, 3)))), {}, TypeError, "numpy.asarray"),
        ((np.ones((4, 3), np.float32),) * 2, {"eps": 10**400}, ValueError, "eps is too large"),
        ((np.ones((4, 3), np.float32),) * 2, {"sim_coeff": 1j}, TypeError, "sim_coeff must be a real"),
    ],
)
def test_bad_input_gets_a_clear_error(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        vj.vicreg_loss(*args, **kwargs)


def test_errors_are_raised_while_tracing_under_jit():
    z = jnp.ones((4, 3))
    with pytest.raises(ValueError, match="same shape"):
        jax.jit(vj.vicreg_loss)(z, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="not bound"):
        jax.jit(functools.partial(vj.vicreg_loss, axis_name="data"))(z, z)


def test_sharded_wrapper_on_one_device_and_its_errors(x64):
    z1, z2 = map(jnp.asarray, pair(6, 10, seed=10))
    mesh = jax.make_mesh((1,), ("batch",))
    assert rel(vj.sharded_vicreg_loss(z1, z2, mesh=mesh), reference_loss(z1, z2, **DEFAULTS)) < 1e-12
    with pytest.raises(ValueError, match="not an axis of the mesh"):
        vj.sharded_vicreg_loss(z1, z2, mesh=mesh, axis_name="data")


def test_jit_with_sizes_whose_normalisers_pass_32_bit_integers():
    """(n - 1)^2 d > 2^31: the normalisers must not reach JAX as Python integers (an OverflowError under
    jit without x64); the loss must equal NumPy's float64 value."""
    rng = np.random.default_rng(11)
    z1 = rng.standard_normal((1500, 1000)).astype(np.float32)
    z2 = (z1 + 0.1 * rng.standard_normal((1500, 1000))).astype(np.float32)
    expected = float(vicreg.vicreg_loss(z1.astype(np.float64), z2.astype(np.float64)))
    for fn in (vj.vicreg_loss, vicreg.vicreg_loss):
        got = float(jax.jit(fn)(jnp.asarray(z1), jnp.asarray(z2)))
        assert abs(got - expected) <= 1e-5 * abs(expected)
