"""The PyTorch training example: ``python -m backends.torch.train`` (and ``.ablation``)."""
