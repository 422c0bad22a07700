"""What every training example logs and writes (framework-free): the per-epoch line, the collapse warning,
the held-out evaluation of frozen features, and the final ``metrics.json`` / ``curves.png``."""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

from .evaluate import knn_accuracy, linear_probe
from .metrics import write_metrics
from .monitor import COLLAPSE_FRACTION, collapse_warning, is_collapsed
from .plot import plot_curves


def log(out: str | None, line: str) -> None:
    """Print ``line`` (above any progress bar) and append it to ``DIR/log.txt``, creating ``DIR`` on the
    first line (a run's folder appears only once it has started). ``out=None``: a process other than the
    first of a multi-process run, which logs nothing."""
    if out is None:
        return
    from tqdm.auto import tqdm

    tqdm.write(line)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "log.txt"), "a") as f:
        f.write(line + "\n")


def throughput(history: list[dict[str, Any]]) -> float:
    """Training images per second of training wall time (evaluation and monitoring excluded) over the
    epochs of ``history`` that recorded ``images`` and ``seconds``; each image counts once, though the
    network sees two views of it. 0.0 when no epoch recorded them (a run resumed from an older
    checkpoint)."""
    timed = [r for r in history if r.get("images") and r.get("seconds")]
    seconds = sum(r["seconds"] for r in timed)
    return sum(r["images"] for r in timed) / seconds if seconds > 0 else 0.0


def evaluate_features(ds: Any, f_train: np.ndarray, f_test: np.ndarray) -> dict[str, float]:
    """Linear probe and 20-NN (cosine) of frozen encoder features, trained on the train split and scored on
    the held-out split of ``ds``."""
    return {
        "linear_probe_accuracy": linear_probe(f_train, ds.y_train, f_test, ds.y_test),
        "knn_accuracy": knn_accuracy(f_train, ds.y_train, f_test, ds.y_test, k=20),
    }


def log_start(out: str, args: argparse.Namespace, ds: Any, baseline: dict[str, float], where: str = "") -> None:
    """The random-init baseline and what is about to be trained (data, model, optimiser, coefficients)."""
    log(
        out,
        f"random-init encoder: linear probe {baseline['linear_probe_accuracy']:.4f}, "
        f"20-NN {baseline['knn_accuracy']:.4f}",
    )
    log(
        out,
        f"{ds.name}: {len(ds.y_train)} train / {len(ds.y_test)} held-out images "
        f"{ds.channels}x{ds.image_size}x{ds.image_size}; {args.arch} + projector "
        f"{'-'.join(map(str, args.proj_dims))}; {args.optimizer} lr {args.lr:g}; "
        f"coefficients ({args.sim_coeff:g}, {args.std_coeff:g}, {args.cov_coeff:g}); "
        f"{where + '; ' if where else ''}out {out}",
    )


def epoch_record(epoch: int, sums: dict[str, float], steps: int, batch_size: int, seconds: float) -> dict[str, Any]:
    """One epoch's entry of the history: the 1-based ``epoch``, the per-step means of the summed terms,
    its training time, the images it trained on (``steps * batch_size``, the global batch) and their rate."""
    images = steps * batch_size
    return {
        "epoch": epoch,
        **{k: v / steps for k, v in sums.items()},
        "seconds": seconds,
        "images": images,
        "images_per_second": images / seconds,
    }


def log_epoch(out: str | None, record: dict[str, Any], args: argparse.Namespace, where: str = "") -> None:
    """The epoch's loss, terms, std, effective rank and RankMe, its training time and images per second (``where``:
    e.g. "on 2 processes"), and a warning when the std falls towards collapse."""
    line = (
        f"epoch {record['epoch']:3d}/{args.epochs}  loss {record['loss']:.4f}  inv {record['invariance']:.4f}"
        f"  var {record['variance']:.4f}  cov {record['covariance']:.4f}  std {record['std_mean']:.4f}"
        f" (min {record['std_min']:.4f})  erank {record['effective_rank']:.1f}/{args.proj_dims[-1]}"
    )
    if "rank_me" in record:
        line += f"  RankMe {record['rank_me']:.1f}"
    if "seconds" in record:
        speed = f", {record['images_per_second']:.0f} img/s" if record.get("images_per_second") else ""
        line += f"  ({record['seconds']:.1f} s{speed}{' ' + where if where else ''})"
    log(out, line)
    warning = collapse_warning(record["std_mean"], args.variance_target)
    if warning:
        log(out, warning)


def finish(
    out: str,
    args: argparse.Namespace,
    ds: Any,
    history: list[dict[str, Any]],
    final: dict[str, float],
    baseline: dict[str, float],
    seconds: float,
    device: str,
    world_size: int = 1,
    devices: int = 1,
    **extra: Any,
) -> dict[str, Any]:
    """Write ``DIR/metrics.json`` (validated schema) and ``DIR/curves.png``, log the outcome, return the
    metrics. ``final`` and ``baseline`` are :func:`evaluate_features` of the trained and the random-init
    encoder; ``world_size`` counts the processes and ``devices`` the devices that trained; ``extra`` adds
    backend-specific fields."""
    last = history[-1] if history else {"std_mean": float("nan"), "effective_rank": float("nan")}
    collapsed = is_collapsed(last["std_mean"], args.variance_target)
    metrics = {
        "backend": args.backend,
        "dataset": ds.name,
        **final,
        "random_init_linear_probe_accuracy": baseline["linear_probe_accuracy"],
        "random_init_knn_accuracy": baseline["knn_accuracy"],
        "embedding_std_mean": last["std_mean"],
        "effective_rank": last["effective_rank"],
        "collapsed": collapsed,
        "epochs": args.epochs,
        "seconds": seconds,
        "images_per_second": throughput(history),
        "device": device,
        "world_size": world_size,
        "devices": devices,
        **extra,
        "arch": args.arch,
        "proj_dims": args.proj_dims,
        "optimizer": args.optimizer,
        "coefficients": [args.sim_coeff, args.std_coeff, args.cov_coeff],
        "args": {k: v for k, v in vars(args).items() if k != "stop_after"},
        "history": history,
    }
    metrics = write_metrics(os.path.join(out, "metrics.json"), metrics)
    plot_curves(history, os.path.join(out, "curves.png"), title=f"VICReg {args.backend} on {ds.name} ({args.arch})")
    if collapsed:
        log(
            out,
            f"COLLAPSED: final mean per-dimension std {last['std_mean']:.4f} < "
            f"{COLLAPSE_FRACTION} x gamma; the representation is useless",
        )
    log(
        out,
        f"linear probe {metrics['linear_probe_accuracy']:.4f} (random init "
        f"{metrics['random_init_linear_probe_accuracy']:.4f}), 20-NN {metrics['knn_accuracy']:.4f}, "
        f"{metrics['seconds']:.0f} s, {metrics['images_per_second']:.0f} training img/s; wrote "
        f"{os.path.join(out, 'metrics.json')} and curves.png",
    )
    return metrics
