"""The command line of ``python -m benchmarks.gpu_check`` (:func:`main`): the GPU probe, then the
environment and each section in turn, the report rewritten after each; and the child processes that
run the environment, the checks and the benchmark (:func:`in_child`, :func:`child_main`)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from . import bench, checks, common, environment, suite_run, train
from .common import (
    EXIT_FAILED,
    EXIT_NO_GPU,
    PROG,
    SECTIONS,
    TITLES,
    guarded,
    last_error_line,
    one_line,
    run_logged,
    tail,
    write_json,
)
from .report import failures, write_report

#: The sections that run in a child process of their own (:func:`in_child`); the tests and the training
#: runs are subprocesses already.
CHILD_SECTIONS: dict[str, Callable[[str, bool], dict[str, Any]]] = {
    "environment": environment.section_environment,
    "checks": checks.section_checks,
    "bench": bench.section_bench,
}


# --- child processes ----------------------------------------------------------------------------------


_CHILD = "import sys; from benchmarks.gpu_check.command import child_main; sys.exit(child_main(sys.argv[1:]))"


def in_child(section: str, out: str, quick: bool) -> dict[str, Any]:
    """Run ``section`` (a key of :data:`CHILD_SECTIONS`) in a fresh Python process and return its record.
    A crash or a timeout becomes an error record quoting the last error in ``DIR/logs/<section>.log``."""
    logs = os.path.join(out, "logs")
    record_path = os.path.join(logs, f"{section}.json")
    log_path = os.path.join(logs, f"{section}.log")
    with contextlib.suppress(FileNotFoundError):
        os.remove(record_path)
    rc, wall = run_logged(
        [sys.executable, "-c", _CHILD, section, record_path, out, "quick" if quick else "full"],
        log_path,
        common.TIMEOUTS_S[section],
    )
    try:
        with open(record_path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        why = f"timed out after {common.TIMEOUTS_S[section]} s" if rc is None else f"exited with status {rc}"
        return {
            "status": "error",
            "seconds": wall,
            "error": f"the {section} process {why} without a record: {last_error_line(tail(log_path, 40))} "
            f"(see logs/{section}.log)",
        }


def child_main(argv: list[str]) -> int:
    """Entry point of a section's child process: ``SECTION RECORD_PATH OUT quick|full``."""
    section, record_path, out, mode = argv
    record = guarded(CHILD_SECTIONS[section], out, mode == "quick")
    write_json(record_path, record)
    return 0


# --- the command ---------------------------------------------------------------------------------------


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
    print(f"device: {environment.device_name(env)}; driver {environment.driver_version(env)}")
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
    a run stopped from outside keeps the sections that finished); ``workers`` as in
    :func:`benchmarks.gpu_check.suite_run.pytest_command`."""
    runners = {
        "tests": lambda o, q: suite_run.section_tests(o, q, workers),
        "checks": lambda o, q: in_child("checks", o, q),
        "bench": lambda o, q: in_child("bench", o, q),
        "train": train.section_train,
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
            print(f"    {check['name']}: {check['status']}: {one_line(check.get('message', ''), 200)}")
        error = f": {one_line(record['error'], 300)}" if record.get("error") else ""
        print(f"{step}: {record['status']} ({record.get('seconds', 0):.0f} s){error}", flush=True)
        if done is not None:
            done(records)
    return records


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    if args.workers > 0 and importlib.util.find_spec("xdist") is None:
        parser().error("--workers needs pytest-xdist (pip install pytest-xdist)")
    # before anything imports JAX (the GPU probe may): its client would hold 75% of the GPU memory
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    reason = environment.gpu_absent_reason()
    if reason is not None:
        print(f"{PROG}: no CUDA GPU visible ({reason}); nothing was checked", file=sys.stderr)
        return EXIT_NO_GPU
    if args.time_limit is not None:
        for key, limit in common.TIMEOUTS_S.items():
            common.TIMEOUTS_S[key] = min(limit, args.time_limit)
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
