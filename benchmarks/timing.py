"""Interleaved timing of the implementations of one case.

Method: every implementation is called ``warmup`` times first (JIT compilation, allocator and BLAS
thread-pool warm-up; one call only when a call takes over half a second), then the implementations are
timed in rounds, one call each per round, the order rotated every round (``A B C``, ``B C A``,
``C A B``, ...) so that slow drifts of the machine (other load, clock boosting, thermal state) fall on all
of them alike. Each call is timed with ``time.perf_counter``
around the call *including* the device synchronisation (``block_until_ready``, CUDA synchronise), which
every runner does before returning. Rounds continue until ``min_rounds`` are done and ``budget_s`` is
spent, or ``max_rounds`` are done. Reported: median, minimum, maximum and the interquartile range.
"""

from __future__ import annotations

import gc
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
) -> list[dict[str, Any]]:
    """Time ``calls`` against each other in rotated order; one summary per call, in the input order.
    If ``outputs`` is a list, it receives each call's result from its last timed round."""
    for call in calls:
        for _ in range(warmup):
            t0 = time.perf_counter()
            call()
            if time.perf_counter() - t0 > 0.5:
                break
    samples: list[list[float]] = [[] for _ in calls]
    last: list[Any] = [None] * len(calls)
    k = len(calls)
    start = time.perf_counter()
    rounds = 0
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # a collection inside one timed call would be charged to that implementation
    try:
        while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < budget_s):
            for j in range(k):
                i = (j + rounds) % k
                t0 = time.perf_counter()
                out = calls[i]()
                samples[i].append(time.perf_counter() - t0)
                if outputs is not None:
                    last[i] = out
                del out
            rounds += 1
            if tick is not None:
                tick()
    finally:
        if gc_was_enabled:
            gc.enable()
    if outputs is not None:
        outputs[:] = last
    return [summarise(s) for s in samples]
