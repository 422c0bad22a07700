"""Training examples for the ``vicreg`` loss, one per backend.

``backends.common`` holds the pieces every example shares (data, command line, evaluation, monitoring,
metrics, plots, run folders, launch environment); ``backends.torch``, ``backends.numpy``, ``backends.jax``
and ``backends.cupy`` are complete training scripts::

    python -m backends.torch.train          # ResNet + projector on scikit-learn's digits
    python -m backends.numpy.train          # same model, loss and gradient computed by NumPy
    python -m backends.jax.train            # flax + optax, data-parallel over devices (and hosts)
    python -m backends.cupy.train           # the NumPy pipeline on a GPU, in CuPy
    python -m backends.torch.ablation       # the paper's coefficient ablation on digits
    torchrun --standalone --nproc_per_node=2 -m backends.torch.train     # data-parallel, same result

Every example checks its command line before it imports a framework (a wrong flag exits with status 2 at
once), and writes ``images_per_second``, ``world_size`` and ``devices`` into ``metrics.json``.

These modules are examples, not part of the installed ``vicreg`` package; install the ``examples`` extra.
"""
