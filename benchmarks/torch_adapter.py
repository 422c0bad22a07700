"""Timings for the PyTorch adapter (CPU, float32, n=256, d=8192 by default); see "Timings" in
``docs/pytorch.md``.

    python -m benchmarks.torch_adapter eager-compiled     # eager vs torch.compile, forward and forward+backward
    python -m benchmarks.torch_adapter backward           # autograd through the core vs the analytic backward
    python -m benchmarks.torch_adapter per-rank           # per-rank covariance time, world size 1 vs 2 (gloo)

Each line is the median over repeats (after warm-up) of interleaved runs, so that load from other processes
hits every variant alike. Not a test: speed lives here, correctness in tests/.
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import statistics
import time

import torch


def _median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def _views(n, d, grad):
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(n, d, generator=g)
    z2 = z1 + 0.5 * torch.randn(n, d, generator=g)
    return z1.requires_grad_(grad), z2.requires_grad_(grad)


def _interleave(variants, rounds, repeats):
    """``variants``: name -> zero-argument callable. Warm each up, then alternate; median per variant."""
    for fn in variants.values():
        fn()
        fn()
    samples = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name].append(_median_ms(fn, repeats))
    return {name: statistics.median(s) for name, s in samples.items()}


def eager_compiled(n, d, rounds, repeats):
    import vicreg.torch as vt

    loss_fn = vt.VICRegLoss()
    compiled = torch.compile(loss_fn, fullgraph=True)
    z1, z2 = _views(n, d, grad=True)

    def forward(fn):
        def run():
            with torch.no_grad():
                fn(z1, z2)

        return run

    def forward_backward(fn):
        def run():
            fn(z1, z2).backward()
            z1.grad = z2.grad = None

        return run

    result = _interleave(
        {
            "eager forward": forward(loss_fn),
            "compiled forward": forward(compiled),
            "eager forward+backward": forward_backward(loss_fn),
            "compiled forward+backward": forward_backward(compiled),
        },
        rounds,
        repeats,
    )
    for name, ms in result.items():
        print(f"{name:28s} {ms:8.1f} ms   (n={n}, d={d}, float32, {torch.get_num_threads()} threads)")


def backward(n, d, rounds, repeats):
    import vicreg.torch as vt

    z1, z2 = _views(n, d, grad=True)
    fns = {"autograd": vt.VICRegLoss(backward="autograd"), "analytic": vt.VICRegLoss(backward="analytic")}

    def step(fn):
        def run():
            fn(z1, z2).backward()
            z1.grad = z2.grad = None

        return run

    result = _interleave({name: step(fn) for name, fn in fns.items()}, rounds, repeats)
    for name, fn in fns.items():
        saved = _saved_bytes(fn, z1, z2)
        print(
            f"{name:10s} forward+backward {result[name]:8.1f} ms, saved for backward {saved / 2**20:6.1f} MiB"
            f"   (n={n}, d={d}, float32, {torch.get_num_threads()} threads)"
        )


def _saved_bytes(fn, z1, z2):
    """Bytes of distinct storages autograd keeps for the backward pass (inputs excluded): the saved tensors,
    and the tensors an ``autograd.Function`` holds on its context (its node in the graph), as
    ``vicreg.torch`` does with the statistics it builds the gradients in."""
    storages = {}

    def keep(t):
        if isinstance(t, torch.Tensor) and t.data_ptr() not in (z1.data_ptr(), z2.data_ptr()):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        loss = fn(z1, z2)
    nodes, seen = [loss.grad_fn], set()
    while nodes:
        node = nodes.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        for value in getattr(node, "__dict__", {}).values():
            for item in value if isinstance(value, (list, tuple)) else (value,):
                keep(item)
        nodes.extend(next_node for next_node, _ in node.next_functions)
    return sum(storages.values())


def _per_rank_worker(rank, world, port, n, d, rounds, repeats, out):
    import array_api_compat.torch as xp
    import torch.distributed as dist

    from vicreg import _terms
    from vicreg import torch as vt

    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=120),
        )
    rows = n // world
    z1, z2 = _views(n, d, grad=True)
    z1 = z1.detach()[rank * rows : (rank + 1) * rows].requires_grad_()
    z2 = z2.detach()[rank * rows : (rank + 1) * rows].requires_grad_()
    loss_fn = vt.VICRegLoss(backward="autograd")
    if world > 1:
        total, gather = vt._collectives(None)

        def largest(x):
            x = x.clone()
            dist.all_reduce(x, op=dist.ReduceOp.MAX)
            return x

        reduce = _terms.Reduce(total=total, maximum=largest, gather_rows=gather)
    else:
        reduce = _terms.LOCAL
    zc, centring = _terms.centre(xp, z1.detach(), n, reduce)
    zc_all = reduce.gather_rows(zc)

    def covariance_compute():  # this rank's rows of the Gram matrix and their squared norm, no communication
        _terms.sum_sq(xp, zc @ zc_all.T, axes=2)

    def covariance():  # the same through the core (all n - 1 exact columns), with the collectives
        _terms.off_diagonal(xp, zc.clone(), centring, n, n - 1, reduce)  # it consumes its first array

    def step():
        loss_fn(z1, z2).backward()
        z1.grad = z2.grad = None

    variants = {
        "covariance compute": covariance_compute,
        "covariance + collectives": covariance,
        "loss forward+backward": step,
    }
    if world == 1:
        # What one rank of a larger group computes, timed here without the other ranks competing for the
        # same cores: its n / W rows of the Gram matrix against all n rows.
        for w in (2, 4):
            variants[f"covariance compute as 1 of {w}"] = lambda w=w: _terms.sum_sq(xp, zc[: n // w] @ zc_all.T, axes=2)
    result = _interleave(variants, rounds, repeats)
    if rank == 0:
        with open(out, "w") as f:
            for name, ms in result.items():
                f.write(f"world size {world}: per-rank {name:32s} {ms:8.1f} ms (n={n}, d={d})\n")
    if world > 1:
        dist.destroy_process_group()
    os._exit(0)  # skip the interpreter teardown, where torch 2.14.1 + gloo sometimes aborts (see the tests)


def per_rank(n, d, rounds, repeats):
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        for world in (1, 2):
            out = os.path.join(tmp, f"w{world}.txt")
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            mp.spawn(_per_rank_worker, args=(world, port, n, d, rounds, repeats, out), nprocs=world)
            with open(out) as fh:
                print(fh.read(), end="")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["eager-compiled", "backward", "per-rank"])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--d", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    run = {"eager-compiled": eager_compiled, "backward": backward, "per-rank": per_rank}[args.what]
    run(args.n, args.d, args.rounds, args.repeats)
