"""The precision sweep: every entry point, on every CPU backend, on inputs built to break the covariance
term, against the independent float64 reference (``reference.py``: explicit ``d x d`` covariance,
off-diagonal mask, torch autograd).

float32 must be within ``max(10 x the official float32 formulation's error, 1e-5)`` of the reference, for
the loss and for both gradients, and float64 within ``1e-10``. The cases and entry points are those of
``python -m benchmarks.precision``, which prints the table of docs/precision.md from the same definitions.
"""

from __future__ import annotations

import functools
import re

import array_api_compat
import array_api_compat.numpy as np_xp
import numpy as np
import pytest

pytest.importorskip("torch")

from reference import reference_terms

from benchmarks import precision
from benchmarks.precision import CASES, ENTRY_POINTS

# NumPy warns where a float32 product overflows; the cases near overflow do that on purpose (the result
# must then be inf or NaN, as the official formulation's is, and the tests check it)
OVERFLOW_IS_EXPECTED = pytest.mark.filterwarnings(
    "ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning"
)


@functools.cache  # each case is visited by every entry point and every backend (about 0.5 GB in all)
def _case(name: str):
    """The inputs, the float64 reference (loss and gradients, and the covariance term users log, from one
    autograd pass) and the official float32 formulation's errors on the same quantities."""
    import torch

    z1, z2 = CASES[name]()
    t1, t2 = (torch.tensor(z, dtype=torch.float64, requires_grad=True) for z in (z1, z2))
    terms = reference_terms(t1, t2)
    g1, g2 = torch.autograd.grad(terms["loss"], (t1, t2))
    expected = (terms["loss"].item(), g1.numpy(), g2.numpy())
    covariance = terms["covariance"].item()
    official32 = precision.official(z1, z2, "float32")
    yardstick = precision.errors(official32, expected, official32)
    official = 0.0  # the official float32 covariance term: explicit d x d, masked off-diagonal
    for z in (z1, z2):
        t = torch.tensor(z, dtype=torch.float32)
        n, d = t.shape
        c = (t - t.mean(dim=0)).T @ (t - t.mean(dim=0)) / (n - 1)
        official += float(c.masked_fill(torch.eye(d, dtype=torch.bool), 0.0).pow(2).sum() / d)
    if not np.isfinite(official):
        covariance_yardstick = float("inf")  # ours must overflow too: checked apart
    else:
        covariance_yardstick = precision.relative_error(official, covariance) if covariance else 0.0
    return z1, z2, expected, official32, yardstick, covariance, covariance_yardstick


@functools.cache
def _entry(name: str, dtype: str):
    if not precision.available(name):
        pytest.skip(f"{name}: needs {ENTRY_POINTS[name][0]}, not installed")
    return ENTRY_POINTS[name][1](dtype)


#: Entry points that run the code of another one: the first test below checks, on every case small enough
#: to be cheap (every branch of the Gram path, the ``d x d`` path, overflow), that they give the other's
#: result bit for bit, so the sweep's test runs the other only. ``python -m benchmarks.precision`` still
#: runs all of them. (``torch value_and_grad`` is not one of them: its gradient rounds differently from the
#: module's backward, which scales by the incoming gradient.)
SAME_PATH = {
    "torch vicreg_loss + autograd": "torch VICRegLoss analytic",
    "jax grad of vicreg_loss": "jax grad of vicreg.jax.vicreg_loss",
}


def _dims(case: str) -> tuple[int, int]:
    """``(n, d)`` of a case, read from its name."""
    n, d = re.search(r"(\d+) x (\d+)", case).groups()
    return int(n), int(d)


def _shape(case: str) -> str:
    return "{} x {}".format(*_dims(case))


SMALL_CASES = [c for c in CASES if np.prod(_dims(c)) <= 64 * 512]


def _grouped(cases):
    """One pytest-xdist group per shape: one worker computes each case's float64 reference once for every
    test of the case, and compiles JAX's programs once per shape for all the cases of that shape (a
    compilation takes seconds; the evaluation of a case, milliseconds)."""
    return [
        pytest.param(
            case,
            marks=[pytest.mark.xdist_group(f"precision {_shape(case)}")]
            + ([pytest.mark.slow] if _shape(case) == "256 x 8192" else []),  # a float64 d x d reference of d = 8192
        )
        for case in cases
    ]


@OVERFLOW_IS_EXPECTED
@pytest.mark.parametrize("entry", list(SAME_PATH))
@pytest.mark.parametrize("case", _grouped(SMALL_CASES))
def test_entry_points_on_one_path_agree_bit_for_bit(case, entry):
    z1, z2 = CASES[case]()
    for dtype in ("float32", "float64"):
        ours, theirs = _entry(entry, dtype)(z1, z2), _entry(SAME_PATH[entry], dtype)(z1, z2)
        assert np.array_equal(ours[0], theirs[0], equal_nan=True), (dtype, ours[0], theirs[0])
        for a, b in zip(ours[1:], theirs[1:], strict=True):
            assert np.array_equal(a, b, equal_nan=True), dtype


def test_the_shared_paths_are_exercised_on_every_branch():
    """The bit-for-bit cases cover the Gram path with none, 8 and n - 1 exact columns, the d x d path,
    d = 1 and overflow."""
    from vicreg import _terms

    def gram(case):
        n, d = _dims(case)
        return _terms.use_gram(n, d) and d > _terms.FEW_COLUMNS and "1e76" not in case

    counts = {_columns_needed_independently(CASES[c]()[0]) for c in SMALL_CASES if gram(c)}
    assert {0, _terms.FEW_COLUMNS} <= counts and any(k > _terms.FEW_COLUMNS for k in counts), counts
    shapes = [_dims(c) for c in SMALL_CASES]
    assert any(n >= d for n, d in shapes) and any(d == 1 for _, d in shapes)
    assert any("1e17" in c or "1e20" in c for c in SMALL_CASES)


@OVERFLOW_IS_EXPECTED
@pytest.mark.parametrize("entry", [e for e in ENTRY_POINTS if e not in SAME_PATH])
@pytest.mark.parametrize("case", _grouped(CASES))
def test_float32_within_the_official_error_and_float64_exact(case, entry):
    """Where the official float32 formulation overflows (an inf or NaN in its loss or a gradient entry), ours
    is inf or NaN there too and the errors are over the other entries (:func:`benchmarks.precision.errors`)."""
    z1, z2, expected, official32, (official_loss, official_grad), _, _ = _case(case)
    loss, grad = precision.errors(_entry(entry, "float32")(z1, z2), expected, official32)
    assert loss <= precision.tolerance(official_loss), (loss, official_loss)
    assert grad <= precision.tolerance(official_grad), (grad, official_grad)
    loss64, grad64 = precision.errors(_entry(entry, "float64")(z1, z2), expected)
    assert loss64 <= precision.FLOAT64 and grad64 <= precision.FLOAT64, (loss64, grad64)


AUTOCAST_CASES = [c for c in CASES if not any(skip in c for skip in precision.AUTOCAST_SKIPS)]


@OVERFLOW_IS_EXPECTED
@pytest.mark.parametrize("case", _grouped(AUTOCAST_CASES))
def test_the_autocast_default_is_no_less_accurate_than_the_official_formulation_under_autocast(case):
    """The reduced-precision columns of the sweep: under bfloat16 autocast, ``vicreg.torch.VICRegLoss()``
    (its default there, ``"high"``) is no less accurate than the official formulation under the same
    autocast, loss and gradients, against the independent float64 reference (errors below the float32
    floor count as equal), and never inf or NaN where float32 is finite; NumPy's ``precision="high"``
    computes the same to rounding of the sums."""
    z1, z2, expected, official32, _, _, _ = _case(case)
    columns = precision.autocast_columns(z1, z2, expected, official32)
    assert precision.autocast_passes(columns), columns
    for ours, numpy_high in zip(columns["default"], columns["levels"][precision.AUTOCAST_DEFAULT]):
        assert ours <= max(2 * numpy_high, precision.FLOOR), (ours, numpy_high)


def _columns_needed_independently(z: np.ndarray) -> int:
    """The choice of :func:`vicreg._terms.choose_columns`, written differently: float64 variances of the
    raw input, sorted; the first of 0 and ``FEW_COLUMNS`` top columns whose removal (by position) leaves
    ``sum >= 2 (n - 1) max``, else ``n - 1``."""
    from vicreg import _terms

    n = z.shape[0]
    ordered = np.sort(np.var(z.astype(np.float64), axis=0, ddof=1))[::-1]
    for k in (0, _terms.FEW_COLUMNS):
        rest = ordered[k:]
        if rest.sum() >= 2 * (n - 1) * rest.max():
            return k
    return n - 1


def _columns_taken(off) -> int:
    """How many exact columns the Gram path took (``off``: an :class:`vicreg._terms.OffDiagonal`)."""
    return 0 if off.top is None else int(off.top.shape[-1])


def _choice_cases() -> list[str]:
    from vicreg import _terms

    names = []
    for name in CASES:
        n, d = _dims(name)
        in_float32 = "1e76" not in name  # the one case whose inputs exceed float32's range
        if in_float32 and _terms.use_gram(n, d) and _terms.exact_columns(n, d) > _terms.FEW_COLUMNS:
            names.append(name)
    return names


@OVERFLOW_IS_EXPECTED
@pytest.mark.parametrize("case", _choice_cases())
def test_the_gram_path_takes_fewer_columns_only_where_the_bound_holds(case):
    """On the Gram path NumPy and PyTorch CPU tensors (and, with ``lax.switch``, JAX) take no column, or
    only ``FEW_COLUMNS`` columns, out of the Gram matrix when the ``L x L`` subtraction provably loses at
    most a factor 2, else all ``n - 1``: the column count the core actually uses (``off.top``) against the
    same test written independently, in float32 and float64, and JAX's tests against NumPy's."""
    import array_api_compat.torch as torch_xp
    import torch

    import vicreg
    from vicreg import _loss, _terms

    z1, z2 = CASES[case]()
    n = z1.shape[0]
    for z in (z1, z2):
        expected = _columns_needed_independently(z)
        for dtype in ("float32", "float64"):
            a = z.astype(dtype)
            stats = _loss.statistics(np_xp, (a, a), vicreg.VICRegLoss())
            assert _columns_taken(stats.views[0]) == expected, dtype
            if expected:
                assert stats.views[0].top.shape == (n, expected)
            t = torch.asarray(a)
            stats = _loss.statistics(torch_xp, (t, t), vicreg.VICRegLoss())
            assert _columns_taken(stats.views[0]) == expected, ("torch", dtype)
        jnp = pytest.importorskip("jax.numpy")
        var = jnp.var(jnp.asarray(z, jnp.float32), axis=0, ddof=1)
        assert bool(_terms.columns_suffice(jnp, var, n, 0)) == (expected == 0)
        assert bool(_terms.columns_suffice(jnp, var, n, _terms.FEW_COLUMNS)) == (expected <= _terms.FEW_COLUMNS)


def test_every_column_count_is_exercised_by_the_sweep():
    """Coverage bookkeeping of the sweep, not a check of the loss (the tests above are that): the sweep
    covers all three branches of the choice, each at its bound, and every case that a fixed handful of
    exact columns fails (a group of more than ``FEW_COLUMNS`` dominant, decorrelated dimensions) takes all
    ``n - 1``, as the independent float64 evaluation of the condition says."""
    from vicreg import _terms

    chosen = {name: _columns_needed_independently(CASES[name]()[0]) for name in _choice_cases()}
    assert {0, _terms.FEW_COLUMNS} < set(chosen.values()), chosen  # and some n - 1
    for name, k in chosen.items():
        if "decorrelated" in name and "at the bound" not in name:
            assert k > _terms.FEW_COLUMNS, name
    assert chosen["9 dominant decorrelated, 8 at std 10, one at std 2, 64 x 512, at the bound"] == _terms.FEW_COLUMNS
    assert chosen["whitened, one dimension at std 2, 64 x 512, at the bound"] == 0


@pytest.mark.parametrize(
    "case",
    _grouped(
        [
            "whitened, std 100, 64 x 512",
            "whitened, one dimension at std 2, 64 x 512, at the bound",
            "63 dominant decorrelated, std 100, 64 x 512",
        ]
    ),
)
def test_every_column_count_gives_the_float64_reference(case):
    """Whichever count is used, the Gram path is the same function: forced to no exact column, to
    ``FEW_COLUMNS`` and to ``n - 1`` on both sides of the test, the float64 loss and analytic gradient
    match the explicit ``d x d`` reference to 1e-10 (on the last case the cheap counts are not accurate in
    float32, which the choice never makes)."""
    import vicreg
    from vicreg import _loss, _terms

    z1, z2, expected, _, _, _, _ = _case(case)
    n, _ = z1.shape
    config = vicreg.VICRegLoss()
    for columns in (0, _terms.FEW_COLUMNS, n - 1):
        stats = _loss.statistics(np_xp, (z1.copy(), z2.copy()), config, columns=columns)
        assert _columns_taken(stats.views[0]) == _columns_taken(stats.views[1]) == columns
        g1, g2 = _loss.gradient(np_xp, stats, config, shape=z1.shape)
        loss, grad = precision.errors((float(stats.loss), g1, g2), expected)
        assert loss <= precision.FLOAT64 and grad <= precision.FLOAT64, (columns, loss, grad)


def test_jax_chooses_the_column_count_inside_the_traced_function():
    """A structural check of the traced program, not of values (the sweep checks JAX's values in both
    regimes): under ``jit`` the choice is a ``lax.switch`` on the data (no host synchronisation, static
    shapes; a ``cond`` in the jaxpr) over the three column counts, in the forward pass and in the
    differentiation rule."""
    jax = pytest.importorskip("jax")
    import vicreg.jax as vj

    def branch_counts(closed) -> list[int]:
        """The number of branches of every ``cond`` in a jaxpr, nested ones included."""
        found = []
        for eqn in closed.jaxpr.eqns:
            if eqn.primitive.name == "cond":
                found.append(len(eqn.params["branches"]))
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    if hasattr(sub, "jaxpr") and hasattr(sub, "consts"):
                        found += branch_counts(sub)
                    elif hasattr(sub, "eqns"):
                        found += branch_counts(jax.extend.core.ClosedJaxpr(sub, ()))
        return found

    z = jax.ShapeDtypeStruct((64, 512), np.float32)
    assert branch_counts(jax.make_jaxpr(vj.vicreg_loss)(z, z)) == [3]
    assert branch_counts(jax.make_jaxpr(jax.grad(vj.vicreg_loss, argnums=(0, 1)))(z, z)) == [3]
    z = jax.ShapeDtypeStruct((64, 96), np.float32)  # the d x d path: nothing to choose
    assert branch_counts(jax.make_jaxpr(jax.grad(vj.vicreg_loss))(z, z)) == []


@OVERFLOW_IS_EXPECTED
@pytest.mark.parametrize("case", _grouped(CASES))
def test_covariance_term_within_the_official_error(case, backend):
    """The covariance term users log (``vicreg_terms(...).covariance``) meets the sweep's targets on its
    own, on every backend: float32 within ``max(10 x official, 1e-5)`` of the float64 reference, float64
    within 1e-10 (exactly 0 where the reference is, ``d = 1``)."""
    import vicreg

    z1, z2, _, _, _, expected, official = _case(case)
    for dtype, tolerance in (("float32", precision.tolerance(official)), ("float64", precision.FLOAT64)):
        terms = vicreg.vicreg_terms(backend.asarray(z1, dtype), backend.asarray(z2, dtype))
        assert array_api_compat.device(terms.covariance) == backend.device
        value = backend.to_numpy(terms.covariance)
        assert value.shape == () and value.dtype == np.dtype(dtype)
        if dtype == "float32" and official == float("inf"):  # the official term overflows: so does ours
            assert not np.isfinite(value), float(value)
        elif expected == 0.0:
            assert float(value) == 0.0
        else:
            assert precision.relative_error(value, expected) <= tolerance, (dtype, float(value), expected)


@pytest.mark.parametrize("case", list(CASES))
def test_covariance_term_is_never_negative(case):
    import vicreg

    z1, z2 = CASES[case]()
    for dtype in ("float32", "float64"):
        with np.errstate(over="ignore", invalid="ignore"):
            a, b = z1.astype(dtype), z2.astype(dtype)
            terms = vicreg.vicreg_terms(a, b)
        assert not float(terms.covariance) < 0.0  # NaN only where the inputs overflow the dtype


def test_the_sweep_can_fail():
    """The targets are not vacuous: the cancelling formula of the first release, ``||G||_F^2 / (n-1)^2 -
    sum var^2`` in float32, misses them on a dominant dimension where the official formulation (and ours)
    is accurate."""
    import vicreg

    z1, _ = precision.dominant(64, 512, 1000)
    expected = reference_terms(z1, z1)["covariance"].item() / 2  # both views z1: twice c(z1)
    a = z1.astype(np.float32)
    n, d = a.shape
    zc = a - a.mean(axis=0)
    var = (zc * zc).sum(axis=0) / (n - 1)
    c = zc.T @ zc / (n - 1)
    official = float(np.sum((c * (1 - np.eye(d, dtype=np.float32))) ** 2) / d)
    gram = zc @ zc.T
    cancelling = float((np.sum(gram * gram) / (n - 1) ** 2 - np.sum(var * var)) / d)
    ours = float(vicreg.vicreg_terms(a, a).covariance) / 2
    tol = precision.tolerance(precision.relative_error(official, expected))
    assert precision.relative_error(ours, expected) <= tol
    assert precision.relative_error(cancelling, expected) > 100 * tol


@pytest.mark.slow
@pytest.mark.xdist_group("precision 256 x 8192")  # the sweep's reference of the case, computed once
def test_a_fixed_handful_of_exact_columns_would_fail(monkeypatch):
    """The decorrelated-group cases are not vacuous either: with 8 exact columns instead of ``n - 1``, a
    group of 9 dominant, decorrelated dimensions leaves one of them in the Gram matrix, and the float32
    loss misses the target (measured: 9.8 x over it, 1e-4 against the official 6e-7) and the gradient
    error is 9 x the official one, where ``n - 1`` columns meet both targets."""
    import vicreg
    from vicreg import _terms

    name = "9 dominant decorrelated, std 1000, 256 x 8192"
    z1, z2, expected, _, (official_loss, official_grad), _, _ = _case(name)
    a, b = z1.astype(np.float32), z2.astype(np.float32)

    def run():
        loss, (g1, g2) = vicreg.value_and_grad(a, b)
        return precision.errors((float(loss), g1, g2), expected)

    loss, grad = run()
    assert loss <= precision.tolerance(official_loss) and grad <= precision.tolerance(official_grad)
    monkeypatch.setattr(_terms, "exact_columns", lambda n, d: min(8, d))
    loss, grad = run()
    assert loss > 3 * precision.tolerance(official_loss), (loss, official_loss)
    assert grad > 3 * official_grad, (grad, official_grad)


# ------------------------------------------------------------------------------------------------------
# Process-wide matmul precision: TF32 on GPUs, bfloat16 on CPUs that have it. The loss's products must
# run at full float32 whatever the program set (measured on an H200 with TF32 on: gradient errors 6e-4).
# ------------------------------------------------------------------------------------------------------

_PRODUCTS = {"matmul", "mm", "bmm", "addmm", "baddbmm", "addbmm", "einsum", "tensordot", "__matmul__", "__rmatmul__"}


def _matmul_state(torch):
    """The process-wide float32 matmul settings: cuBLAS's and oneDNN's ``fp32_precision`` (PyTorch 2.9 on;
    reading the legacy flag there can raise), else the legacy ``allow_tf32``."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        return tuple(getattr(torch.backends, b).matmul.fp32_precision for b in ("cuda", "mkldnn"))
    return (torch.backends.cuda.matmul.allow_tf32,)


def _at_full_precision(state) -> bool:
    return all(v in ("ieee", False) for v in state)


@pytest.fixture
def lowered_torch_matmuls():
    """``torch.set_float32_matmul_precision("medium")`` for the test (TF32 on cuBLAS, bfloat16 on oneDNN),
    the previous setting restored after it."""
    import torch

    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    assert _matmul_state(torch) in (("tf32", "bf16"), (True,))  # what "medium" sets
    yield torch
    torch.set_float32_matmul_precision(previous)


def _precision_of_each_product(torch, call):
    """The (cuBLAS, oneDNN) float32 matmul precisions in force at each matrix product ``call()`` makes."""
    from torch.overrides import TorchFunctionMode

    seen = []

    class Products(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") in _PRODUCTS:
                seen.append((func.__name__, _matmul_state(torch)))
            return func(*args, **(kwargs or {}))

    with Products():
        call()
    return seen, _matmul_state(torch)


@pytest.mark.parametrize("shape", [(64, 32), (16, 256), (4, 8, 24)], ids=["dxd", "gram", "positions"])
@pytest.mark.parametrize(
    "entry", ["VICRegLoss-analytic", "VICRegLoss-autograd", "vicreg_loss", "value_and_grad", "create_graph"]
)
def test_torch_products_run_at_full_precision_whatever_the_global_setting(lowered_torch_matmuls, entry, shape):
    torch = lowered_torch_matmuls
    import vicreg
    import vicreg.torch as vt

    before = _matmul_state(torch)
    g = torch.Generator().manual_seed(0)
    z1, z2 = (torch.randn(*shape, generator=g, requires_grad=True) for _ in range(2))

    def call():
        if entry == "value_and_grad":
            vicreg.value_and_grad(z1.detach(), z2.detach())
        elif entry == "vicreg_loss":
            vicreg.vicreg_loss(z1, z2).backward()
        elif entry == "create_graph":  # the recorded backward of a gradient penalty
            (g1,) = torch.autograd.grad(vt.VICRegLoss()(z1, z2), z1, create_graph=True)
            g1.pow(2).sum().backward()
        else:
            loss = vt.VICRegLoss(backward=entry.split("-")[1])(z1, z2)
            if entry.endswith("analytic"):  # autograd's own backward runs after the call, at the global setting
                loss.backward()

    seen, after = _precision_of_each_product(torch, call)
    assert seen, "no matrix product was seen: the probe is broken"
    lowered = [(name, s) for name, s in seen if not _at_full_precision(s)]
    if entry == "create_graph":  # autograd's products of the recorded backward are autograd's
        assert len(lowered) < len(seen)
    else:
        assert not lowered, f"products at a lowered precision: {lowered[:3]}"
    assert after == before, "the global setting was not restored"


def test_torch_setting_is_restored_when_the_loss_raises(lowered_torch_matmuls):
    torch = lowered_torch_matmuls
    import vicreg

    before = _matmul_state(torch)
    z = torch.randn(8, 4)
    with pytest.raises(ValueError):
        vicreg.value_and_grad(z, z[:, :3])
    from vicreg import _loss, _precision

    xp = array_api_compat.array_namespace(z)
    inside = []

    def bad_call():
        with _precision.full_precision(xp):
            inside.append(_matmul_state(torch))
            _loss.statistics(xp, (z, z[:, :3]), vicreg.VICRegLoss())  # raises inside: shapes that do not match

    with pytest.raises((ValueError, RuntimeError)):
        bad_call()
    assert _at_full_precision(inside[0]) and _matmul_state(torch) == before


@pytest.mark.parametrize("shape", [(64, 32), (16, 256)], ids=["dxd", "gram"])
@pytest.mark.parametrize("entry", ["value_and_grad", "grad(vicreg_loss)", "vicreg.jax"])
def test_jax_products_are_traced_at_highest_precision(entry, shape):
    jax = pytest.importorskip("jax")
    import vicreg
    import vicreg.jax as vj

    z1 = z2 = jax.numpy.ones(shape, dtype=jax.numpy.float32)
    functions = {
        "value_and_grad": vicreg.value_and_grad,
        "grad(vicreg_loss)": jax.grad(vicreg.vicreg_loss, argnums=(0, 1)),
        "vicreg.jax": jax.grad(vj.vicreg_loss, argnums=(0, 1)),
    }
    with jax.default_matmul_precision("bfloat16"):  # the lowest: one bfloat16 pass
        jaxpr = jax.make_jaxpr(functions[entry])(z1, z2)

    def dots(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                yield eqn.params["precision"]
            for value in eqn.params.values():  # nested jaxprs: cond branches, custom rules, pjit
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
                    if hasattr(sub, "eqns"):
                        yield from dots(sub)

    precisions = list(dots(jaxpr.jaxpr))
    assert precisions, "no product was traced: the probe is broken"
    highest = jax.lax.Precision.HIGHEST
    assert all(p is not None and all(q == highest for q in p) for p in precisions), set(map(str, precisions))
