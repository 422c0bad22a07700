"""The CuPy training example (``python -m backends.cupy.train``): a clear refusal without CuPy or a GPU,
and a short GPU run where both are present."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from backends.cupy import train as cupy_train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISSING = cupy_train.unavailable()


def run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "backends.cupy.train", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.skipif(MISSING is None, reason="CuPy and a CUDA GPU are present: the example runs")
def test_without_cupy_or_gpu_one_line_and_nonzero_exit(tmp_path):
    out = tmp_path / "run"
    proc = run(["--epochs", "1", "--out", str(out)])
    assert proc.returncode == cupy_train.EXIT_UNAVAILABLE
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert lines[0].startswith("backends.cupy.train: cannot run:") and MISSING in lines[0]
    assert "GPU" in lines[0]
    assert not out.exists()  # nothing was started


def test_help_needs_no_gpu():
    """Smoke test: the command line answers without CuPy or a GPU."""
    proc = run(["--help"])
    assert proc.returncode == 0
    assert "--proj-dims" in proc.stdout and "python -m backends.cupy.train" in proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(MISSING is not None, reason=f"needs CuPy and a CUDA GPU: {MISSING}")
def test_short_gpu_run(tmp_path):
    """Smoke test on a GPU: two short epochs write a valid metrics file naming the CUDA device."""
    from backends import common

    out = str(tmp_path / "run")
    proc = run(["--subset", "96", "--batch-size", "32", "--epochs", "2", "--proj-dims", "64-64", "--out", out])
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = common.read_metrics(out)
    common.validate(metrics)
    assert metrics["backend"] == "cupy" and metrics["device"].startswith("cuda")
    assert metrics["images_per_second"] > 0 and metrics["world_size"] == 1
    assert [r["epoch"] for r in metrics["history"]] == [1, 2]
