"""Input checks and array-namespace dispatch.

Everything here looks only at metadata (type, shape, dtype, device), never at values: a data-dependent
check would force a device synchronisation and break ``jax.jit``. NaN or Inf inside the arrays therefore
propagates to the loss.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import array_api_compat

CONVENTIONS = ("official", "paper")

_COEFFICIENTS = ("sim_coeff", "std_coeff", "cov_coeff", "variance_target", "eps")


def check_options(
    sim_coeff: float,
    std_coeff: float,
    cov_coeff: float,
    variance_target: float,
    eps: float,
    convention: str,
) -> None:
    """Raise ``TypeError``/``ValueError`` for a coefficient that is not a finite non-negative number,
    or for an unknown convention."""
    values = (sim_coeff, std_coeff, cov_coeff, variance_target, eps)
    for name, value in zip(_COEFFICIENTS, values):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(
                f"vicreg: {name} must be a real Python number, got {type(value).__name__} ({value!r})"
            )
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"vicreg: {name} must be finite, got {value!r}")
        if value < 0:
            raise ValueError(f"vicreg: {name} must be non-negative, got {value!r}")
    if not isinstance(convention, str) or convention not in CONVENTIONS:
        choices = ", ".join(repr(c) for c in CONVENTIONS)
        raise ValueError(f"vicreg: unknown convention {convention!r}; choose one of {choices}")


def _library(x: Any) -> str:
    return type(x).__module__.split(".")[0]


def namespace(z1: Any, z2: Any) -> Any:
    """The array namespace shared by ``z1`` and ``z2``; ``TypeError`` when there is none."""
    for name, z in (("z1", z1), ("z2", z2)):
        if not array_api_compat.is_array_api_obj(z):
            raise TypeError(
                f"vicreg: {name} must be an array (NumPy, CuPy, PyTorch, JAX or another array-API "
                f"library), got {type(z).__name__}; convert it first, e.g. numpy.asarray({name})"
            )
    xp1 = array_api_compat.array_namespace(z1)
    xp2 = array_api_compat.array_namespace(z2)
    if xp1 is not xp2:
        raise TypeError(
            f"vicreg: z1 and z2 come from different array libraries ({_library(z1)} and {_library(z2)}); "
            f"convert one to the other's library first, zero-copy where possible, e.g. "
            f"z2 = {_library(z1)}.from_dlpack(z2)"
        )
    return xp1


def _device(x: Any) -> Any:
    if _library(x) == "torch":  # direct, so that torch.compile traces no cached dispatch
        return x.device
    try:
        return array_api_compat.device(x)
    except Exception:  # e.g. tracers without a device: nothing to compare
        return None


def check_pair(xp: Any, z1: Any, z2: Any) -> None:
    """Raise ``ValueError``/``TypeError`` unless ``z1`` and ``z2`` are two ``(n, d)`` real floating arrays
    of the same shape on the same device, with ``n >= 2`` and ``d >= 1``."""
    for name, z in (("z1", z1), ("z2", z2)):
        if z.ndim != 2:
            raise ValueError(
                f"vicreg: {name} must be 2-D (n samples, d features), got shape {tuple(z.shape)}"
            )
        if not xp.isdtype(z.dtype, "real floating"):
            raise TypeError(
                f"vicreg: {name} must have a real floating dtype (float16, bfloat16, float32, float64), "
                f"got {z.dtype}"
            )
    if tuple(z1.shape) != tuple(z2.shape):
        raise ValueError(
            f"vicreg: z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    n, d = z1.shape
    if n is not None and n < 2:
        raise ValueError(f"vicreg: need at least 2 samples to estimate a variance, got n = {n}")
    if d is not None and d < 1:
        raise ValueError("vicreg: embeddings have zero features (d = 0)")
    dev1, dev2 = _device(z1), _device(z2)
    if dev1 is not None and dev2 is not None and dev1 != dev2:
        raise ValueError(
            f"vicreg: z1 and z2 are on different devices ({dev1} and {dev2}); move one to the other's"
        )


def compute_dtype(xp: Any, z1: Any, z2: Any) -> Any:
    """The dtype the statistics are computed in: the inputs' common dtype, at least float32.

    float16 and bfloat16 have too little range for the second moments (a Gram entry of embeddings of
    magnitude 300 overflows float16), so they are computed in float32.
    """
    dtype = xp.result_type(z1.dtype, z2.dtype)
    if xp.finfo(dtype).bits < 32:
        dtype = xp.float32
    return dtype


def prepare(z1: Any, z2: Any) -> tuple[Any, Any, Any]:
    """Check the pair and cast it to the compute dtype. Returns ``(xp, z1, z2)``."""
    xp = namespace(z1, z2)
    check_pair(xp, z1, z2)
    dtype = compute_dtype(xp, z1, z2)
    if z1.dtype != dtype:
        z1 = xp.astype(z1, dtype)
    if z2.dtype != dtype:
        z2 = xp.astype(z2, dtype)
    return xp, z1, z2


def zero_d(xp: Any, x: Any) -> Any:
    """``x`` as a 0-d array: NumPy reductions return scalars (``numpy.float64``), not arrays."""
    return xp.asarray(x) if array_api_compat.is_numpy_namespace(xp) else x
