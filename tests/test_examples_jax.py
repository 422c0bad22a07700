"""The JAX training example (``python -m backends.jax.train``): outputs, resume, data parallelism.

The data-parallel test runs in a subprocess started with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the flag must be set before JAX initialises):
the same steps on 8 CPU devices under ``jax.shard_map`` and on one device without collectives give the
same losses, parameters and BatchNorm statistics, to float32 precision.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")
pytest.importorskip("dm_pix")

from backends import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--subset", "96", "--batch-size", "32", "--proj-dims", "64-64", "--seed", "3"]


def run(args: list[str], env: dict[str, str] | None = None, code: str | None = None) -> subprocess.CompletedProcess:
    """``python -m backends.jax.train ARGS`` (or ``python -c CODE``) from the repository root."""
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "backends.jax.train", *args]
    full_env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device unless env says
    full_env.update({"TQDM_DISABLE": "1", **(env or {})})
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_short_run_writes_metrics_and_resumes(tmp_path):
    """Two epochs on a subset, interrupted after the first (``--stop-after``) and resumed: the resumed run
    continues from the checkpoint (history of both epochs, the first one unchanged) and writes a valid
    ``metrics.json`` and ``curves.png``."""
    out = str(tmp_path / "run")
    # the resumed run compiles the same programs: share them through JAX's persistent compilation cache
    cache = {
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax-cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    first = run([*SMALL, "--epochs", "2", "--out", out, "--stop-after", "1"], env=cache)
    assert first.returncode == 0, first.stderr[-3000:]
    assert os.path.isfile(os.path.join(out, "checkpoint.msgpack"))
    assert not os.path.exists(os.path.join(out, "metrics.json"))
    with open(os.path.join(out, "log.txt")) as f:
        epoch1 = [line for line in f if line.startswith("epoch   1/2")]
    second = run([*SMALL, "--epochs", "2", "--out", out, "--resume"], env=cache)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout + second.stderr

    metrics = common.read_metrics(out)
    common.validate(metrics)  # the shared schema
    assert metrics["backend"] == "jax" and metrics["dataset"] == "digits" and metrics["epochs"] == 2
    assert [r["epoch"] for r in metrics["history"]] == [1, 2]
    for r in metrics["history"]:
        assert all(np.isfinite(r[k]) for k in ("loss", "invariance", "variance", "covariance", "std_mean"))
    # the resumed run kept epoch 1 as the interrupted run logged it
    assert epoch1 and f"loss {metrics['history'][0]['loss']:.4f}" in epoch1[0]
    assert metrics["device"].startswith("cpu")
    assert metrics["world_size"] == 1 and metrics["devices"] == 1
    assert metrics["images_per_second"] > 0 and all(r["images"] == 96 for r in metrics["history"])
    assert os.path.getsize(os.path.join(out, "curves.png")) > 1000

    # a checkpoint of another model is refused with a usage error naming the problem, not a traceback
    other = run([*SMALL, "--proj-dims", "32-32", "--epochs", "3", "--out", out, "--resume"])
    assert other.returncode == 2, other.stderr[-3000:]
    assert "--proj-dims [64, 64] there, [32, 32] here" in other.stderr and "Traceback" not in other.stderr
    assert 0.0 <= metrics["linear_probe_accuracy"] <= 1.0


@pytest.mark.slow
def test_eight_devices_match_one_device():
    """shard_map over 8 CPU devices (axis "batch", synchronised BatchNorm, vicreg.jax with axis_name)
    equals the single-device step on the same global batch: the loss of each of four LARS steps, then the
    parameters and the BatchNorm running statistics. LARS updates biases and normalisation parameters by
    plain momentum SGD, so a gradient off by a factor (the classic all-gather bug) would show; Adam would
    hide it."""
    code = textwrap.dedent(
        """
        import json, jax, numpy as np
        from backends import common
        from backends.jax import train as T
        assert jax.device_count() == 8, jax.devices()
        args = common.build_parser("jax").parse_args(
            ["--batch-size", "32", "--proj-dims", "64-64", "--optimizer", "lars", "--warmup-epochs", "0"])
        common.resolve_optimizer_defaults(args)
        ds = common.load_dataset(None, None, 64)
        make = lambda mesh: T.Trainer(args, ds.channels, ds.image_size, ds.mean, ds.std, "digits", 8, 0, mesh)
        one, eight = make(None), make(T.make_mesh())
        assert eight.mesh is not None and eight.mesh.size == 8 and one.mesh is None
        img1, img8 = one.put_images(ds.x_train), eight.put_images(ds.x_train)
        leaves = lambda t: [np.asarray(x, np.float64) for x in jax.tree.leaves(jax.device_get(t))]
        norm = lambda xs: float(np.sqrt(sum((x ** 2).sum() for x in xs)))
        diff = lambda a, b: norm([x - y for x, y in zip(leaves(a), leaves(b))])
        p0, s0 = leaves(one.state["params"]), leaves(one.state["batch_stats"])
        rng = np.random.default_rng(0)
        losses1, losses8 = [], []
        for step in range(4):
            idx = rng.permutation(64)[:32]
            losses1.append(float(one.step(img1, idx, step)["loss"]))
            losses8.append(float(eight.step(img8, idx, step)["loss"]))
        out = {"losses1": losses1, "losses8": losses8,
               "params_gap": diff(eight.state["params"], one.state["params"]),
               "params_moved": diff(one.state["params"], p0),
               "stats_gap": diff(eight.state["batch_stats"], one.state["batch_stats"]),
               "stats_moved": diff(one.state["batch_stats"], s0)}
        print("RESULT" + json.dumps(out))
        """
    )
    proc = run([], env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}, code=code)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")][-1]
    r = json.loads(line[len("RESULT") :])
    # The first loss is a forward pass: equal to rounding. Later ones carry rounding through the updates,
    # which this network amplifies about tenfold per step (measured with JAX 0.10.2: 0, 2.6e-7, 4.6e-5,
    # 4.0e-4 relative over the four steps), so the second step is the tight check of the gradient (the
    # all-gather bug below is off by 1.9% there) and the later ones are a band.
    np.testing.assert_allclose(r["losses8"][0], r["losses1"][0], rtol=1e-6)
    np.testing.assert_allclose(r["losses8"][1], r["losses1"][1], rtol=1e-5)
    np.testing.assert_allclose(r["losses8"], r["losses1"], rtol=3e-3)
    assert abs(r["losses1"][-1] - r["losses1"][0]) > 1e-3  # the model trained
    # Parameters and running statistics: the 8-device run lands where the single-device run does, up to
    # float32 rounding, which this network amplifies: on one device, scaling the images by 1 + 1e-6 noise
    # already moves some gradients by about 0.5%, and after four steps the gap is about 2% of the distance
    # the parameters moved (running statistics: 0.003%; measured again with JAX 0.10.2: 2.8% and 0.06%).
    # With the sharded gradient multiplied by 8 (the classic all-gather bug) the gaps are 570% and 25%,
    # and the losses differ by 1.9% from the second step.
    assert r["params_moved"] > 1e-2 and r["stats_moved"] > 1e-3, r
    assert r["params_gap"] < 0.1 * r["params_moved"], r
    assert r["stats_gap"] < 0.002 * r["stats_moved"], r


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_process_with_two_devices(tmp_path):
    """The multi-host path, on one machine: two processes started with ``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (``jax.distributed.initialize``, JAX's gloo CPU collectives),
    one CPU device each, each feeding its own half of every batch, against one process with two CPU
    devices: the same mesh of two devices, so the same losses, bit for bit (measured), and the same probe.
    Only process 0 writes. (Across machines this cannot be run here.)"""
    flags = [*SMALL, "--epochs", "2", "--batch-size", "64", "--subset", "128"]
    one = run([*flags, "--out", str(tmp_path / "one")], env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert one.returncode == 0, one.stderr[-3000:]
    port = _free_port()
    out = str(tmp_path / "two")
    cmd = [sys.executable, "-m", "backends.jax.train", *flags, "--out", out]
    base = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [
        subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={
                **base,
                "TQDM_DISABLE": "1",
                "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": str(i),
            },
        )
        for i in range(2)
    ]
    try:
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert "epoch" not in logs[1]  # process 1 logs nothing
    a, b = common.read_metrics(str(tmp_path / "one")), common.read_metrics(out)
    assert (a["world_size"], a["devices"], b["world_size"], b["devices"]) == (1, 2, 2, 2)
    assert "over 2 processes" in b["device"]
    np.testing.assert_allclose([r["loss"] for r in b["history"]], [r["loss"] for r in a["history"]], rtol=1e-6)
    assert b["linear_probe_accuracy"] == a["linear_probe_accuracy"]
    assert sorted(os.listdir(out)) == ["checkpoint.msgpack", "curves.png", "log.txt", "metrics.json"]
