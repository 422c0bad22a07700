"""What PyTorch runs on a GPU, run here on CPU tensors (``vicreg._native.torch.device_path``): the choice of
exact columns made on the device and read once per call, every tier of it against the independent float64
reference, and the number of operations and of matrix products one forward and backward pass dispatches."""

from __future__ import annotations

import collections

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import array_api_compat.torch as torch_xp  # noqa: E402
from reference import reference_terms  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import vicreg  # noqa: E402
import vicreg.torch as vt  # noqa: E402
from vicreg import _loss, _native, _terms  # noqa: E402
from vicreg._native import torch as native_torch  # noqa: E402

VIEWS = {"none", "view", "t", "transpose", "expand", "slice", "select", "unsqueeze", "squeeze", "permute"}
VIEWS |= {"_unsafe_view", "alias", "as_strided", "detach", "_reshape_alias", "reshape", "unbind", "split"}
VIEWS |= {"diagonal", "view_as", "expand_as", "lift_fresh", "_to_copy", "to"}
PRODUCTS = {"mm", "bmm", "addmm", "baddbmm", "matmul"}


class Dispatched(TorchDispatchMode):
    """The non-view operations dispatched inside, and the multiply-adds of their matrix products."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()
        self.multiply_adds = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in VIEWS:
            self.ops[name] += 1
        if name in PRODUCTS:
            a, b = (args[0], args[1]) if name in ("mm", "bmm", "matmul") else (args[1], args[2])
            self.multiply_adds += a.numel() * b.shape[-1]
        return func(*args, **(kwargs or {}))


def _views(n, d, kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    if kind == "few":
        z1[:, 0] *= 10.0  # one dominant dimension: 8 exact columns, not none
    elif kind == "all":
        z1[:, :9] *= 100.0  # nine dominant dimensions: 8 exact columns are not enough
    z2 = z1 + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return z1, z2


@pytest.fixture
def reads(monkeypatch):
    """The host reads of the torch primitives (each one device-to-host transfer on a GPU), counted."""
    ops = _native.lookup(torch_xp)
    count = []
    original = ops.host_read

    def counted(xp, x):
        values = original(xp, x)
        if values is not None:  # None: nothing read (a trace runs)
            count.append(tuple(x.shape))
        return values

    monkeypatch.setattr(ops, "host_read", counted)
    return count


@pytest.mark.parametrize("kind, columns", [("none", 0), ("few", _terms.FEW_COLUMNS), ("all", 15)])
def test_every_tier_on_the_device_path(kind, columns, reads):
    """On the device path, the tier the variances call for (no exact column, 8, all n - 1) is taken, after
    one read of the device's flags per call (none in the backward pass); the loss and both gradients equal
    the explicit d x d float64 reference."""
    n, d = 16, 256
    z1, z2 = _views(n, d, kind)
    with native_torch.device_path():
        stats = _loss.statistics(torch_xp, (z1, z2), vicreg.VICRegLoss())
        taken = 0 if stats.views[0].top is None else stats.views[0].top.shape[-1]
        assert taken == columns
        reads.clear()
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        loss = vt.VICRegLoss()(a, b)
        assert len(reads) == 1
        loss.backward()
        assert len(reads) == 1
    r1, r2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    want = reference_terms(r1, r2)["loss"]
    want.backward()
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)
    for got, ref in ((a.grad, r1.grad), (b.grad, r2.grad)):
        assert (got - ref).abs().max() <= 1e-12 * ref.abs().max()


def test_the_choice_reads_nothing_under_vmap(reads):
    """Under ``torch.func.vmap`` (as under ``torch.compile``, whose tests are in test_torch_adapter.py: a
    read would break the graph) nothing is read: all ``n - 1`` columns, exact whatever the data."""
    pairs = [_views(16, 256, "none", seed=s) for s in (1, 2)]
    batch1, batch2 = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    with native_torch.device_path():
        losses = torch.func.vmap(lambda a, b: vt.VICRegLoss()(a, b))(batch1, batch2)
    assert reads == []
    for loss, (z1, z2) in zip(losses, pairs):
        assert loss.item() == pytest.approx(reference_terms(z1, z2)["loss"].item(), rel=1e-12)


@pytest.mark.parametrize("module", [True, False], ids=["VICRegLoss", "vicreg_loss"])
def test_operations_and_products_of_one_step(module):
    """A count, not a timing: one forward and backward pass of the loss on standard normal float32
    256 x 8192, on the device path, dispatches at most 100 operations that are not views, and its matrix
    products are worth at most 4.2 times one ``z @ z.T`` (the two Gram products and the two gradient
    products; the official formulation's are worth 192 times one)."""
    n, d = 256, 8192
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(n, d, generator=g).requires_grad_()
    z2 = (z1.detach() + 0.3 * torch.randn(n, d, generator=g)).requires_grad_()
    fn = vt.VICRegLoss() if module else vicreg.vicreg_loss
    with native_torch.device_path():
        fn(z1, z2).backward()  # warm-up
        z1.grad = z2.grad = None
        with Dispatched() as seen:
            fn(z1, z2).backward()
    assert sum(seen.ops.values()) <= 100, seen.ops
    assert seen.multiply_adds <= 4.2 * n * n * d, seen.multiply_adds / (n * n * d)
    assert np.isfinite(z1.grad.numpy()).all()
