"""Section 4, train: each training example (PyTorch, CuPy, JAX) for 2 epochs on digits on the GPU, in a
subprocess; the verdict, the accuracies and the times come from each run's ``metrics.json``."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from typing import Any

from . import common
from .common import EXIT_NO_GPU, guarded, last_error_line, overall, run_logged, shown, tail

#: The PyTorch example runs on the CPU from its command line; its ``main`` takes ``device=``.
_TORCH_ON_CUDA = 'import sys; from backends.torch.train import main; main(sys.argv[1:], device="cuda")'


def training_commands(out: str, epochs: int) -> dict[str, list[str]]:
    """The command of each example: PyTorch (its ``main(device="cuda")``; the command line has no device
    flag), CuPy (always on the GPU) and JAX (on its default backend, the GPU when jaxlib has CUDA)."""

    def args(name: str) -> list[str]:
        return ["--epochs", str(epochs), "--out", os.path.join(out, "train", name)]

    return {
        "torch": [sys.executable, "-c", _TORCH_ON_CUDA, *args("torch")],
        "cupy": [sys.executable, "-m", "backends.cupy.train", *args("cupy")],
        "jax": [sys.executable, "-m", "backends.jax.train", *args("jax")],
    }


def _metrics_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    history = metrics.get("history") or [{}]
    return {
        "linear_probe_accuracy": metrics.get("linear_probe_accuracy"),
        "random_init_linear_probe_accuracy": metrics.get("random_init_linear_probe_accuracy"),
        "knn_accuracy": metrics.get("knn_accuracy"),
        "final_loss": history[-1].get("loss"),
        "epochs": metrics.get("epochs"),
        "seconds": metrics.get("seconds"),
        "device": metrics.get("device"),
        "collapsed": metrics.get("collapsed"),
    }


def judge_training(name: str, rc: int | None, metrics: dict[str, Any] | None, log_tail: str) -> tuple[str, str]:
    """(status, message) of one example's run: passed when it exited 0 with a ``metrics.json`` whose
    every epoch's loss is finite and whose device is a GPU; the CuPy example's exit status 2 (no CuPy)
    is a skip."""
    if name == "cupy" and rc == EXIT_NO_GPU:
        return "skipped", last_error_line(log_tail)
    if rc is None:
        return "failed", f"timed out after {common.TIMEOUTS_S['train_run']} s"
    if rc != 0 or metrics is None:
        return "failed", f"exit status {rc}: {last_error_line(log_tail)}"
    losses = [r.get("loss") for r in metrics.get("history", [])]
    if not losses or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in losses):
        return "failed", f"non-finite or missing epoch losses: {losses}"
    if str(metrics.get("device", "")).startswith("cpu"):
        return "failed", f"ran on {metrics['device']}, not on the GPU"
    return "passed", f"linear probe {metrics['linear_probe_accuracy']:.4f} on {metrics['device']}"


def train_one(name: str, cmd: list[str], out: str) -> dict[str, Any]:
    """Run one example into ``DIR/train/<name>`` (output in ``DIR/logs/train-<name>.log``) and record
    its verdict with the accuracies, losses and times of its ``metrics.json``."""
    run_dir = os.path.join(out, "train", name)
    metrics_path = os.path.join(run_dir, "metrics.json")
    with contextlib.suppress(FileNotFoundError):
        os.remove(metrics_path)  # never report a previous run's metrics
    log_path = os.path.join(out, "logs", f"train-{name}.log")
    rc, wall = run_logged(cmd, log_path, common.TIMEOUTS_S["train_run"], {"TQDM_DISABLE": "1"})
    metrics = None
    with contextlib.suppress(OSError, ValueError), open(metrics_path) as fh:
        metrics = json.load(fh)
    status, message = judge_training(name, rc, metrics, tail(log_path, 40))
    return {
        "example": name,
        "status": status,
        "message": message,
        "returncode": rc,
        "wall_s": wall,
        "seconds": None,
        "command": shown(cmd, out),
        "log": os.path.relpath(log_path, out),
        **(_metrics_summary(metrics) if metrics else {}),
    }


def section_train(out: str, quick: bool) -> dict[str, Any]:
    """Each example for 2 epochs (1 with ``--quick``) on digits; failed when one failed."""
    runs = []
    for name, cmd in training_commands(out, 1 if quick else 2).items():
        print(f"  train {name} ...", flush=True)
        runs.append(guarded(train_one, name, cmd, out) | {"example": name})
        print(f"  train {name}: {runs[-1]['status']}: {runs[-1].get('message', runs[-1].get('error', ''))}", flush=True)
    return {"status": overall(r["status"] for r in runs), "epochs": 1 if quick else 2, "runs": runs}
