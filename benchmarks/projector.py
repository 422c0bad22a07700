"""The loss where users run it: after the forward pass of a projector, before its backward pass.

A loop that calls only the loss flatters it: its inputs, its scratch memory and the allocator's state stay
warm from one call to the next. In training the loss follows a network's forward pass, whose large matrix
products evict the caches and whose activations fill the allocator, and its gradient feeds the network's
backward pass. This harness times the loss in that place. Each timed unit is one training step of a
projector (``Linear(in, hidden) -> ReLU -> Linear(hidden, d)``, both views through the same weights):

1. the projector's forward pass on both views (not timed);
2. **the loss and its gradient with respect to the embeddings** (timed: the entry point's forward and
   backward pass, nothing else);
3. the projector's backward pass from that gradient, and the gradients of its weights (not timed).

The entry points are those of :mod:`benchmarks.compare` (NumPy ``value_and_grad``; PyTorch
``vicreg.torch.VICRegLoss()`` and ``vicreg.vicreg_loss``, ``torch.autograd.grad`` of the loss; JAX
``jax.jit(jax.value_and_grad(...))`` of ``vicreg.jax.vicreg_loss`` and of ``vicreg.vicreg_loss``), timed
interleaved in a shuffled order per round, one step per entry point per round, with a one-call warm-up.

``python -m benchmarks.projector`` times the current code; ``--without PRIMITIVE`` adds, in the same rounds,
the current code with that primitive's native version replaced by the generic one (see
:mod:`vicreg._native`): what the native version gains, in this harness. ``python -m benchmarks.compare
--harness projector`` times two revisions against each other in it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from .timing import summarise

LIBRARIES = ("numpy", "torch", "jax")

Step = tuple[Callable[[], Any], Callable[[Any, Any], None]]
"""``(before, after)``: the projector's forward pass, returning the loss's inputs, and its backward pass from
``(inputs, gradients)``."""


# --- the loss calls: (z1, z2) -> gradients ---------------------------------------------------------------


def loss_calls(library: str, module: Any) -> dict[str, Callable[[Any, Any], Any]]:
    """Name -> ``f(z1, z2)`` returning the gradients with respect to ``z1`` and ``z2``, for the entry points
    of ``module`` (``vicreg``, or an earlier revision's copy of it) on ``library``'s arrays."""
    import importlib

    if library == "numpy":
        return {"numpy value_and_grad": lambda a, b: module.value_and_grad(a, b)[1]}
    if library == "torch":
        import torch

        adapter = importlib.import_module(module.__name__ + ".torch")

        def grad_of(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
            return lambda a, b: torch.autograd.grad(fn(a, b), (a, b))

        return {
            "torch VICRegLoss (analytic)": grad_of(adapter.VICRegLoss()),
            "torch vicreg_loss + autograd": grad_of(module.vicreg_loss),
        }
    import jax

    adapter = importlib.import_module(module.__name__ + ".jax")
    calls = {}
    for name, fn in (("jax vicreg.jax.vicreg_loss", adapter.vicreg_loss), ("jax vicreg_loss", module.vicreg_loss)):
        compiled = jax.jit(jax.grad(fn, argnums=(0, 1)))
        calls[f"{name} grad (jit)"] = lambda a, b, compiled=compiled: jax.block_until_ready(compiled(a, b))
    return calls


# --- the steps ----------------------------------------------------------------------------------------------


def loss_only(library: str, n: int, d: int) -> Step:
    """The loss alone on fixed seeded inputs (PyTorch: fresh leaf tensors each call); nothing after it."""
    z1, z2 = _embeddings(n, d)
    if library == "numpy":
        return (lambda: (z1, z2)), _nothing
    if library == "torch":
        import torch

        t1, t2 = torch.from_numpy(z1), torch.from_numpy(z2)
        return (lambda: (t1.clone().requires_grad_(), t2.clone().requires_grad_())), _nothing
    import jax.numpy as jnp

    j1, j2 = jnp.asarray(z1), jnp.asarray(z2)
    return (lambda: (j1, j2)), _nothing


def projector_step(library: str, n: int, d: int, hidden: int, width: int) -> Step:
    """The projector's forward and backward pass around the loss, for ``library``: ``n`` rows of ``width``
    features per view, a hidden layer of ``hidden`` units, embeddings of ``d`` features, float32."""
    import numpy as np

    rng = np.random.default_rng(1)
    x1 = rng.standard_normal((n, width), dtype=np.float32)
    x2 = (x1 + 0.3 * rng.standard_normal((n, width), dtype=np.float32)).astype(np.float32)
    w1 = (rng.standard_normal((width, hidden), dtype=np.float32) / np.sqrt(width)).astype(np.float32)
    w2 = (rng.standard_normal((hidden, d), dtype=np.float32) / np.sqrt(hidden)).astype(np.float32)
    if library == "numpy":
        return _numpy_step(x1, x2, w1, w2)
    if library == "torch":
        return _torch_step(x1, x2, w1, w2)
    return _jax_step(x1, x2, w1, w2)


def _numpy_step(x1: Any, x2: Any, w1: Any, w2: Any) -> Step:
    import numpy as np

    hidden: list[Any] = []

    def before() -> Any:
        hidden[:] = [np.maximum(x @ w1, 0) for x in (x1, x2)]
        return tuple(h @ w2 for h in hidden)

    def after(_: Any, grads: Any) -> None:
        dw1, dw2 = np.zeros_like(w1), np.zeros_like(w2)
        for x, h, g in zip((x1, x2), hidden, grads):
            dw2 += h.T @ g
            dw1 += x.T @ ((g @ w2.T) * (h > 0))

    return before, after


def _torch_step(x1: Any, x2: Any, w1: Any, w2: Any) -> Step:
    import torch

    projector = torch.nn.Sequential(
        torch.nn.Linear(w1.shape[0], w1.shape[1]), torch.nn.ReLU(), torch.nn.Linear(w2.shape[0], w2.shape[1])
    )
    with torch.no_grad():
        projector[0].weight.copy_(torch.from_numpy(w1.T))
        projector[2].weight.copy_(torch.from_numpy(w2.T))
    t1, t2 = torch.from_numpy(x1), torch.from_numpy(x2)

    def before() -> Any:
        projector.zero_grad(set_to_none=True)
        return projector(t1), projector(t2)

    def after(embeddings: Any, grads: Any) -> None:
        torch.autograd.backward(embeddings, grads)

    return before, after


def _jax_step(x1: Any, x2: Any, w1: Any, w2: Any) -> Step:
    import jax
    import jax.numpy as jnp

    params = (jnp.asarray(w1), jnp.zeros(w1.shape[1], jnp.float32), jnp.asarray(w2), jnp.zeros(w2.shape[1]))
    j1, j2 = jnp.asarray(x1), jnp.asarray(x2)

    def project(p: Any, x: Any) -> Any:
        return jax.nn.relu(x @ p[0] + p[1]) @ p[2] + p[3]

    forward = jax.jit(lambda p: (project(p, j1), project(p, j2)))
    backward = jax.jit(lambda p, g: jax.vjp(lambda q: (project(q, j1), project(q, j2)), p)[1](g))

    def before() -> Any:
        return jax.block_until_ready(forward(params))

    def after(_: Any, grads: Any) -> None:
        jax.block_until_ready(backward(params, tuple(grads)))

    return before, after


def _embeddings(n: int, d: int) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    z1 = rng.standard_normal((n, d), dtype=np.float32)
    return z1, (z1 + 0.3 * rng.standard_normal((n, d), dtype=np.float32)).astype(np.float32)


def _nothing(_: Any, __: Any) -> None:
    return None


# --- timing -------------------------------------------------------------------------------------------------


def time_in_steps(
    calls: list[Callable[[Any, Any], Any]], step: Step, *, rounds: int, warmup: int = 1
) -> list[dict[str, Any]]:
    """Each of ``calls`` timed inside ``step``, one step per call per round, in a new (seeded) random order
    each round; only the call is timed. One summary (:func:`benchmarks.timing.summarise`) per call."""
    before, after = step
    for call in calls:
        for _ in range(warmup):
            inputs = before()
            after(inputs, call(*inputs))
    samples: list[list[float]] = [[] for _ in calls]
    order = list(range(len(calls)))
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)
        for i in order:
            inputs = before()
            t0 = time.perf_counter()
            grads = calls[i](*inputs)
            samples[i].append(time.perf_counter() - t0)
            after(inputs, grads)
            del inputs, grads
    return [summarise(s) for s in samples]


@contextlib.contextmanager
def generic(module: Any, primitive: str) -> Iterator[None]:
    """Inside: ``module``'s (``vicreg``'s) primitive ``primitive`` in its generic version for every library,
    as if no library had a native one."""
    import importlib

    native = importlib.import_module(module.__name__ + "._native")
    generic_version = getattr(native.generic, primitive)
    saved = {name: getattr(ops, primitive) for name, ops in native._cache.items()}
    build = native._build

    def build_generic(name: str) -> Any:
        ops = build(name)
        setattr(ops, primitive, generic_version)
        return ops

    native._build = build_generic
    for ops in native._cache.values():
        setattr(ops, primitive, generic_version)
    try:
        yield
    finally:
        native._build = build
        for name, original in saved.items():
            setattr(native._cache[name], primitive, original)
        for name in set(native._cache) - set(saved):
            del native._cache[name]


def _without(module: Any, primitive: str, call: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def run(a: Any, b: Any) -> Any:
        with generic(module, primitive):
            return call(a, b)

    return run


def measure(
    library: str, *, n: int, d: int, hidden: int, width: int, rounds: int, without: list[str], harness: str
) -> list[dict[str, Any]]:
    """In this process: the current code's calls for ``library`` (and, per primitive in ``without``, the same
    with that primitive generic), timed in ``harness`` (``"projector"`` or ``"loss"``)."""
    import vicreg

    step = projector_step(library, n, d, hidden, width) if harness == "projector" else loss_only(library, n, d)
    current = loss_calls(library, vicreg)
    names = list(current)
    calls = [current[k] for k in names]
    labels = list(names)
    for primitive in without:
        # a fresh set of calls (JAX: traced again with the generic primitive, inside the context)
        variant = loss_calls(library, vicreg)
        calls += [_without(vicreg, primitive, variant[k]) for k in names]
        labels += [f"{k}, generic {primitive}" for k in names]
    summaries = time_in_steps(calls, step, rounds=rounds)
    return [{"name": label, **summary} for label, summary in zip(labels, summaries)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.projector", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="rows per view (default 256)")
    parser.add_argument("--d", type=int, default=8192, help="embedding width (default 8192)")
    parser.add_argument("--hidden", type=int, default=8192, help="the projector's hidden width (default 8192)")
    parser.add_argument("--width", type=int, default=2048, help="the projector's input width (default 2048)")
    parser.add_argument("--rounds", type=int, default=10, help="timed steps per call (default 10)")
    parser.add_argument("--libraries", default=",".join(LIBRARIES), help="default: numpy,torch,jax")
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        metavar="PRIMITIVE",
        help="also time the current code with this primitive generic (repeatable)",
    )
    parser.add_argument("--harness", choices=("projector", "loss"), default="projector", help="default: projector")
    parser.add_argument("--out", help="also write projector.json and projector.md into this folder")
    parser.add_argument("--_worker", metavar="LIBRARY", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    options = dict(n=args.n, d=args.d, hidden=args.hidden, width=args.width, rounds=args.rounds, without=args.without)
    if args._worker:
        print(json.dumps(measure(args._worker, harness=args.harness, **options)))
        return 0
    rows, load = [], [os.getloadavg()[0]]
    for library in args.libraries.split(","):
        cmd = [sys.executable, "-m", "benchmarks.projector", *(argv or sys.argv[1:]), "--_worker", library]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-2000:], file=sys.stderr)
            return out.returncode
        rows += json.loads(out.stdout.strip().splitlines()[-1])
        load.append(os.getloadavg()[0])
    table = markdown(rows, args, load)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "projector.json"), "w") as f:
            json.dump({"options": vars(args), "load": load, "rows": rows}, f, indent=1)
        with open(os.path.join(args.out, "projector.md"), "w") as f:
            f.write(table + "\n")
    return 0


def markdown(rows: list[dict[str, Any]], args: Any, load: list[float]) -> str:
    lines = [
        f"The loss's forward+backward, {args.n} x {args.d} float32, timed in the {args.harness} harness "
        f"(projector {args.width} -> {args.hidden} -> {args.d}); median of {args.rounds} interleaved steps; "
        f"load average {min(load):.2f}-{max(load):.2f}",
        "",
        "| entry point | median (ms) | min-max (ms) | vs the current code |",
        "|---|---:|---:|---:|",
    ]
    current = {r["name"]: r["median_ms"] for r in rows if ", generic " not in r["name"]}
    for row in rows:
        base = current[row["name"].split(", generic ")[0]]
        lines.append(
            f"| {row['name']} | {row['median_ms']:.1f} | {row['min_ms']:.1f}-{row['max_ms']:.1f} | "
            f"{row['median_ms'] / base:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
