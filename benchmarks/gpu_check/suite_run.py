"""Section 1, tests: the test suite's GPU cases in a pytest subprocess, and what its JUnit XML says."""

from __future__ import annotations

import contextlib
import os
import sys
import xml.etree.ElementTree as ET
from typing import Any

from . import common
from .common import last_error_line, one_line, run_logged, shown, tail

#: The test suite's GPU cases: the GPU parameters of the ``backend`` fixture, the CUDA-marked cases of the
#: PyTorch adapter's tests and the CuPy example's tests; never this command's own tests (no recursion).
PYTEST_SELECTION = "(torch-cuda or jax-gpu or cupy or cuda) and not gpu_check"


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
            failures.append({"test": test, "kind": outcome, "message": one_line(message, 500)})
        elif case.find("skipped") is not None:
            outcome = "skipped"
            reason = one_line(case.find("skipped").get("message") or "no reason given", 200)
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
    rc, wall = run_logged(
        cmd, os.path.join(out, "logs", "tests.log"), common.TIMEOUTS_S["tests"], {"TQDM_DISABLE": "1"}
    )
    record: dict[str, Any] = {"command": shown(cmd, out), "returncode": rc, "seconds": wall, "log": "logs/tests.log"}
    if not os.path.exists(junit):
        why = "timed out" if rc is None else f"exited with status {rc}"
        return {
            **record,
            "status": "error",
            "error": f"pytest {why} without a report: "
            f"{last_error_line(tail(os.path.join(out, 'logs', 'tests.log'), 40))} (see logs/tests.log)",
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
