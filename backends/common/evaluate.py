"""Evaluation of a frozen representation on NumPy features: a linear probe and a k-NN classifier.

Both take the features of the training split (to fit) and of the held-out split (to score) and return
the held-out accuracy in ``[0, 1]``. Both use scikit-learn.
"""

from __future__ import annotations

import warnings

import numpy as np


def _check(train_x, train_y, test_x, test_y) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    train_x, test_x = np.asarray(train_x), np.asarray(test_x)
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"features must be 2-D (samples, features) with the same width, got {train_x.shape} and {test_x.shape}"
        )
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise ValueError("each feature matrix needs one label per row")
    if len(train_x) == 0 or len(test_x) == 0:
        raise ValueError("empty training or held-out set")
    return train_x.astype(np.float64), train_y, test_x.astype(np.float64), test_y


def linear_probe(train_x, train_y, test_x, test_y, *, max_iter: int = 2000, C: float = 1.0) -> float:
    """Held-out accuracy of a multinomial logistic regression on standardised features.

    ``StandardScaler`` (fit on the training features) then ``LogisticRegression(C=C)`` (lbfgs,
    deterministic). Constant feature columns (a collapsed encoder) are left at zero by the scaler.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_x, train_y, test_x, test_y = _check(train_x, train_y, test_x, test_y)
    if len(np.unique(train_y)) < 2:
        return float(np.mean(test_y == train_y[0]))
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(train_x, train_y)
    return float(clf.score(test_x, test_y))


def knn_accuracy(train_x, train_y, test_x, test_y, *, k: int = 20) -> float:
    """Held-out accuracy of a ``k``-nearest-neighbour vote under cosine distance (``k`` capped at the
    number of training samples). Ties between classes go to the lowest class index (scikit-learn)."""
    from sklearn.neighbors import KNeighborsClassifier

    train_x, train_y, test_x, test_y = _check(train_x, train_y, test_x, test_y)
    k = min(int(k), len(train_x))
    clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
    clf.fit(train_x, train_y)
    return float(clf.score(test_x, test_y))
