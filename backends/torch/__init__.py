"""The PyTorch training example: ``python -m backends.torch.train`` (and ``.ablation``).

``train`` is the command line (no torch import before the arguments are checked), ``loop`` the training
loop shared with the NumPy and CuPy examples, ``distributed`` what makes a ``torchrun`` run equal to one
process (sharded batches, synchronised BatchNorm, the global batch for losses that compute their own
gradient), ``models`` the encoders and the projector."""
