r"""The VICReg loss for PyTorch: an ``nn.Module``, exact under ``DistributedDataParallel``, float32 statistics
under ``torch.autocast``, and traceable by ``torch.compile(fullgraph=True)``.

.. math::

    \mathcal L = \lambda\, s(Z^1, Z^2) + \mu\, v(Z^1, Z^2) + \nu\, [c(Z^1) + c(Z^2)]

with the terms of :mod:`vicreg._terms` (see :class:`vicreg.VICRegLoss` for the conventions). Nothing here
re-derives a term: this module validates and casts the inputs, chooses the collectives, and calls the core's
``statistics``/``terms_from_statistics`` (and, for the backward pass on one process, the core's analytic
``gradient``):

>>> import torch, vicreg.torch
>>> z1 = torch.randn(32, 64, requires_grad=True)
>>> z2 = torch.randn(32, 64, requires_grad=True)
>>> loss_fn = vicreg.torch.VICRegLoss()   # the core's keywords, plus gather_distributed=True
>>> loss = loss_fn(z1, z2)                # 0-d tensor; under DDP: the loss of the global batch
>>> loss.backward()                       # the analytic gradient
>>> terms = loss_fn.terms(z1, z2)         # VICRegTerms of 0-d tensors, for logging
>>> z1.grad.shape, terms.loss.shape
(torch.Size([32, 64]), torch.Size([]))

One process. The backward pass is, by default (``backward="analytic"``), the core's analytic gradient in a
``torch.autograd.Function``: one ``n x n x d`` product per view where autograd through the Gram product
needs two, equal to autograd to rounding (``backward="autograd"`` differentiates through the core instead).
Every order of derivative is exact with either: a double backward (a gradient penalty), ``torch.func.grad``,
``vmap``, ``jacrev``, ``jacfwd`` and ``hessian`` differentiate the analytic gradient itself (see
:class:`_AnalyticVICReg`).

Distributed training. When a ``torch.distributed`` process group with more than one rank is initialised and
``gather_distributed=True``, every rank returns the loss of the concatenated global batch (all ranks' rows,
in rank order; per-rank batches may differ in size). Sums over the batch are all-reduced and, on the Gram
path (global ``n < d``), each rank computes only its own rows ``zc_local @ zc_all^T`` of the ``n x n`` Gram
matrix, so the covariance work per rank is ``n^2 d / world_size``. The backward pass is autograd through
PyTorch's differentiable collectives, and the gradients DDP averages are exact: see
:func:`_distributed_statistics` for the argument. The ranks first exchange their row counts (one small
all-gather and a host synchronisation per call), which is also how an invalid input on one rank becomes an
error on every rank instead of a hang. Under a process group the loss does not trace with
``torch.compile(fullgraph=True)`` (the exchange reads the counts on the host): compile the model, or the
loss without ``fullgraph``.
"""

from __future__ import annotations

import contextlib
import functools
import typing
import warnings
from typing import Any

import array_api_compat.torch as _xp
import torch
import torch.distributed as dist

from . import _checks
from ._config import Config, VCRegTerms, VCRegTermsWithRankMe, VICRegTerms, VICRegTermsWithRankMe
from ._loss import (
    Statistics,
    diagnostics,
    gradient,
    positions_first,
    products_precision,
    statistics,
    terms_from_statistics,
    vcreg_from_statistics,
)
from ._native import lookup
from ._precision import full_precision
from ._terms import GramColumns, OffDiagonal, Reduce

__all__ = [
    "VCRegLoss",
    "VCRegTerms",
    "VCRegTermsWithRankMe",
    "VICRegLoss",
    "VICRegTerms",
    "VICRegTermsWithRankMe",
    "rank_me",
    "vicreg_loss",
    "vicreg_terms",
]

BACKWARDS = ("analytic", "autograd")
DEFAULT_BACKWARD = "analytic"

Tensor = torch.Tensor

lookup(_xp)  # the primitives looked up now, not first under torch.compile (which cannot trace an import)


# --------------------------------------------------------------------------------------------------------
# Input checks: the core's, with the namespace already known (``array_api_compat.array_namespace`` would
# trace under torch.compile too, but this keeps the graph free of its dispatch and warnings).
# --------------------------------------------------------------------------------------------------------


def _require_tensors(*views: Any) -> None:
    for name, z in zip((f"z{i + 1}" for i in range(len(views))), views):
        if not isinstance(z, torch.Tensor):
            raise TypeError(
                f"vicreg.torch: {name} must be a torch.Tensor, got {type(z).__name__}; convert it first, "
                f"e.g. torch.as_tensor({name}), or use vicreg.vicreg_loss for other array libraries"
            )


def _cast(*views: Tensor) -> tuple[Tensor, ...]:
    """The inputs in the core's compute dtype (float16/bfloat16 -> float32)."""
    dtype = _checks.compute_dtype(_xp, *views)
    return tuple(z.to(dtype) for z in views)


_autocast_available = getattr(torch.amp, "is_autocast_available", lambda kind: kind in ("cpu", "cuda"))
"""Whether autocast knows a device type (its other functions raise for one it does not, e.g. ``"meta"``)."""


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off for the loss: it would run the Gram matmuls in float16/bfloat16 again after the cast."""
    if _autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _statistics(views: tuple[Tensor, ...], config: Config, **split: Any) -> Statistics:
    """The core's statistics of inputs already in the compute dtype, products at the level ``precision``
    (in ``split``; at ``"highest"`` in IEEE float32 whatever the process-wide setting)."""
    with full_precision(_xp):
        return statistics(_xp, views, config, **split)


def _precision(config: Config, device: torch.device) -> str | None:
    """The products' level of a call on ``device``, read before autocast is switched off for the loss: the
    configuration's where it names one, else ``"high"`` where autocast is on for the device (its products
    are then bfloat16 or float16 ones), else ``None`` (the core's ``"highest"``)."""
    if config.precision is not None:
        return config.precision
    return "high" if _autocast_available(device.type) and torch.is_autocast_enabled(device.type) else None


# --------------------------------------------------------------------------------------------------------
# One process: autograd through the core, or the core's analytic gradient as the backward.
# --------------------------------------------------------------------------------------------------------


class _AnalyticVICReg(torch.autograd.Function):
    """Forward: the core's ``statistics`` of the views; backward: the core's analytic ``gradient`` (one
    ``n x n x d`` product per view instead of autograd's two through the Gram product). Called as
    ``apply(config, per, rank_me, precision, *views)``; returns ``(loss, invariance, variance, covariance, var, std,
    [rank_me,] *saved)``: only ``loss`` is differentiable, the next three are for logging (with each view's
    RankMe where ``rank_me``) and the rest are the statistics the backward pass reuses (the variances,
    stacked over the views, are for logging too).

    Every order of derivative is exact. A plain backward pass reuses the forward statistics, kept as saved
    tensors. When the backward pass is itself recorded (``create_graph=True``, a gradient penalty,
    ``torch.func``'s nested transforms), it recomputes the statistics from the inputs with recorded
    operations, so that the gradient is an ordinary differentiable function of the inputs and autograd
    differentiates it: the second derivative is that of the analytic gradient, which is exact, not a dropped
    term. Written in the ``forward``/``setup_context`` form with ``generate_vmap_rule``, so
    ``torch.func.grad``, ``vmap``, ``jacrev`` and ``hessian`` compose with it.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(config: Config, per: int, rank_me: bool, precision: str | None, *views: Tensor) -> tuple[Tensor, ...]:
        s = _statistics(_cast(*views), config, per=per, rank_me=rank_me, precision=precision)
        ranks = [s.rank_me] if rank_me else []
        return (s.loss, s.invariance, s.variance, s.covariance, s.var, s.std, *ranks, *_pack(s))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        config, per, rank_me, precision, *views = inputs
        ctx.config, ctx.per, ctx.count, ctx.precision = config, per, len(views), precision
        ctx.outputs = len(output)
        ctx.mark_non_differentiable(*output[1:])
        # No zero-filled gradients for the logging outputs and the saved statistics: the backward reads
        # only the loss's.
        ctx.set_materialize_grads(False)
        # The inputs, in their own dtype and alive anyway, rather than their differences, which the backward
        # recomputes (an n x d array less held between forward and backward); then the statistics.
        # the inputs, the variances, std and the statistics
        ctx.save_for_backward(*views, *output[4:6], *output[6 + int(rank_me) :])
        ctx.save_for_forward(*views)

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor | None, *unused: Any) -> tuple[Tensor | None, ...]:
        if grad_loss is None:  # only non-differentiable outputs were used
            return (None, None, None, None, *([None] * ctx.count))
        saved = ctx.saved_tensors
        views, (var, std), rest = saved[: ctx.count], saved[ctx.count : ctx.count + 2], saved[ctx.count + 2 :]
        with _no_autocast(grad_loss.device):  # backward() may be called inside an autocast region
            inputs = _cast(*views)
            if _backward_is_differentiated():
                s = _statistics(inputs, ctx.config, per=ctx.per, precision=ctx.precision)
            else:
                offs, columns = _unpack(list(rest), ctx.count)
                layout = tuple(_positions_first(z) for z in inputs)
                level = products_precision(_xp, inputs[0], ctx.config, ctx.precision)
                # the terms are unused here
                s = Statistics(layout, offs, columns, var, std, None, None, None, None, ctx.per, None, level)
            with full_precision(_xp):
                grads = gradient(_xp, s, ctx.config, scale=grad_loss, shape=inputs[0].shape)
        return (None, None, None, None, *grads)


class _AnalyticVICRegForwardMode(_AnalyticVICReg):
    """:class:`_AnalyticVICReg` with a forward-mode rule, for eager calls (``torch.func.jvp``,
    ``jacfwd``, ``hessian``). ``torch.compile`` cannot trace an ``autograd.Function`` that defines ``jvp``,
    so compiled code uses the base class."""

    @staticmethod
    def jvp(
        ctx: Any, _config: Any, _per: Any, _rank_me: Any, _precision: Any, *tangents: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        """Forward mode: the loss's tangent is ``sum_i <g_i, t_i>`` with the analytic gradient, computed with
        recorded operations (so that ``jacfwd(jacrev(...))``, i.e. ``torch.func.hessian``, is exact); the
        logging outputs and saved statistics are not differentiable."""
        views = ctx.saved_tensors  # those of save_for_forward
        with _no_autocast(views[0].device):
            inputs = _cast(*views)
            s = _statistics(inputs, ctx.config, per=ctx.per, precision=ctx.precision)
            with full_precision(_xp):
                grads = gradient(_xp, s, ctx.config, shape=inputs[0].shape)
        loss_t = None
        for g, t in zip(grads, tangents):
            if t is not None:
                term = (g * t.to(g.dtype)).sum()
                loss_t = term if loss_t is None else loss_t + term
        return (loss_t, *([None] * (ctx.outputs - 1)))


class _AnalyticPair(_AnalyticVICReg):
    """:class:`_AnalyticVICReg` of two views with a fixed signature, which ``torch.compile`` traces (it does
    not trace a ``forward`` with ``*views``)."""

    @staticmethod
    def forward(  # type: ignore[override]
        config: Config, per: int, rank_me: bool, precision: str | None, z1: Tensor, z2: Tensor
    ) -> tuple[Tensor, ...]:
        return _AnalyticVICReg.forward(config, per, rank_me, precision, z1, z2)


def _positions_first(z: Tensor) -> Tensor:
    """``(n, ..., d)`` in the statistics' ``(p, n, d)`` layout; ``(n, d)`` as is."""
    return positions_first(_xp, z)


def _backward_is_differentiated() -> bool:
    """Whether something may differentiate the backward pass: ``create_graph=True`` (grad mode on during
    the backward pass) or a ``torch.func`` transform around the call. Then the backward pass recomputes the
    statistics with recorded operations instead of reusing the forward's."""
    if torch.is_grad_enabled():
        return True
    level = getattr(getattr(torch._C, "_functorch", None), "maybe_current_level", None)
    return level is None or level() is not None


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def _pack(s: Statistics) -> list[Tensor]:
    """The statistics the backward pass reuses, as a flat list of tensors: each view's set
    :class:`OffDiagonal` fields, then the set :class:`GramColumns` fields. Which fields are set follows from
    the path and the number of exact columns, so the list's length tells them apart (:func:`_unpack`)."""
    views = [f for off in s.views for f in off if f is not None]
    return views + ([] if s.columns is None else [f for f in s.columns if f is not None])


def _unpack(saved: list[Tensor], count: int) -> tuple[tuple[OffDiagonal, ...], GramColumns | None]:
    """The inverse of :func:`_pack` for ``count`` views: 3 tensors per view on the ``d x d`` path; on the Gram
    path 3 per view and 4 of the columns without exact columns, 6 per view and 6 with them."""
    per_view = 6 if len(saved) == 6 * count + 6 else 3
    offs = tuple(OffDiagonal(*saved[i * per_view : (i + 1) * per_view]) for i in range(count))
    rest = saved[count * per_view :]
    if not rest:
        return offs, None
    return offs, GramColumns(*rest) if len(rest) == 6 else GramColumns(None, None, *rest)


def _local_statistics(
    views: tuple[Tensor, ...],
    config: Config,
    analytic: bool,
    per: int,
    rank_me: bool = False,
    precision: str | None = None,
) -> Any:
    """One process's loss and terms of inputs in their own dtype (cast to the compute dtype here): through the
    analytic ``autograd.Function`` (a tuple of its outputs), or autograd through the core (statistics);
    ``precision`` from :func:`_precision`."""
    compiling = _compiling()
    if not analytic or (compiling and len(views) != 2):
        # torch.compile traces an autograd.Function only with a fixed signature: other view counts than two
        # take autograd through the core there (exact too, one more product per view in the backward)
        return _statistics(_cast(*views), config, per=per, rank_me=rank_me, precision=precision)
    if compiling:
        return _AnalyticPair.apply(config, per, rank_me, precision, *views)
    return _AnalyticVICRegForwardMode.apply(config, per, rank_me, precision, *views)


def _terms_of(out: Any, diagnose: bool, rank_me: bool = False) -> VICRegTerms | VICRegTermsWithRankMe:
    """:class:`VICRegTerms` of :func:`_local_statistics`' result (diagnostics ``None`` without ``diagnose``;
    :class:`VICRegTermsWithRankMe` where it has each view's RankMe)."""
    if isinstance(out, Statistics):
        return terms_from_statistics(_xp, out) if diagnose else VICRegTerms(out.loss, None, None, None, None, None)
    loss, invariance, variance, covariance, var, *rest = out
    std_mean, std_min = diagnostics(_xp, var) if diagnose else (None, None)
    if rank_me:
        return VICRegTermsWithRankMe(loss, invariance, variance, covariance, std_mean, std_min, rest[1])
    return VICRegTerms(loss, invariance, variance, covariance, std_mean, std_min)


def _vcreg_of(out: Any, rank_me: bool = False) -> VCRegTerms | VCRegTermsWithRankMe:
    """:class:`VCRegTerms` of :func:`_local_statistics`' result for one view (with its RankMe where asked)."""
    if isinstance(out, Statistics):
        return vcreg_from_statistics(_xp, out)
    loss, _, variance, covariance, var, *rest = out
    fields = (loss, variance, covariance, *diagnostics(_xp, var))
    return VCRegTermsWithRankMe(*fields, rest[1][0]) if rank_me else VCRegTerms(*fields)


def local_terms(
    views: tuple[Tensor, ...], config: Config, rank_me: bool = False
) -> VICRegTerms | VICRegTermsWithRankMe:
    """What :func:`vicreg.vicreg_terms` computes on tensors: the core's checks, then this process's terms with
    the analytic backward, autocast off."""
    _checks.check_views(_xp, views)
    precision = _precision(config, views[0].device)
    with _no_autocast(views[0].device):
        return _terms_of(_local_statistics(views, config, True, len(views), rank_me, precision), True, rank_me)


def local_loss(views: tuple[Tensor, ...], config: Config) -> Tensor:
    """What :func:`vicreg.vicreg_loss` computes on tensors: :func:`local_terms`' loss, without the
    diagnostics."""
    _checks.check_views(_xp, views)
    precision = _precision(config, views[0].device)
    with _no_autocast(views[0].device):
        return _terms_of(_local_statistics(views, config, True, len(views), False, precision), diagnose=False).loss


def local_vcreg_terms(z: Tensor, config: Config, rank_me: bool = False) -> VCRegTerms | VCRegTermsWithRankMe:
    """What :func:`vicreg.vcreg_terms` computes on a tensor, with the analytic backward."""
    _checks.check_views(_xp, (z,))
    precision = _precision(config, z.device)
    with _no_autocast(z.device):
        return _vcreg_of(_local_statistics((z,), config, True, 2, rank_me, precision), rank_me)


# --------------------------------------------------------------------------------------------------------
# Several processes.
# --------------------------------------------------------------------------------------------------------


@functools.cache
def _functional_collectives() -> Any:
    """``torch.distributed._functional_collectives`` when its all-reduce and all-gather have autograd
    kernels (the replacement torch 2.14 recommends for the deprecated ``torch.distributed.nn.functional``;
    it also traces under torch.compile), else ``None``."""
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    try:
        ok = has("_c10d_functional::all_reduce", "Autograd") and has(
            "_c10d_functional::all_gather_into_tensor", "Autograd"
        )
    except Exception:
        ok = False
    if not ok:
        return None
    import torch.distributed._functional_collectives as fc

    return fc


def _collectives(group: Any) -> tuple[Any, Any]:
    """Autograd-aware ``(all_reduce_sum, all_gather_rows)`` of PyTorch for ``group``.

    Both backward passes are the adjoints of the forward ones: the all-reduce (sum) backward all-reduces
    (sums) the upstream gradients, the all-gather backward reduce-scatters (sums) them.
    """
    fc = _functional_collectives()
    if fc is not None:
        gather_single = getattr(fc, "all_gather_single", None) or fc.all_gather_tensor
        group_ = dist.group.WORLD if group is None else group

        def all_reduce(x: Tensor) -> Tensor:
            return fc.all_reduce(x, "sum", group_)

        def all_gather(x: Tensor) -> Tensor:
            return gather_single(x.contiguous(), 0, group_)

        return all_reduce, all_gather

    import torch.distributed.nn.functional as dnf  # older torch: the autograd.Function collectives

    group_ = dist.group.WORLD if group is None else group

    def all_reduce(x: Tensor) -> Tensor:  # type: ignore[no-redef]  # the other branch returned
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return dnf.all_reduce(x, group=group_)

    def all_gather(x: Tensor) -> Tensor:  # type: ignore[no-redef]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.cat(dnf.all_gather(x, group=group_))

    return all_reduce, all_gather


def _all_max(group: Any) -> Any:
    """The elementwise maximum over the ranks of ``group``, for the scales (which carry no gradient): the
    functional collective where :func:`_functional_collectives` has it, else ``torch.distributed``'s."""
    fc = _functional_collectives()
    group_ = dist.group.WORLD if group is None else group
    if fc is not None:
        return lambda x: fc.wait_tensor(fc.all_reduce(x.detach(), "max", group_))

    def all_max(x: Tensor) -> Tensor:
        x = x.detach().clone()
        dist.all_reduce(x, op=dist.ReduceOp.MAX, group=group_)
        return x

    return all_max


def _check_local(views: tuple[Any, ...]) -> Exception | None:
    """The core's check of the views, except that one rank may hold fewer than 2 rows (only the global batch
    needs 2). Returns the error instead of raising it, so that every rank can raise together."""
    try:
        _require_tensors(*views)
        z1 = views[0]
        if z1.ndim >= 2 and all(tuple(z.shape) == tuple(z1.shape) for z in views) and z1.shape[0] < 2:
            shape = (2, *z1.shape[1:])
            views = tuple(torch.empty(shape, dtype=z.dtype, device=z.device) for z in views)
        _checks.check_views(_xp, views)
    except (TypeError, ValueError) as error:
        return error
    return None


def _shape_code(middle: tuple[int, ...]) -> int:
    """One int64 that differs between different middle shapes (in practice): a polynomial hash."""
    code = 0
    for size in middle:
        code = (code * 1_000_003 + size + 1) % (1 << 61)
    return code


def _collective_device(group: Any, *candidates: Any) -> torch.device:
    """A device the group's collectives accept, for the shape exchange of a rank whose inputs are invalid:
    an input tensor's, else the current CUDA device for NCCL, else the CPU."""
    for z in candidates:
        if isinstance(z, torch.Tensor) and z.device.type != "meta":
            return z.device
    if "nccl" in str(dist.get_backend(group)).lower() and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _exchange_shapes(views: tuple[Any, ...], group: Any) -> list[int]:
    """Every rank's row count, after checking that the ranks agree on ``d`` and the compute dtype.

    A problem on any rank raises the same kind of error on every rank, before any collective whose sizes
    would disagree (which would crash or hang inside the collective library).
    """
    rank = dist.get_rank(group)
    error = _check_local(views)
    z1 = views[0]
    if error is None:
        dtype = _checks.compute_dtype(_xp, *views)
        middle = tuple(z1.shape[1:-1])
        meta = [z1.shape[0], z1.shape[-1], torch.finfo(dtype).bits, 0, len(middle), _shape_code(middle)]
    else:
        meta = [0, 0, 0, 2 if isinstance(error, TypeError) else 1, 0, 0]  # the kind of error, for the others
    device = z1.device if error is None else _collective_device(group, *views)
    local = torch.tensor(meta, dtype=torch.int64, device=device)
    world = dist.get_world_size(group)
    everyone = torch.empty(world * len(meta), dtype=torch.int64, device=device)
    gather_into = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # torch >= 2.14
    gather_into(everyone, local, group=group)
    metas = everyone.view(world, len(meta)).tolist()
    bad = [r for r, m in enumerate(metas) if m[3]]
    if bad:
        if error is not None:
            raise type(error)(f"{error} (on rank {rank})") from error
        kind = TypeError if metas[bad[0]][3] == 2 else ValueError
        raise kind(
            f"vicreg.torch: invalid embeddings on rank(s) {bad} of the process group; see the error raised there"
        )
    if len({m[1] for m in metas}) > 1:
        raise ValueError(
            "vicreg.torch: the ranks' embeddings have different widths d: "
            + ", ".join(f"rank {r}: {m[1]}" for r, m in enumerate(metas))
        )
    if len({(m[4], m[5]) for m in metas}) > 1:
        raise ValueError(
            "vicreg.torch: the ranks' embeddings have different middle axes (n, ..., d): "
            + ", ".join(f"rank {r}: {m[4]} axes" for r, m in enumerate(metas))
            + "; every rank must hold the same positions"
        )
    if len({m[2] for m in metas}) > 1:
        raise TypeError(
            "vicreg.torch: the ranks' embeddings have different compute dtypes (float bits): "
            + ", ".join(f"rank {r}: {m[2]}" for r, m in enumerate(metas))
        )
    rows = [m[0] for m in metas]
    if sum(rows) < 2:
        raise ValueError(
            f"vicreg: need at least 2 samples in the global batch to estimate a variance, got n = {sum(rows)}"
        )
    return rows


def _distributed_statistics(
    views: tuple[Tensor, ...],
    config: Config,
    group: Any,
    rows: list[int],
    per: int | None = None,
    rank_me: bool = False,
    precision: str | None = None,
) -> Statistics:
    r"""The core's statistics of the global batch, with PyTorch's autograd-aware collectives.

    Why the gradients come out exact under DDP. Every rank computes the same number, the global loss
    :math:`L(Z)` of the concatenated batch :math:`Z = [Z_0; \dots; Z_{W-1}]`, and, since every local
    quantity reaches the loss only through an all-reduce or the all-gather, the same *function* of all
    ranks' rows. Autograd on rank ``r`` then differentiates, through the collectives, the sum of all ranks'
    outputs: the all-reduce backward sums the ranks' upstream gradients, the all-gather backward sums them
    and hands each rank its slice; these are exactly the adjoints of the forward collectives, however many a
    path crosses. So rank ``r`` receives

    .. math::  \frac{\partial}{\partial Z_r} \sum_{r'} L = W\, \frac{\partial L}{\partial Z_r},

    which backpropagates into :math:`W\, \partial L/\partial\theta|_r`, the contribution of rank ``r``'s
    rows times ``W``. DDP averages over ranks:
    :math:`\frac1W \sum_r W\, \partial L/\partial\theta|_r = \partial L/\partial\theta`, the gradient of
    one process on the concatenated batch. (The official code's gather layer, whose backward all-reduces,
    does the same for its variance and covariance terms; a gather whose backward only returns the local
    slice, as lightly's did until its issue #1528, is off by ``W``. A term computed on the local rows only,
    like the official invariance, enters with factor 1 instead of ``W``: DDP's averaging then yields the
    mean of the per-rank terms, which is the global term only for equal per-rank batches.)

    Uneven batches: ``rows`` holds every rank's row count (exchanged first). The all-gather pads each rank's
    rows to the largest count and drops the padding afterwards; ``n`` is the global count.
    """
    all_reduce, all_gather = _collectives(group)
    world = len(rows)
    widest = max(rows)

    if all(r == widest for r in rows):
        gather_rows = all_gather
    else:

        def gather_rows(x: Tensor) -> Tensor:
            padded = torch.cat([x, x.new_zeros((widest - x.shape[0], *x.shape[1:]))])
            blocks = all_gather(padded)
            return torch.cat([blocks[r * widest : r * widest + rows[r]] for r in range(world)])

    reduce = Reduce(total=all_reduce, maximum=_all_max(group), gather_rows=gather_rows)
    return _statistics(views, config, n=sum(rows), reduce=reduce, per=per, rank_me=rank_me, precision=precision)


def _is_distributed(gather: bool, group: Any) -> bool:
    return gather and dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


# --------------------------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------------------------


class VICRegLoss(torch.nn.Module):
    r"""The VICReg loss as a ``torch.nn.Module``.

    .. math::

        \mathcal L = \lambda\, s(Z^1, Z^2) + \mu\, v(Z^1, Z^2) + \nu\, [c(Z^1) + c(Z^2)],

        c(Z) = \frac1d \sum_{i\ne j} C_{ij}^2,\qquad
        v(Z) = \frac1d \sum_j \max\left(0, \gamma - \sqrt{\mathrm{var}_j + \epsilon}\right)
        \ \text{per view}

    ``forward(z1, z2)`` returns the loss, a 0-d tensor; :meth:`terms` returns the
    :class:`vicreg.VICRegTerms` record of 0-d tensors for logging. float16/bfloat16 inputs, and inputs
    produced under ``torch.autocast``, are computed in float32 with autocast off (the result is float32);
    float32 and float64 inputs are computed in their own dtype. Under autocast the matrix products take
    bfloat16 inputs by default (``precision``), everything else stays float32.

    >>> import torch, vicreg.torch
    >>> loss_fn = vicreg.torch.VICRegLoss(std_coeff=25.0, backward="analytic")
    >>> z1, z2 = torch.randn(2, 16, 32, dtype=torch.float64, requires_grad=True)
    >>> loss_fn(z1, z2).dtype
    torch.float64

    Args:
        sim_coeff: The weight of the invariance term (as in :class:`vicreg.VICRegLoss`).
        std_coeff: The weight of the variance term.
        cov_coeff: The weight of the covariance term.
        variance_target: ``gamma``, the standard deviation the variance hinge pushes towards.
        eps: Added to each variance inside the hinge's square root.
        convention: ``"official"`` (default) or ``"paper"``.
        precision: The precision of the loss's float32 matrix products (:data:`vicreg.PRECISIONS`):
            ``None`` (default) takes ``"high"`` under ``torch.autocast`` for the inputs' device: bf16x3,
            three bfloat16 products with float32 accumulation and results (tensor cores on a GPU; more
            accurate than the official formulation under the same autocast), and ``"highest"`` (IEEE
            float32, whatever ``torch.set_float32_matmul_precision`` says) otherwise; or a level by name
            (``"medium"``: one bfloat16 pass).
        gather_distributed: When a ``torch.distributed`` process group with more than one rank is
            initialised (default ``True``), all three terms use the global batch (every rank's rows), so
            every rank returns the loss of the concatenated batch, and the gradients, once DDP has
            averaged them, are those of one process on that batch. Per-rank batches may differ in size.
            With ``False`` (or no process group) each rank computes the loss of its own batch.
        process_group: The group to gather over (default ``None``: the whole world).
        backward: ``"analytic"`` (default): on one process, the backward pass is the core's analytic
            gradient (one ``n x n x d`` product per view; any order of derivative, ``torch.func``
            included). ``"autograd"`` differentiates through the core instead (two such products). Under a
            process group it is always autograd.

    Raises:
        TypeError: ``gather_distributed`` is not a ``bool``; a coefficient is not a real number.
        ValueError: An unknown ``backward``, ``convention`` or ``precision``; a negative or non-finite
            coefficient.
    """

    def __init__(
        self,
        *,
        sim_coeff: float = 25.0,
        std_coeff: float = 25.0,
        cov_coeff: float = 1.0,
        variance_target: float = 1.0,
        eps: float = 1e-4,
        convention: str = "official",
        precision: str | None = None,
        gather_distributed: bool = True,
        process_group: Any = None,
        backward: str = DEFAULT_BACKWARD,
    ) -> None:
        super().__init__()
        if not isinstance(gather_distributed, bool):
            raise TypeError(f"vicreg.torch: gather_distributed must be True or False, got {gather_distributed!r}")
        if not isinstance(backward, str) or backward not in BACKWARDS:
            choices = ", ".join(map(repr, BACKWARDS))
            raise ValueError(f"vicreg.torch: unknown backward {backward!r}; choose one of {choices}")
        self.backward = backward
        self.config = Config(sim_coeff, std_coeff, cov_coeff, variance_target, eps, convention, precision)
        self.gather_distributed = gather_distributed
        self.process_group = process_group

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"sim_coeff={c.sim_coeff}, std_coeff={c.std_coeff}, cov_coeff={c.cov_coeff}, "
            f"variance_target={c.variance_target}, eps={c.eps}, convention={c.convention!r}, "
            f"precision={c.precision!r}, gather_distributed={self.gather_distributed}, backward={self.backward!r}"
        )

    def _statistics(self, views: tuple[Any, ...], per: int | None = None, rank_me: bool = False) -> Any:
        """The loss and terms of ``views``: :func:`_distributed_statistics` under a process group, else
        :func:`_local_statistics`."""
        per = len(views) if per is None else per
        if _is_distributed(self.gather_distributed, self.process_group):
            # every check first, then one exchange that makes a problem on any rank an error on all
            rows = _exchange_shapes(views, self.process_group)
            precision = _precision(self.config, views[0].device)
            with _no_autocast(views[0].device):
                views = _cast(*views)
                return _distributed_statistics(views, self.config, self.process_group, rows, per, rank_me, precision)
        _require_tensors(*views)
        _checks.check_views(_xp, views)
        precision = _precision(self.config, views[0].device)
        with _no_autocast(views[0].device):
            return _local_statistics(views, self.config, self.backward == "analytic", per, rank_me, precision)

    def forward(self, z1: Tensor, z2: Tensor, *views: Tensor) -> Tensor:
        """The loss of a pair of views, or of more (call the module: ``loss_fn(z1, z2)``, ``loss_fn(z1, z2,
        z3, ...)``; see :func:`vicreg.vicreg_loss` for ``K`` views).

        Args:
            z1: The first view's embeddings, an ``(n, d)`` or ``(n, ..., d)`` floating tensor; under a process
                group, this rank's rows (the global batch needs at least 2; every rank the same middle axes).
            z2: The second view's, of the same shape, dtype and device.
            *views: More views, of the same shape, dtype and device.

        Returns:
            The loss, a 0-d tensor (float32 for float16/bfloat16 inputs); under a process group, that of
            the global batch, on every rank.

        Raises:
            TypeError: An input is not a dense tensor of a real floating dtype; under a process group, the
                ranks' compute dtypes differ (raised on every rank).
            ValueError: Shapes with fewer than 2 dimensions or that differ, fewer than 2 samples, zero features, two
                devices; under a process group, the ranks' widths differ or one rank's input is invalid
                (raised on every rank, before any collective that could hang).
        """
        return _terms_of(self._statistics((z1, z2, *views)), diagnose=False).loss

    def terms(
        self, z1: Tensor, z2: Tensor, *views: Tensor, rank_me: bool = False
    ) -> VICRegTerms | VICRegTermsWithRankMe:
        """The loss, its unweighted terms and the collapse diagnostics, for logging.

        Args:
            z1: The first view's embeddings, as for :meth:`forward`.
            z2: The second view's, as for :meth:`forward`.
            *views: More views, as for :meth:`forward`.
            rank_me: Also each view's RankMe (:func:`vicreg.rank_me`), from the matrices the loss builds:
                one eigenvalue solve per view more (of the global batch's matrix under a process group).

        Returns:
            ``VICRegTerms(loss, invariance, variance, covariance, std_mean, std_min)`` of 0-d tensors, or with
            ``rank_me=True`` a ``VICRegTermsWithRankMe`` whose ``rank_me`` holds one value per view.
            ``loss`` carries the gradient (call ``.backward()`` on it); log the others with ``.item()``.
            Under a process group every field is that of the global batch.

        Raises:
            TypeError: As for :meth:`forward`.
            ValueError: As for :meth:`forward`.
        """
        _checks.check_flag("rank_me", rank_me)
        return _terms_of(self._statistics((z1, z2, *views), rank_me=rank_me), True, rank_me)


def vicreg_loss(z1: Tensor, z2: Tensor, *views: Tensor, **kwargs: Any) -> Tensor:
    """Functional form of :class:`VICRegLoss`: ``vicreg_loss(z1, z2, **keywords)`` is
    ``VICRegLoss(**keywords)(z1, z2)``.

    Args:
        z1: The first view's embeddings, an ``(n, d)`` or ``(n, ..., d)`` floating tensor.
        z2: The second view's, of the same shape, dtype and device.
        **kwargs: :class:`VICRegLoss`'s keywords (coefficients, ``convention``, ``precision``,
            ``gather_distributed``, ``process_group``, ``backward``).

    Returns:
        The loss, a 0-d tensor, as :meth:`VICRegLoss.forward` returns it.

    Raises:
        TypeError: An unknown keyword, or as for :class:`VICRegLoss` and :meth:`VICRegLoss.forward`.
        ValueError: As for :class:`VICRegLoss` and :meth:`VICRegLoss.forward`.
    """
    return VICRegLoss(**kwargs)(z1, z2, *views)


def vicreg_terms(
    z1: Tensor, z2: Tensor, *views: Tensor, rank_me: bool = False, **kwargs: Any
) -> VICRegTerms | VICRegTermsWithRankMe:
    """Functional form of :meth:`VICRegLoss.terms`: ``VICRegLoss(**keywords).terms(z1, z2, rank_me=...)``.

    Args:
        z1: The first view's embeddings, an ``(n, d)`` or ``(n, ..., d)`` floating tensor.
        z2: The second view's, of the same shape, dtype and device.
        *views: More views, of the same shape, dtype and device.
        rank_me: Also each view's RankMe; see :meth:`VICRegLoss.terms`.
        **kwargs: :class:`VICRegLoss`'s keywords.

    Returns:
        A :class:`vicreg.VICRegTerms` of 0-d tensors (or ``VICRegTermsWithRankMe``), as
        :meth:`VICRegLoss.terms` returns it.

    Raises:
        TypeError: An unknown keyword, or as for :class:`VICRegLoss` and :meth:`VICRegLoss.forward`.
        ValueError: As for :class:`VICRegLoss` and :meth:`VICRegLoss.forward`.
    """
    return VICRegLoss(**kwargs).terms(z1, z2, *views, rank_me=rank_me)


class VCRegLoss(VICRegLoss):
    r"""The VCReg regulariser of one view's embeddings as a ``torch.nn.Module``: VICReg's variance and
    covariance terms without an invariance,

    .. math::  \mathrm{VCReg}(z) = \mu\, s\, v(z) + \nu\, c(z),\qquad s = \tfrac12\ (\text{official})
               \ \text{or}\ 1\ (\text{paper}),

    so that :class:`VICRegLoss` of a pair is ``sim_coeff * invariance + VCRegLoss()(z1) + VCRegLoss()(z2)``
    (see :func:`vicreg.vcreg_loss`). Under a process group (``gather_distributed=True``) the statistics are
    the global batch's, as for :class:`VICRegLoss`; the analytic backward by default.

    >>> import torch, vicreg.torch
    >>> z = torch.randn(32, 64, requires_grad=True)
    >>> vicreg.torch.VCRegLoss()(z).backward()
    >>> z.grad.shape
    torch.Size([32, 64])

    Args:
        std_coeff: The weight of the variance term.
        cov_coeff: The weight of the covariance term.
        variance_target: ``gamma``, the standard deviation the variance hinge pushes towards.
        eps: Added to each variance inside the hinge's square root.
        convention: ``"official"`` (default) or ``"paper"``.
        precision: As for :class:`VICRegLoss`.
        gather_distributed: As for :class:`VICRegLoss`.
        process_group: As for :class:`VICRegLoss`.
        backward: As for :class:`VICRegLoss`.
    """

    def __init__(
        self,
        *,
        std_coeff: float = 25.0,
        cov_coeff: float = 1.0,
        variance_target: float = 1.0,
        eps: float = 1e-4,
        convention: str = "official",
        precision: str | None = None,
        gather_distributed: bool = True,
        process_group: Any = None,
        backward: str = DEFAULT_BACKWARD,
    ) -> None:
        super().__init__(
            sim_coeff=0.0,
            std_coeff=std_coeff,
            cov_coeff=cov_coeff,
            variance_target=variance_target,
            eps=eps,
            convention=convention,
            precision=precision,
            gather_distributed=gather_distributed,
            process_group=process_group,
            backward=backward,
        )

    def extra_repr(self) -> str:
        return super().extra_repr().replace("sim_coeff=0.0, ", "")

    def forward(self, z: Tensor) -> Tensor:  # type: ignore[override]
        """The regulariser of one view's embeddings ``z`` (``(n, d)`` or ``(n, ..., d)``), a 0-d tensor.

        Args:
            z: The embeddings; under a process group, this rank's rows.

        Returns:
            The regulariser, a 0-d tensor (float32 for float16/bfloat16 inputs).

        Raises:
            TypeError: As for :meth:`VICRegLoss.forward`.
            ValueError: As for :meth:`VICRegLoss.forward`.
        """
        return self.terms(z).loss

    def terms(  # type: ignore[override]
        self, z: Tensor, rank_me: bool = False
    ) -> VCRegTerms | VCRegTermsWithRankMe:
        """The regulariser, its two unweighted terms and the collapse diagnostics.

        Args:
            z: The embeddings, as for :meth:`forward`.
            rank_me: Also the view's RankMe (of the global batch under a process group).

        Returns:
            :class:`vicreg.VCRegTerms` of 0-d tensors, or a ``VCRegTermsWithRankMe``.

        Raises:
            TypeError: As for :meth:`forward`.
            ValueError: As for :meth:`forward`.
        """
        _checks.check_flag("rank_me", rank_me)
        return _vcreg_of(self._statistics((z,), per=2, rank_me=rank_me), rank_me)


def rank_me(z: Tensor, *, gather_distributed: bool = True, process_group: Any = None) -> Tensor:
    """RankMe of the embeddings ``z`` (see :func:`vicreg.rank_me`), a 0-d tensor, not differentiated. Under a
    process group (``gather_distributed=True``), that of the global batch (every rank's rows), the same on
    every rank.

    >>> import torch, vicreg.torch
    >>> round(vicreg.torch.rank_me(torch.randn(256, 16, dtype=torch.float64)).item()) in range(14, 17)
    True

    Args:
        z: The embeddings, an ``(n, d)`` or ``(n, ..., d)`` floating tensor; under a process group, this
            rank's rows.
        gather_distributed: As for :class:`VICRegLoss`.
        process_group: As for :class:`VICRegLoss`.

    Returns:
        RankMe, a 0-d tensor (float32 for float16 and bfloat16 inputs).

    Raises:
        TypeError: As for :meth:`VICRegLoss.forward`.
        ValueError: As for :meth:`VICRegLoss.forward`.
    """
    module = VCRegLoss(gather_distributed=gather_distributed, process_group=process_group)
    with torch.no_grad():
        return typing.cast(VCRegTermsWithRankMe, module.terms(z, rank_me=True)).rank_me
