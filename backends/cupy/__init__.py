"""The CuPy training example: ``python -m backends.cupy.train``. The network runs in PyTorch on a CUDA GPU;
the loss and its gradient are computed in CuPy by :func:`vicreg.value_and_grad`, zero-copy through DLPack."""
