"""The speed options of the PyTorch-based examples: ``--amp``, ``--compile``, ``--channels-last``, and the
CUDA paths (``--device cuda``, ``--amp fp16``, several GPUs under torchrun), which skip without a GPU."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("sklearn")

from backends.torch import loop  # noqa: E402
from backends.torch import train as torch_train  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = [
    "--subset",
    "96",
    "--batch-size",
    "32",
    "--image-size",
    "8",
    "--proj-dims",
    "64-64-64",
    "--epochs",
    "1",
    "--warmup-epochs",
    "0.5",
    "--threads",
    "1",
]
NO_CUDA = "needs a CUDA GPU for PyTorch; none here" if not torch.cuda.is_available() else None


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def finite_history(metrics: dict) -> bool:
    return all(
        math.isfinite(r[k])
        for r in metrics["history"]
        for k in ("loss", "invariance", "variance", "covariance", "std_mean")
    )


@pytest.mark.slow
def test_bf16_autocast_trains_on_the_cpu(tmp_path):
    """``--amp bf16`` on the CPU, 2 epochs on 256 digits: finite losses that fall, and a linear probe above
    the random-init encoder's (measured 0.930 against 0.855)."""
    m = torch_train.main(
        [
            "--subset",
            "256",
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--amp",
            "bf16",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "bf16"),
        ]
    )
    assert finite_history(m) and "autocast bf16" in m["device"]
    assert m["history"][-1]["loss"] < m["history"][0]["loss"]
    assert m["linear_probe_accuracy"] > m["random_init_linear_probe_accuracy"]
    assert m["images_per_second"] > 0


def test_bf16_embeddings_reach_the_loss_in_float32(tmp_path):
    """Smoke test: under autocast the network's output is bfloat16; every loss step (the NumPy one has no
    bfloat16) receives float32, and its gradient flows back into the bfloat16 graph."""
    dtypes = []

    def recording(config):
        step = loop.TorchLoss(config)

        def recorded(z1, z2, scale=None):
            dtypes.append((z1.dtype, z2.dtype))
            return step(z1, z2, scale)

        return recorded

    args = torch_train.parse_args(torch_train.build_parser(), [*FAST, "--amp", "bf16", "--out", str(tmp_path)])
    m = loop.train(args, recording)
    assert set(dtypes) == {(torch.float32, torch.float32)} and finite_history(m)
    from backends.numpy.train import main as numpy_main

    m = numpy_main([*FAST, "--amp", "bf16", "--out", str(tmp_path / "numpy")])
    assert finite_history(m) and m["backend"] == "numpy"


def test_channels_last(tmp_path):
    """Smoke test: ``--channels-last`` trains and says so in ``device``."""
    m = torch_train.main([*FAST, "--channels-last", "--out", str(tmp_path)])
    assert finite_history(m) and "channels-last" in m["device"]


@pytest.mark.slow
def test_compile(tmp_path):
    """Smoke test: ``--compile`` (torch.compile; inductor needs a C++ compiler on the CPU) trains; the first
    epoch includes the compilation (about 35 s here with a cold inductor cache, a few seconds with a warm one)."""
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("torch.compile on the CPU needs a C++ compiler")
    m = torch_train.main([*FAST, "--compile", "--out", str(tmp_path)])
    assert finite_history(m) and "torch.compile" in m["device"]


@pytest.mark.skipif(NO_CUDA is not None, reason=str(NO_CUDA))
@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_cuda(tmp_path, amp):
    """Smoke test on a GPU: ``--device cuda`` with each ``--amp``; fp16 uses the GradScaler (its state is in
    the checkpoint)."""
    m = torch_train.main([*FAST, "--device", "cuda", "--amp", amp, "--out", str(tmp_path)])
    assert finite_history(m) and m["device"].startswith("cuda")
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert bool(ckpt["scaler"]) == (amp == "fp16")


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs for torchrun with NCCL")
def test_two_gpus_under_torchrun(tmp_path):
    """Smoke test: 2 processes on 2 GPUs (NCCL, SyncBatchNorm) write one metrics.json of world size 2."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "backends.torch.train", *FAST, "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    from backends import common

    m = common.read_metrics(str(tmp_path))
    assert m["world_size"] == 2 and m["device"].startswith("cuda") and "nccl" in m["device"]


def test_a_step_the_grad_scaler_skips_does_not_step_the_schedule():
    """Under --amp fp16 the GradScaler skips a step whose gradients overflowed (found on an H200: the
    schedule then stepped before the optimizer, and PyTorch warned). A CPU GradScaler does the same."""
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    before = layer.weight.detach().clone()

    def backward(loss, scaler=scaler):
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()

    backward(layer(torch.full((1, 3), float("inf"))).sum())  # an overflowed gradient
    assert loop.optimizer_step(optimizer, scaler, scheduler) is False
    assert torch.equal(layer.weight, before) and scheduler.last_epoch == 0
    assert scaler.get_scale() == 2.0**15
    backward(layer(torch.ones(1, 3)).sum())
    assert loop.optimizer_step(optimizer, scaler, scheduler) is True  # no warning: warnings are errors
    assert not torch.equal(layer.weight, before) and scheduler.last_epoch == 1
    assert optimizer.param_groups[0]["lr"] == 0.5
    # without a scaler (float32, bf16) every step steps both
    plain = torch.amp.GradScaler("cpu", enabled=False)
    backward(layer(torch.ones(1, 3)).sum(), plain)
    assert loop.optimizer_step(optimizer, plain, scheduler) is True and scheduler.last_epoch == 2
