r"""The precision sweep: float32 results of every entry point against a float64 explicit ``d x d`` formula,
with the official float32 formulation's error on the same inputs as the yardstick.

Each case is a pair of views built to be hard for the covariance term: nearly whitened features at a
large standard deviation (the off-diagonal entries are tiny next to the diagonal), one dominant dimension,
a group of dominant and mutually decorrelated dimensions (up to ``n - 1`` of them), ``d = 1``, constant
columns, rows that are all equal but one, a geometric spectrum, a large common mean, at ``n > d``,
``n = d`` and ``n < d`` (both sides of the Gram threshold). For each case and entry point the error is

.. math::  \mathrm{err}(x) = \frac{\max |x - x_{64}|}{\max |x_{64}|}

for the loss and for each view's gradient, where ``x_64`` comes from the official formulation (explicit
``d x d`` covariance, strided off-diagonal) run in float64 with PyTorch autograd. The target is
``err <= max(10 err_official, 1e-5)`` in float32, with ``err_official`` the official formulation's own
error in float32 on the same inputs, and ``err <= 1e-10`` in float64. Where the official float32
formulation overflows (an inf or NaN in its loss or in an entry of its gradient), ours must give an inf or
NaN there too, never a finite number, and the error is taken over the other entries. The cases near
overflow (``large``, ``huge_column``) check both sides of that line.

**Reduced precision** (``precision="high"`` and ``"medium"``, :data:`vicreg.PRECISIONS`). Each case also
runs the official formulation under ``torch.autocast`` (bfloat16 and float16, on the CPU: its products take
inputs rounded to that dtype and return that dtype, as on a GPU), ours at each reduced level (NumPy, the
rounding emulated), and ours under bfloat16 autocast at its default level (``vicreg.torch.VICRegLoss``,
which takes ``"high"`` there), all on the same float32 inputs and against the same float64 reference. The
default level must be no less accurate than the official formulation under bfloat16 autocast, for the loss
and the gradients, in every case (errors below ``FLOOR``, where float32 itself is, count as equal), and
never inf or NaN where the official float32 formulation is finite.

Run ``python -m benchmarks.precision`` for the Markdown table of ``docs/precision.md`` (``--cases`` and
``--entry-points`` take substrings to filter; ``--out DIR`` also writes ``precision.json`` and
``precision.md``), and ``python -m benchmarks.precision --autocast`` for its reduced-precision table
(``autocast.json`` and ``autocast.md``). ``tests/test_precision.py`` asserts the same targets with its own
independent reference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

Pair = tuple[np.ndarray, np.ndarray]
Result = tuple[float, np.ndarray, np.ndarray]  # loss, gradient of view 1, gradient of view 2 (float64)

FLOOR = 1e-5  # float32 errors below this always pass
FACTOR = 10.0  # ... and so do errors within this factor of the official float32 formulation's
FLOAT64 = 1e-10


# --- the cases ----------------------------------------------------------------------------------------


def _second_view(z: np.ndarray, rng: np.random.Generator) -> Pair:
    """``z`` and a noisy copy (5% of each column's spread), so that the invariance term and both
    gradients are non-trivial."""
    return z, z + 0.05 * z.std(axis=0, keepdims=True) * rng.standard_normal(z.shape)


def whitened(n: int, d: int, std: float, seed: int = 0) -> Pair:
    """Nearly whitened features: at ``n > d`` columns with ``zc^T zc = (n - 1) I`` up to a 1e-3
    perturbation, at ``n <= d`` rows as orthogonal as centring allows; then scaled by ``std`` and shifted
    by a random mean. The off-diagonal covariances are tiny next to the variances."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x -= x.mean(axis=0)
    if n > d:
        q = np.linalg.qr(x)[0]
        q = np.linalg.qr(q - q.mean(axis=0))[0]
        z = q * np.sqrt(n - 1)
    else:
        z = np.linalg.qr(x.T)[0].T
        z -= z.mean(axis=0)
        z *= np.sqrt((n - 1) / np.mean(np.sum(z * z, axis=0)))
    z = std * (z + 1e-3 * rng.standard_normal(z.shape)) + rng.standard_normal(d)
    return _second_view(z, rng)


def whitened_at_the_bound(n: int, d: int, seed: int = 0) -> Pair:
    """Nearly whitened features (as :func:`whitened`, std 1) with the first column scaled to 93% of the
    largest variance under which the Gram identity needs no exact column (``sum var >= 2 (n - 1) max
    var``, see :func:`vicreg._terms.columns_suffice`): the worst case the cheapest branch takes."""
    rng = np.random.default_rng(seed)
    z = whitened(n, d, 1.0, seed)[0]
    var = np.var(z, axis=0, ddof=1)
    target = 0.93 * var[1:].sum() / (2 * (n - 1) - 1)
    z[:, 0] = z[:, 0].mean() + (z[:, 0] - z[:, 0].mean()) * np.sqrt(target / var[0])
    return _second_view(z, rng)


def dominant(n: int, d: int, std: float, seed: int = 0) -> Pair:
    """Standard normal features, one of them (the first) with standard deviation ``std``."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d))
    z[:, 0] *= std
    return _second_view(z, rng)


def decorrelated_dominant(n: int, d: int, group: int, std: Any, rest_orthogonal: bool = False, seed: int = 0) -> Pair:
    """Standard normal features, the first ``group`` of them replaced by mutually decorrelated columns
    (``zc^T zc = (n - 1) I`` up to a 1e-3 perturbation) of standard deviation ``std`` (a number, or one per
    column of the group): a group of dominant dimensions that the Gram matrix alone cannot tell from its
    diagonal. With ``rest_orthogonal`` the
    other columns are also made orthogonal to the group's span (and the perturbation dropped), so that
    the group's covariances with them vanish too."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d))
    z -= z.mean(axis=0)
    x = rng.standard_normal((n, group))
    x -= x.mean(axis=0)
    q = np.linalg.qr(x)[0]
    q = np.linalg.qr(q - q.mean(axis=0))[0]  # orthonormal and centred
    if rest_orthogonal:
        z[:, group:] -= q @ (q.T @ z[:, group:])
        z[:, :group] = std * np.sqrt(n - 1) * q
    else:
        z[:, :group] = std * (np.sqrt(n - 1) * q + 1e-3 * rng.standard_normal((n, group)))
    return _second_view(z, rng)


def null_dominant(n: int, d: int, group: int, size: float, seed: int = 0) -> Pair:
    """Standard normal features in which rows ``2 i`` and ``2 i + 1`` are equal (up to a 1e-3 noise), for
    ``i < group``, except in column ``i``, which holds ``+size`` and ``-size`` there and 0 elsewhere: a few
    dominant dimensions that only tell apart rows the others hold equal. Each such column lies in the
    null space of the other columns' Gram matrix, so its covariances with them all but vanish, which the
    Gram matrix's rounding (of the order of the other columns' scale) cannot resolve. The second view
    differs by a 1e-3 noise too, so that both views keep that structure and the covariance term, not the
    invariance, makes most of the loss."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d))
    for i in range(group):
        z[2 * i + 1] = z[2 * i]
        z[:, i] = 0.0
        z[2 * i, i], z[2 * i + 1, i] = size, -size
    z += 1e-3 * rng.standard_normal((n, d))
    return z, z + 1e-3 * rng.standard_normal((n, d))


def single_feature(n: int, std: float, seed: int = 0) -> Pair:
    """``d = 1``: no off-diagonal entry at all, so the covariance term is exactly 0."""
    rng = np.random.default_rng(seed)
    return _second_view(std * rng.standard_normal((n, 1)), rng)


def constant_columns(n: int, d: int, seed: int = 0) -> Pair:
    """Every third column constant (3.7): zero variance, the hinge at its maximum there."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d))
    z[:, ::3] = 3.7
    return _second_view(z, rng)


def one_row_differs(n: int, d: int, seed: int = 0) -> Pair:
    """All rows equal but the first: centred embeddings of rank one."""
    rng = np.random.default_rng(seed)
    z = np.tile(rng.standard_normal(d), (n, 1))
    z[0] += rng.standard_normal(d)
    return _second_view(z, rng)


def offset(n: int, d: int, mean: float, seed: int = 0) -> Pair:
    """Standard normal features around a large common mean: centring cancels most of every value."""
    rng = np.random.default_rng(seed)
    return _second_view(rng.standard_normal((n, d)) + mean, rng)


def large(n: int, d: int, std: float, seed: int = 0) -> Pair:
    """Standard normal features scaled by ``std``, large enough that squaring the unscaled second moments
    overflows (at ``1e17`` in float32 the official ``C_ij^2`` themselves overflow; at ``1e76`` in float64
    the official loss is near the largest float64, and in float32 the inputs are infinite)."""
    rng = np.random.default_rng(seed)
    return _second_view(std * rng.standard_normal((n, d)), rng)


def huge_column(n: int, d: int, size: float, rest: float = 1e-5, seed: int = 0) -> Pair:
    """Standard normal features at ``rest`` with one column (the first) at ``size``: in float32 at ``1e20``
    that column's variance overflows while its covariances with the others do not."""
    rng = np.random.default_rng(seed)
    z = rest * rng.standard_normal((n, d))
    z[:, 0] = size * rng.standard_normal(n)
    return _second_view(z, rng)


def geometric(n: int, d: int, seed: int = 0) -> Pair:
    """Standard deviations falling geometrically from 100 to 0.01 across the dimensions."""
    rng = np.random.default_rng(seed)
    return _second_view(rng.standard_normal((n, d)) * np.geomspace(100, 0.01, d), rng)


def _cases() -> dict[str, Callable[[], Pair]]:
    cases: dict[str, Callable[[], Pair]] = {}
    for std in (1, 10, 100):
        for n, d in ((2048, 128), (128, 128), (64, 512), (200, 256)):
            cases[f"whitened, std {std}, {n} x {d}"] = lambda n=n, d=d, std=std: whitened(n, d, std)
    cases["whitened, std 30, 512 x 64"] = lambda: whitened(512, 64, 30)
    # one dimension just inside the bound under which the Gram identity needs no exact column
    cases["whitened, one dimension at std 2, 64 x 512, at the bound"] = lambda: whitened_at_the_bound(64, 512)
    for std in (10, 100, 1000):
        for n, d in ((256, 8192), (64, 512), (4096, 64)):
            cases[f"one dominant, std {std}, {n} x {d}"] = lambda n=n, d=d, std=std: dominant(n, d, std)
    # a group of dominant, decorrelated dimensions: one more than a fixed 8 exact columns, and the largest
    # group centred embeddings of n rows can hold (n - 1)
    for group, std, (n, d) in ((9, 1000, (256, 8192)), (255, 1000, (256, 8192)), (63, 100, (64, 512))):
        name = f"{group} dominant decorrelated, std {std}, {n} x {d}"
        cases[name] = lambda n=n, d=d, group=group, std=std: decorrelated_dominant(n, d, group, std)
    # just inside the bound under which 8 exact columns suffice (a 9th dimension of variance 4 left in
    # the Gram matrix beside 503 of variance 1: 507 >= 2 * 63 * 4), the worst case that count takes; the 8
    # at variance 100 rule out taking none
    cases["9 dominant decorrelated, 8 at std 10, one at std 2, 64 x 512, at the bound"] = lambda: decorrelated_dominant(
        64, 512, 9, np.array([10.0] * 8 + [2.0])
    )
    cases["16 dominant decorrelated, rest orthogonal, std 30, 64 x 512"] = lambda: decorrelated_dominant(
        64, 512, 16, 30, rest_orthogonal=True
    )
    # dominant columns in the null space of the others' Gram matrix: 8 (the cheap column count) and 9 (all
    # n - 1 columns), the smallest Gram-path shape, and a size at which float64 feels it too
    for group, (n, d), size in (
        (1, (4, 8), "1e4"),
        (1, (16, 512), "1e4"),
        (1, (16, 512), "1e8"),
        (8, (64, 512), "1e4"),
        (9, (64, 512), "1e4"),
    ):
        name = f"{group} dominant in the others' null space, size {size}, {n} x {d}"
        cases[name] = lambda n=n, d=d, group=group, size=size: null_dominant(n, d, group, float(size))
    cases["d = 1, std 1e4, 1000 x 1"] = lambda: single_feature(1000, 1e4)
    cases["constant columns, 64 x 256"] = lambda: constant_columns(64, 256)
    cases["constant columns, 256 x 64"] = lambda: constant_columns(256, 64)
    cases["one row differs, 32 x 256"] = lambda: one_row_differs(32, 256)
    cases["one row differs, 256 x 32"] = lambda: one_row_differs(256, 32)
    cases["geometric spectrum, 128 x 1024"] = lambda: geometric(128, 1024)
    cases["mean 1000, std 1, 64 x 512"] = lambda: offset(64, 512, 1000.0)
    cases["mean 1000, std 1, 512 x 64"] = lambda: offset(512, 64, 1000.0)
    # near overflow: on the Gram path and the d x d path; at 1e17 the official float32 formulation
    # overflows (so must we), at 1e76 the float64 one is near the largest float64
    for std in ("1e8", "3e8", "1e17"):
        for n, d in ((64, 512), (256, 64)):
            cases[f"large, std {std}, {n} x {d}"] = lambda n=n, d=d, std=std: large(n, d, float(std))
    cases["large, std 1e76, 64 x 512"] = lambda: large(64, 512, 1e76)
    for size in ("1e18", "1e20"):
        for n, d in ((8, 64), (64, 16)):
            name = f"one column at {size}, the rest at 1e-5, {n} x {d}"
            cases[name] = lambda n=n, d=d, size=size: huge_column(n, d, float(size))
    return cases


CASES = _cases()


# --- references ---------------------------------------------------------------------------------------


def official(z1: np.ndarray, z2: np.ndarray, dtype: str) -> Result:
    """The official formulation (explicit ``d x d`` covariance) and its autograd gradient, in ``dtype``."""
    import torch

    from .references import official_torch

    t1 = torch.tensor(z1, dtype=getattr(torch, dtype), requires_grad=True)
    t2 = torch.tensor(z2, dtype=getattr(torch, dtype), requires_grad=True)
    loss = official_torch(t1, t2)
    g1, g2 = torch.autograd.grad(loss, (t1, t2))
    return float(loss.detach()), g1.double().numpy(), g2.double().numpy()


def official_autocast(z1: np.ndarray, z2: np.ndarray, dtype: str) -> Result:
    """The official formulation and its autograd gradient on float32 inputs under
    ``torch.autocast("cpu", dtype)``: its products round their inputs to ``dtype`` and return ``dtype``."""
    import torch

    from .references import official_torch

    t1, t2 = (torch.tensor(z, dtype=torch.float32, requires_grad=True) for z in (z1, z2))
    with torch.autocast("cpu", dtype=getattr(torch, dtype)):
        loss = official_torch(t1, t2)
    g1, g2 = torch.autograd.grad(loss, (t1, t2))
    return float(loss.detach()), g1.double().numpy(), g2.double().numpy()


def _numpy_level(level: str) -> Callable[[np.ndarray, np.ndarray], Result]:
    """NumPy's ``value_and_grad`` in float32 with ``precision=level``."""

    def run(z1: np.ndarray, z2: np.ndarray) -> Result:
        import vicreg

        loss, (g1, g2) = vicreg.value_and_grad(z1.astype("float32"), z2.astype("float32"), precision=level)
        return float(loss), np.asarray(g1, np.float64), np.asarray(g2, np.float64)

    return run


def torch_autocast_default(z1: np.ndarray, z2: np.ndarray) -> Result:
    """``vicreg.torch.VICRegLoss()`` on float32 inputs under ``torch.autocast("cpu", torch.bfloat16)``: the
    default level there."""
    import torch

    import vicreg.torch

    t1, t2 = (torch.tensor(z, dtype=torch.float32, requires_grad=True) for z in (z1, z2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = vicreg.torch.VICRegLoss()(t1, t2)
    g1, g2 = torch.autograd.grad(loss, (t1, t2))
    return float(loss.detach()), g1.double().numpy(), g2.double().numpy()


#: Cases the reduced-precision sweep leaves out unless asked (``--large``), and its test always: the official
#: formulation under autocast on the CPU (no bfloat16 arithmetic in most CPUs: PyTorch emulates it) takes
#: about 4.5 minutes per dtype at 256 x 8192.
AUTOCAST_SKIPS = ("256 x 8192",)

#: The reduced levels of the sweep, and the one autocast takes by default.
LEVELS = ("high", "medium")
AUTOCAST_DEFAULT = "high"


def autocast_columns(z1: np.ndarray, z2: np.ndarray, expected: Result, official32: Result) -> dict[str, Any]:
    """The reduced-precision columns of one case: the official formulation's errors under bfloat16 and
    float16 autocast, ours at each of :data:`LEVELS`, and ours under bfloat16 autocast at the default level."""
    return {
        "official": {
            dtype: errors(official_autocast(z1, z2, dtype), expected, official32) for dtype in ("bfloat16", "float16")
        },
        "levels": {level: errors(_numpy_level(level)(z1, z2), expected, official32) for level in LEVELS},
        "default": errors(torch_autocast_default(z1, z2), expected, official32),
    }


def autocast_passes(columns: dict[str, Any]) -> bool:
    """Whether the default level under autocast is no less accurate than the official formulation under
    bfloat16 autocast, loss and gradients, errors below :data:`FLOOR` (float32's own, in this sweep)
    counting as equal; an inf or NaN where float32 is finite counts as an infinite error, so it fails."""
    official = columns["official"]["bfloat16"]
    return all(ours <= max(theirs, FLOOR) for ours, theirs in zip(columns["default"], official))


def relative_error(actual: Any, expected: Any) -> float:
    """``max |actual - expected| / max |expected|``; ``inf`` where ``actual`` holds an inf or NaN (so that no
    comparison with a tolerance can pass it)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.size and not np.all(np.isfinite(actual)):
        return float("inf")
    return float(np.max(np.abs(actual - expected)) / max(float(np.max(np.abs(expected))), 1e-300))


def _overflow_error(actual: Any, expected: Any, official: Any) -> float:
    """The error of ``actual`` against the float64 ``expected`` where the official float32 result
    ``official`` overflowed in places: its inf and NaN entries must be inf or NaN in ``actual`` too (never a
    finite value: an error of ``inf`` otherwise), and the relative error is taken over the other entries."""
    actual, expected, official = (np.asarray(x, np.float64) for x in (actual, expected, official))
    lost = ~np.isfinite(official)
    if np.any(np.isfinite(actual[lost])):
        return float("inf")
    kept = ~lost
    return relative_error(actual[kept], expected[kept]) if np.any(kept) else 0.0


def errors(result: Result, expected: Result, official: Result | None = None) -> tuple[float, float]:
    """``(loss error, gradient error)``; the gradient error is the larger of the two views'. With the
    official float32 ``official`` result on the same inputs, its non-finite entries must be non-finite in
    ``result`` too and the errors are taken over the others (see :func:`_overflow_error`)."""
    if official is None:
        return (
            relative_error(result[0], expected[0]),
            max(relative_error(result[1], expected[1]), relative_error(result[2], expected[2])),
        )
    return (
        _overflow_error(result[0], expected[0], official[0]),
        max(_overflow_error(result[i], expected[i], official[i]) for i in (1, 2)),
    )


def tolerance(official_error: float) -> float:
    """The float32 target for an entry point whose yardstick (the official float32 error) is given."""
    return max(FACTOR * official_error, FLOOR)


# --- entry points -------------------------------------------------------------------------------------


def _core_value_and_grad(to: Callable[[np.ndarray], Any], back: Callable[[Any], np.ndarray]) -> Any:
    def run(z1: np.ndarray, z2: np.ndarray) -> Result:
        import vicreg

        loss, (g1, g2) = vicreg.value_and_grad(to(z1), to(z2))
        return float(back(loss)), back(g1), back(g2)

    return run


def _numpy(dtype: str) -> Any:
    return _core_value_and_grad(lambda z: z.astype(dtype), np.asarray)


def _strict(dtype: str) -> Any:
    import array_api_strict as xp

    return _core_value_and_grad(lambda z: xp.asarray(z.astype(dtype)), lambda x: np.asarray(x.__array__()))


def _torch_tensors(dtype: str) -> tuple[Callable[[np.ndarray], Any], Callable[[Any], np.ndarray]]:
    import torch

    return (
        lambda z: torch.tensor(z, dtype=getattr(torch, dtype), requires_grad=True),
        lambda x: x.detach().double().numpy(),
    )


def _torch_value_and_grad(dtype: str) -> Any:
    import torch

    return _core_value_and_grad(lambda z: torch.tensor(z.astype(dtype)), lambda x: x.double().numpy())


def _torch_autograd(fn: Callable[[Any, Any], Any], dtype: str) -> Any:
    import torch

    to, back = _torch_tensors(dtype)

    def run(z1: np.ndarray, z2: np.ndarray) -> Result:
        t1, t2 = to(z1), to(z2)
        loss = fn(t1, t2)
        g1, g2 = torch.autograd.grad(loss, (t1, t2))
        return float(loss.detach()), back(g1), back(g2)

    return run


def _torch_core(dtype: str) -> Any:
    import vicreg

    return _torch_autograd(vicreg.vicreg_loss, dtype)


def _torch_module(backward: str) -> Callable[[str], Any]:
    def make(dtype: str) -> Any:
        import vicreg.torch

        return _torch_autograd(vicreg.torch.VICRegLoss(backward=backward), dtype)

    return make


def _jax_grad(fn_name: str) -> Callable[[str], Any]:
    def make(dtype: str) -> Any:
        import jax
        import jax.numpy as jnp

        import vicreg
        import vicreg.jax

        fn = vicreg.vicreg_loss if fn_name == "core" else vicreg.jax.vicreg_loss
        grad = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))

        def run(z1: np.ndarray, z2: np.ndarray) -> Result:
            with jax.enable_x64(dtype == "float64"):
                loss, (g1, g2) = grad(jnp.asarray(z1, dtype), jnp.asarray(z2, dtype))
                return float(loss), np.asarray(g1, np.float64), np.asarray(g2, np.float64)

        return run

    return make


def _jax_value_and_grad(dtype: str) -> Any:
    import jax
    import jax.numpy as jnp

    import vicreg

    def run(z1: np.ndarray, z2: np.ndarray) -> Result:
        with jax.enable_x64(dtype == "float64"):
            loss, (g1, g2) = vicreg.value_and_grad(jnp.asarray(z1, dtype), jnp.asarray(z2, dtype))
            return float(loss), np.asarray(g1, np.float64), np.asarray(g2, np.float64)

    return run


# name -> (module it needs, factory taking the dtype name and returning a Result-valued function)
ENTRY_POINTS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "numpy value_and_grad": ("numpy", _numpy),
    "array_api_strict value_and_grad": ("array_api_strict", _strict),
    "torch value_and_grad": ("torch", _torch_value_and_grad),
    "torch vicreg_loss + autograd": ("torch", _torch_core),
    "torch VICRegLoss analytic": ("torch", _torch_module("analytic")),
    "torch VICRegLoss autograd": ("torch", _torch_module("autograd")),
    "jax value_and_grad": ("jax", _jax_value_and_grad),
    "jax grad of vicreg_loss": ("jax", _jax_grad("core")),
    "jax grad of vicreg.jax.vicreg_loss": ("jax", _jax_grad("adapter")),
}


def available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(ENTRY_POINTS[name][0]) is not None


# --- the sweep ----------------------------------------------------------------------------------------


def sweep(
    case_filter: str = "", entry_filter: str = "", autocast: bool = False, large: bool = False
) -> list[dict[str, Any]]:
    """One row per case: the official float32 errors and, per entry point, ours in float32 and float64; with
    ``autocast``, the reduced-precision columns (:func:`autocast_columns`) instead of the entry points, on
    every case but :data:`AUTOCAST_SKIPS` (on them too with ``large``)."""
    rows = []
    entries = {name: make for name, (_, make) in ENTRY_POINTS.items() if entry_filter in name and available(name)}
    entries = {} if autocast else entries
    runs = {(name, dtype): make(dtype) for name, make in entries.items() for dtype in ("float32", "float64")}
    for case, build in CASES.items():
        if case_filter not in case or (autocast and not large and any(skip in case for skip in AUTOCAST_SKIPS)):
            continue
        z1, z2 = build()
        expected = official(z1, z2, "float64")
        official32 = official(z1, z2, "float32")
        yardstick = errors(official32, expected, official32)
        row: dict[str, Any] = {"case": case, "official_float32": yardstick, "ours": {}}
        # where the official float32 formulation overflows: its loss, and how many gradient entries
        row["official_overflows"] = [
            not bool(np.isfinite(official32[0])),
            int(sum(np.count_nonzero(~np.isfinite(g)) for g in official32[1:])),
        ]
        for (name, dtype), run in runs.items():
            row["ours"].setdefault(name, {})[dtype] = errors(
                run(z1, z2), expected, official32 if dtype == "float32" else None
            )
        if autocast:
            row["autocast"] = autocast_columns(z1, z2, expected, official32)
        rows.append(row)
        print(f"  {case}", file=sys.stderr, flush=True)
    return rows


def passes(row: dict[str, Any]) -> bool:
    loss_tol, grad_tol = (tolerance(e) for e in row["official_float32"])
    for result in row["ours"].values():
        loss32, grad32 = result["float32"]
        if loss32 > loss_tol or grad32 > grad_tol or max(result["float64"]) > FLOAT64:
            return False
    return True


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table of docs/precision.md: per case, the official float32 errors and our worst over the entry points."""
    lines = [
        "| case | official f32: loss | ours f32: loss | official f32: grad | ours f32: grad | ours f64: worst | met |",
        "|---|---:|---:|---:|---:|---:|:-:|",
    ]
    for row in rows:
        ours = row["ours"].values()
        loss32 = max(r["float32"][0] for r in ours)
        grad32 = max(r["float32"][1] for r in ours)
        worst64 = max(max(r["float64"]) for r in ours)
        official_loss, official_grad = row["official_float32"]
        loss_overflows, grad_overflows = row.get("official_overflows", (False, 0))
        official_loss_text = "overflows" if loss_overflows else f"{official_loss:.1e}"
        loss_text = "overflows too" if loss_overflows and loss32 == 0.0 else f"{loss32:.1e}"
        official_grad_text = f"{official_grad:.1e}" + (
            f" ({grad_overflows} entries overflow)" if grad_overflows else ""
        )
        grad_text = f"{grad32:.1e}" + (" (there too)" if grad_overflows and np.isfinite(grad32) else "")
        lines.append(
            f"| {row['case']} | {official_loss_text} | {loss_text} | {official_grad_text} | {grad_text} | "
            f"{worst64:.0e} | {'yes' if passes(row) else '**no**'} |"
        )
    return "\n".join(lines)


def _pair(errs: Any) -> str:
    return " / ".join("inf or NaN" if not np.isfinite(e) else f"{e:.1e}" for e in errs)


def autocast_markdown(rows: list[dict[str, Any]]) -> str:
    """The reduced-precision table of docs/precision.md: per case, loss / gradient errors of the official
    formulation under bfloat16 and float16 autocast, ours at each level, and whether the default under
    autocast is no less accurate than the official formulation under bfloat16 autocast."""
    head = ["case", "official, bf16 autocast", "official, f16 autocast", *(f'ours, "{level}"' for level in LEVELS)]
    head += [f'ours, autocast default ("{AUTOCAST_DEFAULT}")', "met"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2) + ":-:|"]
    for row in rows:
        if "autocast" not in row:
            continue
        c = row["autocast"]
        cells = [row["case"], _pair(c["official"]["bfloat16"]), _pair(c["official"]["float16"])]
        cells += [_pair(c["levels"][level]) for level in LEVELS]
        cells += [_pair(c["default"]), "yes" if autocast_passes(c) else "**no**"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.precision",
        description="float32 and float64 errors of every entry point against the float64 official formulation",
    )
    parser.add_argument("--cases", default="", help="only the cases whose name contains this")
    parser.add_argument("--entry-points", default="", help="only the entry points whose name contains this")
    parser.add_argument("--out", help="also write precision.json and precision.md into this folder")
    parser.add_argument(
        "--autocast",
        action="store_true",
        help="the reduced-precision table instead (the official formulation under autocast against each level; "
        "--out writes autocast.json and autocast.md)",
    )
    parser.add_argument(
        "--large",
        action="store_true",
        help="with --autocast: the 256 x 8192 cases too (about 10 minutes each on a CPU without bfloat16 arithmetic)",
    )
    args = parser.parse_args(argv)
    rows = sweep(args.cases, args.entry_points, autocast=args.autocast, large=args.large)
    table = autocast_markdown(rows) if args.autocast else markdown(rows)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        name = "autocast" if args.autocast else "precision"
        with open(os.path.join(args.out, f"{name}.json"), "w") as f:
            json.dump({"entry_points": sorted({n for r in rows for n in r["ours"]}), "rows": rows}, f, indent=1)
        with open(os.path.join(args.out, f"{name}.md"), "w") as f:
            f.write(table + "\n")
    met = all(autocast_passes(r["autocast"]) if args.autocast else passes(r) for r in rows)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
