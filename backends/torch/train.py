"""VICReg training example in PyTorch: a ResNet encoder and the expander trained on two augmented views.

Run with no arguments to train on scikit-learn's digits (CPU, a few minutes)::

    python -m backends.torch.train
    python -m backends.torch.train --std-coeff 0 --cov-coeff 0      # invariance only: collapses
    python -m backends.torch.train --data ~/cifar-10-batches-py --arch resnet18 --epochs 100

It logs the loss, its three terms and the embeddings' per-dimension std and effective rank each epoch,
checkpoints each epoch (``--resume`` continues), and ends by evaluating the frozen encoder: a linear probe
and a 20-NN classifier on the held-out split, against the same linear probe on the encoder at random
initialisation. ``DIR/metrics.json`` and ``DIR/curves.png`` hold the results.

The loop (:func:`train`) is shared with the NumPy example, which only swaps how the loss and its gradient
are computed (:class:`TorchLoss` here): see ``backends/numpy/train.py``.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import vicreg
from backends import common
from backends.common.augment import TwoViews, preset
from backends.torch.models import VICRegNet

#: ``step(z1, z2) -> {"loss", "invariance", "variance", "covariance", "std_mean", "std_min"}`` (floats):
#: computes the loss of the two views' embeddings AND back-propagates it into the network.
LossStep = Callable[[torch.Tensor, torch.Tensor], dict]

TERM_KEYS = ("loss", "invariance", "variance", "covariance", "std_mean", "std_min")


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
    handles ``torch.distributed``), otherwise the core :class:`vicreg.VICRegLoss`, which computes on torch
    tensors through the array API and is differentiable the same way.
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

    def __call__(self, z1: torch.Tensor, z2: torch.Tensor) -> dict:
        terms = self.fn.terms(z1, z2)
        terms.loss.backward()
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
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise SystemExit("--optimizer lars needs timm (pip install timm)") from e
        # Official settings: momentum 0.9, trust coefficient (eta) 0.001; the plain group (weight_decay 0,
        # always_adapt False) is neither decayed nor adapted, as in the official code.
        return Lars(groups, lr=args.lr, momentum=0.9, trust_coeff=0.001)
    raise ValueError(f"unknown --optimizer {args.optimizer!r}")


def set_threads(requested: int | None = None, workers: int = 0) -> int:
    """Set torch's intra-op threads: ``requested``, or by default the cores this process may use minus
    those already busy (the 1-minute load average) and the data-loading workers, at least 1.

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
        requested = min(cores, round(cores - busy)) - workers
    threads = max(1, int(requested))
    torch.set_num_threads(threads)
    return threads


@torch.no_grad()
def embed(module: nn.Module, images: torch.Tensor, mean, std, batch: int = 512) -> np.ndarray:
    """``module`` (in eval mode) on normalised, un-augmented images -> NumPy features."""
    was_training = module.training
    module.eval()
    dev = next(module.parameters()).device
    m = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    out = [module((images[i : i + batch].to(dev) - m) / s) for i in range(0, len(images), batch)]
    module.train(was_training)
    return torch.cat(out).cpu().numpy()


def evaluate(model: VICRegNet, ds: common.Dataset, tr: torch.Tensor, te: torch.Tensor) -> dict[str, float]:
    """Linear probe and 20-NN on the frozen encoder's features of the held-out split."""
    f_tr = embed(model.backbone, tr, ds.mean, ds.std)
    f_te = embed(model.backbone, te, ds.mean, ds.std)
    return common.evaluate_features(ds, f_tr, f_te)


log = common.log


def train(args: argparse.Namespace, make_loss: Callable[[vicreg.VICRegLoss], LossStep],
          device: str = "cpu") -> dict[str, Any]:
    """The whole run: data, model, optimisation with monitoring and checkpoints, evaluation, outputs.

    ``make_loss(config)`` returns the :data:`LossStep` that computes the loss and back-propagates it; that
    is the only difference between the PyTorch and the NumPy examples. ``device``: where the network runs
    (``"cuda"`` for the CuPy example). Returns the metrics dict.
    """
    common.resolve_optimizer_defaults(args)
    out, resume_from = common.resolve_out(args)
    set_threads(getattr(args, "threads", None), args.workers)

    ds = common.load_dataset(args.data, args.image_size, args.subset)
    if len(ds.y_train) < 2:
        raise common.UsageError("need at least 2 training images")
    batch_size = min(args.batch_size, len(ds.y_train))
    x_tr, x_te = torch.from_numpy(ds.x_train), torch.from_numpy(ds.x_test)
    views = preset("digits" if ds.name == "digits" else "natural", ds.image_size, ds.mean, ds.std)

    torch.manual_seed(args.seed)
    model = VICRegNet(args.arch, ds.channels, ds.image_size, args.proj_dims).to(device)
    optimizer = build_optimizer(model, args)
    steps_per_epoch = len(ds.y_train) // batch_size  # drop_last: every batch has batch_size rows
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = round(args.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: common.warmup_cosine(step, total_steps, warmup_steps, final_fraction=0.001)
    )
    step_loss = make_loss(loss_config(args))

    start_epoch, history, elapsed, baseline = 0, [], 0.0, None
    if resume_from:
        ckpt = torch.load(resume_from, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, history = ckpt["epoch"], ckpt["history"]
        elapsed, baseline = ckpt["seconds"], ckpt["baseline"]
        log(out, f"resumed from {resume_from} after epoch {start_epoch}")
    t0 = time.perf_counter()
    if baseline is None:
        baseline = evaluate(model, ds, x_tr, x_te)
    common.log_start(out, args, ds, baseline)

    pairs = TwoViews(x_tr, views)
    monitor_images = x_te[:1024]
    for epoch in range(start_epoch, args.epochs):
        if args.stop_after is not None and epoch >= args.stop_after:
            log(out, f"stopping after epoch {epoch} (--stop-after)")
            return {}
        # Everything random in an epoch (order, views) derives from (seed, epoch): a resumed run replays it.
        torch.manual_seed(args.seed * 100_003 + epoch)
        loader = torch.utils.data.DataLoader(
            pairs, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=args.workers,
            generator=torch.Generator().manual_seed(args.seed * 100_003 + epoch),
            persistent_workers=False,
        )
        model.train()
        t_epoch = time.perf_counter()
        sums = dict.fromkeys(TERM_KEYS, 0.0)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False, disable=None)
        for x1, x2 in bar:
            x1, x2 = x1.to(device, non_blocking=True), x2.to(device, non_blocking=True)
            z1, z2 = model(x1), model(x2)
            optimizer.zero_grad(set_to_none=True)
            terms = step_loss(z1, z2)
            optimizer.step()
            scheduler.step()
            for k in TERM_KEYS:
                sums[k] += terms[k]
            bar.set_postfix(loss=f"{terms['loss']:.3f}", std=f"{terms['std_mean']:.3f}")
        record = {"epoch": epoch + 1, **{k: v / steps_per_epoch for k, v in sums.items()}}
        record["seconds"] = time.perf_counter() - t_epoch
        stats = common.embedding_stats(embed(model, monitor_images, ds.mean, ds.std))
        record.update(
            eval_std_mean=stats["std_mean"], effective_rank=stats["effective_rank"],
            lr=optimizer.param_groups[0]["lr"], variance_target=args.variance_target,
        )
        history.append(record)
        common.log_epoch(out, record, args)
        seconds = elapsed + time.perf_counter() - t0
        state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "history": history,
            "seconds": seconds, "baseline": baseline, "args": vars(args),
        }
        common.atomic_save(common.checkpoint_path(out), lambda p: torch.save(state, p))

    final = evaluate(model, ds, x_tr, x_te)
    n_threads = torch.get_num_threads()
    return common.finish(
        out, args, ds, history, final, baseline, seconds=elapsed + time.perf_counter() - t0,
        device=f"cpu ({n_threads} thread{'s' if n_threads > 1 else ''})"
        if device == "cpu"
        else f"{device} ({torch.cuda.get_device_name(device)})",
    )


def add_torch_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of the PyTorch-based examples beyond the common ones."""
    parser.add_argument("--threads", type=common.cli.positive_int, default=None,
                        help="torch CPU threads (default: the idle cores, at least 1)")
    return parser


def main(argv: list[str] | None = None, backend: str = "torch",
         make_loss: Callable[[vicreg.VICRegLoss], LossStep] = TorchLoss,
         description: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Parse the command line (:func:`backends.common.build_parser`) and :func:`train`."""
    parser = common.build_parser(backend, description=description or __doc__.split("\n\n")[0])
    add_torch_options(parser)
    args = parser.parse_args(argv)
    try:
        return train(args, make_loss, device)
    except common.UsageError as e:
        parser.error(str(e))


if __name__ == "__main__":
    main()
