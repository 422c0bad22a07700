"""PyTorch's versions of the primitives of :mod:`vicreg._native`."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch

Array = Any


def host_read(xp: Any, x: Array) -> tuple[bool, ...] | None:
    """The values of a small tensor, read at once (``tolist``: one device-to-host read on a GPU); ``None``
    while ``torch.compile`` traces or a ``torch.func`` transform runs, where a read would break the graph or
    is refused."""
    if _tracing():
        return None
    return tuple(x.tolist())


def set_columns(xp: Any, p: Array, index: Array, h: Array) -> Array:
    """``p`` with ``h`` in its columns ``index``, by ``index_copy`` (one matrix) or ``scatter`` (a stack),
    out of place, so that autograd and ``torch.func`` may differentiate through it; the generic version
    multiplies by a ``k x d`` one-hot matrix."""
    if index.ndim == 1:
        return p.index_copy(-1, index, h)
    return p.scatter(-1, index.unsqueeze(-2).expand(h.shape), h)


def top_k(xp: Any, v: Array, k: int) -> tuple[Array, Array]:
    """``torch.topk`` (a partial selection), where the generic version sorts all ``d`` entries: 1.2 ms for two
    vectors of 8192 on a 2-core CPU, against 0.03 ms."""
    found = v.topk(k, dim=-1)
    return found.values, found.indices


def centred_columns(xp: Any, x: Array, correction: Array) -> Array:
    """``x - correction`` written into ``x`` (no new ``n x d`` tensor) where nothing records it (no autograd
    graph needs ``x``, no ``torch.func`` transform or ``torch.compile`` trace runs)."""
    correction = correction.unsqueeze(-2)
    return x.sub_(correction) if _writable(x) else x - correction


def scale_columns(xp: Any, x: Array, scale: Array) -> Array:
    """``x * scale`` written into ``x`` where nothing records it."""
    scale = scale.unsqueeze(-2)
    return x.mul_(scale) if _writable(x) else x * scale


def multiply_add(xp: Any, p: Array, x: Array, w: Array) -> Array:
    """``p + x * w`` in one pass (``addcmul``), into ``p`` where nothing traces it (autograd needs neither ``p``,
    a product's result, nor the sum)."""
    w = w.unsqueeze(-2)
    return p.addcmul_(x, w) if not _tracing() else torch.addcmul(p, x, w)


def add_product(xp: Any, p: Array, a: Array, b: Array) -> Array:
    """``p + a @ b`` in one call (``addmm``/``baddbmm``), into ``p`` where nothing traces it."""
    if _tracing():
        return p + a @ b
    return p.addmm_(a, b) if p.ndim == 2 else p.baddbmm_(a, b)


def add_difference(xp: Any, p: Array, q: Array, a: Array, b: Array, c: Any) -> tuple[Array, Array]:
    """``(p + c (a - b), q - c (a - b))`` added into ``p`` and ``q`` one input at a time (``add_`` with
    ``alpha``, ``addcmul_`` for a 0-d tensor ``c``): four passes and no new tensor, where the generic version
    makes four; out of place where something traces."""
    if _tracing():
        shift = c * (a - b)
        return p + shift, q - shift
    for target, sign in ((p, 1.0), (q, -1.0)):
        for x, s in ((a, sign), (b, -sign)):
            if isinstance(c, torch.Tensor):
                target.addcmul_(x, c, value=s)
            else:
                target.add_(x, alpha=s * c)
    return p, q


_BLOCK_ROWS = 32
"""Rows per block of the blocked sums of squares."""


def column_sum_sq(xp: Any, x: Array) -> Array:
    """``sum(x * x, axis=-2)``. On the CPU, where nothing records it, blocks of 32 rows accumulated in place
    (``addcmul_``) and then summed: no ``x * x`` of ``x``'s size, which the CPU allocator maps afresh, page
    by page, on every call. Each column's sum is then 8 partial sums of 32 rows each (at 256 rows), as short
    as the one-pass reduction's."""
    if not _blocked(x):
        return (x * x).sum(dim=-2)
    rows = min(_BLOCK_ROWS, x.shape[-2])
    acc = x.new_zeros((*x.shape[:-2], rows, x.shape[-1]))
    for start in range(0, x.shape[-2], rows):
        block = x[..., start : start + rows, :]
        acc[..., : block.shape[-2], :].addcmul_(block, block)
    return acc.sum(dim=-2)


def column_var(xp: Any, x: Array) -> Array:
    """The unbiased variance of each column of ``x`` (whose columns sum to zero). On the CPU where nothing
    records it, :func:`column_sum_sq`'s blocks; elsewhere one ``torch.var`` (one kernel instead of a square,
    a sum and a division; its mean of the centred columns is zero to rounding)."""
    if _blocked(x):
        return column_sum_sq(xp, x) / (x.shape[-2] - 1)
    return torch.var(x, dim=-2, correction=1)


def sum_sq_difference(xp: Any, a: Array, b: Array) -> Array:
    """``sum((a - b) ** 2)`` over the last two axes. On the CPU, where nothing records it, the difference of
    one block of 32 rows at a time, accumulated in place (as :func:`column_sum_sq`): no ``a - b`` of the
    inputs' size."""
    if not _blocked(a):
        diff = a - b
        return (diff * diff).sum(dim=-1).sum(dim=-1)
    rows = min(_BLOCK_ROWS, a.shape[-2])
    acc = a.new_zeros((*a.shape[:-2], rows, a.shape[-1]))
    block = torch.empty_like(acc)
    for start in range(0, a.shape[-2], rows):
        part = slice(start, start + rows)
        size = a[..., part, :].shape[-2]
        diff = torch.sub(a[..., part, :], b[..., part, :], out=block[..., :size, :])
        acc[..., :size, :].addcmul_(diff, diff)
    return acc.sum(dim=-1).sum(dim=-1)


def row_major(xp: Any, x: Array) -> Array:
    """``x.contiguous()``: the ``(p, n, d)`` view of ``(n, ..., d)`` inputs copied once, rather than by
    every batched product that reads it."""
    return x.contiguous()


def stop_gradient(xp: Any, x: Array) -> Array:
    """``x.detach()``: the eigenvalue solver is not recorded for autograd (a monitor; its backward would also
    be ill-defined at repeated eigenvalues)."""
    return x.detach()


def widened(xp: Any, x: Array) -> Array:
    """``x`` in float64, except on devices without it (Apple's MPS), where ``x`` itself."""
    return x if x.device.type == "mps" else x.to(torch.float64)


def device(xp: Any, x: Array) -> Any:
    """``x.device``, read directly (the generic version goes through array-api-compat's cached checks, which
    ``torch.compile`` would trace)."""
    return x.device


_DEVICE_PATH: contextvars.ContextVar[bool] = contextvars.ContextVar("vicreg_torch_device_path", default=False)


@contextlib.contextmanager
def device_path() -> Iterator[None]:
    """Inside (in this thread or task only): CPU tensors take the path of tensors on a GPU, without the
    CPU's blocked sums, so that the tests can run and count what a GPU runs."""
    token = _DEVICE_PATH.set(True)
    try:
        yield
    finally:
        _DEVICE_PATH.reset(token)


def _blocked(x: Array) -> bool:
    """Whether the blocked sums apply: a CPU tensor (on a GPU the blocks would be many small kernels) of more
    than one block of rows, that nothing records, outside :func:`device_path`."""
    return x.shape[-2] > _BLOCK_ROWS and x.device.type == "cpu" and not _DEVICE_PATH.get() and _writable(x)


def _writable(x: Array) -> bool:
    """Whether ``x`` may be changed in place: no autograd graph needs it and nothing traces."""
    return not ((x.requires_grad and torch.is_grad_enabled()) or _tracing())


_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)
_functorch_level = getattr(getattr(torch._C, "_functorch", None), "maybe_current_level", None)


def _tracing() -> bool:
    """Whether ``torch.compile`` traces or a ``torch.func`` transform runs."""
    return _is_compiling() or _functorch_level is None or _functorch_level() is not None


def bf16_round(xp: Any, x: Array) -> Array:
    """``x`` rounded to bfloat16 by a cast there and back; while ``torch.compile`` traces, on the bits (add
    half of the 16 dropped bits and the last kept one, clear them; NaN kept), because inductor fuses the two
    casts away (``torch._inductor.config.emulate_precision_casts`` is off by default) and would return ``x``
    itself."""
    if not _is_compiling():
        return x.to(torch.bfloat16).to(x.dtype)
    bits = x.view(torch.int32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & -65536).view(torch.float32)
    return torch.where(torch.isnan(x), x, rounded)


def _has_out_dtype() -> bool:
    """Whether ``torch.mm`` takes ``out_dtype`` (PyTorch 2.8 and later), asked once on tensors without data."""
    try:
        a = torch.empty(1, 1, dtype=torch.bfloat16, device="meta")
        return torch.mm(a, a, out_dtype=torch.float32).dtype == torch.float32
    except (TypeError, RuntimeError):
        return False


_OUT_DTYPE = _has_out_dtype()


def bf16_matmul(xp: Any, a: Array, b: Array) -> Array:
    """``a @ b`` of inputs that are bfloat16 numbers (:func:`bf16_round`'s). On a GPU (and on meta tensors),
    one bfloat16 product with float32 accumulation and a float32 result (``torch.mm``/``torch.bmm`` with
    ``out_dtype``: tensor cores, no bfloat16 rounding of the result; the cast to bfloat16 is exact). On the
    CPU, which has no such product, and where autograd or a ``torch.func`` transform records it (the
    ``out_dtype`` product has no derivative or batching rule), a float32 product: the same numbers up to the
    order of the sums (also with a PyTorch older than 2.8, whose ``torch.mm`` has no ``out_dtype``)."""
    recorded = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    transformed = _functorch_level is None or _functorch_level() is not None
    if a.device.type == "cpu" or recorded or transformed or not _OUT_DTYPE:
        return a @ b
    mm = torch.mm if a.ndim == 2 else torch.bmm
    return mm(a.to(torch.bfloat16), b.to(torch.bfloat16), out_dtype=torch.float32)
