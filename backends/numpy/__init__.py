"""The NumPy training example: ``python -m backends.numpy.train``. The network runs in PyTorch; the loss
and its gradient are computed in NumPy by :func:`vicreg.value_and_grad`."""
