"""More views and RankMe: what they cost, interleaved with the two-view loss, forward+backward.

``python -m benchmarks.views`` times, at ``n x d`` (default ``256 x 8192``, float32), in one process per
library and in a shuffled order per round (:func:`benchmarks.timing.time_interleaved`):

* ``K = 2``: the loss of two views and its gradient (the baseline);
* ``K = 4``: the loss of four views (two global crops and two local ones, VICRegL's global loss) and its
  gradient: one Gram product per view, so about twice the baseline;
* ``rank_me``: the two-view loss and its gradient with each view's RankMe beside it
  (``rank_me=True``): the baseline plus one eigenvalue solve per view.

Entry points: PyTorch ``vicreg.torch.VICRegLoss().terms(...)`` then ``loss.backward()``; JAX
``jax.jit(jax.value_and_grad(...))`` of ``vicreg.jax.vicreg_terms(...).loss`` (the terms as auxiliary
output); NumPy ``vicreg.value_and_grad`` for ``K = 2`` and ``K = 4``, and for RankMe ``vicreg_terms(...,
rank_me=True)`` against ``vicreg_terms(...)`` (NumPy has no autodiff: the forward pass only). Prints a
Markdown table with the machine's load; ``--out DIR`` writes ``views.json`` and ``views.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from .timing import time_interleaved

LIBRARIES = ("numpy", "torch", "jax")


def _calls(library: str, n: int, d: int) -> dict[str, Any]:
    """The timed calls of one library, by row name."""
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.standard_normal((n, d)).astype(np.float32)
    views = [base + 0.5 * rng.standard_normal((n, d)).astype(np.float32) for _ in range(4)]
    if library == "numpy":
        import vicreg

        return {
            "K = 2": lambda: vicreg.value_and_grad(*views[:2]),
            "K = 4": lambda: vicreg.value_and_grad(*views),
            "K = 2, terms (forward only)": lambda: vicreg.vicreg_terms(*views[:2]),
            "K = 2, terms + rank_me (forward only)": lambda: vicreg.vicreg_terms(*views[:2], rank_me=True),
        }
    if library == "torch":
        import torch

        import vicreg.torch as vt

        ts = [torch.tensor(z, requires_grad=True) for z in views]
        loss_fn = vt.VICRegLoss()

        def step(k: int, rank_me: bool) -> Any:
            def run() -> Any:
                terms = loss_fn.terms(*ts[:k], rank_me=rank_me)
                terms.loss.backward()
                for t in ts:
                    t.grad = None
                return terms.loss.item()

            return run

        return {"K = 2": step(2, False), "K = 4": step(4, False), "K = 2 + rank_me": step(2, True)}
    import jax

    import vicreg.jax as vj

    xs = [jax.numpy.asarray(z) for z in views]

    def jitted(k: int, rank_me: bool) -> Any:
        def loss(*vs: Any) -> Any:
            terms = vj.vicreg_terms(*vs, rank_me=rank_me)
            return terms.loss, terms

        fn = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(k)), has_aux=True))
        return lambda: jax.block_until_ready(fn(*xs[:k]))

    return {"K = 2": jitted(2, False), "K = 4": jitted(4, False), "K = 2 + rank_me": jitted(2, True)}


def run_library(library: str, n: int, d: int, budget: float, rounds: int) -> dict[str, Any]:
    calls = _calls(library, n, d)
    names = list(calls)
    summaries = time_interleaved([calls[k] for k in names], min_rounds=rounds, max_rounds=4 * rounds, budget_s=budget)
    return {"library": library, "rows": dict(zip(names, summaries))}


def table(results: list[dict[str, Any]], n: int, d: int, load: str) -> str:
    lines = [
        f"Forward+backward at {n} x {d}, float32, median ms (quartiles), interleaved per library; load {load}.",
        "",
        "| library | entry | median ms | q1-q3 | ratio to its baseline |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        rows = result["rows"]
        for name, s in rows.items():
            base = rows["K = 2, terms (forward only)"] if "forward only" in name else rows["K = 2"]
            lines.append(
                f"| {result['library']} | {name} | {s['median_ms']:.1f} | {s['q1_ms']:.1f}-{s['q3_ms']:.1f} "
                f"| {s['median_ms'] / base['median_ms']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.views", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=256, help="batch size (default: 256)")
    parser.add_argument("--d", type=int, default=8192, help="embedding width (default: 8192)")
    parser.add_argument("--libraries", default=",".join(LIBRARIES), help="default: numpy,torch,jax")
    parser.add_argument("--rounds", type=int, default=15, help="at least this many rounds (default: 15)")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per library at least (default: 10)")
    parser.add_argument("--out", help="write views.json and views.md into this folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_library(args.child, args.n, args.d, args.budget, args.rounds)))
        return
    results = []
    for library in args.libraries.split(","):
        command = [sys.executable, "-m", "benchmarks.views", "--child", library, "--n", str(args.n), "--d", str(args.d)]
        command += ["--rounds", str(args.rounds), "--budget", str(args.budget)]
        proc = subprocess.run(command, capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    text = table(results, args.n, args.d, load)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "views.json"), "w") as f:
            json.dump({"n": args.n, "d": args.d, "load": load, "results": results}, f, indent=1)
        with open(os.path.join(args.out, "views.md"), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
