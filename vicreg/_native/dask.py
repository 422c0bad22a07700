"""dask's versions of the primitives of :mod:`vicreg._native`."""

from __future__ import annotations

from typing import Any

Array = Any


def host_read(xp: Any, x: Array) -> tuple[bool, ...]:
    """The values computed at once (one ``compute`` of the graph that leads to them), where the generic
    version would compute the graph once per value."""
    return tuple(x.compute().tolist())


def eigvalsh(xp: Any, m: Array) -> Array:
    """The eigenvalues of the small symmetric matrix, computed (dask has no symmetric eigensolver) with
    NumPy's and wrapped back as a one-chunk dask array."""
    import numpy as np

    return xp.asarray(np.linalg.eigvalsh(m.compute()))
