"""CuPy's versions of the primitives of :mod:`vicreg._native`."""

from __future__ import annotations

from typing import Any

Array = Any


def host_read(xp: Any, x: Array) -> tuple[bool, ...]:
    """``x.tolist()``: the values in one device-to-host transfer, where the generic version reads them one at
    a time (a transfer and a synchronisation each)."""
    return tuple(x.tolist())


def bf16_round(xp: Any, x: Array) -> Array:
    """``x`` rounded to the nearest bfloat16 on its bits, as NumPy's version does."""
    import cupy

    from .numpy import round_bits

    return round_bits(cupy, x)
