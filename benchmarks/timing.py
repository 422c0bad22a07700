"""Interleaved timing of the implementations of one case.

Method: every implementation is called ``warmup`` times first (JIT compilation, allocator and BLAS
thread-pool warm-up; one call only when a call takes over half a second), then the implementations are
timed in rounds, one call each per round, in a new random order every round (seeded, so a rerun
repeats it), so that slow drifts of the machine (other load, clock boosting, thermal state) fall on all
of them alike. After each call the machine is left to settle, untimed, for a tenth of that call's time
(at most a quarter of a second): JAX's CPU client frees a call's buffers in the background, and the calls
that followed the official formulation (1.3 GB at 256 x 8192, 2.4 s) within ~0.2 s ran up to twice as
slow. (A rotated order, ``A B C``, ``B C A``, ..., had charged that to the same call every round.)
Each call is timed with ``time.perf_counter``
around the call *including* the device synchronisation (``block_until_ready``, CUDA synchronise), which
every runner does before returning. Rounds continue until ``min_rounds`` are done and ``budget_s`` is
spent, or ``max_rounds`` are done. Reported: median, minimum, maximum and the interquartile range.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def summarise(samples: Sequence[float]) -> dict[str, Any]:
    """Median, spread and count of a list of durations in seconds, reported in milliseconds."""
    xs = sorted(samples)
    if len(xs) >= 2:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    else:
        q1 = q3 = xs[0]
    ms = 1e3
    return {
        "median_ms": statistics.median(xs) * ms,
        "min_ms": xs[0] * ms,
        "max_ms": xs[-1] * ms,
        "q1_ms": q1 * ms,
        "q3_ms": q3 * ms,
        "iqr_ms": (q3 - q1) * ms,
        "rounds": len(xs),
    }


def time_interleaved(
    calls: Sequence[Callable[[], Any]],
    *,
    warmup: int = 2,
    min_rounds: int = 5,
    max_rounds: int = 30,
    budget_s: float = 2.0,
    tick: Callable[[], None] | None = None,
    outputs: list[Any] | None = None,
    settle: float = 0.1,
    settle_max_s: float = 0.25,
) -> list[dict[str, Any]]:
    """Time ``calls`` against each other in a shuffled order per round (seeded); one summary per call, in
    the input order. After each call, an untimed pause of ``settle`` times its duration (at most
    ``settle_max_s``). If ``outputs`` is a list, it receives each call's result from its last timed round."""
    for call in calls:
        for _ in range(warmup):
            t0 = time.perf_counter()
            call()
            if time.perf_counter() - t0 > 0.5:
                break
    samples: list[list[float]] = [[] for _ in calls]
    last: list[Any] = [None] * len(calls)
    order = list(range(len(calls)))
    shuffle = random.Random(0).shuffle
    start = time.perf_counter()
    rounds = 0
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # a collection inside one timed call would be charged to that implementation
    try:
        while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < budget_s):
            shuffle(order)
            for i in order:
                t0 = time.perf_counter()
                out = calls[i]()
                elapsed = time.perf_counter() - t0
                samples[i].append(elapsed)
                if outputs is not None:
                    last[i] = out
                del out
                time.sleep(min(settle * elapsed, settle_max_s))  # untimed: what the call left behind settles
            rounds += 1
            if tick is not None:
                tick()
    finally:
        if gc_was_enabled:
            gc.enable()
    if outputs is not None:
        outputs[:] = last
    return [summarise(s) for s in samples]
