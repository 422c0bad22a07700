"""One platform per framework and device, and the implementations timed on it.

A platform makes the inputs of a case (the same NumPy-generated numbers on every platform), waits for the
device (``block_until_ready``, CUDA synchronisation) and builds, for a mode, the callables to time:

* roles ``vicreg`` (the core's ``vicreg.vicreg_loss``; on PyTorch and JAX arrays it dispatches to the
  adapter's differentiation rule by itself, so forward+backward differentiates that), ``adapter``
  (``vicreg.torch`` / ``vicreg.jax`` when importable: their backward is the core's analytic gradient),
  ``official`` (the ``d x d`` formulation, :mod:`benchmarks.references`), ``lightly`` (PyTorch, when
  installed), ``handwritten`` (PyTorch: the core's formulas without the array-API layer), ``matmul``
  (one ``z @ z.T`` when ``n < d``, else ``z.T @ z``: the hardware proxy) and ``gemms`` (the products the
  loss cannot avoid, alone: the two second-moment matrices, plus for forward+backward the two
  ``n x n x d`` (``d x d x n``) gradient products, so four GEMMs; the floor for an implementation whose
  elementwise work were free).

Modes: ``forward`` (the loss) and ``backward`` (the loss and both gradients: ``torch.autograd.grad``,
``jax.jit(jax.value_and_grad(...))``, ``vicreg.value_and_grad`` for NumPy and CuPy).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import platform as _platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import memory, references

MODES = ("forward", "backward")
MODE_LABELS = {"forward": "forward", "backward": "forward+backward"}
ROLES = ("vicreg", "adapter", "handwritten", "official", "lightly", "matmul", "gemms")
ROLE_LABELS = {
    "vicreg": "vicreg (core)",
    "adapter": "vicreg adapter",
    "handwritten": "hand-written torch",
    "official": "official (d x d)",
    "lightly": "lightly",
    "matmul": "one matmul",
    "gemms": "the loss's matmuls",
}


@dataclass
class Runner:
    """A zero-argument call that runs one implementation to completion (device synchronised) and
    returns its result; ``loss_of`` reads the loss out of the result as a Python float."""

    role: str
    call: Callable[[], Any]
    loss_of: Callable[[Any], float] | None
    memory: Callable[[], int] | None = None  # peak bytes of one call, where the platform overrides it


@dataclass
class Platform:
    name: str  # e.g. "torch-cpu"
    framework: str  # numpy, torch, jax, cupy
    device: str  # "cpu" or "gpu"
    notes: list[str] = field(default_factory=list)

    # -- hooks filled by the subclasses ----------------------------------------------------------------
    def device_name(self) -> str:
        return cpu_name()

    def supports(self, dtype: str) -> bool:
        return dtype == "float32"

    def inputs(self, n: int, d: int, dtype: str, seed: int = 0) -> tuple[Any, Any]:
        raise NotImplementedError

    def runners(self, mode: str, z1: Any, z2: Any) -> list[Runner]:
        raise NotImplementedError

    def memory_method(self) -> str | None:
        return None

    def measure_memory(self, runner: Runner) -> int | None:
        method = self.memory_method()
        if runner.memory is not None:
            return runner.memory()
        if method == "tracemalloc":
            return memory.tracemalloc_peak(runner.call)
        if method == "rss":
            return memory.rss_peak(runner.call)
        if method == "cuda":
            return memory.cuda_peak(runner.call)
        if method == "cupy":
            return memory.cupy_peak(runner.call)
        return None


def host_arrays(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two correlated float32 views with non-zero means and spread-out column scales (some dimensions
    below the variance target, some above), the same for every platform."""
    rng = np.random.default_rng(seed)
    scale = np.geomspace(0.3, 3.0, d).astype(np.float32)
    base = rng.standard_normal((n, d), dtype=np.float32) * scale + rng.standard_normal(d, dtype=np.float32)
    z1 = base + np.float32(0.3) * rng.standard_normal((n, d), dtype=np.float32)
    z2 = base + np.float32(0.3) * rng.standard_normal((n, d), dtype=np.float32)
    return z1, z2


def _products(mode: str, z1: Any, z2: Any, m1: Any = None, m2: Any = None) -> Callable[[], Any]:
    """A call doing the matrix products the loss needs, alone: ``z z^T`` (``z^T z`` when ``n >= d``) for
    each view, and for forward+backward also ``M z`` (``z M``) with the square matrices ``M`` (made here
    unless given)."""
    n, d = z1.shape
    gram = n < d

    def second(z):
        return z @ z.T if gram else z.T @ z

    if mode == "forward":
        return lambda: (second(z1), second(z2))
    if m1 is None:
        m1, m2 = second(z1), second(z2)

    def both():
        return (second(z1), second(z2), m1 @ z1 if gram else z1 @ m1, m2 @ z2 if gram else z2 @ m2)

    return both


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return f"{_platform.processor() or _platform.machine()} ({os.cpu_count()} logical CPUs)"


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _adapter(module: str) -> Any:
    """``vicreg.torch`` or ``vicreg.jax`` if present and importable, else ``None``."""
    try:
        return importlib.import_module(module)
    except Exception:
        return None


# --- NumPy and CuPy -----------------------------------------------------------------------------------


class NumpyPlatform(Platform):
    def __init__(self) -> None:
        super().__init__("numpy", "numpy", "cpu")
        self.xp = np

    def inputs(self, n, d, dtype, seed=0):
        return host_arrays(n, d, seed)

    def sync(self) -> None:
        pass

    def memory_method(self):
        return "tracemalloc"

    def runners(self, mode, z1, z2):
        import vicreg

        xp, sync = self.xp, self.sync
        n, d = z1.shape

        def done(x):
            sync()
            return x

        if mode == "forward":
            ours = lambda: done(vicreg.vicreg_loss(z1, z2))  # noqa: E731
            official = lambda: done(references.official_numpy(xp, z1, z2))  # noqa: E731
            loss_of = float
        else:
            ours = lambda: done(vicreg.value_and_grad(z1, z2))  # noqa: E731
            official = lambda: done(references.official_numpy_value_and_grad(xp, z1, z2))  # noqa: E731
            loss_of = lambda r: float(r[0])  # noqa: E731
        matmul = (lambda: done(z1 @ z1.T)) if n < d else (lambda: done(z1.T @ z1))
        products = _products(mode, z1, z2)
        return [
            Runner("vicreg", ours, loss_of),
            Runner("official", official, loss_of),
            Runner("matmul", matmul, None),
            Runner("gemms", lambda: done(products()), None),
        ]


class CupyPlatform(NumpyPlatform):
    def __init__(self) -> None:
        import cupy

        Platform.__init__(self, "cupy", "cupy", "gpu")
        self.xp = cupy

    def device_name(self):
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)

    def inputs(self, n, d, dtype, seed=0):
        a, b = host_arrays(n, d, seed)
        return self.xp.asarray(a), self.xp.asarray(b)

    def sync(self):
        self.xp.cuda.Device().synchronize()

    def memory_method(self):
        return "cupy"


# --- PyTorch ------------------------------------------------------------------------------------------


class TorchPlatform(Platform):
    def __init__(self, device: str) -> None:
        import torch

        super().__init__(f"torch-{'cuda' if device == 'gpu' else 'cpu'}", "torch", device)
        self.torch = torch
        self.tdevice = torch.device("cuda" if device == "gpu" else "cpu")
        self.lightly = references.lightly_torch()
        if self.lightly is None:
            self.notes.append("lightly is not installed: its reference is skipped (pip install lightly)")
        self.adapter = _adapter("vicreg.torch")
        if self.adapter is None:
            self.notes.append("vicreg.torch is not importable: the adapter rows are skipped")
        else:
            self.adapter_loss = self.adapter.VICRegLoss()

    def device_name(self):
        if self.device == "gpu":
            return self.torch.cuda.get_device_name(self.tdevice)
        return cpu_name()

    def supports(self, dtype):
        return dtype in ("float32", "bfloat16")

    def inputs(self, n, d, dtype, seed=0):
        a, b = host_arrays(n, d, seed)
        t = self.torch
        dt = getattr(t, dtype)
        return (t.from_numpy(a).to(self.tdevice, dt), t.from_numpy(b).to(self.tdevice, dt))

    def sync(self):
        if self.device == "gpu":
            self.torch.cuda.synchronize(self.tdevice)

    def memory_method(self):
        return "cuda" if self.device == "gpu" else ("rss" if memory.rss_available() else None)

    def runners(self, mode, z1, z2):
        import vicreg

        torch, sync = self.torch, self.sync
        n, d = z1.shape
        impls: list[tuple[str, Callable[[Any, Any], Any]]] = [("vicreg", vicreg.vicreg_loss)]
        if self.adapter is not None:
            impls.append(("adapter", self.adapter_loss))
        impls.append(("handwritten", references.handwritten_torch))
        impls.append(("official", references.official_torch))
        if self.lightly is not None:
            impls.append(("lightly", self.lightly))

        out: list[Runner] = []
        if mode == "forward":
            for role, fn in impls:

                def call(fn=fn):
                    with torch.no_grad():
                        loss = fn(z1, z2)
                    sync()
                    return loss

                out.append(Runner(role, call, lambda r: float(r)))
        else:
            a = z1.detach().requires_grad_(True)
            b = z2.detach().requires_grad_(True)
            for role, fn in impls:

                def call(fn=fn):
                    loss = fn(a, b)
                    grads = torch.autograd.grad(loss, (a, b))
                    sync()
                    return loss.detach(), grads

                out.append(Runner(role, call, lambda r: float(r[0])))

        def matmul():
            with torch.no_grad():
                m = z1 @ z1.T if n < d else z1.T @ z1
            sync()
            return m

        out.append(Runner("matmul", matmul, None))
        products = _products(mode, z1, z2)

        def gemms():
            with torch.no_grad():
                r = products()
            sync()
            return r

        out.append(Runner("gemms", gemms, None))
        return out


# --- JAX ----------------------------------------------------------------------------------------------


class JaxPlatform(Platform):
    def __init__(self, device: str) -> None:
        import jax

        super().__init__(f"jax-{device}", "jax", device)
        self.jax = jax
        self.jdevice = jax.devices("gpu" if device == "gpu" else "cpu")[0]
        self.adapter = _adapter("vicreg.jax")
        if self.adapter is None:
            self.notes.append("vicreg.jax is not importable: the adapter rows are skipped")

    def device_name(self):
        if self.device == "gpu":
            return str(getattr(self.jdevice, "device_kind", self.jdevice))
        return cpu_name()

    def supports(self, dtype):
        return dtype in ("float32", "bfloat16")

    def inputs(self, n, d, dtype, seed=0):
        import jax.numpy as jnp

        a, b = host_arrays(n, d, seed)
        dt = getattr(jnp, dtype)
        put = self.jax.device_put
        return put(jnp.asarray(a, dtype=dt), self.jdevice), put(jnp.asarray(b, dtype=dt), self.jdevice)

    def memory_method(self):
        # XLA's CPU client keeps freed buffers for reuse, which hides them from the resident set; the
        # compiler's buffer assignment is exact on every device.
        return "xla"

    def runners(self, mode, z1, z2):
        """Every runner traced and compiled here. float32 is traced at ``"highest"`` matmul precision, so
        the official formulation and the matmul floors run at full float32, as PyTorch's do by default:
        JAX's default precision on a GPU rounds float32 products as TF32 does, which would time a faster,
        inexact official loss (the loss itself always runs at full precision)."""
        import jax.numpy as jnp

        full = z1.dtype == jnp.float32
        with self.jax.default_matmul_precision("highest") if full else contextlib.nullcontext():
            return self._runners(mode, z1, z2)

    def _runners(self, mode, z1, z2):
        import vicreg

        jax = self.jax
        n, d = z1.shape
        impls: list[tuple[str, Callable[[Any, Any], Any]]] = [("vicreg", vicreg.vicreg_loss)]
        if self.adapter is not None:
            impls.append(("adapter", self.adapter.vicreg_loss))
        impls.append(("official", references.official_jax))

        out: list[Runner] = []
        for role, fn in impls:
            if mode == "forward":
                f = jax.jit(fn)
                loss_of = float
            else:
                f = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
                loss_of = lambda r: float(r[0])  # noqa: E731
            # compiled ahead of time, once: the same executable is timed and its memory analysed
            compiled = f.lower(z1, z2).compile()

            def call(compiled=compiled):
                return jax.block_until_ready(compiled(z1, z2))

            out.append(Runner(role, call, loss_of, lambda c=compiled: memory.xla_peak(c.memory_analysis())))

        mm = (jax.jit(lambda x: x @ x.T) if n < d else jax.jit(lambda x: x.T @ x)).lower(z1).compile()
        out.append(
            Runner("matmul", lambda: jax.block_until_ready(mm(z1)), None, lambda: memory.xla_peak(mm.memory_analysis()))
        )
        m1, m2 = (z1 @ z1.T, z2 @ z2.T) if n < d else (z1.T @ z1, z2.T @ z2)
        if mode == "forward":
            gm = jax.jit(lambda a, b: _products("forward", a, b)()).lower(z1, z2).compile()
            out.append(
                Runner(
                    "gemms",
                    lambda: jax.block_until_ready(gm(z1, z2)),
                    None,
                    lambda: memory.xla_peak(gm.memory_analysis()),
                )
            )
        else:
            gm = jax.jit(lambda a, b, p, q: _products("backward", a, b, p, q)()).lower(z1, z2, m1, m2).compile()
            out.append(
                Runner(
                    "gemms",
                    lambda: jax.block_until_ready(gm(z1, z2, m1, m2)),
                    None,
                    lambda: memory.xla_peak(gm.memory_analysis()),
                )
            )
        return out


# --- discovery ----------------------------------------------------------------------------------------

FRAMEWORKS = ("numpy", "torch", "jax", "cupy")


def discover(
    frameworks: tuple[str, ...] = FRAMEWORKS, devices: tuple[str, ...] = ("cpu", "gpu")
) -> tuple[list[Platform], list[str]]:
    """The platforms installed here among ``frameworks`` x ``devices``, and notes on what was skipped."""
    found: list[Platform] = []
    notes: list[str] = []
    for fw in frameworks:
        if fw not in FRAMEWORKS:
            raise ValueError(f"unknown backend {fw!r}; choose from {', '.join(FRAMEWORKS)}")
        if fw == "numpy":
            if "cpu" in devices:
                found.append(NumpyPlatform())
        elif fw == "cupy":
            if "gpu" not in devices:
                continue
            if not _installed("cupy"):
                notes.append("cupy: not installed, skipped")
                continue
            try:
                import cupy

                if cupy.cuda.runtime.getDeviceCount() < 1:
                    raise RuntimeError("no CUDA device")
                found.append(CupyPlatform())
            except Exception as exc:  # no driver, no device
                notes.append(f"cupy: no usable GPU ({type(exc).__name__}: {exc}), skipped")
        elif fw == "torch":
            if not _installed("torch"):
                notes.append("torch: not installed, skipped")
                continue
            import torch

            if "cpu" in devices:
                found.append(TorchPlatform("cpu"))
            if "gpu" in devices:
                if torch.cuda.is_available():
                    found.append(TorchPlatform("gpu"))
                else:
                    notes.append("torch: no CUDA device, GPU rows skipped")
        elif fw == "jax":
            if not _installed("jax"):
                notes.append("jax: not installed, skipped")
                continue
            import jax

            if "cpu" in devices:
                found.append(JaxPlatform("cpu"))
            if "gpu" in devices:
                try:
                    jax.devices("gpu")
                    found.append(JaxPlatform("gpu"))
                except RuntimeError:
                    notes.append("jax: no GPU backend, GPU rows skipped")
    for p in found:
        notes.extend(f"{p.name}: {note}" for note in p.notes)
    return found, notes
