"""VICReg training example in PyTorch: a ResNet encoder and the expander trained on two augmented views.

Run with no arguments to train on scikit-learn's digits (CPU, a few minutes)::

    python -m backends.torch.train
    python -m backends.torch.train --std-coeff 0 --cov-coeff 0      # invariance only: collapses
    python -m backends.torch.train --data ~/cifar-10-batches-py --arch resnet18 --epochs 100
    python -m backends.torch.train --amp bf16 --compile --channels-last   # speed options

Several processes (GPUs, or CPU processes), data-parallel, with the same result as one process::

    torchrun --standalone --nproc_per_node=8 -m backends.torch.train --data ... --batch-size 2048
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
        --rdzv-id=vicreg -m backends.torch.train ...                         # the same on each node

``--batch-size`` is the global batch; each process reads its share of it. BatchNorm statistics and the loss
are those of the global batch, and each image's views are keyed by (seed, epoch, image index), so a run's
losses do not depend on the number of processes (see :mod:`backends.torch.distributed`). On GPUs each
process takes ``cuda:LOCAL_RANK`` and NCCL; on the CPU, gloo. Only rank 0 logs, evaluates and writes.

It logs the loss, its three terms and the embeddings' per-dimension std and effective rank each epoch, with
the training images per second, checkpoints each epoch (``--resume`` continues; a bare ``--resume`` takes
the newest run with a checkpoint), and ends by evaluating the frozen encoder: a linear probe and a 20-NN
classifier on the held-out split, against the same linear probe on the encoder at random initialisation.
``DIR/metrics.json`` and ``DIR/curves.png`` hold the results.

This module is the command line: it parses and checks the arguments before torch is imported, so that a
wrong flag is answered at once (exit status 2). The loop is :mod:`backends.torch.loop`, shared with the
NumPy and CuPy examples, which only swap how the loss and its gradient are computed; its names
(``train``, ``TorchLoss``, ``embed``, ...) are reachable from here too.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from backends.common import cli, launch, run

#: The terms every loss step returns (also :data:`backends.torch.loop.TERM_KEYS`).
TERM_KEYS = ("loss", "invariance", "variance", "covariance", "std_mean", "std_min")
AMP = ("off", "bf16", "fp16")
DEVICES = ("cpu", "cuda")


def add_torch_options(parser: argparse.ArgumentParser, device_option: bool = True) -> argparse.ArgumentParser:
    """The options of the PyTorch-based examples beyond the common ones; ``--device`` only where the
    example can run on either (the NumPy example reads CPU memory, the CuPy one GPU memory)."""
    g = parser.add_argument_group("PyTorch")
    g.add_argument(
        "--threads",
        type=cli.positive_int,
        default=None,
        help="torch CPU threads per process (default: the idle cores shared among the processes "
        "on this machine, at least 1)",
    )
    if device_option:
        g.add_argument(
            "--device",
            choices=DEVICES,
            default=None,
            help="default: cpu for one process; under torchrun cuda:LOCAL_RANK when PyTorch sees a GPU, else cpu",
        )
    g.add_argument(
        "--amp",
        choices=AMP,
        default="off",
        help="mixed precision: torch.autocast to bfloat16, or to float16 with a GradScaler "
        "(CUDA only); the loss stays float32",
    )
    g.add_argument(
        "--float64",
        action="store_true",
        help="train in float64 (slow): to compare runs to far below float32 rounding, which "
        "training amplifies (with --optimizer adamw to about 1e-4 of the loss within a few steps)",
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the forward pass")
    g.add_argument("--channels-last", action="store_true", help="NHWC memory format for images and convolution weights")
    return parser


def build_parser(
    backend: str = "torch", description: str | None = None, device_option: bool = True
) -> argparse.ArgumentParser:
    """The command line of a PyTorch-based example: the common flags and :func:`add_torch_options`."""
    parser = cli.build_parser(backend, description=description or __doc__.split("\n\n")[0])
    return add_torch_options(parser, device_option)


def parse_args(
    parser: argparse.ArgumentParser, argv: list[str] | None = None, device: str | None = None
) -> argparse.Namespace:
    """Parse and check the command line without importing torch (errors exit with status 2): the common
    checks with the ``torchrun`` world size (:func:`backends.common.check_args`), ``--amp fp16`` where the
    device is sure to be the CPU, and, on rank 0, the output folder and the checkpoint to resume
    (:func:`backends.common.resolve_out`, which creates nothing). ``device``: the caller's fixed device."""
    args = parser.parse_args(argv)
    env = launch.torchrun()
    cli.check_args(parser, args, env.world_size)
    chosen = device or getattr(args, "device", None) or (None if env.is_distributed else "cpu")
    if getattr(args, "amp", "off") == "fp16" and chosen == "cpu":
        parser.error("--amp fp16 needs a CUDA GPU (float16 with a GradScaler); use --amp bf16 on the CPU")
    if getattr(args, "amp", "off") != "off" and getattr(args, "float64", False):
        parser.error("--amp and --float64 contradict each other; pass one")
    if env.is_main:
        try:
            run.resolve_out(args)
        except cli.UsageError as e:
            parser.error(str(e))
    return args


def main(
    argv: list[str] | None = None,
    backend: str = "torch",
    make_loss: Callable | None = None,
    description: str | None = None,
    device: str | None = None,
    prepare: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Parse and check the command line, then import torch and :func:`backends.torch.loop.train`.

    ``make_loss``: the loss step factory (default :class:`backends.torch.loop.TorchLoss`); ``device``: a
    device the example requires (the CuPy example: ``"cuda"``), overriding ``--device``; ``prepare``: called
    between the two (the CuPy example checks for CuPy and a GPU there)."""
    parser = build_parser(backend, description, device_option=backend == "torch")
    args = parse_args(parser, argv, device)
    if prepare is not None:
        prepare()
    from backends.torch import loop

    try:
        return loop.train(args, make_loss or loop.TorchLoss, device)
    except cli.UsageError as e:
        parser.error(str(e))


def __getattr__(name: str) -> Any:
    """The loop's names (``train``, ``TorchLoss``, ``build_optimizer``, ``embed``, ...), imported with torch
    on first use."""
    if name.startswith("__"):
        raise AttributeError(name)
    from backends.torch import loop

    try:
        return getattr(loop, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


if __name__ == "__main__":
    main()
