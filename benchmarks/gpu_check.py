"""``python -m benchmarks.gpu_check --out DIR``: verify every CUDA path of this project in one command.

Run from a clone on a machine with an NVIDIA GPU and PyTorch, JAX and/or CuPy installed with CUDA. It
prints the device, the driver and the library versions, then runs four sections, each of which survives
the failure of the others (the error is recorded and the next section runs):

1. **tests**: the test suite's GPU cases (the ``torch-cuda``, ``jax-gpu`` and ``cupy`` parameters of the
   ``backend`` fixture, the CUDA cases of ``tests/test_torch_adapter.py`` and ``tests/test_examples_cupy.py``)
   with ``python -m pytest`` in a subprocess: pass/fail/skip counts, each failure's message, skip reasons.
2. **checks**: GPU-only correctness checks the CPU suite cannot see (the ``check_*`` functions below): where
   every result and gradient lands, host synchronisation inside the loss, CUDA graphs, and precision under
   TF32 and JAX's default matmul precision.
3. **bench**: the benchmark suite (:mod:`benchmarks.suite`) on the GPU platforms only, forward+backward,
   float32 and bfloat16, n in {256, 2048} x d in {2048, 8192}, against the official formulation, lightly
   (when installed) and the matmul floor; its own ``results.json``/``.md``/``.png`` go to ``DIR/bench``.
4. **train**: each training example (PyTorch, CuPy, JAX) for 2 epochs on digits on the GPU; the final
   linear-probe accuracy and the time come from each run's ``metrics.json``.

It writes ``DIR/gpu_report.md`` and the JSON behind it, ``DIR/gpu_report.json`` (the Markdown is
:func:`markdown` of that JSON), with every subprocess's output under ``DIR/logs``. Exit status: 0 when
everything that ran passed, 1 when a check, test, benchmark case or training run failed, 2 on a usage error
or when no CUDA GPU is visible (one line says so). ``--quick`` runs one benchmark shape, 1 training epoch
and no test marked ``slow``; ``--skip`` leaves sections out.

The sections that call the libraries themselves (the environment, the checks and the benchmark) run in
child processes of their own, as the tests and the examples do, so that a CUDA error that poisons a
context, or a crash, costs one section and not the report. PyTorch, CuPy and JAX share some of these
processes, so JAX's preallocation of 75% of the GPU memory is turned off
(``XLA_PYTHON_CLIENT_PREALLOCATE=false``, unless already set), here and in every child.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable
from importlib import metadata
from typing import Any

PROG = "python -m benchmarks.gpu_check"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXIT_FAILED = 1
EXIT_NO_GPU = 2
SECTIONS = ("tests", "checks", "bench", "train")
TITLES = {
    "tests": "Test suite, GPU cases",
    "checks": "GPU-only checks",
    "bench": "Benchmark on the GPU",
    "train": "Training examples on the GPU",
}
#: Relative tolerance of the precision checks (float32 against float64 on the same GPU).
PRECISION_TOLERANCE = 1e-5
#: Relative tolerance of compiled (CUDA graphs) against eager: float32 rounding, the compiler reorders sums.
COMPILE_TOLERANCE = 1e-4
#: The test suite's GPU cases: the GPU parameters of the ``backend`` fixture, the CUDA-marked cases of the
#: PyTorch adapter's tests and the CuPy example's tests; never this command's own tests (no recursion).
PYTEST_SELECTION = "(torch-cuda or jax-gpu or cupy or cuda) and not gpu_check"
BENCH_SHAPES = ((256, 2048), (2048, 2048), (256, 8192), (2048, 8192))
QUICK_BENCH_SHAPES = ((256, 2048),)
BENCH_DTYPES = ("float32", "bfloat16")
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
TIMEOUTS_S = {"environment": 300, "tests": 3600, "checks": 1800, "bench": 3600, "train_run": 1800}


# ======================================================================================================
# Is there a GPU?  (cheap, in this process, before anything else)
# ======================================================================================================


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


# ======================================================================================================
# Records, guards, child processes
# ======================================================================================================


def _one_line(text: Any, limit: int = 600) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _where(exc: BaseException) -> str | None:
    """``path:line (function)``, relative to the repository, of the innermost frame of ``exc`` in this
    repository outside this module: where a failure happened, without machine paths."""
    here = os.path.abspath(__file__)
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = os.path.abspath(frame.filename)
        if path.startswith(ROOT + os.sep) and path != here and ".venv" not in path:
            return f"{os.path.relpath(path, ROOT)}:{frame.lineno} ({frame.name})"
    return None


def _error_record(exc: BaseException) -> dict[str, Any]:
    return {"status": "error", "error": _one_line(f"{type(exc).__name__}: {exc}"), "where": _where(exc)}


def overall(statuses: Any) -> str:
    """A section's status from its parts': failed if one failed or raised, skipped if all were skipped."""
    statuses = set(statuses)
    if statuses & {"failed", "error"}:
        return "failed"
    return "skipped" if statuses == {"skipped"} else "passed"


def guarded(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn(*args)``, or a record ``{"status": "error", "error": ..., "where": ...}`` if it raises: one
    section's failure must not stop the others."""
    t0 = time.perf_counter()
    try:
        record = fn(*args)
    except Exception as exc:
        traceback.print_exc()
        record = _error_record(exc)
    record.setdefault("seconds", time.perf_counter() - t0)
    return record


def _jsonable(x: Any) -> Any:
    """NaN and infinities -> None (strict JSON has neither), tuples -> lists, NumPy scalars -> Python."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)) and callable(x.item):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(path: str, data: Any) -> None:
    with open(path, "w") as fh:
        json.dump(_jsonable(data), fh, indent=1, allow_nan=False)
        fh.write("\n")


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "\n".join(fh.read().splitlines()[-lines:])
    except OSError:
        return ""


def last_error_line(text: str) -> str:
    """The last line of ``text`` that names an exception (``SomeError: ...``), else its last non-empty
    line: what a failed process's log says, without the traceback's file paths."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    suffixes = ("Error", "Exception", "Exit", "Interrupt", "Failed")
    for line in reversed(lines):
        name = line.split(":", 1)[0]
        if ":" in line and name.replace(".", "").replace("_", "").isalnum() and name.endswith(suffixes):
            return _one_line(line, 600)
    return _one_line(lines[-1], 600) if lines else "(no output)"


def _run_logged(
    cmd: list[str], log_path: str, timeout: float, env: dict[str, str] | None = None
) -> tuple[int | None, float]:
    """Run ``cmd`` in the repository root with its output in ``log_path``; ``(exit status or None on
    timeout, wall seconds)``."""
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        try:
            rc = subprocess.run(
                cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, env={**os.environ, **(env or {})}
            ).returncode
        except subprocess.TimeoutExpired:
            rc = None
    return rc, time.perf_counter() - t0


def _shown(cmd: list[str], out: str) -> str:
    """``cmd`` as a shell line for the report: ``python`` for this interpreter, ``DIR`` for the output
    folder (no machine paths)."""
    return shlex.join(["python", *cmd[1:]]).replace(out + os.sep, "DIR/")


_CHILD = "import sys; from benchmarks.gpu_check import child_main; sys.exit(child_main(sys.argv[1:]))"


def in_child(section: str, out: str, quick: bool) -> dict[str, Any]:
    """Run ``section`` (a key of :data:`CHILD_SECTIONS`) in a fresh Python process and return its record.
    A crash or a timeout becomes an error record quoting the last error in ``DIR/logs/<section>.log``."""
    logs = os.path.join(out, "logs")
    record_path = os.path.join(logs, f"{section}.json")
    log_path = os.path.join(logs, f"{section}.log")
    with contextlib.suppress(FileNotFoundError):
        os.remove(record_path)
    rc, wall = _run_logged(
        [sys.executable, "-c", _CHILD, section, record_path, out, "quick" if quick else "full"],
        log_path,
        TIMEOUTS_S[section],
    )
    try:
        with open(record_path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        why = f"timed out after {TIMEOUTS_S[section]} s" if rc is None else f"exited with status {rc}"
        return {
            "status": "error",
            "seconds": wall,
            "error": f"the {section} process {why} without a record: {last_error_line(_tail(log_path, 40))} "
            f"(see logs/{section}.log)",
        }


def child_main(argv: list[str]) -> int:
    """Entry point of a section's child process: ``SECTION RECORD_PATH OUT quick|full``."""
    section, record_path, out, mode = argv
    record = guarded(CHILD_SECTIONS[section], out, mode == "quick")
    write_json(record_path, record)
    return 0


# ======================================================================================================
# Environment: device, driver, versions
# ======================================================================================================


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
        return f"nvidia-smi failed: {_one_line(proc.stderr or proc.stdout)}"
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
        info["note"] = _one_line(exc, 200)
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
            env[name] = {"error": _one_line(f"{type(exc).__name__}: {exc}")}
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


# ======================================================================================================
# 1. The test suite's GPU cases
# ======================================================================================================


def pytest_command(junit_path: str, quick: bool, workers: int = 0) -> list[str]:
    """The pytest command of the tests section; ``workers > 0`` spreads the cases over that many
    pytest-xdist processes (``-n``)."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "tests",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",  # pytest-benchmark, where installed, warns under pytest-xdist and the suite makes warnings errors
        "no:benchmark",
        "-k",
        PYTEST_SELECTION,
        f"--junitxml={junit_path}",
    ]
    return cmd + (["-m", "not slow"] if quick else []) + (["-n", str(workers)] if workers > 0 else [])


def gpu_backend_of(test_name: str) -> str | None:
    """Which GPU backend a test id exercises, from its parameters: ``torch-cuda`` (or a leading ``cuda``
    parameter, as in the autocast tests), ``jax-gpu`` or ``cupy``; ``None`` for the others."""
    params = test_name.partition("[")[2]
    if not params:
        return None
    if "torch-cuda" in params or params.startswith("cuda"):
        return "torch-cuda"
    if "jax-gpu" in params:
        return "jax-gpu"
    if params.startswith("cupy") or "-cupy" in params:
        return "cupy"
    return None


def parse_junit(path: str) -> dict[str, Any]:
    """Counts (in all and per GPU backend), failures (test id and message) and skip reasons from a pytest
    JUnit XML file. A test with a failure counts as failed, else with an error (setup or teardown) as an
    error, else skipped or xfailed as skipped, else passed."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    by_backend = {b: dict.fromkeys(counts, 0) for b in ("torch-cuda", "jax-gpu", "cupy")}
    failures: list[dict[str, str]] = []
    skips: dict[str, int] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        bad, outcome = case.find("failure"), "failed"
        if bad is None:
            bad, outcome = case.find("error"), "errors"
        if bad is not None:
            message = bad.get("message") or ((bad.text or "").strip().splitlines() or [""])[-1]
            failures.append({"test": test, "kind": outcome, "message": _one_line(message, 500)})
        elif case.find("skipped") is not None:
            outcome = "skipped"
            reason = _one_line(case.find("skipped").get("message") or "no reason given", 200)
            skips[reason] = skips.get(reason, 0) + 1
        else:
            outcome = "passed"
        counts[outcome] += 1
        backend = gpu_backend_of(case.get("name", ""))
        if backend is not None:
            by_backend[backend][outcome] += 1
    counts["total"] = sum(counts.values())
    return {
        "counts": counts,
        "by_backend": by_backend,
        "failures": failures,
        "skip_reasons": [{"reason": r, "count": n} for r, n in sorted(skips.items(), key=lambda kv: -kv[1])],
    }


def section_tests(out: str, quick: bool, workers: int = 0) -> dict[str, Any]:
    """The suite's GPU cases in a pytest subprocess. Passed when pytest exits 0 and at least one case of
    a GPU backend passed (all of them skipped on a GPU machine means the tests did not see the GPU)."""
    junit = os.path.join(out, "logs", "pytest.xml")
    with contextlib.suppress(FileNotFoundError):
        os.remove(junit)
    cmd = pytest_command(junit, quick, workers)
    rc, wall = _run_logged(cmd, os.path.join(out, "logs", "tests.log"), TIMEOUTS_S["tests"], {"TQDM_DISABLE": "1"})
    record: dict[str, Any] = {"command": _shown(cmd, out), "returncode": rc, "seconds": wall, "log": "logs/tests.log"}
    if not os.path.exists(junit):
        why = "timed out" if rc is None else f"exited with status {rc}"
        return {
            **record,
            "status": "error",
            "error": f"pytest {why} without a report: "
            f"{last_error_line(_tail(os.path.join(out, 'logs', 'tests.log'), 40))} (see logs/tests.log)",
        }
    record.update(parse_junit(junit))
    counts = record["counts"]
    gpu_passed = sum(c["passed"] for c in record["by_backend"].values())
    if rc == 0 and gpu_passed > 0:
        record["status"] = "passed"
    else:
        record["status"] = "failed"
        if counts["failed"] + counts["errors"] == 0:
            record["error"] = (
                "no test of a GPU backend passed (all skipped: do the tests see the GPU?)"
                if rc in (0, 5)
                else f"pytest exited with status {rc}"
            )
    return record


# ======================================================================================================
# 2. GPU-only checks
# ======================================================================================================


class Skip(Exception):
    """A check that cannot run here (its library or device is missing); the message says why."""


def _need(module: str) -> Any:
    if importlib.util.find_spec(module) is None:
        raise Skip(f"{module} is not installed")
    return importlib.import_module(module)


def _torch_cuda() -> Any:
    torch = _need("torch")
    if not torch.cuda.is_available():
        raise Skip("torch sees no CUDA GPU")
    return torch


def _torch_device(torch: Any, index: int = 0) -> Any:
    """CUDA device ``index`` (one place to change to run the checks' logic on a CPU stand-in)."""
    return torch.device("cuda", index)


def _jax_gpu() -> tuple[Any, Any]:
    jax = _need("jax")
    try:
        return jax, jax.devices("gpu")
    except RuntimeError:
        raise Skip("jax has no GPU backend (a jaxlib without CUDA?)") from None


def _views(n: int, d: int) -> tuple[Any, Any]:
    """The benchmark's two correlated float32 views (:func:`benchmarks.platforms.host_arrays`)."""
    from .platforms import host_arrays

    return host_arrays(n, d, seed=1)


def relative_error(actual: Any, expected: Any) -> float:
    """``max |actual - expected| / max |expected|`` over all entries (for a scalar, its relative error)."""
    import numpy as np

    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / max(float(np.max(np.abs(expected))), 1e-300))


def _result(checks: dict[str, bool], details: list[str], ok_message: str, **extra: Any) -> dict[str, Any]:
    """A check's record: ``failed`` with the details of what did not hold, else ``passed``."""
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        return {"status": "failed", "message": "; ".join(details) or ", ".join(failed), **extra}
    return {"status": "passed", "message": ok_message, **extra}


def _placement(outputs: dict[str, str], expected: str, what: str) -> dict[str, Any]:
    """Compare where each output landed (``outputs``: name -> place) with ``expected``."""
    wrong = {name: place for name, place in outputs.items() if place != expected}
    details = [f"{name} is {place}, expected {expected}" for name, place in wrong.items()]
    rows = [{"output": name, "where": place, "expected": expected} for name, place in wrong.items()]
    return _result(
        {n: n not in wrong for n in outputs},
        details,
        f"all {len(outputs)} outputs ({what}) on {expected}",
        rows=rows,
        places=outputs,
    )


def check_cupy_placement() -> dict[str, Any]:
    """CuPy arrays on the last visible GPU: ``vicreg_loss``, every field of ``vicreg_terms`` and
    ``value_and_grad``'s loss and gradients come back as CuPy arrays on that GPU.

    CuPy has no autodiff, so ``value_and_grad`` is what a CuPy training loop calls every step: a result
    created with NumPy on the host, or on the default device of a multi-GPU machine, would cost a
    transfer each step or fail later with a device mismatch."""
    cupy = _need("cupy")
    import vicreg

    k = cupy.cuda.runtime.getDeviceCount() - 1
    a, b = _views(64, 256)
    with cupy.cuda.Device(k):
        z1, z2 = cupy.asarray(a), cupy.asarray(b)
        outputs = {"vicreg_loss": vicreg.vicreg_loss(z1, z2)}
        outputs.update({f"vicreg_terms.{name}": v for name, v in vicreg.vicreg_terms(z1, z2)._asdict().items()})
        loss, (g1, g2) = vicreg.value_and_grad(z1, z2)
        outputs.update({"value_and_grad loss": loss, "gradient of z1": g1, "gradient of z2": g2})

    def place(x: Any) -> str:
        return f"cupy GPU {x.device.id}" if isinstance(x, cupy.ndarray) else type(x).__name__

    return _placement({name: place(x) for name, x in outputs.items()}, f"cupy GPU {k}", "the core on CuPy")


def check_torch_placement() -> dict[str, Any]:
    """torch CUDA tensors on the last visible GPU (called with the default device left at GPU 0): the
    core's loss and its autograd gradients, the core's ``value_and_grad``, and ``vicreg.torch.VICRegLoss``
    (its terms, and ``backward()``'s gradients, float32 and bfloat16) all stay on the inputs' GPU;
    bfloat16 inputs give a float32 loss and bfloat16 gradients, as documented.

    Any tensor the loss makes itself (a constant, a mask, an index) must be created on the inputs' device:
    one made on the default device would fail or copy on a multi-GPU machine."""
    torch = _torch_cuda()
    import vicreg
    import vicreg.torch as vt

    dev = _torch_device(torch, torch.cuda.device_count() - 1)
    a, b = _views(64, 256)

    def leaves(dtype: Any) -> tuple[Any, Any]:
        return (
            torch.tensor(a, device=dev, dtype=dtype, requires_grad=True),
            torch.tensor(b, device=dev, dtype=dtype, requires_grad=True),
        )

    z1, z2 = leaves(torch.float32)
    outputs: dict[str, Any] = {}
    loss = vicreg.vicreg_loss(z1, z2)
    outputs.update(
        {
            "core vicreg_loss": loss,
            **dict(zip(("core autograd grad z1", "core autograd grad z2"), torch.autograd.grad(loss, (z1, z2)))),
        }
    )
    vloss, (g1, g2) = vicreg.value_and_grad(z1.detach(), z2.detach())
    outputs.update({"core value_and_grad loss": vloss, "core value_and_grad g1": g1, "core value_and_grad g2": g2})
    module = vt.VICRegLoss()
    outputs.update({f"VICRegLoss.terms().{k}": v for k, v in module.terms(z1, z2)._asdict().items()})
    dtypes: dict[str, tuple[str, str]] = {}
    for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16")):
        z1, z2 = leaves(dtype)
        loss = module(z1, z2)
        loss.backward()
        outputs.update(
            {
                f"VICRegLoss {name} loss": loss,
                f"VICRegLoss {name} z1.grad": z1.grad,
                f"VICRegLoss {name} z2.grad": z2.grad,
            }
        )
        dtypes[f"VICRegLoss {name} loss"] = (str(loss.dtype), "torch.float32")
        dtypes[f"VICRegLoss {name} z1.grad"] = (str(z1.grad.dtype), f"torch.{name}")
    record = _placement(
        {k: str(v.device) if isinstance(v, torch.Tensor) else type(v).__name__ for k, v in outputs.items()},
        str(dev),
        "the core and vicreg.torch on torch CUDA",
    )
    bad_dtypes = [f"{k} is {got}, expected {want}" for k, (got, want) in dtypes.items() if got != want]
    if bad_dtypes:
        placed = record["status"] == "passed"
        record["status"] = "failed"
        record["message"] = "; ".join(([] if placed else [record["message"]]) + bad_dtypes)
    record["dtypes"] = {k: got for k, (got, _) in dtypes.items()}
    return record


def check_jax_placement() -> dict[str, Any]:
    """JAX arrays committed to the last visible GPU: the core's ``vicreg_loss`` and ``value_and_grad``,
    and ``vicreg.jax.vicreg_loss`` / ``vicreg_terms`` under ``jax.jit(jax.value_and_grad(...))``, return
    arrays on that GPU.

    A result on another device (the default one, or the host through a NumPy detour) would be moved back
    every step and, inside ``jit``, would be a cross-device transfer in the compiled step."""
    jax, gpus = _jax_gpu()
    import jax.numpy as jnp

    import vicreg
    import vicreg.jax as vj

    dev = gpus[-1]
    a, b = _views(64, 256)
    z1, z2 = jax.device_put(jnp.asarray(a), dev), jax.device_put(jnp.asarray(b), dev)
    outputs: dict[str, Any] = {"core vicreg_loss": vicreg.vicreg_loss(z1, z2)}
    loss, (g1, g2) = vicreg.value_and_grad(z1, z2)
    outputs.update({"core value_and_grad loss": loss, "core value_and_grad g1": g1, "core value_and_grad g2": g2})
    loss, (g1, g2) = jax.jit(jax.value_and_grad(vj.vicreg_loss, argnums=(0, 1)))(z1, z2)
    outputs.update({"vicreg.jax loss (jit)": loss, "vicreg.jax grad z1 (jit)": g1, "vicreg.jax grad z2 (jit)": g2})
    terms = jax.jit(vj.vicreg_terms)(z1, z2)
    outputs.update({f"vicreg.jax.vicreg_terms.{k}": v for k, v in terms._asdict().items()})

    def place(x: Any) -> str:
        return ", ".join(sorted(str(d) for d in x.devices())) if isinstance(x, jax.Array) else type(x).__name__

    return _placement({k: place(v) for k, v in outputs.items()}, str(dev), "the core and vicreg.jax on a JAX GPU")


def _torch_forward_backward(loss_fn: Any, z1: Any, z2: Any) -> None:
    loss = loss_fn(z1, z2)
    loss.backward()


def check_torch_no_host_sync() -> dict[str, Any]:
    """Forward+backward of ``vicreg.torch.VICRegLoss()`` on CUDA tensors never synchronises the host
    with the GPU (``torch.cuda.set_sync_debug_mode("error")`` around it, after one warm-up call), on the
    Gram path (n < d) and the ``d x d`` path, for both backward modes; the module keeps its defaults
    (``gather_distributed=True``) with no process group, the common single-GPU case.

    A host synchronisation inside the loss (an ``.item()``, a Python ``if`` on a tensor, a copy to the
    CPU) makes the CPU wait until the GPU has drained its queue, so the next step's kernels cannot be
    queued while this one runs: the GPU idles for the launch latency of every kernel after it. PyTorch's
    sync debug mode catches the synchronising calls it knows of (not those inside ``torch.distributed``)."""
    torch = _torch_cuda()
    import vicreg.torch as vt

    dev = _torch_device(torch)
    rows, details = [], []
    for n, d in ((256, 2048), (1024, 128)):
        a, b = _views(n, d)
        for backward in ("analytic", "autograd"):
            loss_fn = vt.VICRegLoss(backward=backward)

            def leaves() -> tuple[Any, Any]:  # called within this iteration only
                return (
                    torch.tensor(a, device=dev, requires_grad=True),  # noqa: B023
                    torch.tensor(b, device=dev, requires_grad=True),  # noqa: B023
                )

            _torch_forward_backward(loss_fn, *leaves())  # warm-up: one-time library initialisation
            z1, z2 = leaves()
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                _torch_forward_backward(loss_fn, z1, z2)
                rows.append({"n x d": f"{n} x {d}", "backward": backward, "host syncs": "none"})
            except RuntimeError as exc:
                where = _where(exc) or "no frame of this repository in the traceback"
                found = f"{_one_line(exc, 200)} ({where})"
                rows.append({"n x d": f"{n} x {d}", "backward": backward, "host syncs": found})
                details.append(f"{n} x {d}, backward={backward!r}: {found}")
            finally:
                torch.cuda.set_sync_debug_mode(0)
    return _result(
        {str(i): r["host syncs"] == "none" for i, r in enumerate(rows)},
        details,
        f"no host synchronisation in {len(rows)} forward+backward calls",
        rows=rows,
    )


def _loss_and_grads(step: Callable[[Any, Any], Any], params: list[Any], x1: Any, x2: Any) -> tuple[float, list[Any]]:
    for p in params:
        p.grad = None
    loss = step(x1, x2)
    loss.backward()
    # copies: the outputs of a CUDA graph are overwritten by its next replay
    return float(loss.detach()), [p.grad.detach().clone() for p in params]


def _flat(torch: Any, tensors: list[Any]) -> Any:
    return torch.cat([t.reshape(-1) for t in tensors]).double().cpu().numpy()


def check_torch_cuda_graphs(steps: int = 5) -> dict[str, Any]:
    """A training step containing ``vicreg.torch.VICRegLoss`` (a small MLP on two views, loss, backward),
    compiled with ``torch.compile(mode="reduce-overhead")`` (inductor with CUDA graphs), gives the eager
    loss and parameter gradients at every step, recording and replays included, with CUDA graphs actually
    used (inductor is told to raise instead of silently falling back).

    A CUDA graph replays recorded kernels on static buffers: a loss that synchronises, creates CPU
    tensors, or keeps Python state between calls would make inductor skip the graphs (losing their
    launch-overhead savings) or replay stale values."""
    torch = _torch_cuda()
    import torch._inductor.config as inductor_config

    import vicreg.torch as vt

    dev = _torch_device(torch)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1024)).to(dev)
    params = list(model.parameters())
    loss_fn = vt.VICRegLoss()

    def step(x1: Any, x2: Any) -> Any:
        return loss_fn(model(x1), model(x2))

    compiled = torch.compile(step, mode="reduce-overhead")
    # a skipped CUDA graph raises, with inductor's reason, instead of silently running without graphs
    strict = (
        inductor_config.patch({"triton.cudagraph_or_error": True})
        if hasattr(inductor_config.triton, "cudagraph_or_error")
        else contextlib.nullcontext()
    )
    rows, details = [], []
    with strict:
        for i in range(steps):
            g = torch.Generator(device=dev).manual_seed(i)
            x1 = torch.randn(128, 64, device=dev, generator=g)
            x2 = x1 + 0.1 * torch.randn(128, 64, device=dev, generator=g)
            eager_loss, eager_grads = _loss_and_grads(step, params, x1, x2)
            torch.compiler.cudagraph_mark_step_begin()
            try:
                comp_loss, comp_grads = _loss_and_grads(compiled, params, x1, x2)
            except Exception as exc:
                raised = _one_line(f"{type(exc).__name__}: {exc}", 400)
                details.append(f"step {i + 1}: the compiled step raised {raised}")
                break
            # one relative error over all parameters: some entries (the last bias) are 0 up to rounding,
            # the loss being invariant to a shift of the embeddings' columns
            grad_err = relative_error(_flat(torch, comp_grads), _flat(torch, eager_grads))
            rows.append(
                {
                    "step": i + 1,
                    "eager loss": eager_loss,
                    "compiled loss": comp_loss,
                    "loss error": relative_error(comp_loss, eager_loss),
                    "gradient error": grad_err,
                }
            )
    worst = max([max(r["loss error"], r["gradient error"]) for r in rows], default=float("nan"))
    if rows and worst > COMPILE_TOLERANCE:
        details.append(f"compiled differs from eager by {worst:.1e} (relative) > {COMPILE_TOLERANCE:g}")
    return _result(
        {"ran": len(rows) == steps, "close": worst <= COMPILE_TOLERANCE},
        details,
        f"{steps} steps under CUDA graphs equal eager to {worst:.1e} (relative, tolerance {COMPILE_TOLERANCE:g})",
        rows=rows,
        worst_error=worst,
    )


def dominant(n: int, d: int, std: float, seed: int = 0) -> tuple[Any, Any]:
    """Standard normal features, the first dimension with standard deviation ``std``, and a second view
    with 5% noise: the dominant column's products dwarf the others in every sum."""
    import numpy as np

    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d))
    z[:, 0] *= std
    return z, z + 0.05 * z.std(axis=0, keepdims=True) * rng.standard_normal(z.shape)


def whitened(n: int, d: int, std: float, seed: int = 0) -> tuple[Any, Any]:
    """Nearly whitened features (n <= d): centred rows as orthogonal as centring allows, each column's
    variance ~ ``std**2``, a 1e-3 perturbation and a random mean; a second view with 5% noise. The
    Gram matrix is nearly diagonal, so the covariance term is a small number left after large ones cancel."""
    import numpy as np

    if n > d:
        raise ValueError(f"whitened rows need n <= d, got {n} x {d}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    z = np.linalg.qr((x - x.mean(axis=0)).T)[0].T
    z -= z.mean(axis=0)
    z *= np.sqrt((n - 1) / np.mean(np.sum(z * z, axis=0)))
    z = std * (z + 1e-3 * rng.standard_normal(z.shape)) + rng.standard_normal(d)
    return z, z + 0.05 * z.std(axis=0, keepdims=True) * rng.standard_normal(z.shape)


def adversarial_cases() -> dict[str, tuple[Any, Any]]:
    """The precision checks' inputs, float64 on the host, at the official width (n = 256, d = 8192)."""
    return {
        "one dominant dimension (std 1000), 256 x 8192": dominant(256, 8192, 1000.0),
        "nearly whitened (std 100), 256 x 8192": whitened(256, 8192, 100.0),
    }


def _errors(result: tuple[float, Any, Any], expected: tuple[float, Any, Any]) -> tuple[float, float]:
    """(loss error, gradient error): relative errors, the gradient's the larger of the two views'."""
    return (
        relative_error(result[0], expected[0]),
        max(relative_error(result[1], expected[1]), relative_error(result[2], expected[2])),
    )


def _precision_rows(
    cases: dict[str, tuple[Any, Any]],
    reference: Callable,
    entries: dict[str, tuple[str, Callable]],
    run: Callable,
    reduced: Callable[[], Any],
    full: Callable[[], Any],
    reduced_label: str,
) -> list[dict[str, Any]]:
    """For each case and entry point ``(role, fn)``: the float32 errors against ``reference`` (float64,
    same device) under the user's reduced matmul precision (``reduced()``, a context manager) and, for
    comparison, at full float32 precision (``full()``). ``run(fn, z1, z2)`` -> (loss, g1, g2) on the host."""
    rows = []
    for case, (z1, z2) in cases.items():
        expected = reference(z1, z2)
        for entry, (role, fn) in entries.items():
            with reduced():
                loss_err, grad_err = _errors(run(fn, z1, z2), expected)
            with full():
                full_loss_err, full_grad_err = _errors(run(fn, z1, z2), expected)
            ok = max(loss_err, grad_err) <= PRECISION_TOLERANCE
            rows.append(
                {
                    "case": case,
                    "entry point": entry,
                    "role": role,
                    f"loss error, {reduced_label}": loss_err,
                    f"gradient error, {reduced_label}": grad_err,
                    "loss error, full float32": full_loss_err,
                    "gradient error, full float32": full_grad_err,
                    "within 1e-5": ok if role == "checked" else f"{'yes' if ok else 'no'} (not judged)",
                }
            )
    return rows


def _precision_result(rows: list[dict[str, Any]], reduced_label: str, extra: dict[str, Any]) -> dict[str, Any]:
    checked = [r for r in rows if r["role"] == "checked"]
    details = [
        f"{r['entry point']} on {r['case']}: loss error {r[f'loss error, {reduced_label}']:.1e}, "
        f"gradient error {r[f'gradient error, {reduced_label}']:.1e} > {PRECISION_TOLERANCE:g}"
        for r in checked
        if r["within 1e-5"] is not True
    ]
    worst = max(
        (max(r[f"loss error, {reduced_label}"], r[f"gradient error, {reduced_label}"]) for r in checked),
        default=float("nan"),
    )
    return _result(
        {str(i): r["within 1e-5"] is True for i, r in enumerate(checked)},
        details,
        f"worst float32 error {worst:.1e} <= {PRECISION_TOLERANCE:g} ({reduced_label})",
        rows=rows,
        worst_error=worst,
        **extra,
    )


@contextlib.contextmanager
def _tf32(torch: Any, on: bool):
    """Set TF32 the way a user does (``allow_tf32`` and the float32 matmul precision), then restore
    both, and the newer ``fp32_precision`` switch that they also set, where torch has it."""
    matmul = torch.backends.cuda.matmul
    saved = (matmul.allow_tf32, torch.get_float32_matmul_precision(), getattr(matmul, "fp32_precision", None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # newer torch warns that these are the legacy switches
        matmul.allow_tf32 = on
        torch.set_float32_matmul_precision("high" if on else "highest")
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            matmul.allow_tf32 = saved[0]
            torch.set_float32_matmul_precision(saved[1])
            if saved[2] is not None:
                matmul.fp32_precision = saved[2]


def check_torch_tf32_precision() -> dict[str, Any]:
    """With TF32 switched on globally by the user (``torch.backends.cuda.matmul.allow_tf32 = True`` and
    ``torch.set_float32_matmul_precision("high")``), the float32 loss and gradients of
    ``vicreg.torch.VICRegLoss()`` and of ``vicreg.vicreg_loss`` on torch tensors (both with the analytic
    backward) on adversarial inputs stay within 1e-5 (relative) of float64 computed on the same GPU.
    ``VICRegLoss(backward="autograd")``, whose backward products autograd runs at the global setting,
    is measured alongside for information, and every entry also at full float32.

    TF32 rounds each product's inputs to 10 mantissa bits (about 5e-4 relative). The covariance term
    sums squares of large products of which only a small part survives (the off-diagonal part, after
    the diagonal's much larger share is removed), so errors of that size in the products ruin it,
    unless the loss computes its products at full float32 precision whatever the global setting."""
    torch = _torch_cuda()
    import numpy as np

    import vicreg
    import vicreg.torch as vt

    module = vt.VICRegLoss()
    dev = _torch_device(torch)

    def run(fn: Callable, z1: Any, z2: Any, dtype: Any = torch.float32) -> tuple[float, Any, Any]:
        a = torch.tensor(z1, dtype=dtype, device=dev, requires_grad=True)
        b = torch.tensor(z2, dtype=dtype, device=dev, requires_grad=True)
        loss = fn(a, b)
        g1, g2 = torch.autograd.grad(loss, (a, b))
        return float(loss.detach()), g1.double().cpu().numpy(), g2.double().cpu().numpy()

    cases = adversarial_cases()
    reference_check = {}
    for case, (z1, z2) in cases.items():  # the float64 GPU reference against NumPy's float64 core
        loss, (g1, g2) = vicreg.value_and_grad(np.asarray(z1), np.asarray(z2))
        reference_check[case] = max(_errors(run(module, z1, z2, torch.float64), (float(loss), g1, g2)))
    rows = _precision_rows(
        cases,
        lambda z1, z2: run(module, z1, z2, torch.float64),
        {
            "vicreg.torch.VICRegLoss()": ("checked", module),
            "vicreg.vicreg_loss": ("checked", vicreg.vicreg_loss),
            'vicreg.torch.VICRegLoss(backward="autograd")': ("info", vt.VICRegLoss(backward="autograd")),
        },
        run,
        lambda: _tf32(torch, True),
        lambda: _tf32(torch, False),
        "TF32 on",
    )
    record = _precision_result(rows, "TF32 on", {"float64_gpu_vs_numpy": reference_check})
    bad_reference = {c: e for c, e in reference_check.items() if not e <= 1e-9}
    if bad_reference:
        record["status"] = "failed"
        record["message"] += f"; the float64 GPU result differs from NumPy's float64 by {bad_reference}"
    return record


def check_jax_default_precision() -> dict[str, Any]:
    """With ``jax.default_matmul_precision`` left at its default, ``vicreg.jax.vicreg_loss``'s float32
    loss and gradients (``jax.jit(jax.value_and_grad(...))``) on adversarial inputs stay within 1e-5
    (relative) of float64 on the same GPU, and so do the core's ``value_and_grad`` on JAX arrays; every
    entry is also measured at ``"highest"`` precision.

    XLA's default precision for float32 products on GPUs with tensor cores may use TF32 (or bfloat16
    passes on TPUs), which would ruin the covariance term as in the PyTorch check; ``vicreg.jax``
    and the core compute their products at ``"highest"`` precision for that reason."""
    jax, gpus = _jax_gpu()
    import jax.numpy as jnp
    import numpy as np

    import vicreg
    import vicreg.jax as vj

    dev = gpus[0]

    def run(fn: Callable, z1: Any, z2: Any, dtype: Any = jnp.float32) -> tuple[float, Any, Any]:
        a, b = (jax.device_put(jnp.asarray(z, dtype=dtype), dev) for z in (z1, z2))
        loss, (g1, g2) = fn(a, b)
        return float(loss), np.asarray(g1, np.float64), np.asarray(g2, np.float64)

    def reference(z1: Any, z2: Any) -> tuple[float, Any, Any]:
        with jax.enable_x64(True):
            return run(jax.jit(jax.value_and_grad(vj.vicreg_loss, argnums=(0, 1))), z1, z2, jnp.float64)

    adapter = jax.jit(jax.value_and_grad(vj.vicreg_loss, argnums=(0, 1)))
    rows = _precision_rows(
        adversarial_cases(),
        reference,
        {
            "vicreg.jax.vicreg_loss (jit, value_and_grad)": ("checked", adapter),
            "vicreg.value_and_grad (core) on JAX arrays": ("checked", vicreg.value_and_grad),
        },
        run,
        contextlib.nullcontext,
        lambda: jax.default_matmul_precision("highest"),
        "default precision",
    )
    return _precision_result(
        rows, "default precision", {"default_matmul_precision": jax.config.jax_default_matmul_precision}
    )


CHECKS: tuple[Callable[[], dict[str, Any]], ...] = (
    check_cupy_placement,
    check_torch_placement,
    check_jax_placement,
    check_torch_no_host_sync,
    check_torch_cuda_graphs,
    check_torch_tf32_precision,
    check_jax_default_precision,
)


def run_check(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One check's record: name, what it verifies (its docstring's first paragraph), why (the second),
    status (passed, failed, skipped, error), message, seconds and what it measured."""
    name = fn.__name__.removeprefix("check_")
    paragraphs = (fn.__doc__ or "").strip().split("\n\n")
    t0 = time.perf_counter()
    print(f"check {name} ...", flush=True)
    try:
        record = fn()
    except Skip as exc:
        record = {"status": "skipped", "message": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        record = _error_record(exc)
        record["message"] = record.pop("error")
    record = {
        "name": name,
        "what": _one_line(paragraphs[0], 2000),
        "why": _one_line(paragraphs[1], 2000) if len(paragraphs) > 1 else "",
        **record,
        "seconds": time.perf_counter() - t0,
    }
    print(f"check {name}: {record['status']}: {record.get('message', '')}", flush=True)
    return record


def section_checks(out: str, quick: bool) -> dict[str, Any]:
    """Every function of :data:`CHECKS`, each guarded; failed when one failed or raised."""
    checks = [run_check(fn) for fn in CHECKS]
    return {"status": overall(c["status"] for c in checks), "checks": checks}


# ======================================================================================================
# 3. The benchmark suite on the GPU
# ======================================================================================================


def bench_config(quick: bool) -> Any:
    """The suite's :class:`~benchmarks.suite.Config` for the GPU platforms, forward+backward, float32 and
    bfloat16; ``quick``: one shape and the quick timing budget."""
    from .suite import Config, quick_config

    common = dict(
        backends=("torch", "jax", "cupy"), devices=("gpu",), dtypes=BENCH_DTYPES, modes=("backward",), progress=False
    )
    if quick:
        return quick_config(shapes=QUICK_BENCH_SHAPES, **common)
    return Config(shapes=BENCH_SHAPES, **common)


def bench_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per case of a suite run: median ms per implementation and our ratios (``ours``: the
    adapter where there is one, else the core)."""
    rows = []
    for case in results["cases"]:
        ours = "adapter" if "adapter" in case["ratios"] else "vicreg"
        ratios = case["ratios"].get(ours, {})
        diffs = [r["rel_diff_vs_vicreg"] for r in case["impls"].values() if r.get("rel_diff_vs_vicreg") is not None]
        rows.append(
            {
                "platform": case["platform"],
                "dtype": case["dtype"],
                "mode": case["mode"],
                "n": case["n"],
                "d": case["d"],
                "median_ms": {role: r["time"]["median_ms"] for role, r in case["impls"].items()},
                "peak_mib": {role: r["peak_bytes"] / 2**20 for role, r in case["impls"].items() if r.get("peak_bytes")},
                "ours": ours,
                "speedup_vs_official": ratios.get("speedup_vs_official"),
                "speedup_vs_lightly": ratios.get("speedup_vs_lightly"),
                "over_matmul": ratios.get("over_matmul"),
                "over_gemms": ratios.get("over_gemms"),
                "max_loss_rel_diff": max(diffs, default=None),
            }
        )
    return rows


def section_bench(out: str, quick: bool) -> dict[str, Any]:
    """The benchmark suite on the GPU platforms; its own files go to ``DIR/bench``. Failed when no GPU
    platform was found or a case failed (out of memory, an exception)."""
    from . import report, suite

    config = bench_config(quick)
    results = suite.run(config, log=lambda s: print(s, flush=True))
    results["meta"]["command"] = f"{PROG} (bench section{', --quick' if quick else ''})"
    try:
        files = {k: os.path.relpath(v, out) for k, v in report.write(results, os.path.join(out, "bench")).items()}
    except Exception as exc:  # the timings are in hand: keep them even if the suite's files fail
        traceback.print_exc()
        files = {"error": _one_line(f"{type(exc).__name__}: {exc}")}
    notes = results["meta"]["notes"]
    failed = [n for n in notes if ": failed (" in n]
    rows = bench_rows(results)
    record: dict[str, Any] = {
        "status": "failed" if failed or not rows else "passed",
        "shapes": [list(s) for s in config.shapes],
        "dtypes": list(config.dtypes),
        "modes": list(config.modes),
        "rows": rows,
        "notes": notes,
        "devices": results["meta"]["environment"]["devices"],
        "files": files,
    }
    if failed:
        record["error"] = "; ".join(failed)
    elif not rows:
        record["error"] = "no GPU platform ran: " + "; ".join(notes)
    return record


# ======================================================================================================
# 4. The training examples on the GPU
# ======================================================================================================

#: The PyTorch example runs on the CPU from its command line; its ``main`` takes ``device=``.
_TORCH_ON_CUDA = 'import sys; from backends.torch.train import main; main(sys.argv[1:], device="cuda")'


def training_commands(out: str, epochs: int) -> dict[str, list[str]]:
    """The command of each example: PyTorch (its ``main(device="cuda")``; the command line has no device
    flag), CuPy (always on the GPU) and JAX (on its default backend, the GPU when jaxlib has CUDA)."""

    def args(name: str) -> list[str]:
        return ["--epochs", str(epochs), "--out", os.path.join(out, "train", name)]

    return {
        "torch": [sys.executable, "-c", _TORCH_ON_CUDA, *args("torch")],
        "cupy": [sys.executable, "-m", "backends.cupy.train", *args("cupy")],
        "jax": [sys.executable, "-m", "backends.jax.train", *args("jax")],
    }


def _metrics_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    history = metrics.get("history") or [{}]
    return {
        "linear_probe_accuracy": metrics.get("linear_probe_accuracy"),
        "random_init_linear_probe_accuracy": metrics.get("random_init_linear_probe_accuracy"),
        "knn_accuracy": metrics.get("knn_accuracy"),
        "final_loss": history[-1].get("loss"),
        "epochs": metrics.get("epochs"),
        "seconds": metrics.get("seconds"),
        "device": metrics.get("device"),
        "collapsed": metrics.get("collapsed"),
    }


def judge_training(name: str, rc: int | None, metrics: dict[str, Any] | None, log_tail: str) -> tuple[str, str]:
    """(status, message) of one example's run: passed when it exited 0 with a ``metrics.json`` whose
    every epoch's loss is finite and whose device is a GPU; the CuPy example's exit status 2 (no CuPy)
    is a skip."""
    if name == "cupy" and rc == EXIT_NO_GPU:
        return "skipped", last_error_line(log_tail)
    if rc is None:
        return "failed", f"timed out after {TIMEOUTS_S['train_run']} s"
    if rc != 0 or metrics is None:
        return "failed", f"exit status {rc}: {last_error_line(log_tail)}"
    losses = [r.get("loss") for r in metrics.get("history", [])]
    if not losses or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in losses):
        return "failed", f"non-finite or missing epoch losses: {losses}"
    if str(metrics.get("device", "")).startswith("cpu"):
        return "failed", f"ran on {metrics['device']}, not on the GPU"
    return "passed", f"linear probe {metrics['linear_probe_accuracy']:.4f} on {metrics['device']}"


def train_one(name: str, cmd: list[str], out: str) -> dict[str, Any]:
    """Run one example into ``DIR/train/<name>`` (output in ``DIR/logs/train-<name>.log``) and record
    its verdict with the accuracies, losses and times of its ``metrics.json``."""
    run_dir = os.path.join(out, "train", name)
    metrics_path = os.path.join(run_dir, "metrics.json")
    with contextlib.suppress(FileNotFoundError):
        os.remove(metrics_path)  # never report a previous run's metrics
    log_path = os.path.join(out, "logs", f"train-{name}.log")
    rc, wall = _run_logged(cmd, log_path, TIMEOUTS_S["train_run"], {"TQDM_DISABLE": "1"})
    metrics = None
    with contextlib.suppress(OSError, ValueError), open(metrics_path) as fh:
        metrics = json.load(fh)
    status, message = judge_training(name, rc, metrics, _tail(log_path, 40))
    return {
        "example": name,
        "status": status,
        "message": message,
        "returncode": rc,
        "wall_s": wall,
        "seconds": None,
        "command": _shown(cmd, out),
        "log": os.path.relpath(log_path, out),
        **(_metrics_summary(metrics) if metrics else {}),
    }


def section_train(out: str, quick: bool) -> dict[str, Any]:
    """Each example for 2 epochs (1 with ``--quick``) on digits; failed when one failed."""
    runs = []
    for name, cmd in training_commands(out, 1 if quick else 2).items():
        print(f"  train {name} ...", flush=True)
        runs.append(guarded(train_one, name, cmd, out) | {"example": name})
        print(f"  train {name}: {runs[-1]['status']}: {runs[-1].get('message', runs[-1].get('error', ''))}", flush=True)
    return {"status": overall(r["status"] for r in runs), "epochs": 1 if quick else 2, "runs": runs}


CHILD_SECTIONS: dict[str, Callable[[str, bool], dict[str, Any]]] = {
    "environment": section_environment,
    "checks": section_checks,
    "bench": section_bench,
}


# ======================================================================================================
# The report: JSON -> Markdown
# ======================================================================================================


def _fmt(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "**no**"
    if isinstance(x, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in x.items())
    if isinstance(x, float):
        if x == 0 or 1e-2 <= abs(x) < 1e4:
            return f"{x:.4g}"
        return f"{x:.1e}"
    return str(x)


def _cell(x: Any) -> str:
    return _one_line(_fmt(x), 400).replace("|", "\\|")


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def _dict_table(rows: list[dict[str, Any]]) -> list[str]:
    headers = list(rows[0]) if rows else []
    return _table(headers, [[r.get(h) for h in headers] for r in rows]) if rows else []


def _accuracy(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def _seconds(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def _ms(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def _ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}x" if x < 100 else f"{x:.0f}x"


STATUS_MARK = {"passed": "passed", "failed": "**FAILED**", "error": "**ERROR**", "skipped": "skipped"}


def _status(record: dict[str, Any]) -> str:
    return STATUS_MARK.get(record.get("status", "error"), str(record.get("status")))


def _section_head(number: int, name: str, record: dict[str, Any]) -> list[str]:
    lines = [f"## {number}. {TITLES[name]}: {_status(record)}", ""]
    if record.get("status") == "skipped" and record.get("reason"):
        lines += [f"Skipped: {record['reason']}.", ""]
    if record.get("error"):
        where = f" (at `{record['where']}`)" if record.get("where") else ""
        lines += [f"Error: {_one_line(record['error'], 2000)}{where}", ""]
    return lines


def _md_environment(env: dict[str, Any]) -> list[str]:
    lines = ["## Environment", ""]
    if env.get("status") == "error":
        return [*lines, f"Could not be read: {env.get('error')}", ""]
    lines.append(f"- Device: **{device_name(env)}**; driver {driver_version(env)}")
    torch = env.get("torch") or {}
    if torch.get("devices"):
        for i, d in enumerate(torch["devices"]):
            lines.append(f"- GPU {i}: {d['name']}, compute capability {d['capability']}, {d['memory_gib']} GiB")
    cuda = []
    if torch.get("cuda"):
        cudnn = f", cuDNN {torch['cudnn']}" if torch.get("cudnn") else ""
        seen = "" if torch.get("cuda_available", True) else " (torch sees no GPU)"
        cuda.append(f"torch built for CUDA {torch['cuda']}{cudnn}{seen}")
    cupy = env.get("cupy") or {}
    if cupy.get("runtime"):
        cuda.append(f"CuPy CUDA runtime {cupy['runtime']}")
    jax = env.get("jax") or {}
    if "default_backend" in jax:
        cuda.append(f"JAX default backend {jax['default_backend']} ({', '.join(jax.get('gpus', [])) or 'no GPU'})")
    if cuda:
        lines.append(f"- CUDA: {'; '.join(cuda)}")
    for name in ("torch", "cupy", "jax"):
        info = env.get(name) or {}
        if info.get("error"):
            lines.append(f"- {name}: {info['error']}")
    versions = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v)
    lines.append(f"- Python {env.get('python')} on {env.get('os')}; {versions}")
    if env.get("env"):
        lines.append(f"- Environment: {', '.join(f'{k}={v}' for k, v in env['env'].items())}")
    return [*lines, ""]


def _md_tests(record: dict[str, Any]) -> list[str]:
    lines = _section_head(1, "tests", record)
    if record.get("command"):
        lines += [f"`{record['command']}` ({_seconds(record.get('seconds'))} s; output in `{record.get('log')}`)", ""]
    c = record.get("counts")
    if c:
        rows = [["all selected", c["passed"], c["failed"], c["errors"], c["skipped"]]]
        rows += [
            [b, v["passed"], v["failed"], v["errors"], v["skipped"]]
            for b, v in (record.get("by_backend") or {}).items()
        ]
        lines += _table(["tests", "passed", "failed", "errors", "skipped"], rows)
    if record.get("failures"):
        lines += ["Failures:", ""]
        lines += [f"- `{f['test']}` ({f.get('kind', 'failed')}): {f['message']}" for f in record["failures"]]
        lines.append("")
    if record.get("skip_reasons"):
        lines += ["Skipped, by reason:", ""]
        lines += [f"- {s['count']} x {s['reason']}" for s in record["skip_reasons"]]
        lines.append("")
    return lines


def _md_checks(record: dict[str, Any]) -> list[str]:
    lines = _section_head(2, "checks", record)
    checks = record.get("checks") or []
    if not checks:
        return lines
    lines += _table(
        ["check", "status", "result", "seconds"],
        [[c["name"], _status(c), c.get("message", ""), _seconds(c.get("seconds"))] for c in checks],
    )
    for c in checks:
        if c["status"] == "skipped":
            continue
        lines += [f"### {c['name']}: {_status(c)}", "", c.get("what", ""), ""]
        if c.get("why"):
            lines += [f"Why: {c['why']}", ""]
        if c.get("message"):
            lines += [f"Result: {c['message']}" + (f" (at `{c['where']}`)" if c.get("where") else ""), ""]
        for key in ("worst_error", "default_matmul_precision", "float64_gpu_vs_numpy", "dtypes"):
            if key in c:
                lines += [f"- {key.replace('_', ' ')}: {_fmt(c[key])}", ""]
        if c.get("rows"):
            lines += _dict_table(c["rows"])
    return lines


OURS_LABELS = {"vicreg": "core", "adapter": "adapter"}
BENCH_ROLES = ("vicreg", "adapter", "official", "lightly", "matmul", "gemms")
BENCH_HEADERS = [
    "platform",
    "dtype",
    "n x d",
    "vicreg core",
    "adapter",
    "official (d x d)",
    "lightly",
    "one matmul",
    "the loss's matmuls",
    "ours vs official",
    "ours / one matmul",
    "peak MiB ours / official",
]


def _md_bench(record: dict[str, Any]) -> list[str]:
    lines = _section_head(3, "bench", record)
    if record.get("shapes"):
        shapes = ", ".join(f"{n} x {d}" for n, d in record["shapes"])
        lines += [
            f"Forward+backward, median ms of interleaved rounds (device synchronised in every call); shapes "
            f'{shapes}; dtypes {", ".join(record.get("dtypes", []))}. "ours" is the adapter '
            "(`vicreg.torch.VICRegLoss`, `vicreg.jax.vicreg_loss`) where there is one, else the core. "
            f"Full tables: `{(record.get('files') or {}).get('markdown', 'bench/results.md')}`.",
            "",
        ]
    rows = []
    for r in record.get("rows") or []:
        t = r["median_ms"]
        mem = r.get("peak_mib") or {}
        rows.append(
            [
                r["platform"],
                r["dtype"],
                f"{r['n']} x {r['d']}",
                *(_ms(t.get(k)) for k in BENCH_ROLES),
                f"{_ratio(r.get('speedup_vs_official'))} ({OURS_LABELS.get(r['ours'], r['ours'])})",
                _ratio(r.get("over_matmul")),
                f"{_fmt(mem.get(r['ours']))} / {_fmt(mem.get('official'))}",
            ]
        )
    if rows:
        lines += _table(BENCH_HEADERS, rows)
    for note in record.get("notes") or []:
        lines.append(f"- Note: {note}")
    return lines + ([""] if record.get("notes") else [])


def _md_train(record: dict[str, Any]) -> list[str]:
    lines = _section_head(4, "train", record)
    runs = record.get("runs") or []
    if runs:
        lines += [
            f"Digits, defaults, {record.get('epochs')} epoch(s); accuracies on the held-out 30%; "
            '"seconds" is `seconds` in the run\'s `metrics.json`, "wall" includes start-up.',
            "",
        ]
        lines += _table(
            [
                "example",
                "status",
                "linear probe",
                "random-init linear probe",
                "20-NN",
                "final loss",
                "epochs",
                "seconds",
                "wall s",
                "device",
            ],
            [
                [
                    r["example"],
                    _status(r),
                    _accuracy(r.get("linear_probe_accuracy")),
                    _accuracy(r.get("random_init_linear_probe_accuracy")),
                    _accuracy(r.get("knn_accuracy")),
                    _fmt(r.get("final_loss")),
                    _fmt(r.get("epochs")),
                    _seconds(r.get("seconds")),
                    _seconds(r.get("wall_s")),
                    _fmt(r.get("device")),
                ]
                for r in runs
            ],
        )
        for r in runs:
            if r["status"] != "passed":
                lines.append(f"- {r['example']}: {r.get('message') or r.get('error')}")
            if r.get("command"):
                lines.append(f"- {r['example']}: `{r['command']}`")
        lines.append("")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The Markdown report of a recorded run (the dict written to ``gpu_report.json``)."""
    lines = [f"# vicreg GPU check: {_status(report)}", ""]
    lines += [
        f"Command: `{report.get('command', PROG)}`; started {report.get('started', '?')}; "
        f"{_seconds(report.get('seconds'))} s in all.",
        "",
    ]
    if report.get("failed"):
        lines += ["Failed: " + "; ".join(report["failed"]), ""]
    lines += _md_environment(report.get("environment") or {})
    sections = report.get("sections") or {}
    summary = []
    for name in SECTIONS:
        record = sections.get(name) or {"status": "skipped"}
        summary.append([TITLES[name], _status(record), _seconds(record.get("seconds"))])
    lines += _table(["section", "status", "seconds"], summary)
    for name, render in (("tests", _md_tests), ("checks", _md_checks), ("bench", _md_bench), ("train", _md_train)):
        lines += render(sections.get(name) or {"status": "skipped", "reason": "not recorded"})
    return "\n".join(lines).rstrip() + "\n"


def failures(report: dict[str, Any]) -> list[str]:
    """What failed, one item per failed section, check, test or training run."""
    out = []
    for name, record in (report.get("sections") or {}).items():
        if record.get("status") not in ("failed", "error"):
            continue
        items = [c["name"] for c in record.get("checks", []) if c["status"] in ("failed", "error")]
        items += [r["example"] for r in record.get("runs", []) if r["status"] in ("failed", "error")]
        items += [f["test"] for f in record.get("failures", [])][:10]
        out.append(f"{name}: " + (", ".join(items) if items else _one_line(record.get("error", record["status"]), 300)))
    return out


# ======================================================================================================
# The command
# ======================================================================================================


def _sections(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in values if v not in SECTIONS]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"choose from {','.join(SECTIONS)}; got {text!r}")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Verify every CUDA path of vicreg on this machine's GPU: the test suite's GPU cases, "
        "GPU-only checks (device placement, host syncs, CUDA graphs, TF32 precision), the benchmark and the "
        "training examples; writes gpu_report.md and gpu_report.json.",
    )
    p.add_argument(
        "--out",
        default=os.path.join("bench-out", "gpu-check"),
        metavar="DIR",
        help="output folder (default bench-out/gpu-check)",
    )
    p.add_argument(
        "--quick", action="store_true", help="one benchmark shape (256 x 2048), 1 training epoch, no test marked slow"
    )
    p.add_argument(
        "--skip",
        type=_sections,
        default=(),
        metavar="SECTION[,SECTION]",
        help=f"leave sections out: {','.join(SECTIONS)}",
    )
    p.add_argument(
        "--workers",
        type=_number(int, "a number of processes, 0 or more", lambda v: v >= 0),
        default=0,
        metavar="N",
        help="run the test suite's GPU cases in N pytest-xdist processes (needs pytest-xdist; 429 cases took "
        "205 s in 8 on an H200 machine)",
    )
    p.add_argument(
        "--time-limit",
        type=_number(float, "a positive number of seconds", lambda v: math.isfinite(v) and v > 0),
        default=None,
        metavar="SECONDS",
        help="stop any one subprocess (a section's child, pytest, one training run) after this many seconds, "
        "record it as timed out and go on (default: up to an hour each)",
    )
    return p


def _number(kind: Callable[[str], Any], what: str, ok: Callable[[Any], bool]) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind(text)`` where ``ok`` holds, else a usage error saying ``what``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"{what}; got {text!r}")
        return value

    return parse


def _print_environment(env: dict[str, Any]) -> None:
    if env.get("status") == "error":
        print(f"environment: could not be read: {env.get('error')}")
        return
    print(f"device: {device_name(env)}; driver {driver_version(env)}")
    torch, cupy, jax = (env.get(k) or {} for k in ("torch", "cupy", "jax"))
    print(
        f"CUDA: torch built for {torch.get('cuda') or '-'} (cuDNN {torch.get('cudnn') or '-'}); CuPy runtime "
        f"{cupy.get('runtime') or '-'}; JAX default backend {jax.get('default_backend') or '-'} "
        f"({', '.join(jax.get('gpus') or []) or 'no GPU'})"
    )
    print(
        "versions: "
        + ", ".join(
            f"{k} {v or '-'}"
            for k, v in env["versions"].items()
            if v or k in ("torch", "jax", "jaxlib", "numpy", "array-api-compat")
        )
    )


def run_sections(
    out: str,
    quick: bool,
    skip: tuple[str, ...],
    done: Callable[[dict[str, dict[str, Any]]], None] | None = None,
    workers: int = 0,
) -> dict[str, dict[str, Any]]:
    """Each section in turn, guarded, with a line of progress before and after; the records by name.
    ``done`` is called with the records so far after each section (the report is rewritten then, so that
    a run stopped from outside keeps the sections that finished); ``workers`` as in :func:`pytest_command`."""
    runners = {
        "tests": lambda o, q: section_tests(o, q, workers),
        "checks": lambda o, q: in_child("checks", o, q),
        "bench": lambda o, q: in_child("bench", o, q),
        "train": section_train,
    }
    records: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(SECTIONS, 1):
        step = f"[{i}/{len(SECTIONS)}] {TITLES[name]}"
        if name in skip:
            records[name] = {"status": "skipped", "reason": "--skip"}
            print(f"{step}: skipped (--skip)")
            continue
        print(f"{step} (output in {os.path.join(out, 'logs')}) ...", flush=True)
        record = records[name] = guarded(runners[name], out, quick)
        for check in record.get("checks", []):
            print(f"    {check['name']}: {check['status']}: {_one_line(check.get('message', ''), 200)}")
        error = f": {_one_line(record['error'], 300)}" if record.get("error") else ""
        print(f"{step}: {record['status']} ({record.get('seconds', 0):.0f} s){error}", flush=True)
        if done is not None:
            done(records)
    return records


def write_report(report: dict[str, Any], out: str) -> str:
    """``gpu_report.json`` and ``gpu_report.md`` (the Markdown of that JSON) in ``out``; the Markdown's path."""
    write_json(os.path.join(out, "gpu_report.json"), report)
    path = os.path.join(out, "gpu_report.md")
    with open(path, "w") as fh:
        fh.write(markdown(_jsonable(report)))
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    if args.workers > 0 and importlib.util.find_spec("xdist") is None:
        parser().error("--workers needs pytest-xdist (pip install pytest-xdist)")
    # before anything imports JAX (the GPU probe may): its client would hold 75% of the GPU memory
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    reason = gpu_absent_reason()
    if reason is not None:
        print(f"{PROG}: no CUDA GPU visible ({reason}); nothing was checked", file=sys.stderr)
        return EXIT_NO_GPU
    if args.time_limit is not None:
        for key, limit in TIMEOUTS_S.items():
            TIMEOUTS_S[key] = min(limit, args.time_limit)
    out = os.path.abspath(args.out)  # the subprocesses run in the repository root
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "command": " ".join([PROG, *argv]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "options": {
            "quick": args.quick,
            "skip": list(args.skip),
            "time_limit_s": args.time_limit,
            "workers": args.workers,
        },
        "environment": in_child("environment", out, args.quick),
    }
    _print_environment(report["environment"])

    def finish(sections: dict[str, dict[str, Any]]) -> str:
        report["sections"] = {
            name: sections.get(name, {"status": "skipped", "reason": "not reached"}) for name in SECTIONS
        }
        report["failed"] = failures(report)
        report["status"] = "failed" if report["failed"] else "passed"
        report["seconds"] = time.perf_counter() - t0
        return write_report(report, out)

    path = finish(run_sections(out, args.quick, args.skip, finish, args.workers))
    failed = f"; failed: {'; '.join(report['failed'])}" if report["failed"] else ""
    print(f"{report['status'].upper()}: wrote {path} and gpu_report.json in {report['seconds']:.0f} s{failed}")
    return EXIT_FAILED if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
