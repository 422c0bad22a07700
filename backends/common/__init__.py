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
``resolve_out``           output folder and checkpoint to resume from ``--out``/``--resume``
``log_epoch``, ``finish`` the per-epoch log line; the final metrics.json, curves.png and summary line
========================  ==============================================================================

The augmentation presets (:mod:`backends.common.augment`) use ``torchvision.transforms.v2`` and so import
torch; import that module explicitly.
"""

from .cli import DEFAULTS, build_parser, parse_dims, resolve_optimizer_defaults
from .data import DataError, Dataset, UsageError, load_dataset
from .evaluate import knn_accuracy, linear_probe
from .metrics import read_metrics, validate, write_metrics
from .monitor import (
    COLLAPSE_FRACTION,
    collapse_warning,
    effective_rank,
    embedding_stats,
    is_collapsed,
    std_per_dim,
)
from .plot import plot_curves
from .report import evaluate_features, finish, log, log_epoch, log_start
from .run import atomic_save, checkpoint_path, default_out, resolve_out
from .schedule import warmup_cosine

__all__ = [
    "COLLAPSE_FRACTION",
    "DEFAULTS",
    "DataError",
    "Dataset",
    "UsageError",
    "atomic_save",
    "build_parser",
    "checkpoint_path",
    "collapse_warning",
    "default_out",
    "effective_rank",
    "embedding_stats",
    "evaluate_features",
    "finish",
    "is_collapsed",
    "knn_accuracy",
    "linear_probe",
    "log",
    "log_epoch",
    "log_start",
    "load_dataset",
    "parse_dims",
    "plot_curves",
    "read_metrics",
    "resolve_optimizer_defaults",
    "resolve_out",
    "std_per_dim",
    "validate",
    "warmup_cosine",
    "write_metrics",
]
