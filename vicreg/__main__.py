"""``python -m vicreg``: compute the loss and its terms on every installed backend and print them side by side.

The same random float32 pair of views goes through NumPy, PyTorch, JAX and CuPy (each one only if it is
installed and, for CuPy, a GPU is present); the rows should agree to float32 precision.

Each framework is imported in a process of its own, all of them at once, while this process computes the
NumPy row: importing PyTorch and JAX takes over a second each, so one after the other they would make the
demo wait for their sum rather than for the slowest. A framework's process draws the views from the same
seed (:func:`_views`) and prints its rows as JSON on one line (the hidden ``--worker`` option).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import vicreg

PROG = "python -m vicreg"
DESCRIPTION = "Compute the VICReg loss and its terms on every installed backend and print them side by side."
#: The frameworks computed in processes of their own, in the order of their rows (NumPy's row comes first).
FRAMEWORKS = ("torch", "jax", "cupy")
NAME_WIDTH = 14


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    parser.add_argument("-n", type=_at_least(2), default=256, help="batch size, at least 2 (default: 256)")
    parser.add_argument("-d", type=_at_least(1), default=2048, help="embedding width (default: 2048)")
    parser.add_argument(
        "--convention",
        choices=vicreg.CONVENTIONS,
        default="official",
        help="how the variance and covariance terms are normalised (default: official)",
    )
    # A framework's rows, computed in this process and printed as JSON (how the main process runs them).
    parser.add_argument("--worker", choices=FRAMEWORKS, default=None, help=argparse.SUPPRESS)
    return parser


def _views(n: int, d: int) -> tuple[Any, Any]:
    """The demo's pair of float32 views, the same in every process (a fixed seed)."""
    import numpy as np

    rng = np.random.default_rng(0)
    z1 = rng.standard_normal((n, d), dtype=np.float32)
    z2 = (z1 + 0.5 * rng.standard_normal((n, d), dtype=np.float32)).astype(np.float32)
    return z1, z2


def _values(terms: tuple[Any, ...]) -> list[float]:
    return [float(v) for v in terms]


def _numpy_rows(z1: Any, z2: Any, convention: str) -> list[tuple[str, list[float]]]:
    return [("numpy", _values(vicreg.vicreg_terms(z1, z2, convention=convention)))]


def _torch_rows(z1: Any, z2: Any, convention: str) -> list[tuple[str, list[float]]]:
    import torch

    a, b = torch.from_numpy(z1), torch.from_numpy(z2)
    rows = [("torch (cpu)", _values(vicreg.vicreg_terms(a, b, convention=convention)))]
    if torch.cuda.is_available():
        rows.append(("torch (cuda)", _values(vicreg.vicreg_terms(a.cuda(), b.cuda(), convention=convention))))
    return rows


def _jax_rows(z1: Any, z2: Any, convention: str) -> list[tuple[str, list[float]]]:
    import jax
    import jax.numpy as jnp

    # One compiled function: eager JAX would compile each of the loss's operations on its own, which
    # takes twice as long as compiling them together.
    terms = jax.jit(vicreg.vicreg_terms, static_argnames="convention")
    return [("jax", _values(terms(jnp.asarray(z1), jnp.asarray(z2), convention=convention)))]


def _cupy_rows(z1: Any, z2: Any, convention: str) -> list[tuple[str, list[float]]]:
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return []
    except Exception:  # no driver or no device: CuPy cannot run here
        return []
    return [("cupy", _values(vicreg.vicreg_terms(cupy.asarray(z1), cupy.asarray(z2), convention=convention)))]


ROWS: dict[str, Callable[[Any, Any, str], list[tuple[str, list[float]]]]] = {
    "torch": _torch_rows,
    "jax": _jax_rows,
    "cupy": _cupy_rows,
}


def _installed() -> list[str]:
    """The frameworks of :data:`FRAMEWORKS` that can be imported (found, not imported: that is cheap)."""
    return [name for name in FRAMEWORKS if importlib.util.find_spec(name) is not None]


def _start(framework: str, args: argparse.Namespace) -> subprocess.Popen:
    command = [sys.executable, "-m", "vicreg", "--worker", framework]
    command += ["-n", str(args.n), "-d", str(args.d), "--convention", args.convention]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _collect(framework: str, process: subprocess.Popen) -> tuple[list[tuple[str, list[float]]], str | None]:
    """The rows a framework's process printed, and why it failed (``None`` when it did not)."""
    out, err = process.communicate()
    lines = out.strip().splitlines()
    if process.returncode == 0 and lines:
        try:
            return [(name, values) for name, values in json.loads(lines[-1])], None
        except ValueError:
            pass
    last = (err.strip().splitlines() or ["no output"])[-1]
    return [], f"{framework}: the process computing its rows failed (exit status {process.returncode}): {last}"


def _worker(args: argparse.Namespace) -> NoReturn:
    """Print the rows of ``args.worker`` as JSON on one line, then end the process at once: the
    interpreter's teardown (collecting PyTorch's thousands of objects) would add a third to its time."""
    z1, z2 = _views(args.n, args.d)
    print(json.dumps(ROWS[args.worker](z1, z2, args.convention)), flush=True)
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if importlib.util.find_spec("numpy") is None:
        parser.exit(1, f"{PROG}: NumPy is needed to draw the random views (pip install numpy)\n")
    if args.worker is not None:
        _worker(args)
    running = {name: _start(name, args) for name in _installed()}
    z1, z2 = _views(args.n, args.d)  # while the other frameworks load
    rows = _numpy_rows(z1, z2, args.convention)
    failures = []
    for name, process in running.items():
        found, failure = _collect(name, process)
        rows += found
        if failure is not None:
            failures.append(failure)

    fields = vicreg.VICRegTerms._fields
    print(f"VICReg ({args.convention}) of a random pair, n={args.n}, d={args.d}, float32")
    print(f"{'backend':<{NAME_WIDTH}}" + "".join(f"{f:>13}" for f in fields))
    for name, values in rows:
        print(f"{name:<{NAME_WIDTH}}" + "".join(f"{v:>13.6f}" for v in values))
    for failure in failures:
        print(f"{PROG}: {failure}", file=sys.stderr)
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
