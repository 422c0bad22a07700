"""Float32 products at full precision inside the loss, whatever the process-wide setting.

PyTorch and JAX let a program lower the precision of every float32 matrix product at once: TF32 on
NVIDIA GPUs (``torch.set_float32_matmul_precision("high")``, ``torch.backends.cuda.matmul.allow_tf32``,
JAX's default precision on GPUs) rounds each product's inputs to 10 mantissa bits, about 5e-4 relative,
and ``"medium"`` to bfloat16 on CPUs that have it. That is fine for a network's layers and ruins the
covariance term: it is the sum of squares of off-diagonal covariances that can be a tiny part of the
products they come from (one dominant dimension, features whitened at a large std), and the gradient's
``zc (S - D)`` carries the same products. Measured on an NVIDIA H200 at 256 x 8192 in float32, with TF32
switched on: gradient relative error 6.2e-4 (one dimension at std 1000) and 6.6e-4 (nearly whitened at
std 100) against 1.0e-6 and 9.3e-7 at full precision.

So the loss's forward statistics and its analytic gradient run inside :func:`full_precision`:

* **PyTorch** (eager): ``fp32_precision = "ieee"`` on cuBLAS and oneDNN matmuls for the call, the
  previous values restored after it (``allow_tf32 = False`` on PyTorch before 2.9). The setting is
  process-wide: products another thread launches meanwhile also run at full precision. Under
  ``torch.compile`` nothing is switched (dynamo cannot trace the setting, and inductor reads it when it
  compiles): a compiled step's products follow the global setting, so set
  ``torch.set_float32_matmul_precision("highest")`` before compiling where the loss must be exact.
  PyTorch's autograd (``backward="autograd"``) runs its products after the call returns, at the global
  setting; the default analytic backward runs inside the context.
* **JAX**: ``jax.default_matmul_precision("highest")`` while the operations are traced, which records
  the precision on every product (the products of ``jax.grad`` through the core inherit it).
* **NumPy, CuPy, array-api-strict**: nothing to do. (CuPy uses TF32 only when the environment sets
  ``CUPY_TF32=1``.)
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def full_precision(xp: Any) -> contextlib.AbstractContextManager[None]:
    """A context in which the float32 products of ``xp`` run at full float32 precision."""
    # told by name: array_api_compat's namespace tests are cached functions, which torch.compile warns of
    name = getattr(xp, "__name__", "")
    if name in ("torch", "array_api_compat.torch"):
        return _torch_full_precision()
    if name in ("jax.numpy", "jax.experimental.array_api"):
        import jax

        return jax.default_matmul_precision("highest")
    return contextlib.nullcontext()


def in_full_precision(fn: F) -> F:
    """``fn(xp, ...)`` run inside :func:`full_precision` of its first argument."""

    @functools.wraps(fn)
    def wrapper(xp: Any, *args: Any, **kwargs: Any) -> Any:
        with full_precision(xp):
            return fn(xp, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@functools.cache
def _torch_settings() -> list[tuple[Any, str, Any]]:
    """``(holder, attribute, full-precision value)`` of each process-wide setting that can lower PyTorch's
    float32 matmuls."""
    import torch

    cuda = torch.backends.cuda.matmul
    if not hasattr(cuda, "fp32_precision"):  # before PyTorch 2.9: the one legacy flag
        return [(cuda, "allow_tf32", False)]
    mkldnn = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    return [(m, "fp32_precision", "ieee") for m in (cuda, mkldnn) if hasattr(m, "fp32_precision")]


@contextlib.contextmanager
def _torch_full_precision() -> Iterator[None]:
    from ._terms import _compiling

    if _compiling():
        yield
        return
    changed = []
    try:
        for holder, name, value in _torch_settings():
            previous = getattr(holder, name)
            if previous != value:
                setattr(holder, name, value)
                changed.append((holder, name, previous))
        yield
    finally:
        for holder, name, previous in reversed(changed):
            setattr(holder, name, previous)
