"""Peak memory of one call, measured the way each framework's allocations can be seen.

* NumPy: ``tracemalloc`` (NumPy reports every array buffer to it), the peak above what was traced before
  the call.
* PyTorch on CPU: the process's resident-set high-water mark. Before the call, freed heap memory
  is handed back to the OS (``malloc_trim``) and the kernel's high-water mark ``VmHWM`` is reset to the
  current ``VmRSS`` (writing ``5`` to ``/proc/self/clear_refs``); the peak is ``VmHWM`` after the call
  minus ``VmRSS`` before it. Linux only; it sees every allocation that is touched, whatever allocates it.
* PyTorch on CUDA: the caching allocator's ``max_memory_allocated`` above ``memory_allocated``, after
  ``reset_peak_memory_stats``.
* JAX (CPU and GPU): XLA's buffer assignment for the compiled call (``temp`` + ``output`` bytes of
  ``Compiled.memory_analysis()``), which is what the executable allocates. (The resident set does not
  work for JAX on CPU: its client keeps freed buffers and reuses them.)
* CuPy: a counting allocator wrapped around the default memory pool (live bytes, peak above the start).

Every method counts the call's outputs (the loss and, for forward+backward, the two gradients), which are
the same for every implementation of a case.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import tracemalloc
import weakref
from collections.abc import Callable
from typing import Any

METHODS = {
    "tracemalloc": "tracemalloc peak (NumPy buffers)",
    "rss": "resident-set high-water mark delta (VmHWM reset, malloc_trim)",
    "cuda": "CUDA caching allocator max_memory_allocated delta",
    "xla": "XLA compiled memory_analysis (temp + output)",
    "cupy": "counting allocator over CuPy's memory pool",
}


def tracemalloc_peak(call: Callable[[], Any]) -> int:
    """Bytes traced by ``tracemalloc`` at the peak of ``call()``, above the level before it."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        out = call()
        peak = tracemalloc.get_traced_memory()[1] - before
        del out
    finally:
        if started:
            tracemalloc.stop()
    return peak


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise OSError(f"{key} not in /proc/self/status")


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@functools.cache
def rss_available() -> bool:
    """Whether the resident-set high-water mark can be reset here (Linux, writable clear_refs)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        _status_bytes("VmHWM:")
    except OSError:
        return False
    return True


def rss_peak(call: Callable[[], Any]) -> int:
    """Resident-set growth at the peak of ``call()``: ``VmHWM`` after it minus ``VmRSS`` before it."""
    _trim()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    before = _status_bytes("VmRSS:")
    out = call()
    peak = _status_bytes("VmHWM:") - before
    del out
    return max(peak, 0)


def cuda_peak(call: Callable[[], Any]) -> int:
    """Peak bytes of PyTorch's CUDA caching allocator during ``call()``, above its level before."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = call()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del out
    return peak


def xla_peak(compiled_stats: Any) -> int:
    """``temp + output`` bytes of an XLA ``CompiledMemoryStats``."""
    return int(compiled_stats.temp_size_in_bytes + compiled_stats.output_size_in_bytes)


class _CountingAllocator:
    """Wraps CuPy's default pool; counts live bytes and their peak."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.live = 0
        self.peak = 0

    def _free(self, size: int) -> None:
        self.live -= size

    def __call__(self, size: int) -> Any:
        mem = self.pool.malloc(size)
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(mem, self._free, size)
        return mem


def cupy_peak(call: Callable[[], Any]) -> int:
    """Peak live bytes allocated through CuPy during ``call()``."""
    import cupy

    pool = cupy.get_default_memory_pool()
    counter = _CountingAllocator(pool)
    cupy.cuda.Device().synchronize()
    cupy.cuda.set_allocator(counter)
    try:
        out = call()
        cupy.cuda.Device().synchronize()
    finally:
        cupy.cuda.set_allocator(pool.malloc)
    peak = counter.peak
    del out
    return peak
