"""Training examples for the ``vicreg`` loss, one per backend.

``backends.common`` holds the pieces every example shares (data, command line, evaluation, monitoring,
metrics, plots); ``backends.torch`` and ``backends.numpy`` are complete training scripts::

    python -m backends.torch.train          # ResNet + projector on scikit-learn's digits
    python -m backends.numpy.train          # same model, loss and gradient computed by NumPy
    python -m backends.torch.ablation       # the paper's coefficient ablation on digits

These modules are examples, not part of the installed ``vicreg`` package; install the ``examples`` extra.
"""
