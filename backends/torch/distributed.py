r"""Data-parallel training of the PyTorch-based examples under ``torchrun``, equal to one process.

``torchrun`` starts one process per device and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in their
environment (:mod:`backends.common.launch`). :func:`setup` then joins the process group (NCCL on CUDA,
one GPU per process; gloo on the CPU), and a step of ``W`` processes computes what one process computes
on the whole global batch:

* **Data** (:class:`ShardedBatches`): every process draws the same order of the training images for the
  epoch, cuts it into global batches of ``--batch-size`` and takes its ``1/W``-th of each, in rank order;
  the views of each image are keyed by ``(seed, epoch, image index)``
  (:class:`backends.common.augment.TwoViews`), so the union of the processes' views is exactly one
  process's batch.
* **Loss**: :class:`vicreg.torch.VICRegLoss` gathers the global batch; with DDP averaging the gradients
  the result is the gradient of the global loss (the argument is in ``vicreg/torch.py``,
  ``_distributed_statistics``). The NumPy and CuPy losses use :func:`global_batch` instead: every rank
  computes the global loss's gradient and back-propagates ``W`` times its own rows of it, which DDP's
  average turns into the same exact gradient.
* **BatchNorm** (:func:`synchronise_batchnorm`): normalising each process's rows with their own mean and
  variance would not be one process's BatchNorm, so its statistics are those of the global batch:
  ``torch.nn.SyncBatchNorm`` on GPUs; on the CPU, where that refuses to run, :class:`CPUSyncBatchNorm`,
  the same computation with the statistics summed by an autograd-aware all-reduce (the "naive"
  synchronised BatchNorm of detectron2, with a two-pass variance in float64 so that it rounds like
  PyTorch's CPU BatchNorm, which accumulates in float64 too).

Every gradient is exact by the same argument: every collective here has its adjoint as backward (an
all-reduce's backward all-reduces), so the sum over ranks of rank ``r``'s gradient is the derivative of
the sum of the ranks' identical losses, ``W`` times the global loss's; DDP divides by ``W``.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from backends.common import launch

#: Rank 0 evaluates alone (the random-init baseline, the monitoring, the final probe) while the others
#: wait in their next collective: give them more than the default 10 minutes.
TIMEOUT = datetime.timedelta(minutes=60)


@dataclass(frozen=True)
class Context(launch.Launch):
    """This process's place in the job (:class:`backends.common.launch.Launch`) and the device it trains on
    (``"cpu"`` or ``"cuda:<i>"``)."""

    device: str = "cpu"

    @property
    def backend(self) -> str | None:
        if not self.is_distributed:
            return None
        return "nccl" if self.device.startswith("cuda") else "gloo"


def default_device() -> str:
    """``"cuda"`` under ``torchrun`` when PyTorch sees a GPU, else ``"cpu"`` (one process without
    ``torchrun`` trains on the CPU unless told otherwise, as it always has)."""
    if launch.torchrun().is_distributed and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def setup(device: str) -> Context:
    """Join the ``torchrun`` process group, if any (``WORLD_SIZE`` > 1): NCCL with one GPU per process
    (``cuda:LOCAL_RANK``) when ``device`` is CUDA, gloo on the CPU. Without ``torchrun``: nothing, a
    single-process :class:`Context` on ``device``."""
    env = launch.torchrun()
    if not env.is_distributed:
        return Context(device=device)
    if device.startswith("cuda"):
        torch.cuda.set_device(env.local_rank)
        device = f"cuda:{env.local_rank}"
    ctx = Context(
        rank=env.rank,
        world_size=env.world_size,
        local_rank=env.local_rank,
        local_world_size=env.local_world_size,
        source=env.source,
        device=device,
    )
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"device_id": torch.device(device)} if ctx.backend == "nccl" else {}
        dist.init_process_group(ctx.backend, timeout=TIMEOUT, **kwargs)
    return ctx


def teardown(ctx: Context) -> None:
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def current() -> Context:
    """The context of the process group already joined (for the loss steps), or one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return Context()
    return Context(rank=dist.get_rank(), world_size=dist.get_world_size())


# ------------------------------------------------------------------------------------------------- data


class ShardedBatches(torch.utils.data.Sampler):
    """This rank's share of every global batch of an epoch, as a ``DataLoader`` ``batch_sampler``.

    The epoch's order is ``numpy.random.default_rng([seed, epoch]).permutation(n)`` on every rank (the JAX
    example draws the same); global batch ``b`` is ``order[b * B : (b + 1) * B]`` (the last partial batch
    dropped) and rank ``r`` of ``W`` takes its ``r``-th slice of ``B / W`` images. With ``W = 1`` these are
    the global batches themselves.
    """

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"a batch of {batch_size} does not split over {world_size} processes")
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        share = self.batch_size // self.world_size
        for b in range(len(self)):
            start = b * self.batch_size + self.rank * share
            yield order[start : start + share].tolist()


def broadcast(obj: Any, ctx: Context) -> Any:
    """``obj`` of rank 0 on every rank (pickled; a checkpoint, so that other nodes need not share rank 0's
    file system). One process: ``obj`` itself."""
    if not ctx.is_distributed:
        return obj
    # broadcast_object_list pickles obj on rank 0 and unpickles it on the others: that is the processes of
    # one run, started by one torchrun command, trusting each other, not a file read from disk. The
    # checkpoint sent this way was read by rank 0 without running code (loop.read_checkpoint).
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0, device=torch.device(ctx.device) if ctx.backend == "nccl" else None)
    return box[0]


def global_batch(z: torch.Tensor) -> tuple[torch.Tensor, slice, int]:
    """``(all ranks' rows of z in rank order, this rank's slice of them, world size)``, without autograd.

    For losses that compute their own gradient (the NumPy and CuPy examples): the gradient of the global
    loss with respect to the global batch, sliced to this rank's rows and multiplied by the world size
    (DDP divides by it), back-propagated on every rank, is the exact gradient. Without a process group:
    ``(z, slice(None), 1)``, no copy. Every rank must hold the same number of rows.
    """
    ctx = current()
    if not ctx.is_distributed:
        return z, slice(None), 1
    z = z.detach().contiguous()
    parts = [torch.empty_like(z) for _ in range(ctx.world_size)]
    dist.all_gather(parts, z)
    rows = z.shape[0]
    return torch.cat(parts), slice(ctx.rank * rows, (ctx.rank + 1) * rows), ctx.world_size


def local_gradient(g: torch.Tensor, rows: slice, world: int, scale: torch.Tensor | None = None) -> torch.Tensor:
    """This rank's ``rows`` of ``g``, the gradient of the global loss with respect to the global batch
    (:func:`global_batch`), times the world size (DDP divides by it) and the ``GradScaler``'s ``scale``
    (``--amp fp16``), ready for ``torch.autograd.backward``. One process, no scale: ``g`` itself."""
    g = g[rows]
    if world == 1 and scale is None:
        return g
    return g * (world if scale is None else scale * world)


# ------------------------------------------------------------------------------------------ BatchNorm


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over all ranks, differentiable: its backward all-reduces the gradient (the adjoint).
    ``torch.distributed._functional_collectives`` where its all-reduce has an autograd kernel (torch 2.14,
    which deprecates the older module), else ``torch.distributed.nn.functional``."""
    try:
        native = torch._C._dispatch_has_kernel_for_dispatch_key("_c10d_functional::all_reduce", "Autograd")
    except Exception:
        native = False
    if native:
        import torch.distributed._functional_collectives as fc

        return fc.all_reduce(x, "sum", dist.group.WORLD)
    import warnings

    import torch.distributed.nn.functional as dnf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return dnf.all_reduce(x)


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    r"""BatchNorm whose training statistics are those of the rows of every rank, for the CPU (where
    ``torch.nn.SyncBatchNorm`` raises): any input rank (``BatchNorm1d`` and ``BatchNorm2d`` alike).

    In training mode under a process group of more than one rank: the per-channel sum and count, then the
    sum of squared deviations from the global mean, are all-reduced with :func:`all_reduce`, whose
    backward all-reduces the gradient (its adjoint), so the gradient flows to every rank's rows as in one
    process. Statistics in float64 (PyTorch's CPU BatchNorm also accumulates in float64), unbiased variance
    in the running average, as ``BatchNorm``.
    Otherwise (eval mode, one process): plain ``BatchNorm``.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xd = x.double()
        count = xd.new_full((1,), x.numel() // x.shape[1])
        total = all_reduce(torch.cat([xd.sum(dims), count]))
        n = total[-1].detach()
        if n < 2:
            raise ValueError("Expected more than 1 value per channel when training")
        mean = total[:-1] / n
        centred = xd - mean.view(shape)
        var = all_reduce(centred.square().sum(dims)) / n
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight.double()
        y = centred * scale.view(shape)
        if self.bias is not None:
            y = y + self.bias.double().view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * (n / (n - 1)))
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.mul_(1 - momentum).add_(mean.to(self.running_mean.dtype), alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(unbiased_var.to(self.running_var.dtype), alpha=momentum)


def _convert_cpu(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm layer replaced by a :class:`CPUSyncBatchNorm` holding the same
    parameters and buffers (as ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` does for GPUs)."""
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CPUSyncBatchNorm):
        out = CPUSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out


def synchronise_batchnorm(model: nn.Module, ctx: Context) -> nn.Module:
    """``model`` with BatchNorm statistics over the global batch when ``ctx`` is distributed:
    ``torch.nn.SyncBatchNorm`` on CUDA, :class:`CPUSyncBatchNorm` on the CPU. The state dict keeps its
    keys, so checkpoints move between one and several processes. One process: ``model`` unchanged."""
    if not ctx.is_distributed:
        return model
    if ctx.device.startswith("cuda"):
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_cpu(model)


def wrap(model: nn.Module, ctx: Context) -> nn.Module:
    """``DistributedDataParallel(model)`` under a process group (it broadcasts rank 0's weights, then
    averages the gradients in the backward pass); ``model`` itself otherwise."""
    if not ctx.is_distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.local_rank] if ctx.device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids)
