"""What every section of ``python -m benchmarks.gpu_check`` shares: the command's constants, a section's
record (status, error, where it happened), guards that turn an exception into a record, strict JSON, and
subprocesses whose output goes to a log file."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import time
import traceback
from collections.abc import Callable
from typing import Any

PROG = "python -m benchmarks.gpu_check"
#: This package's folder: frames inside it are the command's own, not where a failure happened.
PACKAGE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(PACKAGE))
EXIT_FAILED = 1
EXIT_NO_GPU = 2
SECTIONS = ("tests", "checks", "bench", "train")
TITLES = {
    "tests": "Test suite, GPU cases",
    "checks": "GPU-only checks",
    "bench": "Benchmark on the GPU",
    "train": "Training examples on the GPU",
}
#: Each subprocess's limit in seconds (``--time-limit`` lowers them all; read them as
#: ``common.TIMEOUTS_S``, since the command may replace or change them).
TIMEOUTS_S = {"environment": 300, "tests": 3600, "checks": 1800, "bench": 3600, "train_run": 1800}


def one_line(text: Any, limit: int = 600) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def where_in_repo(exc: BaseException) -> str | None:
    """``path:line (function)``, relative to the repository, of the innermost frame of ``exc`` in this
    repository outside this package: where a failure happened, without machine paths."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = os.path.abspath(frame.filename)
        if path.startswith(ROOT + os.sep) and not path.startswith(PACKAGE + os.sep) and ".venv" not in path:
            return f"{os.path.relpath(path, ROOT)}:{frame.lineno} ({frame.name})"
    return None


def error_record(exc: BaseException) -> dict[str, Any]:
    return {"status": "error", "error": one_line(f"{type(exc).__name__}: {exc}"), "where": where_in_repo(exc)}


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
        record = error_record(exc)
    record.setdefault("seconds", time.perf_counter() - t0)
    return record


def jsonable(x: Any) -> Any:
    """NaN and infinities -> None (strict JSON has neither), tuples -> lists, NumPy scalars -> Python."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)) and callable(x.item):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(path: str, data: Any) -> None:
    with open(path, "w") as fh:
        json.dump(jsonable(data), fh, indent=1, allow_nan=False)
        fh.write("\n")


def tail(path: str, lines: int = 15) -> str:
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
            return one_line(line, 600)
    return one_line(lines[-1], 600) if lines else "(no output)"


def run_logged(
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


def shown(cmd: list[str], out: str) -> str:
    """``cmd`` as a shell line for the report: ``python`` for this interpreter, ``DIR`` for the output
    folder (no machine paths)."""
    return shlex.join(["python", *cmd[1:]]).replace(out + os.sep, "DIR/")
