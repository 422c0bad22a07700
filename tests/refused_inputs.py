"""Inputs the loss must refuse, built on purpose without the warnings their libraries attach to them
(the suite turns every warning into an error)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def as_matrix(a: np.ndarray) -> np.matrix:
    """``numpy.asmatrix(a)``, without NumPy's warning that the class is not recommended."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the matrix subclass", PendingDeprecationWarning)
        return np.asmatrix(a)


def nested_tensor(torch: Any, tensors: list[Any]) -> Any:
    """``torch.nested.nested_tensor(tensors)``, without PyTorch's warning that the API is a prototype."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The PyTorch API of nested tensors", UserWarning)
        return torch.nested.nested_tensor(tensors)


def sparse_csr(tensor: Any) -> Any:
    """``tensor.to_sparse_csr()``, without PyTorch's warning that sparse CSR support is in beta."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
        return tensor.to_sparse_csr()
