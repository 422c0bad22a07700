"""Inputs an outside reviewer tries: NaN and Inf, other array-API libraries (dask, pydata sparse, arrays with
a dimension of unknown size), NumPy's ml_dtypes floats, the storage the gradients come back in, and the
full-precision guard under concurrent threads. (Values near overflow are in the precision sweep,
``tests/test_precision.py``.)"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from reference import reference_terms, reference_value_and_grad
from test_core import rel_err, views

import vicreg

TERMS = ("loss", "invariance", "variance", "covariance", "std_mean", "std_min")
NON_FINITE_IS_EXPECTED = pytest.mark.filterwarnings(
    "ignore:invalid value encountered:RuntimeWarning", "ignore:overflow encountered:RuntimeWarning"
)


def _official_terms(z1: np.ndarray, z2: np.ndarray) -> dict[str, float]:
    """The official formulation's terms in float64 (``F.mse_loss``, ``Tensor.var``, the explicit ``d x d``
    covariance with its off-diagonal entries squared), written out here."""
    import torch
    import torch.nn.functional as F

    t1, t2 = torch.tensor(z1), torch.tensor(z2)
    n, d = t1.shape
    invariance = F.mse_loss(t1, t2)
    terms = {"invariance": invariance.item()}
    std = [torch.sqrt(t.var(dim=0) + 1e-4) for t in (t1, t2)]
    terms["variance"] = ((F.relu(1 - std[0]).mean() + F.relu(1 - std[1]).mean()) / 2).item()
    covariance = 0.0
    for t in (t1, t2):
        x = t - t.mean(dim=0)
        c = x.T @ x / (n - 1)
        covariance = covariance + c.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten().pow(2).sum() / d
    terms["covariance"] = float(covariance)
    terms["loss"] = 25 * terms["invariance"] + 25 * terms["variance"] + terms["covariance"]
    return terms


def _entry_points(backend_name: str):
    """``name -> f(z1, z2) -> VICRegTerms`` (NumPy arrays in) for every CPU entry point."""
    import array_api_strict
    import jax
    import jax.numpy as jnp
    import torch

    import vicreg.jax
    import vicreg.torch

    return {
        "numpy": lambda a, b: vicreg.vicreg_terms(a, b),
        "array_api_strict": lambda a, b: vicreg.vicreg_terms(array_api_strict.asarray(a), array_api_strict.asarray(b)),
        "torch": lambda a, b: vicreg.vicreg_terms(torch.tensor(a), torch.tensor(b)),
        "torch module": lambda a, b: vicreg.torch.VICRegLoss().terms(torch.tensor(a), torch.tensor(b)),
        "jax": lambda a, b: vicreg.vicreg_terms(jnp.asarray(a), jnp.asarray(b)),
        "vicreg.jax jit": lambda a, b: jax.jit(vicreg.jax.vicreg_terms)(jnp.asarray(a), jnp.asarray(b)),
    }


def _nan_cases():
    """``(id, z1, z2)``: NaN or Inf in one entry, on the d x d path and on the Gram path with each number of
    exact columns (none, 8, all n - 1)."""
    cases = []
    for shape, kind in (((32, 16), "dxd"), ((16, 64), "none"), ((16, 64), "few"), ((16, 64), "all")):
        z1, z2 = views(*shape, seed=3)
        z1, z2 = 0.01 * z1 + np.random.default_rng(0).standard_normal(shape), z2.copy()  # comparable variances
        if kind == "few":
            z1[:, 0] *= 30.0
            z2[:, 0] *= 30.0
        elif kind == "all":
            z1[:, :9] *= 300.0
            z2[:, :9] *= 300.0
        for value in (np.nan, np.inf):
            a = z1.copy()
            a[2, 3] = value
            cases.append((f"{kind}-{value}", a, z2))
        b = z2.copy()
        b[5, 0] = np.nan  # in the other view, in a column the Gram path may take out
        cases.append((f"{kind}-nan-view2-col0", z1, b))
    return cases


@NON_FINITE_IS_EXPECTED
@pytest.mark.parametrize("entry", ["numpy", "array_api_strict", "torch", "torch module", "jax", "vicreg.jax jit"])
@pytest.mark.parametrize("case", _nan_cases(), ids=lambda c: c[0])
def test_nan_and_inf_reach_every_term(case, entry):
    """NaN or Inf in an input makes the loss and every term NaN or Inf, where the official formulation's
    are: no ``where`` or clamp swallows it (the hinge, the clamp of the ``L x L`` part, the column choice,
    the scales)."""
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    _, z1, z2 = case
    official = _official_terms(z1, z2)
    terms = _entry_points(entry)[entry](z1, z2)
    values = {name: float(np.asarray(getattr(terms, name), dtype=np.float64)) for name in TERMS}
    for name, value in official.items():
        assert not np.isfinite(value), (name, value)  # the official formulation's: the case is a real one
        assert not np.isfinite(values[name]), (name, values[name])
    assert not np.isfinite(values["std_mean"]) and not np.isfinite(values["std_min"]), values


@NON_FINITE_IS_EXPECTED
def test_nan_reaches_the_gradients():
    z1, z2 = views(16, 64, seed=4)
    z1[2, 3] = np.nan
    _, (g1, g2) = vicreg.value_and_grad(z1, z2)
    assert np.isnan(g1).any() and np.isnan(g2).any()


# --- other array-API libraries --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(16, 64), (64, 16), (12, 3, 40)], ids=["gram", "dxd", "positions"])
def test_dask_arrays_match_numpy(shape):
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(0)
    z1 = rng.standard_normal(shape)
    z2 = z1 + 0.3 * rng.standard_normal(shape)
    z1[:, ..., 0] *= 20.0  # one dominant dimension: the Gram path takes exact columns
    a, b = da.from_array(z1, chunks=5), da.from_array(z2, chunks=5)
    want = vicreg.vicreg_terms(z1, z2)
    got = vicreg.vicreg_terms(a, b)
    for name in TERMS:
        value = getattr(got, name)
        assert type(value).__module__.startswith("dask")
        assert rel_err(np.asarray(value.compute()), getattr(want, name)) < 1e-12, name
    loss, (g1, g2) = vicreg.value_and_grad(a, b)
    want_loss, (w1, w2) = vicreg.value_and_grad(z1, z2)
    assert rel_err(loss.compute(), want_loss) < 1e-12
    assert rel_err(g1.compute(), w1) < 1e-12 and rel_err(g2.compute(), w2) < 1e-12
    assert g1.shape == shape


def test_unknown_dimensions_get_a_clear_error():
    da = pytest.importorskip("dask.array")
    z = np.random.default_rng(0).standard_normal((16, 8))
    lazy = da.from_array(z, chunks=4)
    filtered = lazy[lazy[:, 0] > 0]  # rows kept by a condition: their number is unknown until computed
    assert np.isnan(filtered.shape[0])
    for fn in (vicreg.vicreg_loss, vicreg.vicreg_terms, vicreg.value_and_grad):
        with pytest.raises(ValueError, match=r"unknown size.*compute_chunk_sizes"):
            fn(filtered, filtered)


def test_symbolic_dimensions_get_a_clear_error():
    ndx = pytest.importorskip("ndonnx")
    a = ndx.argument(shape=("N", 8), dtype=ndx.float32)
    with pytest.raises(ValueError, match="unknown size"):
        vicreg.vicreg_loss(a, a)


def test_pydata_sparse_arrays_get_the_sparse_error():
    sparse = pytest.importorskip("sparse")
    z = sparse.COO.from_numpy(np.random.default_rng(0).standard_normal((16, 64)))
    for fn in (vicreg.vicreg_loss, vicreg.vicreg_terms, vicreg.value_and_grad):
        with pytest.raises(TypeError, match=r"sparse array.*z1.todense\(\)"):
            fn(z, z)


# --- NumPy's ml_dtypes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_numpy_half_floats_are_computed_in_float32(dtype):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    kind = getattr(ml_dtypes, dtype) if dtype == "bfloat16" else np.float16
    z1, z2 = views(16, 64, seed=6)
    a, b = z1.astype(kind), z2.astype(kind)
    rounded = a.astype(np.float32), b.astype(np.float32)
    loss, (g1, g2) = vicreg.value_and_grad(a, b)
    want, (w1, w2) = vicreg.value_and_grad(*rounded)
    assert loss.dtype == np.float32 and float(loss) == float(want)
    assert g1.dtype == a.dtype and g2.dtype == b.dtype
    np.testing.assert_array_equal(g1, w1.astype(kind))
    np.testing.assert_array_equal(g2, w2.astype(kind))
    expected = reference_terms(*(r.astype(np.float64) for r in rounded))["loss"].item()
    assert rel_err(float(loss), expected) < 1e-5
    import jax.numpy as jnp

    import vicreg.jax as vj

    jax_loss = vj.vicreg_loss(a, b)  # NumPy arrays are converted
    assert jax_loss.dtype == jnp.float32 and rel_err(float(jax_loss), expected) < 1e-5


def _eight_bit_inputs():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    z = views(8, 16, seed=1)[0]
    found = [("numpy", z.astype(ml_dtypes.float8_e4m3fn))]
    try:
        import torch

        found.append(("torch", torch.tensor(z, dtype=torch.float32).to(torch.float8_e4m3fn)))
    except (ImportError, AttributeError):
        pass
    try:
        import jax.numpy as jnp

        found.append(("jax", jnp.asarray(z, dtype=jnp.float8_e4m3fn)))
    except (ImportError, AttributeError):
        pass
    return found


def test_eight_bit_floats_are_refused_naming_the_dtype():
    """float8 (and narrower) inputs are refused, on every entry point, with the dtype in the message: their
    gradients could not be returned in their own dtype, and their range is too small for the statistics."""
    for library, z in _eight_bit_inputs():
        functions = [vicreg.vicreg_loss, vicreg.vicreg_terms, vicreg.value_and_grad]
        if library == "torch":
            import vicreg.torch as vt

            functions.append(vt.VICRegLoss())
        if library in ("jax", "numpy"):
            import vicreg.jax as vj

            functions.append(vj.vicreg_loss)
        for fn in functions:
            with pytest.raises(TypeError, match=r"float8_e4m3fn.*8-bit"):
                fn(z, z)


# --- gradients are arrays of their own ----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(16, 300), (40, 20), (8, 3, 40)], ids=["gram", "dxd", "positions"])
def test_numpy_gradients_own_their_memory(shape):
    rng = np.random.default_rng(0)
    z1, z2 = rng.standard_normal(shape), rng.standard_normal(shape)
    _, (g1, g2) = vicreg.value_and_grad(z1, z2)
    for g in (g1, g2):
        assert g.shape == shape
        assert g.base is None or g.base.nbytes == g.nbytes  # not a view into a larger buffer
    assert not np.shares_memory(g1, g2)


@pytest.mark.parametrize("shape", [(16, 300), (40, 20), (8, 3, 40)], ids=["gram", "dxd", "positions"])
def test_torch_gradients_have_storage_of_their_own_size(shape):
    torch = pytest.importorskip("torch")
    import vicreg.torch as vt

    z1, z2 = (torch.randn(*shape, dtype=torch.float64, requires_grad=True) for _ in range(2))
    _, (v1, v2) = vicreg.value_and_grad(z1.detach(), z2.detach())
    vicreg.vicreg_loss(z1, z2).backward()
    m1, m2 = (z.detach().clone().requires_grad_() for z in (z1, z2))
    vt.VICRegLoss()(m1, m2).backward()
    for g in (v1, v2, z1.grad, z2.grad, m1.grad, m2.grad):
        assert g.untyped_storage().nbytes() == g.numel() * g.element_size()
    assert v1.untyped_storage().data_ptr() != v2.untyped_storage().data_ptr()


# --- the full-precision guard under concurrent threads ---------------------------------------------------


def _matmul_state(torch):
    return tuple(getattr(torch.backends, b).matmul.fp32_precision for b in ("cuda", "mkldnn"))


def test_concurrent_threads_all_compute_at_full_precision_and_the_setting_comes_back():
    """After ``torch.set_float32_matmul_precision("medium")``, 4 threads calling ``value_and_grad`` and the
    module at once: every matrix product of every thread runs at full float32 (a per-thread probe reads the
    process-wide setting at each product), each result is the single-thread one, and when all calls are
    done the setting is the user's again."""
    torch = pytest.importorskip("torch")
    if not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        pytest.skip("PyTorch before 2.9 has the legacy flag only")
    from torch.overrides import TorchFunctionMode

    import vicreg.torch as vt

    products = {"matmul", "mm", "bmm", "addmm", "__matmul__", "__rmatmul__"}
    z1, z2 = (torch.randn(64, 256, generator=torch.Generator().manual_seed(s)) for s in (0, 1))
    alone = vicreg.value_and_grad(z1, z2)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    lowered = _matmul_state(torch)
    assert lowered != ("ieee", "ieee")
    seen: list[tuple] = []
    results: list = []
    errors: list = []
    start = threading.Barrier(4)

    class Probe(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") in products:
                seen.append(_matmul_state(torch))
            return func(*args, **(kwargs or {}))

    def work():
        try:
            start.wait()
            with Probe():  # the mode stack is per thread
                for _ in range(15):
                    results.append(vicreg.value_and_grad(z1, z2))
                    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
                    vt.VICRegLoss()(a, b).backward()
                    results.append((None, (a.grad, b.grad)))
        except Exception as error:  # re-raised below, in the test's thread
            errors.append(error)

    try:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = _matmul_state(torch)
    finally:
        torch.set_float32_matmul_precision(previous)
    assert not errors, errors
    assert seen and all(state == ("ieee", "ieee") for state in seen), {s for s in seen if s != ("ieee", "ieee")}
    assert after == lowered, "the user's setting did not come back"
    _, (e1, e2) = reference_value_and_grad(z1.double().numpy(), z2.double().numpy())
    for loss, (g1, g2) in results:
        if loss is not None:
            assert float(loss) == float(alone[0])
        assert rel_err(g1.double().numpy(), e1) < 1e-5 and rel_err(g2.double().numpy(), e2) < 1e-5


def test_a_setting_changed_during_a_call_is_left_as_the_user_set_it():
    """The guard restores the user's value when the last call leaves, unless the user changed the setting in
    the meantime: the change is kept."""
    torch = pytest.importorskip("torch")
    if not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        pytest.skip("PyTorch before 2.9 has the legacy flag only")
    import array_api_compat.torch as xp

    from vicreg._precision import full_precision

    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        with full_precision(xp):
            assert _matmul_state(torch) == ("ieee", "ieee")
            with full_precision(xp):  # nested (or concurrent): counted, not restored on the inner exit
                pass
            assert _matmul_state(torch) == ("ieee", "ieee")
            torch.backends.cuda.matmul.fp32_precision = "tf32"  # the user, meanwhile
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
        assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"  # restored: "medium" set it so
    finally:
        torch.set_float32_matmul_precision(previous)
