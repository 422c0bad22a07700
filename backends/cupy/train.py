"""VICReg training example with the loss in CuPy on a CUDA GPU: a mixed-framework GPU pipeline.

The ResNet encoder and the projector run in PyTorch on the GPU. Each step, the two views' embeddings
cross to CuPy without a copy through DLPack (same device memory); :func:`vicreg.value_and_grad` computes
the loss and its analytic gradient in CuPy; the gradients cross back to PyTorch, again without a copy, and
``torch.autograd.backward`` carries them through the network::

    z1, z2 = model(x1), model(x2)                                  # torch on cuda, requires grad
    a, b = cupy.from_dlpack(z1.detach()), cupy.from_dlpack(z2.detach())   # same GPU memory
    loss, (g1, g2) = config.value_and_grad(a, b)                   # dL/dz1, dL/dz2 in CuPy
    torch.autograd.backward([z1, z2], [torch.from_dlpack(g1), torch.from_dlpack(g2)])

Everything else is the NumPy example's loop (``backends/torch/train.py``, shared by the PyTorch and NumPy
examples, run here with ``device="cuda"``): same flags, defaults, data, augmentation, optimiser,
checkpoints, ``metrics.json`` and evaluation. Run::

    python -m backends.cupy.train            # digits, same flags as backends.torch.train

Without CuPy or without a CUDA GPU it prints one line saying what is missing and exits with status 2.

Under ``torchrun`` (one GPU per process) each process gathers the global batch's embeddings and computes
the global loss's gradient, as the NumPy example does: the result does not depend on the number of GPUs::

    torchrun --standalone --nproc_per_node=8 -m backends.cupy.train --batch-size 2048
"""

from __future__ import annotations

import sys
from typing import Any

EXIT_UNAVAILABLE = 2


def unavailable() -> str | None:
    """Why this example cannot run here (no CuPy, no CUDA GPU, or a PyTorch without CUDA), or ``None``."""
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (install the cupy wheel matching your CUDA, e.g. cupy-cuda12x)"
    except Exception as e:
        return f"CuPy cannot be imported ({type(e).__name__}: {e})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return f"CuPy finds no usable CUDA GPU ({type(e).__name__}: {e})"
    if count < 1:
        return "CuPy finds no CUDA GPU"
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed (the network runs in PyTorch)"
    if not torch.cuda.is_available():
        return "PyTorch sees no CUDA GPU (a CPU-only build of torch?)"
    return None


class CupyLoss:
    """The loss and its gradient computed by CuPy from zero-copy views of the torch embeddings on the GPU.

    DLPack hands over the tensors' memory and orders the exchange on the producer's stream, so no
    explicit synchronisation is needed.
    """

    def __init__(self, config):
        import cupy
        import torch

        self.config = config
        cupy.cuda.Device(torch.cuda.current_device()).use()  # under torchrun: this process's GPU

    def __call__(self, z1, z2, scale=None) -> dict:
        import cupy
        import torch

        from backends.torch.distributed import global_batch, local_gradient
        from backends.torch.train import TERM_KEYS

        (g_z1, rows, world), (g_z2, _, _) = global_batch(z1.detach()), global_batch(z2.detach())
        a = cupy.from_dlpack(g_z1)  # shares GPU memory with the tensor: no copy
        b = cupy.from_dlpack(g_z2)
        _, (g1, g2) = self.config.value_and_grad(a, b)
        grads = [local_gradient(torch.from_dlpack(g), rows, world, scale) for g in (g1, g2)]
        torch.autograd.backward([z1, z2], grads)
        terms = self.config.terms(a, b)  # the logged terms: a second, cheap forward pass of the loss
        return {k: float(v) for k, v in zip(TERM_KEYS, terms)}


def _fail(reason: str) -> None:
    """One line on stderr, exit status 2, no traceback."""
    reason = " ".join(reason.split())  # one line even if a CUDA error message has several
    print(
        f"backends.cupy.train: cannot run: {reason}. This example needs CuPy and a CUDA GPU; "
        "python -m backends.numpy.train runs the same pipeline on the CPU.",
        file=sys.stderr,
    )
    raise SystemExit(EXIT_UNAVAILABLE)


def _require_gpu() -> None:
    reason = unavailable()
    if reason is not None:
        _fail(reason)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Check the command line (no framework imported: a usage error comes first), then that CuPy and a
    GPU are here (one line and exit status 2 if not), then train with the loop of ``backends.torch``."""
    from backends.torch import train as torch_train

    return torch_train.main(
        argv,
        backend="cupy",
        make_loss=CupyLoss,
        description=__doc__.split("\n\n")[0],
        device="cuda",
        prepare=_require_gpu,
    )


if __name__ == "__main__":
    main()
