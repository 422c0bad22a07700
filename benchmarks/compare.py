"""Before and after a change: the working tree's ``vicreg`` against an earlier revision's, interleaved.

``python -m benchmarks.compare --base REV`` copies ``vicreg/`` as it was at git revision ``REV`` into a
temporary folder (as the package ``vicreg_base``), then times the same entry points of both versions on
the same inputs, in a shuffled order per round (:func:`benchmarks.timing.time_interleaved`), forward+backward:

* NumPy: ``vicreg.value_and_grad``;
* PyTorch: ``vicreg.torch.VICRegLoss()`` (analytic backward) and ``vicreg.vicreg_loss`` (autograd through
  the core), ``loss.backward()`` each;
* JAX: ``jax.jit(jax.value_and_grad(...))`` of ``vicreg.jax.vicreg_loss`` and of ``vicreg.vicreg_loss``.

Each library runs in a process of its own, so that one library's thread pool does not slow another's.
``--harness projector`` times each call between the forward and the backward pass of a projector
(:mod:`benchmarks.projector`), where users run the loss, instead of in a loop of loss calls.
Prints a Markdown table (median milliseconds, and the ratio current / base) with the machine's load
average; ``--out DIR`` also writes ``compare.json`` and ``compare.md``.

``--processes N`` (default 1) runs the whole comparison ``N`` times, each library in a fresh process each
time, the libraries taking turns: a process fixes its allocator's and caches' state for all its rounds,
so on a small CPU one process's ratio can sit a tenth away from the next one's. The table then gives, per
entry point, the median over the processes of each median and of the ratio current / base, and the range of
the ratios.

``--columns K`` adds, in the same interleaved rounds, the current code with exactly ``K`` columns of
largest variance treated exactly on the Gram path (``K = 0``: none, the plain Gram identity), whatever the
data (see :func:`vicreg._terms.column_counts`): an ablation that shows what each branch of the
data-dependent choice costs on the benchmark's inputs, which the choice itself sends to ``K = 0``. With
``K < n - 1`` the result is *not* exact in every regime (a group of more than ``K`` dominant, mutually
decorrelated dimensions breaks the float32 targets), so such a variant is for measurement only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Any

LIBRARIES = ("numpy", "torch", "jax")


def _export(revision: str, into: str) -> None:
    """``vicreg/`` at ``revision`` as the package ``vicreg_base`` under ``into``."""
    root = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
    ).stdout.strip()
    names = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", revision, "vicreg/"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    package = os.path.join(into, "vicreg_base")
    os.makedirs(package)
    for name in names:
        if name.endswith(".py"):
            text = subprocess.run(
                ["git", "show", f"{revision}:{name}"], cwd=root, capture_output=True, text=True, check=True
            ).stdout
            target = os.path.join(package, *name.split("/")[1:])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w") as f:
                f.write(text)


def _with_columns(columns: int, call: Any) -> Any:
    """``call`` run with :func:`vicreg._terms.column_counts` fixed at ``columns`` (for JAX: traced so), so
    that the Gram path takes exactly ``columns`` columns out (at most ``n - 1`` and ``d``) whatever the
    data."""
    # every module that holds a binding of it: the core's, and the JAX adapter's (which traces a branch
    # for each count it lists), in the versions of the code that have them
    names = ("vicreg._terms", "vicreg._loss", "vicreg.jax")
    modules = [m for m in map(sys.modules.get, names) if m is not None and hasattr(m, "column_counts")]

    def fixed(n: int, d: int) -> tuple[int, ...]:
        return (min(columns, n - 1, d),)

    def run(*inputs: Any) -> Any:
        saved = [m.column_counts for m in modules]
        for m in modules:
            m.column_counts = fixed
        try:
            return call(*inputs)
        finally:
            for m, original in zip(modules, saved):
                m.column_counts = original

    return run


def _measure(
    library: str, base_dir: str, options: dict[str, Any], columns: list[int] | None = None
) -> list[dict[str, Any]]:
    """In this process: both versions' calls for ``library``, timed interleaved in the harness."""
    import importlib

    from .projector import loss_calls, loss_only, projector_step, time_in_steps
    from .timing import time_interleaved

    sys.path.insert(0, base_dir)
    n, d, rounds = options["n"], options["d"], options["rounds"]
    current = loss_calls(library, importlib.import_module("vicreg"))
    base = loss_calls(library, importlib.import_module("vicreg_base"))
    names = list(current)
    calls = [base[k] for k in names] + [current[k] for k in names]
    for k in columns or []:
        variant = loss_calls(library, importlib.import_module("vicreg"))
        calls += [_with_columns(k, variant[name]) for name in names]
    if options["harness"] == "projector":
        step = projector_step(library, n, d, options["hidden"], options["width"])
        summaries = time_in_steps(calls, step, rounds=rounds)
    else:  # the loss alone, in a loop (the clone of PyTorch's leaf tensors is in the timed call, as always)
        before, _ = loss_only(library, n, d)
        bound = [lambda call=call: call(*before()) for call in calls]
        summaries = time_interleaved(bound, warmup=3, min_rounds=rounds, max_rounds=rounds, budget_s=0.0)
    rows = []
    for i, name in enumerate(names):
        rows.append({"name": name, "base": summaries[i], "current": summaries[len(names) + i]})
    for j, k in enumerate(columns or []):
        for i, name in enumerate(names):
            rows.append(
                {
                    "name": f"{name}, {k} exact columns (ablation)",
                    "base": summaries[i],
                    "current": summaries[(2 + j) * len(names) + i],
                }
            )
    return rows


def summarise_runs(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The rows of every worker process's run, merged by entry point: each row keeps its runs' ``base`` and
    ``current`` summaries (``runs``, in the order they ran) and gains the medians over them of both medians
    and of the ratio current / base, and the ratios' range."""
    merged: dict[str, dict[str, Any]] = {}
    for run in runs:
        for row in run:
            merged.setdefault(row["name"], {"name": row["name"], "runs": []})["runs"].append(
                {"base": row["base"], "current": row["current"]}
            )
    for row in merged.values():
        ratios = [r["current"]["median_ms"] / r["base"]["median_ms"] for r in row["runs"]]
        row["base_ms"] = statistics.median(r["base"]["median_ms"] for r in row["runs"])
        row["current_ms"] = statistics.median(r["current"]["median_ms"] for r in row["runs"])
        row["ratio"], row["ratio_range"] = statistics.median(ratios), [min(ratios), max(ratios)]
    return list(merged.values())


def _table(rows: list[dict[str, Any]], args: argparse.Namespace, where: str, load: list[float]) -> str:
    several = args.processes > 1
    head = f"{args.n} x {args.d}, float32, forward+backward, {where}, median of {args.rounds} interleaved rounds"
    if several:
        head += f" in each of {args.processes} processes per library (medians over the processes)"
    lines = [
        f"{head}; base `{args.base}`; load average {min(load):.2f}-{max(load):.2f}",
        "",
        "| entry point | base (ms) | current (ms) | current / base |" + (" range |" if several else ""),
        "|---|---:|---:|---:|" + ("---:|" if several else ""),
    ]
    for row in rows:
        line = f"| {row['name']} | {row['base_ms']:.1f} | {row['current_ms']:.1f} | {row['ratio']:.2f} |"
        if several:
            line += " {:.2f}-{:.2f} |".format(*row["ratio_range"])
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the git revision to compare against, e.g. HEAD~3")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--d", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--processes", type=int, default=1, help="run it this many times, each library in a fresh process (default 1)"
    )
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument(
        "--columns",
        type=int,
        action="append",
        help="also time the current code with exactly this many exact columns whatever the data (0: none; an "
        "ablation; repeatable)",
    )
    parser.add_argument(
        "--harness",
        choices=("loss", "projector"),
        default="loss",
        help="loss: the loss called in a loop (default); projector: the loss between a projector's forward and "
        "backward pass (benchmarks.projector)",
    )
    parser.add_argument("--hidden", type=int, default=8192, help="projector harness: hidden width (default 8192)")
    parser.add_argument("--width", type=int, default=2048, help="projector harness: input width (default 2048)")
    parser.add_argument("--out", help="also write compare.json and compare.md into this folder")
    parser.add_argument("--_worker", nargs=2, metavar=("LIBRARY", "BASE_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    options = {k: getattr(args, k) for k in ("n", "d", "rounds", "harness", "hidden", "width")}
    if args._worker:
        library, base_dir = args._worker
        print(json.dumps(_measure(library, base_dir, options, args.columns)))
        return 0
    tmp = tempfile.mkdtemp(prefix="vicreg-compare-")
    try:
        _export(args.base, tmp)
        runs: list[list[dict[str, Any]]] = []
        load = [os.getloadavg()[0]]
        for _, library in itertools.product(range(args.processes), args.libraries.split(",")):
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.compare",
                "--base",
                args.base,
                "--n",
                str(args.n),
                "--d",
                str(args.d),
                "--rounds",
                str(args.rounds),
                "--harness",
                args.harness,
                "--hidden",
                str(args.hidden),
                "--width",
                str(args.width),
                "--_worker",
                library,
                tmp,
            ]
            for k in args.columns or []:
                cmd += ["--columns", str(k)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-2000:], file=sys.stderr)
                return out.returncode
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            load.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    where = (
        f"timed between the forward and backward pass of a {args.width} -> {args.hidden} -> {args.d} projector"
        if args.harness == "projector"
        else "the loss alone in a loop"
    )
    rows = summarise_runs(runs)
    table = _table(rows, args, where, load)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "compare.json"), "w") as f:
            json.dump(
                {"base": args.base, **options, "processes": args.processes, "load": load, "rows": rows}, f, indent=1
            )
        with open(os.path.join(args.out, "compare.md"), "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
