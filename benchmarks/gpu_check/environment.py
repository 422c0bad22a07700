"""Before anything else, whether a CUDA GPU is visible at all (:func:`gpu_absent_reason`, cheap, in the
command's own process); then the environment section: the device, the driver and the library versions
(:func:`section_environment`, in a child process)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import warnings
from importlib import metadata
from typing import Any

from .common import one_line

VERSIONS = (
    "vicreg",
    "numpy",
    "array-api-compat",
    "torch",
    "jax",
    "jaxlib",
    "jax-cuda12-plugin",
    "jax-cuda13-plugin",
    "cupy-cuda12x",
    "cupy-cuda13x",
    "cupy",
    "dm-pix",
    "flax",
    "optax",
    "lightly",
    "pytest",
)


# --- is there a GPU? ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 and Python warnings: the libraries' probes may log about missing
    drivers or plugins, and the no-GPU answer must stay one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _probe_torch() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "not installed"
    import torch

    return None if torch.cuda.is_available() else "torch.cuda.is_available() is False"


def _probe_cupy() -> str | None:
    if importlib.util.find_spec("cupy") is None:
        return "not installed"
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, no device: CUDARuntimeError
        return f"no usable device ({type(exc).__name__})"
    return None if count > 0 else "0 devices"


def _probe_jax() -> str | None:
    if importlib.util.find_spec("jax") is None:
        return "not installed"
    try:
        import jax

        return None if jax.devices("gpu") else "no GPU device"
    except RuntimeError:
        return "no GPU backend"


def gpu_absent_reason() -> str | None:
    """``None`` when torch, CuPy or JAX (asked in that order, stopping at the first yes) sees a CUDA GPU;
    otherwise what each one said, in one line."""
    reasons = []
    with _quiet_stderr():
        for name, probe in (("torch", _probe_torch), ("cupy", _probe_cupy), ("jax", _probe_jax)):
            try:
                why = probe()
            except Exception as exc:  # a broken install: that library sees no GPU
                why = f"{type(exc).__name__}"
            if why is None:
                return None
            reasons.append(f"{name}: {why}")
    return "; ".join(reasons)


# --- the environment section --------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _nvidia_smi() -> list[dict[str, str]] | str:
    """One dict per GPU (name, driver, memory) from ``nvidia-smi``, or why not."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "nvidia-smi not found"
    fields = ("index", "name", "driver_version", "memory.total", "compute_cap")
    try:
        proc = subprocess.run(
            [exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi failed: {exc}"
    if proc.returncode != 0:
        return f"nvidia-smi failed: {one_line(proc.stderr or proc.stdout)}"
    return [dict(zip(fields, (v.strip() for v in line.split(",")))) for line in proc.stdout.strip().splitlines()]


def _torch_environment() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if info["cuda_available"]:
        info["cudnn"] = torch.backends.cudnn.version()
        info["devices"] = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["devices"].append(
                {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1)}
            )
    return info


def _cupy_environment() -> dict[str, Any]:
    import cupy

    runtime = cupy.cuda.runtime
    info: dict[str, Any] = {
        "runtime": runtime.runtimeGetVersion(),
        "driver_cuda": runtime.driverGetVersion(),
        "devices": [],
    }
    for i in range(runtime.getDeviceCount()):
        name = runtime.getDeviceProperties(i)["name"]
        info["devices"].append(name.decode() if isinstance(name, bytes) else str(name))
    return info


def _jax_environment() -> dict[str, Any]:
    import jax

    info: dict[str, Any] = {
        "default_backend": jax.default_backend(),
        "default_matmul_precision": jax.config.jax_default_matmul_precision,
    }
    try:
        info["gpus"] = [f"{d} ({d.device_kind})" for d in jax.devices("gpu")]
    except RuntimeError as exc:
        info["gpus"] = []
        info["note"] = one_line(exc, 200)
    return info


def section_environment(out: str, quick: bool) -> dict[str, Any]:
    """Python, the GPUs and driver (``nvidia-smi``), and what torch, CuPy and JAX report about CUDA."""
    import platform

    env: dict[str, Any] = {
        "status": "passed",
        "python": sys.version.split()[0],
        "os": platform.platform(),
        "versions": {name: _version(name) for name in VERSIONS},
        "nvidia_smi": _nvidia_smi(),
        "env": {
            k: os.environ[k]
            for k in ("CUDA_VISIBLE_DEVICES", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_FLAGS")
            if k in os.environ
        },
    }
    for name, probe in (("torch", _torch_environment), ("cupy", _cupy_environment), ("jax", _jax_environment)):
        if importlib.util.find_spec(name) is None:
            env[name] = {"installed": False}
            continue
        try:
            env[name] = probe()
        except Exception as exc:
            env[name] = {"error": one_line(f"{type(exc).__name__}: {exc}")}
    env["device"] = device_name(env)
    return env


def device_name(env: dict[str, Any]) -> str:
    """The GPU's name, from the first source that knows it (nvidia-smi, torch, CuPy, JAX)."""
    smi = env.get("nvidia_smi")
    if isinstance(smi, list) and smi:
        names = [g.get("name", "?") for g in smi]
    else:
        names = [d["name"] for d in (env.get("torch") or {}).get("devices", [])]
        names = names or list((env.get("cupy") or {}).get("devices", []))
        names = names or list((env.get("jax") or {}).get("gpus", []))
    if not names:
        return "unknown"
    if len(set(names)) == 1:
        return names[0] if len(names) == 1 else f"{len(names)} x {names[0]}"
    return ", ".join(names)


def driver_version(env: dict[str, Any]) -> str:
    smi = env.get("nvidia_smi")
    if isinstance(smi, list) and smi:
        return smi[0].get("driver_version", "unknown")
    cuda = (env.get("cupy") or {}).get("driver_cuda")
    return f"unknown (driver supports CUDA {cuda})" if cuda else "unknown"
