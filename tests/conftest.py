"""Shared test fixtures: the ``backend`` fixture runs a test once per array library and device.

Backends: numpy, array_api_strict (extensions disabled, to prove only the standard is used), torch on CPU,
jax on CPU (float64 enabled for the test), and torch CUDA, jax GPU and cupy, which skip with a reason where
no GPU (or the library) is present.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs a worker per core (-n auto): each computes on one thread, set before any array library
    # loads, so that the workers' OpenMP and BLAS pools do not spin against each other on the same cores (on a
    # 2-core machine, an eighth of the suite's time, a quarter of the precision and core tests'). JAX's own
    # pool is left alone: it does not spin. A setting the caller made wins; subprocesses inherit it.
    for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_variable, "1")

# One JAX compilation cache for the session, shared by its workers and the subprocesses they start: the tests
# wrap the same functions in fresh jit's and run the same training programs in several processes, and XLA's
# compilations are most of JAX's share of the suite (a sixth less time for the JAX tests, from an empty
# cache). Removed at the end of the session (pytest_unconfigure); a cache the caller set is used and kept.
_SESSION = os.getppid() if os.environ.get("PYTEST_XDIST_WORKER") else os.getpid()
_JAX_CACHE = os.path.join(tempfile.gettempdir(), f"vicreg-tests-jax-cache-{_SESSION}")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ.update(
        JAX_COMPILATION_CACHE_DIR=_JAX_CACHE,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )

# after the environment above: NumPy's BLAS reads it when it loads
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@dataclass
class Backend:
    """One array library on one device, with converters to and from NumPy."""

    name: str
    xp: Any  # the namespace the core resolves these arrays to (array_api_compat.array_namespace)
    device: Any
    _asarray: Callable[[np.ndarray], Any]
    _to_numpy: Callable[[Any], np.ndarray]

    def asarray(self, a: np.ndarray, dtype: str | None = None) -> Any:
        """A NumPy array (cast to ``dtype``, a name such as "float32") as an array of this backend."""
        x = self._asarray(np.asarray(a))
        if dtype is not None:
            x = self.xp.astype(x, getattr(self.xp, dtype))
        return x

    def to_numpy(self, x: Any) -> np.ndarray:
        return self._to_numpy(x)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _numpy() -> Backend:
    import array_api_compat.numpy as xp

    return Backend("numpy", xp, "cpu", np.asarray, np.asarray)


def _strict() -> Backend:
    import array_api_strict as xp

    return Backend("array_api_strict", xp, xp.Device("CPU_DEVICE"), xp.asarray, np.from_dlpack)


def _torch(device: str) -> Backend:
    import array_api_compat.torch as xp
    import torch

    def to_numpy(x: Any) -> np.ndarray:
        x = x.detach().cpu()
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()

    return Backend(
        f"torch-{device}",
        xp,
        torch.empty(0, device=device).device,  # "cuda" -> cuda:<current>, as results report it
        lambda a: torch.asarray(a, device=device),
        to_numpy,
    )


def _jax(platform: str) -> Backend:
    import jax
    import jax.numpy as jnp

    device = jax.devices(platform)[0]
    return Backend(
        f"jax-{platform}",
        jnp,
        device,
        lambda a: jax.device_put(jnp.asarray(a), device),
        lambda x: np.asarray(x.astype(jnp.float32) if x.dtype == jnp.bfloat16 else x),
    )


def _cupy() -> Backend:
    import array_api_compat.cupy as xp
    import cupy

    return Backend("cupy", xp, cupy.cuda.Device(0), cupy.asarray, cupy.asnumpy)


def _torch_cuda_available() -> bool:
    if not _has("torch"):
        return False
    import torch

    return torch.cuda.is_available()


def _jax_gpu_available() -> bool:
    if not _has("jax"):
        return False
    import jax

    try:
        return len(jax.devices("gpu")) > 0
    except RuntimeError:
        return False


def _cupy_available() -> bool:
    if not _has("cupy"):
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


BACKENDS = ["numpy", "array_api_strict", "torch-cpu", "jax-cpu", "torch-cuda", "jax-gpu", "cupy"]


def make_backend(name: str) -> Backend:
    """The backend called ``name``, or ``pytest.skip`` with the reason it is unavailable."""
    needs = {
        "numpy": ("numpy", lambda: True, "numpy"),
        "array_api_strict": ("array_api_strict", lambda: True, "array-api-strict"),
        "torch-cpu": ("torch", lambda: True, "torch"),
        "jax-cpu": ("jax", lambda: True, "jax"),
        "torch-cuda": ("torch", _torch_cuda_available, "a CUDA GPU for torch"),
        "jax-gpu": ("jax", _jax_gpu_available, "a GPU for jax"),
        "cupy": ("cupy", _cupy_available, "cupy and a CUDA GPU"),
    }
    module, available, what = needs[name]
    if not _has(module) or not available():
        pytest.skip(f"{name}: needs {what}, not present on this machine")
    factories = {
        "numpy": _numpy,
        "array_api_strict": _strict,
        "torch-cpu": lambda: _torch("cpu"),
        "jax-cpu": lambda: _jax("cpu"),
        "torch-cuda": lambda: _torch("cuda"),
        "jax-gpu": lambda: _jax("gpu"),
        "cupy": _cupy,
    }
    return factories[name]()


@contextlib.contextmanager
def backend_context(name: str):
    """Library state a backend's tests need: float64 in JAX, no extensions in array_api_strict."""
    with contextlib.ExitStack() as stack:
        if name.startswith("jax"):
            import jax

            stack.enter_context(jax.enable_x64(True))
        if name == "array_api_strict":
            import array_api_strict

            array_api_strict.set_array_api_strict_flags(enabled_extensions=())
            stack.callback(array_api_strict.reset_array_api_strict_flags)
        yield


@pytest.fixture(params=BACKENDS)
def backend(request) -> Backend:
    with backend_context(request.param):
        yield make_backend(request.param)


def pytest_unconfigure(config) -> None:
    """The session's JAX compilation cache goes when the session ends (in the controller, after every worker)."""
    if not os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("JAX_COMPILATION_CACHE_DIR") == _JAX_CACHE:
        shutil.rmtree(_JAX_CACHE, ignore_errors=True)
