"""``python -m vicreg`` prints one row per installed backend; the rows must agree with each other and
with the independent reference on the same inputs."""

from __future__ import annotations

import importlib.util
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


def test_demo_help_is_plain_text():
    out = subprocess.run([sys.executable, "-m", "vicreg", "--help"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("usage: python -m vicreg")
    assert "``" not in out and ":func:" not in out
    assert "(default: 256)" in out and "(default: 2048)" in out and "(default: official)" in out
    assert "--worker" not in out  # the internal option stays hidden


def test_demo_imports_no_framework_itself():
    """PyTorch and JAX load in processes of their own, at the same time, while the demo's own process
    computes the NumPy row; so the demo takes about as long as the slowest framework's import."""
    script = (
        "import sys, vicreg.__main__ as demo; demo.main(['-n', '8', '-d', '4']); "
        "print('IMPORTED:' + ','.join(m for m in ('torch', 'jax', 'cupy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "IMPORTED:"
    installed = [name for name in ("torch", "jax") if importlib.util.find_spec(name)]
    rows = [line.split()[0] for line in out.splitlines()[2:-1]]
    assert rows[0] == "numpy" and set(installed) <= set(rows), out


def test_a_framework_that_fails_is_named_and_the_others_still_print():
    """A framework whose process fails (a broken install, say) gives no row and a message naming it and the
    process's last error line (which the demo prints on stderr after the other rows, then exits with 1)."""
    from vicreg.__main__ import _collect

    failing = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('partial'); sys.exit('ImportError: libtorch.so not found')"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    rows, failure = _collect("torch", failing)
    assert rows == []
    assert failure == "torch: the process computing its rows failed (exit status 1): ImportError: libtorch.so not found"
    working = subprocess.Popen(
        [sys.executable, "-c", "print('[[\"jax\", [1.0, 2.0]]]')"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert _collect("jax", working) == ([("jax", [1.0, 2.0])], None)
