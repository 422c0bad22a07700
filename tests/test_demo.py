"""``python -m vicreg`` prints one row per installed backend; the rows must agree with each other and
with the independent reference on the same inputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from reference import reference_terms


def test_demo_rows_agree_with_the_reference():
    out = subprocess.run(
        [sys.executable, "-m", "vicreg", "-n", "32", "-d", "48"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    header = out[1].split()
    rows = {line[:14].strip(): [float(x) for x in line[14:].split()] for line in out[2:]}
    assert {"numpy", "torch (cpu)", "jax"} <= set(rows)
    rng = np.random.default_rng(0)  # the demo's inputs, rebuilt
    z1 = rng.standard_normal((32, 48), dtype=np.float32)
    z2 = (z1 + 0.5 * rng.standard_normal((32, 48), dtype=np.float32)).astype(np.float32)
    expected = reference_terms(z1.astype(np.float64), z2.astype(np.float64))
    for name, values in rows.items():
        for field, value in zip(header[1:], values):
            assert abs(value - expected[field].item()) <= 1e-5 * max(1.0, abs(expected[field].item())), (
                name,
                field,
            )


def test_demo_rejects_a_batch_of_one_with_a_usage_error():
    out = subprocess.run([sys.executable, "-m", "vicreg", "-n", "1"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "argument -n: must be at least 2, got 1" in out.stderr
    assert "Traceback" not in out.stderr
