"""Pieces shared by every training example (NumPy in, NumPy out; no deep-learning framework imported).

========================  ==============================================================================
``build_parser``          the common command line (``--data --epochs --batch-size --lr --optimizer ...``)
``load_dataset``          digits (default), an ImageFolder directory or a CIFAR-10 python folder ->
                          :class:`Dataset` of ``(N, C, H, W)`` float32 images in ``[0, 1]``
``linear_probe``          logistic regression on standardised frozen features -> held-out accuracy
``knn_accuracy``          k-NN (k=20, cosine) on frozen features -> held-out accuracy
``embedding_stats``       per-dimension std (mean, min) and effective rank of embeddings
``is_collapsed``          mean std below ``0.05 x variance_target``; ``collapse_warning`` for the log
``warmup_cosine``         learning-rate multiplier: linear warm-up then cosine decay
``write_metrics``         validated ``DIR/metrics.json`` (schema in :mod:`backends.common.metrics`)
``plot_curves``           ``DIR/curves.png``: loss, terms, std, effective rank per epoch
``check_args``            usage errors for values that parse but would fail later (``--subset`` < batch, ...)
``resolve_out``           output folder and checkpoint to resume from ``--out``/``--resume`` (creates nothing)
``check_resumed_flags``   usage error when a resumed run changes a flag its checkpoint depends on
``removed_on_failure``    deletes a run's new folder if it fails before its first checkpoint
``launch``                rank and world size from ``torchrun``'s or a multi-host JAX job's environment
``epoch_record``          one epoch's history entry: mean terms, seconds, images and images per second
``log_epoch``, ``finish`` the per-epoch log line; the final metrics.json, curves.png and summary line
========================  ==============================================================================

The augmentation presets (:mod:`backends.common.augment`) use ``torchvision.transforms.v2`` and so import
torch; import that module explicitly.

The names above are loaded on first use (PEP 562), so that ``backends.common.cli`` (the command line),
``backends.common.run`` and ``backends.common.launch`` import nothing but the standard library: every
example checks its arguments before NumPy, torch or JAX load.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the submodule defining it
_EXPORTS = {
    "DEFAULTS": "cli",
    "build_parser": "cli",
    "check_args": "cli",
    "parse_dims": "cli",
    "resolve_optimizer_defaults": "cli",
    "UsageError": "cli",
    "DataError": "data",
    "Dataset": "data",
    "load_dataset": "data",
    "knn_accuracy": "evaluate",
    "linear_probe": "evaluate",
    "read_metrics": "metrics",
    "validate": "metrics",
    "write_metrics": "metrics",
    "COLLAPSE_FRACTION": "monitor",
    "collapse_warning": "monitor",
    "effective_rank": "monitor",
    "embedding_stats": "monitor",
    "is_collapsed": "monitor",
    "std_per_dim": "monitor",
    "plot_curves": "plot",
    "evaluate_features": "report",
    "finish": "report",
    "log": "report",
    "epoch_record": "report",
    "log_epoch": "report",
    "log_start": "report",
    "throughput": "report",
    "atomic_save": "run",
    "check_resumed_flags": "run",
    "checkpoint_path": "run",
    "default_out": "run",
    "latest_run": "run",
    "removed_on_failure": "run",
    "resolve_out": "run",
    "warmup_cosine": "schedule",
}
_SUBMODULES = (
    "augment",
    "cli",
    "data",
    "evaluate",
    "launch",
    "metrics",
    "monitor",
    "plot",
    "report",
    "run",
    "schedule",
)

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))
