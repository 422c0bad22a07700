"""``DIR/metrics.json``: the schema every training example writes, its writer and its validator.

Required keys (:data:`REQUIRED`):

* ``backend`` (``"torch"``, ``"numpy"``, ...), ``dataset`` (``"digits"``, ``"cifar10"``, a folder name);
* ``linear_probe_accuracy``, ``knn_accuracy``: held-out accuracy of the frozen encoder's features after
  training (:mod:`backends.common.evaluate`); ``random_init_linear_probe_accuracy``: the same probe on the
  encoder at random initialisation, the baseline;
* ``embedding_std_mean``: the mean per-dimension std of the projector output in the last epoch (the
  loss's ``std_mean``, averaged over the epoch's batches); ``effective_rank``: that of the projector
  output on held-out images after the last epoch; ``collapsed``: ``embedding_std_mean < 0.05 x
  variance_target`` (:func:`backends.common.monitor.is_collapsed`);
* ``epochs``, ``seconds`` (wall time of training and evaluation, summed over resumed sessions),
  ``images_per_second`` (training images per second of training wall time, evaluation excluded; each image
  counts once though the network sees two views of it), ``device`` (free text), ``world_size`` (processes)
  and ``devices`` (accelerators or CPU processes that trained; several per process under JAX);
* ``history``: one record per epoch with at least :data:`HISTORY_REQUIRED` (the epoch's mean loss and
  unweighted terms, mean std, effective rank).

Examples may add keys (the PyTorch example adds ``random_init_knn_accuracy``, ``arch``, ``args``, ...).
"""

from __future__ import annotations

import json
import math
import numbers
import os
from typing import Any

#: Top-level keys every ``metrics.json`` has, with their types.
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "backend": str,
    "dataset": str,
    "linear_probe_accuracy": float,
    "knn_accuracy": float,
    "random_init_linear_probe_accuracy": float,
    "embedding_std_mean": float,
    "effective_rank": float,
    "collapsed": bool,
    "epochs": int,
    "seconds": float,
    "images_per_second": float,
    "device": str,
    "world_size": int,
    "devices": int,
    "history": list,
}
#: Keys of every per-epoch record in ``history``.
HISTORY_REQUIRED = ("epoch", "loss", "invariance", "variance", "covariance", "std_mean", "effective_rank")


def validate(metrics: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first key that is missing or of the wrong type."""
    for key, kind in REQUIRED.items():
        if key not in metrics:
            raise ValueError(f"metrics.json: missing key {key!r}")
        value = metrics[key]
        ok = isinstance(value, kind)
        if kind is float:
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok:
            raise ValueError(f"metrics.json: {key!r} should be {getattr(kind, '__name__', kind)}, got {value!r}")
    for key in ("linear_probe_accuracy", "knn_accuracy", "random_init_linear_probe_accuracy"):
        if not 0.0 <= metrics[key] <= 1.0:
            raise ValueError(f"metrics.json: {key!r} must lie in [0, 1], got {metrics[key]!r}")
    for i, record in enumerate(metrics["history"]):
        missing = [k for k in HISTORY_REQUIRED if k not in record]
        if missing:
            raise ValueError(f"metrics.json: history[{i}] lacks {missing}")


def _plain(x: Any) -> Any:
    """NumPy / 0-d array scalars -> Python numbers; NaN and Inf -> None (JSON has neither)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if hasattr(x, "item") and callable(x.item):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_metrics(path: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """Validate ``metrics`` and write it as JSON to ``path`` (a file, or a folder receiving
    ``metrics.json``), atomically. Returns the JSON-ready dict that was written."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.json")
    plain = _plain(metrics)
    validate(plain)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(plain, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return plain


def read_metrics(path: str) -> dict[str, Any]:
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.json")
    with open(path) as f:
        return json.load(f)
