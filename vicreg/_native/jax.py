"""JAX's versions of the primitives of :mod:`vicreg._native`."""

from __future__ import annotations

from typing import Any

import jax

Array = Any


def host_read(xp: Any, x: Array) -> tuple[bool, ...] | None:
    """The values of a concrete array; ``None`` for a traced one (under ``jit``, ``grad``, ``vmap``), where
    :mod:`vicreg.jax` chooses with ``lax.switch`` instead."""
    if isinstance(x, jax.core.Tracer):
        return None
    return tuple(x.tolist())


def set_columns(xp: Any, p: Array, index: Array, h: Array) -> Array:
    """``p.at[..., index].set(h)``: a scatter that XLA fuses with the passes around it, where the generic
    version multiplies by a ``k x d`` one-hot matrix."""
    if index.ndim == 1:
        return p.at[:, index].set(h)
    stack = xp.reshape(xp.arange(index.shape[0]), (-1, 1, 1))
    rows = xp.reshape(xp.arange(p.shape[-2]), (1, -1, 1))
    return p.at[stack, rows, xp.expand_dims(index, axis=-2)].set(h)


def top_k(xp: Any, v: Array, k: int) -> tuple[Array, Array]:
    """``jax.lax.top_k``, where the generic version sorts all ``d`` entries: XLA's sort of two vectors of
    8192 takes 2 to 3.3 ms on a 2-core CPU, ``top_k`` 0.05 ms.

    Each output behind an optimization barrier of its own: XLA turns a ``TopK`` whose values are only read in
    slices (the ``k``-th and ``(k + 1)``-th largest, as :func:`vicreg._terms.columns_suffice` reads them), or
    whose indices alone are read (:func:`vicreg._terms.largest_columns`), back into a full sort of the
    vector, which cost the jitted gradient 2 ms of its 18 at ``256 x 8192`` on that CPU (XLA 0.10.2). One
    barrier over both outputs makes XLA's TopK decomposition abort the process under ``shard_map``."""
    values, index = jax.lax.top_k(v, k)
    return jax.lax.optimization_barrier(values), jax.lax.optimization_barrier(index)


def stop_gradient(xp: Any, x: Array) -> Array:
    """``jax.lax.stop_gradient``: the eigenvalue solver is not differentiated (a monitor)."""
    return jax.lax.stop_gradient(x)


def widened(xp: Any, x: Array) -> Array:
    """``x`` in float64 where 64-bit types are enabled (``jax_enable_x64``); ``x`` itself otherwise, where a
    cast would warn and give float32 anyway."""
    if jax.dtypes.canonicalize_dtype(xp.float64) != xp.float64:
        return x
    return x.astype(xp.float64)


def bf16_round(xp: Any, x: Array) -> Array:
    """``x`` rounded to bfloat16 by a cast there and back."""
    return x.astype(xp.bfloat16).astype(x.dtype)


def bf16_matmul(xp: Any, a: Array, b: Array) -> Array:
    """``jnp.matmul`` with ``lax.DotAlgorithmPreset.BF16_BF16_F32`` of inputs that are bfloat16 numbers: one
    bfloat16 pass with float32 accumulation on a GPU's tensor cores (its cast to bfloat16 is exact). XLA's
    CPU backend ignores the preset and multiplies in float32, which gives the same numbers for such inputs:
    the rounding is the caller's (:func:`bf16_round`)."""
    preset = jax.lax.DotAlgorithmPreset.BF16_BF16_F32
    return xp.matmul(a, b, precision=preset, preferred_element_type=xp.float32)
