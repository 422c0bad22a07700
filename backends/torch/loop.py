"""The training loop of the PyTorch-based examples (``backends.torch.train``, ``backends.numpy.train``,
``backends.cupy.train``), on one process or data-parallel under ``torchrun``.

:func:`train` is the whole run: data, model, optimisation with monitoring and checkpoints, evaluation,
outputs. The examples differ only in how the loss and its gradient are computed (the :data:`LossStep`:
:class:`TorchLoss` here). The command line is parsed and checked by :mod:`backends.torch.train` before this
module, and torch with it, is imported.

Under ``torchrun`` (:mod:`backends.torch.distributed`) each process trains on its share of every global
batch, BatchNorm statistics and the loss are those of the global batch, and DDP averages the gradients: a
run's losses do not depend on the number of processes. Only rank 0 logs, evaluates and writes files.

Speed options: ``--amp bf16|fp16`` runs the network under ``torch.autocast`` (with a ``GradScaler`` for
float16; the loss is computed in float32 from the embeddings cast up), ``--compile`` compiles the forward
pass with ``torch.compile``, ``--channels-last`` stores images and convolution weights NHWC.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import vicreg
from backends import common
from backends.common.augment import TwoViews, preset
from backends.torch import distributed
from backends.torch.models import VICRegNet

#: ``step(z1, z2, scale=None) -> {"loss", "invariance", "variance", "covariance", "std_mean", "std_min"}``
#: (floats): computes the loss of the two views' float32 embeddings AND back-propagates it, multiplied by
#: ``scale`` (a 0-d tensor, the ``GradScaler``'s factor under ``--amp fp16``) when given, into the network.
LossStep = Callable[..., dict]

TERM_KEYS = ("loss", "invariance", "variance", "covariance", "std_mean", "std_min")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: What every checkpoint :func:`train` writes holds (it also holds ``"scaler"``, ``"args"`` and
#: ``"world_size"``).
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "history", "seconds", "baseline")


def loss_config(args: argparse.Namespace) -> vicreg.VICRegLoss:
    return vicreg.VICRegLoss(
        sim_coeff=args.sim_coeff,
        std_coeff=args.std_coeff,
        cov_coeff=args.cov_coeff,
        variance_target=args.variance_target,
    )


class TorchLoss:
    """The loss on torch tensors, differentiated by autograd.

    Uses the ``nn.Module`` :class:`vicreg.torch.VICRegLoss` when that adapter is available (it also
    handles ``torch.distributed``: the loss of the global batch), otherwise the core
    :class:`vicreg.VICRegLoss`, which computes on torch tensors through the array API and is differentiable
    the same way.
    """

    def __init__(self, config: vicreg.VICRegLoss):
        self.fn = config
        try:
            from vicreg.torch import VICRegLoss as ModuleLoss

            self.fn = ModuleLoss(
                sim_coeff=config.sim_coeff,
                std_coeff=config.std_coeff,
                cov_coeff=config.cov_coeff,
                variance_target=config.variance_target,
                eps=config.eps,
            )
        except ImportError:
            pass

    def __call__(self, z1: torch.Tensor, z2: torch.Tensor, scale: torch.Tensor | None = None) -> dict:
        terms = self.fn.terms(z1, z2)
        (terms.loss if scale is None else terms.loss * scale).backward()
        return {k: float(v.detach()) for k, v in zip(TERM_KEYS, terms)}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weights of convolutions and linear layers get weight decay (and LARS adaptation); biases and
    normalisation parameters (every tensor with fewer than 2 dimensions) get neither."""
    decay, plain = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else plain).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "always_adapt": True},
        {"params": plain, "weight_decay": 0.0, "always_adapt": False},
    ]


def build_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    groups = param_groups(model, args.weight_decay)
    if args.optimizer == "adamw":
        for g in groups:
            g.pop("always_adapt")
        return torch.optim.AdamW(groups, lr=args.lr)
    if args.optimizer == "lars":
        try:
            from timm.optim import Lars
        except ImportError as e:
            raise common.UsageError(
                "LARS (--optimizer lars, the default) needs timm: pip install timm, or pass --optimizer adamw"
            ) from e
        # Official settings: momentum 0.9, trust coefficient (eta) 0.001; the plain group (weight_decay 0,
        # always_adapt False) is neither decayed nor adapted, as in the official code.
        return Lars(groups, lr=args.lr, momentum=0.9, trust_coeff=0.001)
    raise ValueError(f"unknown --optimizer {args.optimizer!r}")


def set_threads(requested: int | None = None, workers: int = 0, processes: int = 1) -> int:
    """Set torch's intra-op threads: ``requested``, or by default the cores this process may use minus
    those already busy (the 1-minute load average), shared among the ``processes`` training on this
    machine, minus the data-loading workers, at least 1.

    On a small shared machine this matters more than it seems: with 2 threads on 2 cores while another
    process keeps one busy, every parallel op waits for its slower thread, and an epoch measured here took
    5 to 10 times longer than with 1 thread.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    if requested is None:
        try:
            busy = os.getloadavg()[0]
        except OSError:  # pragma: no cover
            busy = 0.0
        requested = min(cores, round(cores - busy)) // max(1, processes) - workers
    threads = max(1, int(requested))
    torch.set_num_threads(threads)
    return threads


@torch.no_grad()
def embed(module: nn.Module, images: torch.Tensor, mean, std, batch: int = 512) -> np.ndarray:
    """``module`` (in eval mode) on normalised, un-augmented images -> NumPy features (float32)."""
    was_training = module.training
    module.eval()
    param = next(module.parameters())
    dev, dtype = param.device, param.dtype
    m = torch.tensor(mean, dtype=dtype, device=dev).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=dtype, device=dev).view(1, -1, 1, 1)
    out = [module((images[i : i + batch].to(dev, dtype) - m) / s) for i in range(0, len(images), batch)]
    module.train(was_training)
    return torch.cat(out).float().cpu().numpy()


def evaluate(model: VICRegNet, ds: common.Dataset, tr: torch.Tensor, te: torch.Tensor) -> dict[str, float]:
    """Linear probe and 20-NN on the frozen encoder's features of the held-out split."""
    f_tr = embed(model.backbone, tr, ds.mean, ds.std)
    f_te = embed(model.backbone, te, ds.mean, ds.std)
    return common.evaluate_features(ds, f_tr, f_te)


class ViewPair(nn.Module):
    """``(x1, x2) -> (net(x1), net(x2))``: both views in one call, so that DDP (and ``torch.compile``) see
    one forward per backward; each view is still its own pass through ``net``, with its own BatchNorm
    statistics, as in the official code."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x1), self.net(x2)


def autocast(amp: str, device: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bfloat16 or float16 for ``--amp bf16|fp16``; nothing for ``off``."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=AMP_DTYPES[amp])


def resolve_device(args: argparse.Namespace, device: str | None) -> str:
    """``device`` if the caller fixed it (the CuPy example: ``"cuda"``), else ``--device``, else
    :func:`backends.torch.distributed.default_device`. ``UsageError`` for a CUDA device PyTorch cannot see
    and for ``--amp fp16`` on the CPU."""
    device = device or getattr(args, "device", None) or distributed.default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise common.UsageError("CUDA was asked for but PyTorch sees no CUDA GPU")
    if getattr(args, "amp", "off") == "fp16" and not device.startswith("cuda"):
        raise common.UsageError("--amp fp16 needs a CUDA GPU (float16 with a GradScaler); use --amp bf16 on the CPU")
    return device


def describe(ctx: distributed.Context, args: argparse.Namespace, threads: int) -> str:
    """The device line of the log and of ``metrics.json``: device, threads, processes, speed options."""
    if ctx.device.startswith("cuda"):
        where = f"{ctx.device} ({torch.cuda.get_device_name(ctx.device)})"
    else:
        where = f"cpu ({threads} thread{'s' if threads > 1 else ''}{' per process' if ctx.is_distributed else ''})"
    if ctx.is_distributed:
        where += f" x {ctx.world_size} processes ({ctx.backend})"
    options = [
        f"autocast {args.amp}" if getattr(args, "amp", "off") != "off" else "",
        "float64" if getattr(args, "float64", False) else "",
        "torch.compile" if getattr(args, "compile", False) else "",
        "channels-last" if getattr(args, "channels_last", False) else "",
    ]
    return ", ".join([where, *filter(None, options)])


def optimizer_step(optimizer: Any, scaler: Any, scheduler: Any) -> bool:
    """``optimizer.step()`` through the ``GradScaler`` (which unscales the gradients and, under ``--amp
    fp16``, skips the step when they overflowed, lowering its scale), then a step of the learning-rate
    schedule if the optimizer stepped: the schedule follows the steps taken, and never steps before the
    optimizer has (PyTorch warns of that). Whether the optimizer stepped."""
    scale = scaler.get_scale() if scaler.is_enabled() else None
    scaler.step(optimizer)
    scaler.update()
    stepped = scale is None or scaler.get_scale() >= scale
    if stepped:
        scheduler.step()
    return stepped


def read_checkpoint(path: str) -> dict[str, Any]:
    """The checkpoint ``path`` written by :func:`train`, read with ``torch.load(..., weights_only=True)``.

    A checkpoint holds tensors, numbers, strings, lists and dicts (the run's flags as a dict), which that
    loader builds without running anything from the file. A file that names anything else (a class or a
    function: what a crafted file would have its reader call) is refused with a ``UsageError``, the loader
    stopping at the first such name before calling anything; so is a file torch cannot read and one that
    is not a dict of :data:`CHECKPOINT_KEYS`.
    """
    what = f"--resume: {path!r} is not a checkpoint of this example"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():  # a damaged pickle, not a refused one
            raise common.UsageError(f"{what} (torch cannot read it: {e}); nothing in it was run") from e
        # torch's message names the first global it refused, then advises weights_only=False: keep the name
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        refers = f", such as {found.group(1)}," if found else ""
        raise common.UsageError(
            f"{what}: it refers to Python objects beyond tensors, numbers, strings, lists and dicts{refers} "
            "and is refused; nothing in it was run. Pass the folder of a run of this example, or drop --resume"
        ) from e
    except OSError as e:
        raise common.UsageError(f"--resume: cannot read {path!r}: {e}") from e
    except Exception as e:  # not a zip archive, a truncated one, ...
        raise common.UsageError(f"{what} (torch cannot read it: {e!r}); nothing in it was run") from e
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt] if isinstance(ckpt, dict) else list(CHECKPOINT_KEYS)
    if missing:
        raise common.UsageError(f"{what}: it lacks {', '.join(missing)}")
    return ckpt


def train(
    args: argparse.Namespace, make_loss: Callable[[vicreg.VICRegLoss], LossStep] = TorchLoss, device: str | None = None
) -> dict[str, Any]:
    """The whole run: data, model, optimisation with monitoring and checkpoints, evaluation, outputs.

    ``make_loss(config)`` returns the :data:`LossStep` that computes the loss and back-propagates it; that
    is the only difference between the PyTorch and the NumPy examples. ``device``: where the network runs
    (see :func:`resolve_device`). Under ``torchrun`` joins the process group first and leaves it at the
    end. Returns the metrics dict on rank 0; ``{}`` on other ranks and when ``--stop-after`` interrupts.
    """
    common.resolve_optimizer_defaults(args)
    ctx = distributed.setup(resolve_device(args, device))
    try:
        out = common.resolve_out(args)[0] if ctx.is_main else None
        with common.removed_on_failure(out, "pt"):
            return _train(args, make_loss, ctx, out)
    finally:
        distributed.teardown(ctx)


def _train(
    args: argparse.Namespace,
    make_loss: Callable[[vicreg.VICRegLoss], LossStep],
    ctx: distributed.Context,
    out: str | None,
) -> dict[str, Any]:
    device, log = ctx.device, (lambda line: common.log(out, line))
    resume_from = args.resume if ctx.is_main else None
    threads = set_threads(getattr(args, "threads", None), args.workers, ctx.local_world_size)

    ds = common.load_dataset(args.data, args.image_size, args.subset)
    n_train = len(ds.y_train)
    if args.batch_size > n_train:
        raise common.UsageError(
            f"--batch-size {args.batch_size} is larger than the {n_train} training images "
            f"of {ds.name}; pass a smaller one"
        )
    batch_size = args.batch_size  # global: ctx.world_size processes take batch_size / world_size rows each
    x_tr, x_te = torch.from_numpy(ds.x_train), torch.from_numpy(ds.x_test)
    views = preset("digits" if ds.name == "digits" else "natural", ds.image_size, ds.mean, ds.std)
    memory_format = torch.channels_last if getattr(args, "channels_last", False) else torch.contiguous_format
    dtype = torch.float64 if getattr(args, "float64", False) else torch.float32

    torch.manual_seed(args.seed)
    net = VICRegNet(args.arch, ds.channels, ds.image_size, args.proj_dims)
    net = net.to(device, dtype, memory_format=memory_format)
    net = distributed.synchronise_batchnorm(net, ctx)
    optimizer = build_optimizer(net, args)
    steps_per_epoch = n_train // batch_size  # drop_last: every batch has batch_size rows
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = round(args.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: common.warmup_cosine(step, total_steps, warmup_steps, final_fraction=0.001)
    )
    amp = getattr(args, "amp", "off")
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=amp == "fp16")
    step_loss = make_loss(loss_config(args))

    start_epoch, history, elapsed, baseline = 0, [], 0.0, None
    # Rank 0 reads the checkpoint and sends it to the others: other nodes need not share its file system.
    # A file it refuses is refused on every rank, so that none waits for the others in vain.
    loaded: dict[str, Any] = {}
    if resume_from:
        try:
            loaded["checkpoint"] = read_checkpoint(resume_from)
        except common.UsageError as e:
            loaded["refused"] = str(e)
    loaded = distributed.broadcast(loaded, ctx)
    if "refused" in loaded:
        raise common.UsageError(loaded["refused"])
    ckpt = loaded.get("checkpoint")
    if ckpt is not None:
        path = args.resume if isinstance(args.resume, str) else "the checkpoint"
        common.check_resumed_flags(ckpt.get("args", {}), args, path)
        try:
            net.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:  # e.g. a checkpoint of an earlier version
            raise common.UsageError(
                f"--resume: {path!r} holds a different network or optimizer than these flags build ({e})"
            ) from e
        scheduler.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, history = ckpt["epoch"], ckpt["history"]
        elapsed, baseline = ckpt["seconds"], ckpt["baseline"]
        log(f"resumed from {resume_from} after epoch {start_epoch}")
    forward = distributed.wrap(ViewPair(net), ctx)
    if getattr(args, "compile", False):
        forward = torch.compile(forward)

    t0 = time.perf_counter()
    if baseline is None and ctx.is_main:
        baseline = evaluate(net, ds, x_tr, x_te)
    where = describe(ctx, args, threads)
    if ctx.is_main:
        common.log_start(out, args, ds, baseline, where)

    pairs = TwoViews(x_tr, views, seed=args.seed)
    monitor_images = x_te[:1024]
    one = torch.ones((), device=device)
    for epoch in range(start_epoch, args.epochs):
        if args.stop_after is not None and epoch >= args.stop_after:
            log(f"stopping after epoch {epoch} (--stop-after)")
            return {}
        # Everything random in an epoch derives from (seed, epoch): the order of the images, and each
        # image's views from (seed, epoch, its index). A resumed run replays it, any number of processes
        # draws the same.
        torch.manual_seed(args.seed * 100_003 + epoch)
        pairs.set_epoch(epoch)
        batches = distributed.ShardedBatches(n_train, batch_size, args.seed, epoch, ctx.rank, ctx.world_size)
        loader = torch.utils.data.DataLoader(
            pairs, batch_sampler=batches, num_workers=args.workers, persistent_workers=False
        )
        forward.train()
        t_epoch = time.perf_counter()
        sums = dict.fromkeys(TERM_KEYS, 0.0)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False, disable=None if ctx.is_main else True)
        for x1, x2 in bar:
            x1 = x1.to(device, dtype, non_blocking=True, memory_format=memory_format)
            x2 = x2.to(device, dtype, non_blocking=True, memory_format=memory_format)
            with autocast(amp, device):
                z1, z2 = forward(x1, x2)
            optimizer.zero_grad(set_to_none=True)
            if amp != "off":  # the loss in float32 (the module would cast too; NumPy has no bfloat16)
                z1, z2 = z1.float(), z2.float()
            terms = step_loss(z1, z2, scaler.scale(one) if scaler.is_enabled() else None)
            optimizer_step(optimizer, scaler, scheduler)
            for k in TERM_KEYS:
                sums[k] += terms[k]
            bar.set_postfix(loss=f"{terms['loss']:.3f}", std=f"{terms['std_mean']:.3f}")
        seconds = time.perf_counter() - t_epoch
        record = common.epoch_record(epoch + 1, sums, steps_per_epoch, batch_size, seconds)
        if not ctx.is_main:
            history.append(record)
            continue
        stats = common.embedding_stats(embed(net, monitor_images, ds.mean, ds.std))
        record.update(
            eval_std_mean=stats["std_mean"],
            effective_rank=stats["effective_rank"],
            rank_me=stats["rank_me"],
            lr=optimizer.param_groups[0]["lr"],
            variance_target=args.variance_target,
        )
        history.append(record)
        common.log_epoch(out, record, args, f"on {ctx.world_size} processes" if ctx.is_distributed else "")
        state = {
            "model": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch + 1,
            "history": history,
            "seconds": elapsed + time.perf_counter() - t0,
            "baseline": baseline,
            "args": vars(args),
            "world_size": ctx.world_size,
        }
        common.atomic_save(common.checkpoint_path(out), lambda p, state=state: torch.save(state, p))

    if not ctx.is_main:
        return {}
    final = evaluate(net, ds, x_tr, x_te)
    return common.finish(
        out,
        args,
        ds,
        history,
        final,
        baseline,
        seconds=elapsed + time.perf_counter() - t0,
        device=where,
        world_size=ctx.world_size,
        devices=ctx.world_size,
    )
