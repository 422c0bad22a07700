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

So every entry point runs the loss's forward statistics and its analytic gradient inside
:func:`full_precision`. (Faster products are asked for per call and per product instead, by the
``precision`` keyword, :data:`vicreg.PRECISIONS`: products of inputs rounded to bfloat16, whose float32
accumulation this guard keeps exact.)

* **PyTorch** (eager): ``fp32_precision = "ieee"`` on cuBLAS and oneDNN matmuls while any loss call runs
  (``allow_tf32 = False`` on PyTorch before 2.9). PyTorch has no per-product precision, so the setting is
  process-wide, and it is shared safely between threads: the first call to enter saves the user's values
  and switches to full precision, concurrent calls only count themselves in, and the last call to leave
  restores the saved values, unless the user changed a setting in the meantime, which is then left as the
  user set it. A call therefore computes at full float32 however many loss calls other threads run at the
  same time, and leaves the user's settings as they were; products that *other* threads run while some
  loss call is in progress also run at full precision. (A thread that changes the setting itself while a
  loss call runs changes it for that call's remaining products too: PyTorch has no per-product setting.)
  Under ``torch.compile`` nothing is switched (dynamo cannot trace the setting, and
  inductor reads it when it compiles): a compiled step's products follow the global setting, so set
  ``torch.set_float32_matmul_precision("highest")`` before compiling where the loss must be exact.
  PyTorch's autograd (``backward="autograd"``) runs its products after the call returns, at the global
  setting; the default analytic backward runs inside the context.
* **JAX**: ``jax.default_matmul_precision("highest")`` while the operations are traced, which records the
  precision on every product (the products of ``jax.grad`` through the core inherit it). The context is
  local to the thread that traces.
* **NumPy, CuPy, array-api-strict, dask**: nothing to do. (CuPy uses TF32 only when the environment sets
  ``CUPY_TF32=1``.)
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from typing import Any


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


class _Shared:
    """The state of the PyTorch guard, shared by all threads: how many calls are inside, and the settings
    the first of them found."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.saved: list[tuple[Any, str, Any]] = []


_shared = _Shared()


@contextlib.contextmanager
def _torch_full_precision() -> Iterator[None]:
    if _compiling():
        yield
        return
    with _shared.lock:
        if _shared.inside == 0:
            _shared.saved = []
            for holder, name, value in _torch_settings():
                previous = getattr(holder, name)
                if previous != value:
                    setattr(holder, name, value)
                    _shared.saved.append((holder, name, previous))
        _shared.inside += 1
    try:
        yield
    finally:
        with _shared.lock:
            _shared.inside -= 1
            if _shared.inside == 0:
                full = {(id(holder), name): value for holder, name, value in _torch_settings()}
                for holder, name, previous in reversed(_shared.saved):
                    if getattr(holder, name) == full[(id(holder), name)]:  # else the user changed it meanwhile
                        setattr(holder, name, previous)
                _shared.saved = []


def _compiling() -> bool:
    """Whether ``torch.compile`` is tracing."""
    import torch

    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())
