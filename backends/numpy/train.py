"""VICReg training example with the loss in NumPy: a mixed-framework pipeline.

The ResNet encoder and the projector run in PyTorch on the CPU. Each step, the two views' embeddings
cross to NumPy without a copy through DLPack; :func:`vicreg.value_and_grad` computes the loss and its
analytic gradient in NumPy; the gradients cross back, again without a copy, and
``torch.autograd.backward`` carries them through the network::

    z1, z2 = model(x1), model(x2)                                # torch, requires grad
    a, b = np.from_dlpack(z1.detach()), np.from_dlpack(z2.detach())   # same memory, NumPy view
    loss, (g1, g2) = config.value_and_grad(a, b)                 # dL/dz1, dL/dz2 in NumPy
    torch.autograd.backward([z1, z2], [torch.from_dlpack(g1), torch.from_dlpack(g2)])

Everything else (data, augmentation, optimiser, monitoring, checkpoints, evaluation) is the PyTorch
example's loop, so with the same flags and seed both examples see the same batches and start from the
same weights, and their first losses agree to float32 precision. Run::

    python -m backends.numpy.train            # digits, same flags as backends.torch.train
    torchrun --standalone --nproc_per_node=2 -m backends.numpy.train     # data-parallel, the same result

Under ``torchrun`` every process gathers the global batch's embeddings, computes the global loss and its
gradient in NumPy, and back-propagates the world size times its own rows of that gradient; DDP's average
makes it the exact gradient of the global loss (:func:`backends.torch.distributed.global_batch`).
"""

from __future__ import annotations

from typing import Any

from backends.torch import train as torch_train


class NumpyLoss:
    """The loss and its gradient computed by NumPy from zero-copy views of the torch embeddings (of the
    global batch under ``torchrun``)."""

    def __init__(self, config: Any):
        from threadpoolctl import ThreadpoolController

        self.config = config
        # NumPy's BLAS gets as many threads as torch: both pools at full width on a small shared machine
        # slow each other down (see backends.torch.loop.set_threads).
        self._threads = ThreadpoolController()

    def __call__(self, z1, z2, scale=None) -> dict:
        import numpy as np
        import torch

        from backends.torch.distributed import global_batch, local_gradient

        (g_z1, rows, world), (g_z2, _, _) = global_batch(z1.detach()), global_batch(z2.detach())
        a, b = np.from_dlpack(g_z1), np.from_dlpack(g_z2)  # share memory with the tensors: no copy
        with self._threads.limit(limits=torch.get_num_threads(), user_api="blas"):
            _, (g1, g2) = self.config.value_and_grad(a, b)
            # The logged terms (value_and_grad returns only the loss): a second forward pass of the
            # loss, cheap next to the network's.
            terms = self.config.terms(a, b)
        grads = [local_gradient(torch.from_dlpack(g), rows, world, scale) for g in (g1, g2)]
        torch.autograd.backward([z1, z2], grads)
        return {k: float(v) for k, v in zip(torch_train.TERM_KEYS, terms)}


def main(argv: list[str] | None = None) -> dict:
    return torch_train.main(argv, backend="numpy", make_loss=NumpyLoss, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    main()
