"""The headline call against one ``z @ z.T``, each library alone in fresh processes.

``python -m benchmarks.standalone`` starts ``--processes`` fresh Python processes per library (the
libraries alternating), and in each times two calls interleaved (:func:`benchmarks.timing.time_interleaved`)
on the same float32 inputs: the headline call, forward+backward, and one matrix product ``z @ z.T`` of that
library:

* NumPy: ``vicreg.value_and_grad(z1, z2)`` against ``z1 @ z1.T``;
* PyTorch: ``vicreg.vicreg_loss(z1, z2).backward()`` (the analytic backward, found from the tensors' type)
  against ``z1 @ z1.T``;
* JAX: ``jax.jit(jax.value_and_grad(vicreg.vicreg_loss, argnums=(0, 1)))`` against a jitted ``z1 @ z1.T``.

Each process reports the ratio of the two medians and the minor page faults per headline call
(``getrusage``); the summary is the median ratio over the processes, with the spread. A process of its own
per run is what a user's training script sees: no other library's thread pool or allocator state, and the
first allocations of the process (the suite and :mod:`benchmarks.compare` time several calls in one
process, whose allocator state each call inherits from the others). ``--out DIR`` writes
``standalone.json`` and ``standalone.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from typing import Any

LIBRARIES = ("numpy", "torch", "jax")


def _calls(library: str, n: int, d: int) -> tuple[Any, Any]:
    """``(headline, matmul)``: zero-argument calls for ``library`` on seeded float32 inputs."""
    import numpy as np

    import vicreg

    rng = np.random.default_rng(0)
    z1 = rng.standard_normal((n, d), dtype=np.float32)
    z2 = (z1 + 0.3 * rng.standard_normal((n, d), dtype=np.float32)).astype(np.float32)
    if library == "numpy":
        return (lambda: vicreg.value_and_grad(z1, z2)), (lambda: z1 @ z1.T)
    if library == "torch":
        import torch

        t1, t2 = torch.from_numpy(z1).requires_grad_(), torch.from_numpy(z2).requires_grad_()

        def headline() -> Any:
            t1.grad = t2.grad = None  # a fresh gradient each call, as after an optimizer's zero_grad
            vicreg.vicreg_loss(t1, t2).backward()
            return t1.grad

        def matmul() -> Any:
            with torch.no_grad():
                return t1 @ t1.T

        return headline, matmul
    import jax
    import jax.numpy as jnp

    j1, j2 = jnp.asarray(z1), jnp.asarray(z2)
    grad = jax.jit(jax.value_and_grad(vicreg.vicreg_loss, argnums=(0, 1)))
    gram = jax.jit(lambda z: z @ z.T)
    return (lambda: jax.block_until_ready(grad(j1, j2))), (lambda: jax.block_until_ready(gram(j1)))


def _faults_per_call(call: Any, calls: int = 10) -> float:
    """Minor page faults per call of ``call`` (after warm-up), from ``getrusage``."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        call()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def _measure(library: str, n: int, d: int, rounds: int) -> dict[str, Any]:
    """In this process: the headline call and one matmul, timed interleaved."""
    from .timing import time_interleaved

    headline, matmul = _calls(library, n, d)
    call, product = time_interleaved([headline, matmul], warmup=3, min_rounds=rounds, max_rounds=rounds, budget_s=0.0)
    return {
        "library": library,
        "call_ms": call["median_ms"],
        "matmul_ms": product["median_ms"],
        "ratio": call["median_ms"] / product["median_ms"],
        "faults_per_call": _faults_per_call(headline),
        "load": os.getloadavg()[0],
    }


def summarise(runs: list[dict[str, Any]], libraries: list[str]) -> list[dict[str, Any]]:
    """Per library: the median ratio, call and matmul times over the processes, with the ratios' range."""
    rows = []
    for library in libraries:
        mine = [r for r in runs if r["library"] == library]
        ratios = [r["ratio"] for r in mine]
        rows.append(
            {
                "library": library,
                "processes": len(mine),
                "ratio": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "call_ms": statistics.median(r["call_ms"] for r in mine),
                "matmul_ms": statistics.median(r["matmul_ms"] for r in mine),
                "faults_per_call": statistics.median(r["faults_per_call"] for r in mine),
            }
        )
    return rows


def table(rows: list[dict[str, Any]], n: int, d: int, rounds: int, load: list[float]) -> str:
    lines = [
        f"{n} x {d}, float32, forward+backward; each process: median of {rounds} interleaved rounds; "
        f"load average {min(load):.2f}-{max(load):.2f}",
        "",
        "| library | processes | call (ms) | one `z @ z.T` (ms) | call / matmul, median (range) | page faults / call |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['library']} | {r['processes']} | {r['call_ms']:.1f} | {r['matmul_ms']:.2f} | "
            f"{r['ratio']:.2f}x ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) | {r['faults_per_call']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.standalone", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--d", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds per process")
    parser.add_argument("--processes", type=int, default=5, help="fresh processes per library")
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--out", help="also write standalone.json and standalone.md into this folder")
    parser.add_argument("--_worker", metavar="LIBRARY", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    libraries = args.libraries.split(",")
    unknown = sorted(set(libraries) - set(LIBRARIES))
    if unknown:
        parser.error(f"unknown libraries {unknown}; choose from {', '.join(LIBRARIES)}")
    if args.n < 2 or args.d < 1 or args.rounds < 1 or args.processes < 1:
        parser.error("need n >= 2, d >= 1 and at least one round and one process")
    if args._worker:
        print(json.dumps(_measure(args._worker, args.n, args.d, args.rounds)))
        return 0
    runs, load = [], [os.getloadavg()[0]]
    for _ in range(args.processes):
        for library in libraries:
            cmd = [sys.executable, "-m", "benchmarks.standalone", "--n", str(args.n), "--d", str(args.d)]
            cmd += ["--rounds", str(args.rounds), "--_worker", library]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-2000:], file=sys.stderr)
                return out.returncode
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            load.append(os.getloadavg()[0])
    rows = summarise(runs, libraries)
    text = table(rows, args.n, args.d, args.rounds, load)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "standalone.json"), "w") as f:
            json.dump(
                {"n": args.n, "d": args.d, "rounds": args.rounds, "load": load, "runs": runs, "rows": rows}, f, indent=1
            )
        with open(os.path.join(args.out, "standalone.md"), "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
