"""The training examples' figures: each example several times, from fresh processes, with its defaults.

``python -m benchmarks.training`` runs ``python -m backends.BACKEND.train --out TMP`` for PyTorch, NumPy and
JAX, ``--runs`` times each (the backends alternating, so that a slow spell of the machine falls on all), and
records each run's accuracies and training throughput (its ``metrics.json``) and its wall time from the
start of the process to its end. The examples seed everything, but their arithmetic is not bit-reproducible
across processes (thread scheduling changes the order of floating-point sums), so the accuracies move a
little from run to run too: the pages state the median and the range. ``--out DIR`` writes
``training.json`` and, for the docs, the first run's log of each backend
(``log-BACKEND.txt``, without the middle epochs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("torch", "numpy", "jax")
KEYS = (
    "linear_probe_accuracy",
    "knn_accuracy",
    "random_init_linear_probe_accuracy",
    "images_per_second",
    "seconds",
    "device",
)


def run(backend: str, extra: list[str]) -> dict[str, Any]:
    """One run of ``backend``'s example: its metrics and the process's wall time."""
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", f"backends.{backend}.train", "--out", out, *extra],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        if proc.returncode:
            raise SystemExit(f"backends.{backend}.train failed:\n{proc.stderr[-3000:]}")
        with open(os.path.join(out, "metrics.json")) as f:
            metrics = json.load(f)
        with open(os.path.join(out, "log.txt")) as f:
            log = f.read().replace(out, f"runs/{backend}-...")  # no temporary path in what is kept
    return {"backend": backend, "wall_s": wall, **{k: metrics[k] for k in KEYS}, "log": excerpt(log)}


def excerpt(log: str) -> str:
    """A run's log without the middle epochs: the set-up lines, the first epoch, the last, the result."""
    lines = log.rstrip("\n").splitlines()
    epochs = [i for i, line in enumerate(lines) if line.startswith("epoch ")]
    if len(epochs) < 3:
        return "\n".join(lines)
    return "\n".join([*lines[: epochs[0] + 1], "...", *lines[epochs[-1] :]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per backend (default: 3)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="default: torch,numpy,jax")
    parser.add_argument("--out", help="write training.json into this folder")
    parser.add_argument("extra", nargs="*", help="flags passed to every example (after --)")
    args = parser.parse_args(argv)
    backends = args.backends.split(",")
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        parser.error(f"--backends: unknown {unknown}; choose from {', '.join(BACKENDS)}")
    if args.runs < 1:
        parser.error("--runs: need at least 1")
    runs, load = [], [os.getloadavg()[0]]
    for _ in range(args.runs):
        for backend in backends:
            runs.append(run(backend, args.extra))
            load.append(os.getloadavg()[0])
            r = runs[-1]
            print(
                f"{backend}: probe {r['linear_probe_accuracy']:.4f}, {r['images_per_second']:.0f} img/s, "
                f"{r['wall_s']:.0f} s (load {load[-1]:.2f})",
                flush=True,
            )
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "training.json"), "w") as f:
            json.dump({"extra": args.extra, "load": load, "runs": runs}, f, indent=1)
        for backend in backends:  # the first run's log of each backend, for the docs
            with open(os.path.join(args.out, f"log-{backend}.txt"), "w") as f:
                f.write(next(r["log"] for r in runs if r["backend"] == backend) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
