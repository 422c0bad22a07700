"""The training examples' command lines: usage errors before any framework loads, values that would fail
later refused as usage errors, no folder left by a run that fails before its first checkpoint, and a bare
``--resume`` taking the newest run that has a checkpoint."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import pytest

from backends.common import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: What the error path must not import: every framework an example uses, and the heavy libraries.
FRAMEWORKS = ("torch", "torchvision", "jax", "jaxlib", "flax", "optax", "cupy", "numpy", "sklearn", "matplotlib")
#: runs ``python -m MODULE ARGV`` in-process (as -m does) and reports the frameworks imported when it exits
WRAPPER = """
import runpy, sys
module, sys.argv = sys.argv[1], [sys.argv[1]] + sys.argv[2:]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    print("IMPORTED:" + ",".join(m for m in {frameworks!r} if m in sys.modules))
"""


def run_example(example: str, argv: list[str], **env: str) -> tuple[subprocess.CompletedProcess, float]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    full_env.update(env)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER.format(frameworks=FRAMEWORKS), f"backends.{example}.train", *argv],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc, time.perf_counter() - t0


@pytest.mark.parametrize(
    "example, argv, message",
    [
        ("torch", ["--epochs", "0"], "argument --epochs: must be a positive integer, got 0"),
        ("numpy", ["--epochs", "0"], "argument --epochs: must be a positive integer, got 0"),
        ("jax", ["--epochs", "0"], "argument --epochs: must be a positive integer, got 0"),
        ("cupy", ["--epochs", "0"], "argument --epochs: must be a positive integer, got 0"),
        ("torch", ["--batch-size", "1"], "argument --batch-size: must be at least 2"),
        ("jax", ["--subset", "10", "--batch-size", "32"], "--subset 10 is smaller than --batch-size 32"),
        ("numpy", ["--amp", "fp16"], "--amp fp16 needs a CUDA GPU"),
        ("torch", ["--data", "/nonexistent"], "--data '/nonexistent' does not exist; expected a folder"),
        ("numpy", ["--data", "/nonexistent"], "--data '/nonexistent' does not exist; expected a folder"),
        ("jax", ["--data", "/nonexistent"], "--data '/nonexistent' does not exist; expected a folder"),
        ("cupy", ["--data", "/nonexistent"], "--data '/nonexistent' does not exist; expected a folder"),
        ("torch", ["--data", "pyproject.toml"], "--data 'pyproject.toml' is a file; expected a folder"),
        ("torch", ["--out", "pyproject.toml"], "--out 'pyproject.toml' is a file; expected a folder"),
        ("jax", ["--out", "pyproject.toml/run"], "--out 'pyproject.toml/run' cannot be created"),
        ("torch", ["--resume", "/nonexistent"], "--resume: no checkpoint '/nonexistent/checkpoint.pt'; expected"),
        ("jax", ["--resume", "/nonexistent"], "--resume: no checkpoint '/nonexistent/checkpoint.msgpack'; expected"),
        ("torch", ["--lr", "abc"], "argument --lr: expected a number such as 0.5 or 1e-4, got 'abc'"),
    ],
)
def test_usage_errors_come_first_fast_and_before_any_framework(example, argv, message):
    """Exit status 2 in well under a second (5 s allowed for a loaded machine), the message on the first
    line and a pointer to --help on the second (no usage block), and none of the frameworks imported:
    paths (``--data``, ``--out``, ``--resume``) too are checked before torch or JAX loads."""
    proc, seconds = run_example(example, argv)
    assert proc.returncode == 2, proc.stderr
    assert seconds < 5.0
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith(f"python -m backends.{example}.train: error: ") and message in lines[0], lines
    assert len(lines) == 2 and "--help" in lines[1], lines
    assert proc.stdout.strip().splitlines()[-1] == "IMPORTED:", proc.stdout


def test_torchrun_world_size_is_checked_before_torch_loads():
    """Under torchrun (its environment, simulated) a global batch that does not split over the processes
    is a usage error on every rank, before the process group is joined."""
    proc, _ = run_example("torch", ["--batch-size", "63"], WORLD_SIZE="2", RANK="1", LOCAL_RANK="1")
    assert proc.returncode == 2 and "does not split evenly over 2 processes" in proc.stderr
    assert proc.stdout.strip().endswith("IMPORTED:")


def parse(argv: list[str], backend: str = "torch") -> argparse.Namespace:
    from backends.torch import train

    return train.parse_args(train.build_parser(backend, device_option=backend == "torch"), argv)


def parsers() -> dict[str, argparse.ArgumentParser]:
    """Every example's parser, as its ``main`` builds it (the NumPy and CuPy examples take the PyTorch
    example's without ``--device``)."""
    from backends.jax import train as jax_train
    from backends.torch import train as torch_train

    return {
        "torch": torch_train.build_parser("torch"),
        "numpy": torch_train.build_parser("numpy", device_option=False),
        "cupy": torch_train.build_parser("cupy", device_option=False),
        "jax": jax_train.build_parser(),
    }


@pytest.mark.parametrize("example", ["torch", "numpy", "jax", "cupy"])
def test_help_shows_every_default_without_rest_markup(example):
    """``--help`` (run as a user would, before any framework loads) gives every option a help text, and
    every default that is not ``None`` appears in its option's text: a flag's ``False`` as "off"; the
    ``None`` ones say in words what happens (``--lr``: per optimizer). No reStructuredText markup."""
    proc, _ = run_example(example, ["--help"], COLUMNS="1000")  # one line per option: no hyphen breaks
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "``" not in text and ":func:" not in text and ":mod:" not in text, text
    assert proc.stdout.strip().splitlines()[-1] == "IMPORTED:"
    parser = parsers()[example]
    checked = set()
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS or "-h" in action.option_strings:
            continue
        assert action.help, f"{action.option_strings[0]} has no help text"
        expanded = parser._get_formatter()._expand_help(action)
        assert " ".join(expanded.split()) in text
        if action.default is None:
            continue
        shown = "off" if action.nargs == 0 and action.default is False else str(action.default)
        assert f"(default: {shown})" in expanded, (action.option_strings[0], expanded)
        checked.add(action.option_strings[0])
    assert {"--epochs", "--optimizer", "--warmup-epochs", "--batch-size", "--seed"} <= checked


@pytest.mark.parametrize("example", ["torch", "jax"])
def test_argument_errors_name_the_option_and_the_expected_value(example, capsys):
    """A value that does not convert names its option and what it expected ("argument --lr: expected a
    number ..."), never the converter's internal name (argparse's "invalid non_negative_float value")."""
    parser = parsers()[example]
    typed = [a for a in parser._actions if a.option_strings and a.type is not None]
    names = {a.option_strings[0] for a in typed}
    assert {"--lr", "--epochs", "--batch-size", "--proj-dims", "--warmup-epochs"} <= names
    for action in typed:
        option = action.option_strings[0]
        with pytest.raises(SystemExit) as e:
            parser.parse_args([option, "abc"])
        err = capsys.readouterr().err.splitlines()[0]
        assert e.value.code == 2
        assert f"argument {option}: expected " in err, err
        assert "invalid" not in err and action.type.__name__ not in err, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch-size", "1"], "at least 2"),
        (["--batch-size", "two"], "expected an integer"),
        (["--epochs", "0"], "positive integer"),
        (["--subset", "100"], "--subset 100 is smaller than --batch-size 256"),
        (["--seed", "-1"], "must be 0 or more"),
        (["--workers", "-2"], "must be 0 or more"),
        (["--image-size", "3"], "at least 4 pixels"),
        (["--amp", "fp16", "--device", "cpu"], "--amp fp16 needs a CUDA GPU"),
        (["--amp", "bf16", "--float64"], "contradict"),
        (["--resume", "does-not-exist"], "no checkpoint"),
    ],
)
def test_values_that_would_fail_later_are_usage_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        parse(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert os.listdir(tmp_path) == []  # nothing created


def test_valid_arguments_create_nothing(tmp_path, monkeypatch):
    """Checking a command line names the run's folder (so that every process of the run agrees on it) but
    creates it only when the run logs its first line."""
    monkeypatch.chdir(tmp_path)
    args = parse(["--subset", "64", "--batch-size", "64"])
    assert args.out.startswith(os.path.join("runs", "torch-")) and args.resume is None
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- no folder left by a failed run


def test_bad_data_leaves_no_folder(tmp_path, monkeypatch, capsys):
    """``--data /nonexistent``: a usage error, and neither ``runs/`` nor the run's folder exists after it,
    for the PyTorch-based and the JAX examples."""
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    from backends.numpy import train as numpy_train
    from backends.torch import train as torch_train

    for main in (torch_train.main, numpy_train.main):
        with pytest.raises(SystemExit) as e:
            main(["--data", str(tmp_path / "nonexistent")])
        assert e.value.code == 2 and "does not exist" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
    pytest.importorskip("jax")
    from backends.jax import train as jax_train

    with pytest.raises(SystemExit) as e:
        jax_train.main(["--data", str(tmp_path / "nonexistent"), "--out", str(tmp_path / "mine" / "run")])
    assert e.value.code == 2 and os.listdir(tmp_path) == []


def test_a_run_failing_in_its_first_epoch_removes_its_new_folder(tmp_path):
    """The folder exists by then (the log has started); the failure removes it, and the empty parent it
    created, but never a folder that was there before the run."""
    pytest.importorskip("torch")
    from backends.torch import loop
    from backends.torch import train as torch_train

    def failing(config):
        def step(z1, z2, scale=None):
            assert os.path.isfile(out / "log.txt")  # the run had started writing
            raise RuntimeError("boom")

        return step

    fast = ["--subset", "32", "--batch-size", "16", "--image-size", "8", "--proj-dims", "16-16", "--threads", "1"]
    for out, parent_kept in ((tmp_path / "new" / "run", False), (tmp_path / "existing", True)):
        if parent_kept:
            out.mkdir()
        args = torch_train.parse_args(torch_train.build_parser(), [*fast, "--out", str(out)])
        with pytest.raises(RuntimeError, match="boom"):
            loop.train(args, failing)
        assert out.exists() == parent_kept
    assert not (tmp_path / "new").exists()


def test_removed_on_failure_keeps_runs_with_a_checkpoint(tmp_path):
    out = tmp_path / "runs" / "x"

    def fail_after_first_checkpoint():
        with run.removed_on_failure(str(out)):
            out.mkdir(parents=True)
            (out / "checkpoint.pt").write_text("epoch 1")
            raise KeyError("after the first checkpoint")

    with pytest.raises(KeyError):
        fail_after_first_checkpoint()
    assert (out / "checkpoint.pt").is_file()
    with run.removed_on_failure(str(tmp_path / "ok")):  # no failure: nothing removed
        (tmp_path / "ok").mkdir()
    assert (tmp_path / "ok").is_dir()


# ---------------------------------------------------------------- bare --resume


def fake_runs(tmp_path, runs: dict[str, tuple[str | None, float]]) -> None:
    """``runs/<name>`` folders, each with a checkpoint file named ``ckpt`` (or none) written at ``mtime``;
    folders get later mtimes than every checkpoint."""
    for name, (ckpt, mtime) in runs.items():
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        (folder / "log.txt").write_text("x")
        if ckpt:
            (folder / ckpt).write_text("x")
            os.utime(folder / ckpt, (mtime, mtime))
        os.utime(folder, (5000.0, 5000.0))


def test_bare_resume_takes_the_newest_run_with_a_checkpoint_and_says_which(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fake_runs(
        tmp_path,
        {
            "torch-old": ("checkpoint.pt", 1000.0),
            "torch-new": ("checkpoint.pt", 2000.0),
            "torch-newest-folder-no-checkpoint": (None, 0.0),
            "numpy-newer": ("checkpoint.pt", 3000.0),  # another example's
            "jax-newer": ("checkpoint.msgpack", 4000.0),
        },
    )
    args = parse(["--resume"])
    newest = os.path.join("runs", "torch-new")
    assert args.out == newest and args.resume == os.path.join(newest, "checkpoint.pt")
    assert f"--resume: continuing {newest}, the newest runs/torch-* folder with a checkpoint" in capsys.readouterr().out
    assert run.latest_run("numpy") == os.path.join("runs", "numpy-newer")
    assert run.latest_run("jax", ext="msgpack") == os.path.join("runs", "jax-newer")
    assert run.latest_run("jax") is None  # a JAX run's checkpoint is not checkpoint.pt


def test_bare_resume_without_any_checkpoint_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fake_runs(tmp_path, {"torch-started": (None, 0.0)})
    with pytest.raises(SystemExit) as e:
        parse(["--resume"])
    assert e.value.code == 2 and "no runs/torch-* folder holds a checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_bare_resume_continues_an_interrupted_run(tmp_path, monkeypatch):
    """End to end, in the default runs/ folder: interrupted after epoch 1, ``--resume`` alone finishes it."""
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    from backends.torch import train as torch_train

    fast = [
        "--subset",
        "32",
        "--batch-size",
        "16",
        "--image-size",
        "8",
        "--proj-dims",
        "16-16",
        "--threads",
        "1",
        "--epochs",
        "2",
    ]
    assert torch_train.main([*fast, "--stop-after", "1"]) == {}
    (folder,) = os.listdir("runs")
    metrics = torch_train.main([*fast, "--resume"])
    assert [r["epoch"] for r in metrics["history"]] == [1, 2]
    assert os.listdir("runs") == [folder]
    with open(os.path.join("runs", folder, "log.txt")) as f:
        assert "resumed from" in f.read()


# ---------------------------------------------------------------- launch environments


def test_launch_environments(monkeypatch):
    """``torchrun``'s variables and the multi-host JAX ones; without them, one process (nothing changes)."""
    from backends.common import launch

    for name in (
        "WORLD_SIZE",
        "RANK",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "JAX_COORDINATOR_ADDRESS",
        "JAX_NUM_PROCESSES",
        "JAX_PROCESS_ID",
        "SLURM_NTASKS",
        "SLURM_NPROCS",
        "SLURM_PROCID",
        "SLURM_JOB_ID",
        "OMPI_COMM_WORLD_SIZE",
    ):
        monkeypatch.delenv(name, raising=False)
    assert launch.torchrun() == launch.SINGLE and launch.jax_multihost() == launch.SINGLE
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    env = launch.torchrun()
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (3, 4, 1, 2)
    assert env.is_distributed and not env.is_main
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "1")  # an allocation of one task: one process
    assert launch.jax_multihost() == launch.SINGLE
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_PROCID", "1")
    assert (launch.jax_multihost().rank, launch.jax_multihost().world_size) == (1, 2)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")  # takes precedence, and needs the rest
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
        launch.jax_multihost()
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    assert launch.jax_multihost().source == "JAX_COORDINATOR_ADDRESS" and launch.jax_multihost().is_main
