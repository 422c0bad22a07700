"""``python -m benchmarks.gpu_check``: the one command that verifies every CUDA path on a GPU.

On a CPU machine: the one-line refusal without a GPU, argument errors, the report writer on a recorded
report, the pieces that read pytest's and the benchmark suite's outputs, and the checks' logic on CPU
stand-ins (the device each check would put on the GPU replaced by the CPU). On a GPU machine: the whole
command with ``--quick``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.gpu_check import bench as bench_section
from benchmarks.gpu_check import checks, command, common, environment, suite_run
from benchmarks.gpu_check import report as reporting
from benchmarks.gpu_check import train as training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_GPU = environment.gpu_absent_reason()


def run_command(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


# --- the command line ---------------------------------------------------------------------------------


@pytest.mark.skipif(NO_GPU is None, reason="a CUDA GPU is present: the command runs instead")
def test_without_a_gpu_one_line_and_exit_status_2(tmp_path):
    out = tmp_path / "report"
    proc = run_command(["--out", str(out)])
    assert proc.returncode == 2
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr
    assert "Traceback" not in lines[0]
    assert lines[0].startswith("python -m benchmarks.gpu_check: no CUDA GPU visible")
    assert "torch" in lines[0] and "jax" in lines[0]  # says what each library answered
    assert not out.exists()  # nothing was started


@pytest.mark.parametrize(
    "args",
    [["--skip", "nope"], ["--skip", ","], ["--bogus"], ["--quick", "extra"], ["--out"]],
    ids=["unknown section", "empty section list", "unknown option", "stray argument", "--out without a folder"],
)
def test_argument_errors_are_usage_errors(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        command.main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m benchmarks.gpu_check") and "error:" in err
    assert "no CUDA GPU" not in err  # the arguments are checked before the GPU


def test_help_lists_the_options(capsys):
    """Smoke test: --help answers without a GPU and names every option."""
    with pytest.raises(SystemExit) as exit_info:
        command.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--quick", "--skip"):
        assert option in text


def test_skip_takes_a_comma_separated_list():
    args = command.parser().parse_args(["--skip", "bench, train", "--quick"])
    assert args.skip == ("bench", "train") and args.quick


# --- the report writer --------------------------------------------------------------------------------

TF32_MESSAGE = (
    "vicreg.torch.VICRegLoss() on one dominant dimension (std 1000), 256 x 8192: loss error 3.1e-04, "
    "gradient error 8.7e-04 > 1e-05"
)
BENCH_CASES = [("torch-cuda", "float32"), ("torch-cuda", "bfloat16"), ("jax-gpu", "float32"), ("cupy", "float32")]
BENCH_SHAPES = [(256, 8192), (2048, 2048)]
ACCURACIES = {"torch": 0.9833, "jax": 0.9852}


def bench_row(platform: str, dtype: str, n: int, d: int) -> dict:
    ours = "vicreg" if platform == "cupy" else "adapter"
    times = {"vicreg": 1.25, "official": 40.5, "matmul": 0.21, "gemms": 0.86}
    if ours == "adapter":
        times["adapter"] = 0.95
    return {
        "platform": platform,
        "dtype": dtype,
        "mode": "backward",
        "n": n,
        "d": d,
        "median_ms": times,
        "peak_mib": {ours: 48.0, "official": 1300.0},
        "ours": ours,
        "speedup_vs_official": times["official"] / times[ours],
        "speedup_vs_lightly": None,
        "over_matmul": times[ours] / times["matmul"],
        "over_gemms": times[ours] / times["gemms"],
        "max_loss_rel_diff": 2e-7,
    }


def recorded_report() -> dict:
    """A report as ``gpu_report.json`` holds it: the tests section skipped, a failed and a skipped check,
    four platforms x dtypes at two shapes, two examples trained and the CuPy one skipped."""
    return {
        "command": "python -m benchmarks.gpu_check --skip tests --out gpu-out",
        "started": "2025-01-01 12:00:00 UTC",
        "options": {"quick": False, "skip": ["tests"]},
        "environment": {
            "status": "passed",
            "python": "3.11.7",
            "os": "Linux-x86_64",
            "versions": {
                "torch": "2.14.1",
                "jax": "0.10.2",
                "jaxlib": "0.10.2",
                "cupy-cuda12x": None,
                "numpy": "2.4.6",
                "array-api-compat": "1.16.0",
            },
            "nvidia_smi": [
                {
                    "index": "0",
                    "name": "NVIDIA H100 80GB HBM3",
                    "driver_version": "550.54.15",
                    "memory.total": "81559 MiB",
                    "compute_cap": "9.0",
                }
            ],
            "torch": {
                "cuda": "12.8",
                "cuda_available": True,
                "cudnn": 91002,
                "devices": [{"name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "memory_gib": 79.2}],
            },
            "cupy": {"installed": False},
            "jax": {
                "default_backend": "gpu",
                "default_matmul_precision": None,
                "gpus": ["cuda:0 (NVIDIA H100 80GB HBM3)"],
            },
            "device": "NVIDIA H100 80GB HBM3",
        },
        "sections": {
            "tests": {"status": "skipped", "reason": "--skip"},
            "checks": {
                "status": "failed",
                "seconds": 61.0,
                "checks": [
                    {
                        "name": "torch_placement",
                        "what": "torch CUDA tensors stay on the inputs' GPU.",
                        "why": "",
                        "status": "passed",
                        "message": "all 18 outputs on cuda:0",
                        "rows": [],
                        "seconds": 1.5,
                    },
                    {
                        "name": "cupy_placement",
                        "what": "CuPy arrays stay on the GPU.",
                        "why": "",
                        "status": "skipped",
                        "message": "cupy is not installed",
                        "seconds": 0.0,
                    },
                    {
                        "name": "torch_tf32_precision",
                        "what": "With TF32 on, float32 stays within 1e-5 of float64.",
                        "why": "TF32 rounds products to 10 bits.",
                        "status": "failed",
                        "message": TF32_MESSAGE,
                        "worst_error": 8.7e-4,
                        "rows": [
                            {
                                "case": "one dominant dimension (std 1000), 256 x 8192",
                                "entry point": "vicreg.torch.VICRegLoss()",
                                "role": "checked",
                                "loss error, TF32 on": 3.1e-4,
                                "gradient error, TF32 on": 8.7e-4,
                                "loss error, full float32": 1.8e-7,
                                "gradient error, full float32": 4.0e-7,
                                "within 1e-5": False,
                            }
                        ],
                        "seconds": 3.2,
                    },
                ],
            },
            "bench": {
                "status": "passed",
                "seconds": 120.0,
                "shapes": [list(s) for s in BENCH_SHAPES],
                "dtypes": ["float32", "bfloat16"],
                "modes": ["backward"],
                "rows": [bench_row(p, t, n, d) for n, d in BENCH_SHAPES for p, t in BENCH_CASES],
                "notes": ["cupy: bfloat16 not supported, skipped"],
                "files": {"json": "bench/results.json", "markdown": "bench/results.md"},
            },
            "train": {
                "status": "passed",
                "seconds": 95.0,
                "epochs": 2,
                "runs": [
                    {
                        "example": "torch",
                        "status": "passed",
                        "message": "linear probe 0.9833",
                        "returncode": 0,
                        "wall_s": 31.0,
                        "linear_probe_accuracy": ACCURACIES["torch"],
                        "random_init_linear_probe_accuracy": 0.9259,
                        "knn_accuracy": 0.9407,
                        "final_loss": 20.51,
                        "epochs": 2,
                        "seconds": 24.6,
                        "device": "cuda (NVIDIA H100 80GB HBM3)",
                        "collapsed": False,
                        "command": "python -c ... --epochs 2 --out DIR/train/torch",
                    },
                    {
                        "example": "cupy",
                        "status": "skipped",
                        "returncode": 2,
                        "wall_s": 0.4,
                        "seconds": None,
                        "message": "backends.cupy.train: cannot run: CuPy is not installed",
                    },
                    {
                        "example": "jax",
                        "status": "passed",
                        "message": "linear probe 0.9852",
                        "returncode": 0,
                        "wall_s": 58.0,
                        "linear_probe_accuracy": ACCURACIES["jax"],
                        "random_init_linear_probe_accuracy": 0.9519,
                        "knn_accuracy": 0.9259,
                        "final_loss": 20.12,
                        "epochs": 2,
                        "seconds": 40.2,
                        "device": "gpu (1 x NVIDIA H100 80GB HBM3)",
                        "collapsed": False,
                    },
                ],
            },
        },
        "failed": ["checks: torch_tf32_precision"],
        "status": "failed",
        "seconds": 280.0,
    }


def section_of(md: str, heading_start: str) -> str:
    """The Markdown from the heading that starts with ``heading_start`` to the next ``## `` heading."""
    start = md.index(heading_start)
    end = md.find("\n## ", start + 1)
    return md[start:] if end < 0 else md[start:end]


def test_report_names_the_device_the_failure_and_the_overall_status():
    md = reporting.markdown(recorded_report())
    assert md.startswith("# vicreg GPU check: **FAILED**")
    assert "NVIDIA H100 80GB HBM3" in section_of(md, "## Environment")
    assert "driver 550.54.15" in md
    assert TF32_MESSAGE in section_of(md, "## 2. GPU-only checks")
    assert "checks: torch_tf32_precision" in md.split("## Environment")[0]  # the failure, at the top


def test_report_has_one_benchmark_row_per_platform_dtype_and_shape():
    bench = section_of(reporting.markdown(recorded_report()), "## 3. Benchmark")
    for n, d in BENCH_SHAPES:
        for platform, dtype in BENCH_CASES:
            rows = [line for line in bench.splitlines() if line.startswith(f"| {platform} | {dtype} | {n} x {d} |")]
            assert len(rows) == 1, (platform, dtype, n, d)
            cells = [c.strip() for c in rows[0].strip("|").split("|")]
            official, ours = 40.5, (1.25 if platform == "cupy" else 0.95)
            assert cells[5] == "40.5"  # official (d x d), median ms
            assert cells[9].startswith(f"{official / ours:.1f}x")
    table_rows = [line for line in bench.splitlines() if re.match(r"\| (torch-cuda|jax-gpu|cupy) \|", line)]
    assert len(table_rows) == len(BENCH_SHAPES) * len(BENCH_CASES)
    assert "cupy: bfloat16 not supported, skipped" in bench


def test_report_has_each_training_accuracy_and_the_skipped_run():
    train = section_of(reporting.markdown(recorded_report()), "## 4. Training")
    for example, accuracy in ACCURACIES.items():
        row = next(line for line in train.splitlines() if line.startswith(f"| {example} |"))
        assert f"| {accuracy:.4f} |" in row
    cupy = next(line for line in train.splitlines() if line.startswith("| cupy |"))
    assert "| skipped |" in cupy
    assert "CuPy is not installed" in train


def test_report_shows_the_skipped_section_and_a_skipped_check():
    md = reporting.markdown(recorded_report())
    assert "| Test suite, GPU cases | skipped |" in md
    assert "Skipped: --skip." in section_of(md, "## 1. Test suite")
    assert "| cupy_placement | skipped | cupy is not installed |" in md


def test_report_is_the_same_from_the_json_file(tmp_path):
    report = recorded_report()
    path = tmp_path / "gpu_report.json"
    common.write_json(str(path), report)
    assert reporting.markdown(json.loads(path.read_text())) == reporting.markdown(report)


def test_report_survives_error_records_and_missing_sections():
    report = recorded_report()
    report["environment"] = {"status": "error", "error": "RuntimeError: CUDA driver too old"}
    report["sections"]["bench"] = {
        "status": "error",
        "error": "the bench process exited with status -11",
        "seconds": 3.0,
    }
    del report["sections"]["train"]
    md = reporting.markdown(report)
    assert "CUDA driver too old" in md
    assert "Error: the bench process exited with status -11" in section_of(md, "## 3. Benchmark")
    assert "## 4. Training examples on the GPU: skipped" in md


def test_failures_name_each_failed_check_run_and_section():
    report = recorded_report()
    report["sections"]["train"]["status"] = "failed"
    report["sections"]["train"]["runs"][2]["status"] = "failed"
    report["sections"]["bench"] = {"status": "error", "error": "OutOfMemoryError: CUDA out of memory"}
    assert reporting.failures(report) == [
        "checks: torch_tf32_precision",
        "bench: OutOfMemoryError: CUDA out of memory",
        "train: jax",
    ]


def test_json_has_no_nan_or_infinity(tmp_path):
    path = tmp_path / "r.json"
    common.write_json(str(path), {"a": float("nan"), "b": [float("inf"), np.float32(0.5)], "c": np.bool_(True)})
    assert json.loads(path.read_text()) == {"a": None, "b": [None, 0.5], "c": True}


# --- reading pytest's results, the suite's results and the examples' metrics --------------------------

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="2" tests="6">
<testcase classname="tests.test_core" name="test_loss[torch-cuda]" time="0.1"/>
<testcase classname="tests.test_core" name="test_loss[jax-gpu]" time="0.1">
  <failure message="AssertionError: loss 1.5 != 1.0">long traceback</failure></testcase>
<testcase classname="tests.test_core" name="test_grad[cupy-(6, 9)]" time="0.1">
  <skipped type="pytest.skip" message="cupy: needs cupy and a CUDA GPU, not present on this machine"/></testcase>
<testcase classname="tests.test_torch_adapter" name="test_autocast_runs_the_loss_in_float32[cuda-dtype1-analytic]"
  time="0.1"><error message="failed on setup with &quot;RuntimeError: CUDA error&quot;">trace</error></testcase>
<testcase classname="tests.test_core" name="test_grad[jax-gpu-(6, 9)]" time="0.1">
  <skipped type="pytest.skip" message="cupy: needs cupy and a CUDA GPU, not present on this machine"/></testcase>
<testcase classname="tests.test_examples_cupy" name="test_help_needs_no_gpu" time="0.1"/>
</testsuite></testsuites>
"""


def test_parse_junit_counts_outcomes_per_backend_and_keeps_messages(tmp_path):
    path = tmp_path / "pytest.xml"
    path.write_text(JUNIT)
    parsed = suite_run.parse_junit(str(path))
    assert parsed["counts"] == {"passed": 2, "failed": 1, "errors": 1, "skipped": 2, "total": 6}
    assert parsed["by_backend"]["torch-cuda"] == {"passed": 1, "failed": 0, "errors": 1, "skipped": 0}
    assert parsed["by_backend"]["jax-gpu"] == {"passed": 0, "failed": 1, "errors": 0, "skipped": 1}
    assert parsed["by_backend"]["cupy"] == {"passed": 0, "failed": 0, "errors": 0, "skipped": 1}
    assert parsed["failures"] == [
        {"test": "tests.test_core::test_loss[jax-gpu]", "kind": "failed", "message": "AssertionError: loss 1.5 != 1.0"},
        {
            "test": "tests.test_torch_adapter::test_autocast_runs_the_loss_in_float32[cuda-dtype1-analytic]",
            "kind": "errors",
            "message": 'failed on setup with "RuntimeError: CUDA error"',
        },
    ]
    assert parsed["skip_reasons"] == [
        {"reason": "cupy: needs cupy and a CUDA GPU, not present on this machine", "count": 2}
    ]


def test_pytest_command_selects_the_gpu_cases_and_not_this_file():
    cmd = suite_run.pytest_command("x.xml", quick=True)
    selection = cmd[cmd.index("-k") + 1]
    for name in ("torch-cuda", "jax-gpu", "cupy", "cuda", "not gpu_check"):
        assert name in selection
    assert cmd[cmd.index("-m", 3) + 1] == "not slow"
    assert "-m" not in suite_run.pytest_command("x.xml", quick=False)[3:]
    # pytest-benchmark, where installed, would stop the run under xdist (its warning is an error here)
    assert cmd[cmd.index("no:benchmark") - 1] == "-p"
    assert "-n" not in cmd
    cmd = suite_run.pytest_command("x.xml", quick=False, workers=8)
    assert cmd[cmd.index("-n") + 1] == "8"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--workers", "-1"], "0 or more"),
        (["--workers", "two"], "a number of processes"),
        (["--time-limit", "0"], "a positive number of seconds"),
        (["--time-limit", "nan"], "a positive number of seconds"),
    ],
)
def test_bad_options_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        command.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_rows_read_the_suites_results():
    """Smoke test on the suite's real output (NumPy, one tiny case): one row, times and ratios read from
    the right places."""
    from benchmarks import suite

    config = suite.Config(
        backends=("numpy",),
        devices=("cpu",),
        shapes=((8, 16),),
        modes=("backward",),
        warmup=0,
        min_rounds=1,
        max_rounds=1,
        budget_s=0.0,
        memory=False,
        progress=False,
    )
    results = suite.run(config, log=lambda s: None)
    (row,) = bench_section.bench_rows(results)
    case = results["cases"][0]
    assert (row["platform"], row["dtype"], row["n"], row["d"], row["ours"]) == ("numpy", "float32", 8, 16, "vicreg")
    ms = {role: r["time"]["median_ms"] for role, r in case["impls"].items()}
    assert row["median_ms"] == ms
    assert row["speedup_vs_official"] == pytest.approx(ms["official"] / ms["vicreg"])
    assert row["over_matmul"] == pytest.approx(ms["vicreg"] / ms["matmul"])


def test_bench_config_is_the_gpu_grid():
    full, quick = bench_section.bench_config(False), bench_section.bench_config(True)
    assert set(full.shapes) == {(n, d) for n in (256, 2048) for d in (2048, 8192)}
    assert full.devices == quick.devices == ("gpu",)
    assert full.dtypes == quick.dtypes == ("float32", "bfloat16")
    assert full.modes == quick.modes == ("backward",)
    assert len(quick.shapes) == 1 and quick.max_rounds < full.max_rounds


METRICS = {"linear_probe_accuracy": 0.98, "device": "cuda (NVIDIA H100)", "history": [{"loss": 21.0}, {"loss": 20.5}]}


@pytest.mark.parametrize(
    "name, rc, metrics, status, says",
    [
        ("torch", 0, METRICS, "passed", "linear probe 0.9800"),
        ("cupy", 2, None, "skipped", "cannot run: CuPy is not installed"),
        ("jax", 0, {**METRICS, "device": "cpu (1 XLA device, 2 cores)"}, "failed", "not on the GPU"),
        ("torch", 0, {**METRICS, "history": [{"loss": 21.0}, {"loss": None}]}, "failed", "non-finite"),
        ("torch", 1, None, "failed", "RuntimeError: CUDA error: out of memory"),
        ("jax", None, None, "failed", "timed out"),
    ],
    ids=["passed", "cupy missing", "jax on the CPU", "NaN loss", "crash", "timeout"],
)
def test_judge_training(name, rc, metrics, status, says):
    log = (
        '$ python -m backends.x.train\nTraceback (most recent call last):\n  File "x.py", line 1\n'
        "RuntimeError: CUDA error: out of memory\n"
        if rc == 1
        else "$ python -m backends.cupy.train\nbackends.cupy.train: cannot run: CuPy is not installed (...)\n"
    )
    got_status, message = training.judge_training(name, rc, metrics, log)
    assert got_status == status and says in message


def test_training_commands_run_each_example_for_the_epochs_asked(tmp_path):
    cmds = training.training_commands(str(tmp_path), epochs=2)
    assert list(cmds) == ["torch", "cupy", "jax"]
    for name, cmd in cmds.items():
        assert cmd[cmd.index("--epochs") + 1] == "2"
        assert cmd[cmd.index("--out") + 1] == os.path.join(str(tmp_path), "train", name)
    assert 'device="cuda"' in cmds["torch"][2]  # the PyTorch example's command line has no device flag


def test_relative_error_is_normwise():
    assert checks.relative_error([1.0, 2.5], [1.0, 2.0]) == pytest.approx(0.25)
    assert checks.relative_error(3.0, 2.0) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "statuses, expected",
    [
        (["passed", "skipped"], "passed"),
        (["skipped", "skipped"], "skipped"),
        (["passed", "failed"], "failed"),
        (["skipped", "error"], "failed"),
    ],
)
def test_a_section_fails_when_one_of_its_parts_failed(statuses, expected):
    assert common.overall(statuses) == expected


def test_a_section_that_raises_becomes_an_error_record():
    record = common.guarded(lambda: 1 / 0)
    assert record["status"] == "error" and record["error"].startswith("ZeroDivisionError")
    assert record["where"].startswith("tests/test_gpu_check.py:")


def test_environment_runs_in_a_child_process(tmp_path):
    """Smoke test of the child-process mechanism: the environment section's record comes back."""
    (tmp_path / "logs").mkdir()
    env = command.in_child("environment", str(tmp_path), False)
    assert env["status"] == "passed", env
    assert env["versions"]["numpy"] == np.__version__
    assert env["python"] == sys.version.split()[0]


# --- the checks' logic on CPU stand-ins ---------------------------------------------------------------


@pytest.fixture
def cpu_stand_in(monkeypatch):
    """Run the torch and JAX checks on the CPU, on small adversarial inputs: their bookkeeping, not the
    GPU, is under test here."""
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    monkeypatch.setattr(checks, "_torch_cuda", lambda: torch)
    monkeypatch.setattr(checks, "_torch_device", lambda torch, index=0: torch.device("cpu"))
    monkeypatch.setattr(checks, "_jax_gpu", lambda: (jax, jax.devices("cpu")))
    monkeypatch.setattr(
        checks,
        "adversarial_cases",
        lambda: {
            "one dominant dimension (std 1000), 32 x 256": checks.dominant(32, 256, 1000.0),
            "nearly whitened (std 100), 32 x 256": checks.whitened(32, 256, 100.0),
        },
    )


@pytest.mark.parametrize("check", ["torch_placement", "jax_placement"])
def test_placement_checks_pass_on_a_cpu_stand_in(cpu_stand_in, check):
    """Smoke test: every output is found where the inputs are."""
    record = checks.run_check(getattr(checks, f"check_{check}"))
    assert record["status"] == "passed", record
    assert len(record["places"]) >= 13 and len(set(record["places"].values())) == 1


@pytest.mark.parametrize("check", ["torch_tf32_precision", "jax_default_precision"])
def test_precision_checks_measure_float32_against_float64(cpu_stand_in, check, monkeypatch):
    record = checks.run_check(getattr(checks, f"check_{check}"))
    assert record["status"] == "passed", record
    checked = [r for r in record["rows"] if r["role"] == "checked"]
    # two cases; PyTorch: the module and the core checked, the autograd backward for information;
    # JAX: the adapter and the core, both checked
    expected = {"torch_tf32_precision": (4, 6), "jax_default_precision": (4, 4)}[check]
    assert (len(checked), len(record["rows"])) == expected
    # float32 on a CPU: errors of float32 rounding, far below the tolerance and above float64's
    assert 1e-9 < record["worst_error"] < 1e-5
    # a tolerance below float32 rounding makes the same check fail, naming the entry point
    monkeypatch.setattr(checks, "PRECISION_TOLERANCE", 1e-12)
    record = checks.run_check(getattr(checks, f"check_{check}"))
    assert record["status"] == "failed"
    assert checked[0]["entry point"] in record["message"] and "> 1e-12" in record["message"]


@pytest.mark.slow
def test_compiled_step_check_compares_with_eager_on_a_cpu_stand_in(cpu_stand_in):
    """Smoke test of the bookkeeping (torch.compile on the CPU: inductor, no CUDA graphs there)."""
    record = checks.run_check(checks.check_torch_cuda_graphs)
    assert record["status"] == "passed", record
    assert [r["step"] for r in record["rows"]] == [1, 2, 3, 4, 5]
    assert all(r["loss error"] < 1e-5 and r["gradient error"] < 1e-4 for r in record["rows"])


def test_checks_without_their_library_or_device_are_skipped(monkeypatch):
    def missing():
        raise checks.Skip("torch sees no CUDA GPU")

    monkeypatch.setattr(checks, "_torch_cuda", missing)
    record = checks.run_check(checks.check_torch_no_host_sync)
    assert record["status"] == "skipped" and record["message"] == "torch sees no CUDA GPU"
    assert record["what"].startswith("Forward+backward of ``vicreg.torch.VICRegLoss()``")


# --- on a GPU -----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(NO_GPU is not None, reason=f"needs a CUDA GPU ({NO_GPU})")
def test_quick_run_on_the_gpu_passes_every_check(tmp_path):
    """The whole command with --quick: every section runs and records, the Markdown is the writer's
    output for the JSON, and nothing failed."""
    out = tmp_path / "gpu"
    proc = run_command(["--quick", "--out", str(out)], timeout=3600)
    report = json.loads((out / "gpu_report.json").read_text())
    assert (out / "gpu_report.md").read_text() == reporting.markdown(report)
    assert set(report["sections"]) == set(common.SECTIONS)
    assert all(s["status"] in ("passed", "failed", "error", "skipped") for s in report["sections"].values())
    bench = report["sections"]["bench"]
    assert {(r["platform"], r["dtype"]) for r in bench.get("rows", [])} >= {
        ("torch-cuda", "float32"),
        ("torch-cuda", "bfloat16"),
    }
    assert [r["epochs"] for r in report["sections"]["train"]["runs"] if r["status"] == "passed"]
    assert proc.returncode == 0, report["failed"]
    assert report["failed"] == [] and report["status"] == "passed"


def test_the_report_is_rewritten_after_each_section(tmp_path, monkeypatch):
    """A run stopped from outside (a time limit on a lent machine) keeps the sections that finished: when
    the training section starts, gpu_report.json already holds the three before it, and the one not yet
    run is marked so; at the end the report is complete. Sections here are stand-ins."""
    env = recorded_report()["environment"]
    monkeypatch.setattr(environment, "gpu_absent_reason", lambda: None)
    monkeypatch.setattr(common, "TIMEOUTS_S", dict(common.TIMEOUTS_S))  # main caps them: a copy
    stand_ins = {
        "environment": env,
        "checks": {"status": "passed", "seconds": 1.0, "checks": []},
        "bench": {"status": "passed", "rows": [], "notes": [], "shapes": [], "dtypes": [], "modes": []},
    }
    monkeypatch.setattr(command, "in_child", lambda section, out, quick: stand_ins[section])
    monkeypatch.setattr(suite_run, "section_tests", lambda out, quick, workers: {"status": "passed", "seconds": 2.0})
    seen = {}

    def train(out, quick):
        seen.update(json.loads((tmp_path / "gpu_report.json").read_text())["sections"])
        return {"status": "passed", "epochs": 2, "runs": []}

    monkeypatch.setattr(training, "section_train", train)
    assert command.main(["--out", str(tmp_path), "--time-limit", "30"]) == 0
    assert [seen[s]["status"] for s in ("tests", "checks", "bench")] == ["passed"] * 3
    assert seen["train"] == {"status": "skipped", "reason": "not reached"}
    final = json.loads((tmp_path / "gpu_report.json").read_text())
    assert final["sections"]["train"]["status"] == "passed" and final["status"] == "passed"
    assert final["options"]["time_limit_s"] == 30.0
    assert common.TIMEOUTS_S["tests"] == 30.0  # every subprocess capped
