"""vicreg.torch under DistributedDataParallel, for real: 2 gloo processes on 127.0.0.1, CPU, float64.

A small model wrapped in DDP computes both views in one forward on each rank's share of the batch; the loss
and every parameter gradient (after DDP's averaging) must equal those of one process on the concatenated
batch, computed with the independent reference of ``tests/reference.py`` (explicit ``d x d`` covariance,
autograd), to 1e-9 relative to the largest gradient. Equal and uneven per-rank batches, the Gram path
(``n < d``) and the ``d x d`` path, a rank holding a single row, and the fallback collectives for older
torch; bad input raises on every rank, and the process group still works afterwards (no rank is left
waiting in a collective). One spawn serves all tests here (about 15 s, most of it starting the processes).
"""

from __future__ import annotations

import datetime
import os
import socket
import time
import traceback
from contextlib import nullcontext
from unittest import mock

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available in this build", allow_module_level=True)

from reference import reference_positions_terms, reference_terms, reference_views_terms  # noqa: E402

WORLD = 2
POSITIONS_ROWS = (5, 3)
IN_FEATURES = 5
JOIN_TIMEOUT_S = 240
# name: (rows on each rank, d, convention). Global n = sum(rows); n < d takes the Gram path.
CASES = {
    "equal_gram": ((8, 8), 24, "official"),
    "uneven_gram": ((7, 4), 24, "official"),
    "uneven_dxd": ((9, 5), 6, "paper"),
    "single_row_rank": ((5, 1), 24, "official"),
    # torch.distributed.nn.functional, which vicreg.torch falls back to where the functional collectives
    # have no autograd (torch before 2.14).
    "uneven_gram_legacy_collectives": ((3, 6), 24, "official"),
}


def _inputs(rows, seed):
    """The global batch's inputs for both views, the same on every process (each takes its rows)."""
    g = torch.Generator().manual_seed(seed)
    n = sum(rows)
    x1 = torch.randn(n, IN_FEATURES, generator=g, dtype=torch.float64)
    x2 = x1 + 0.3 * torch.randn(n, IN_FEATURES, generator=g, dtype=torch.float64)
    return x1, x2


def _model(d, seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(IN_FEATURES, 16), torch.nn.Tanh(), torch.nn.Linear(16, d)).double()


def _two_views(model, x1, x2):
    """Both views through the model in one forward, as a training step does."""
    z = model(torch.cat([x1, x2]))
    return z[: x1.shape[0]], z[x1.shape[0] :]


# K views (VICRegL's global loss) under DDP, uneven ranks: (rows on each rank, d, K); and VCReg of one view
VIEW_CASES = {"views_gram": ((6, 3), 30, 3), "views_dxd": ((9, 4), 5, 4)}
VCREG_ROWS, VCREG_D = (5, 2), 20


def _views_inputs(rows, k, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(rows), IN_FEATURES, generator=g, dtype=torch.float64)
    return [x + 0.3 * torch.randn(x.shape, generator=g, dtype=torch.float64) for _ in range(k)]


def _after_errors_batch():
    return torch.randn(8, 12, generator=torch.Generator().manual_seed(7), dtype=torch.float64)


def _error_of(fn):
    try:
        fn()
    except (TypeError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def _worker(rank, port, out_dir):
    torch.set_num_threads(1)
    import vicreg.torch as vt

    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )
    results = {}
    try:
        for name, (rows, d, convention) in CASES.items():
            x1, x2 = _inputs(rows, seed=len(name))
            start = sum(rows[:rank])
            mine = slice(start, start + rows[rank])
            model = torch.nn.parallel.DistributedDataParallel(_model(d, seed=1))
            loss_fn = vt.VICRegLoss(convention=convention)
            z1, z2 = _two_views(model, x1[mine], x2[mine])
            legacy = name.endswith("legacy_collectives")
            with mock.patch.object(vt, "_functional_collectives", return_value=None) if legacy else nullcontext():
                terms = loss_fn.terms(z1, z2)
                terms.loss.backward()
            results[name] = dict(
                terms={k: v.item() for k, v in terms._asdict().items()},
                grads={k: p.grad.clone() for k, p in model.module.named_parameters()},
            )

        # (n, ..., d) embeddings: the model's 48 outputs as 2 positions of 24 (Gram path, uneven rows)
        x1, x2 = _inputs(POSITIONS_ROWS, seed=21)
        start = sum(POSITIONS_ROWS[:rank])
        mine = slice(start, start + POSITIONS_ROWS[rank])
        model = torch.nn.parallel.DistributedDataParallel(_model(48, seed=1))
        z1, z2 = _two_views(model, x1[mine], x2[mine])
        terms = vt.VICRegLoss().terms(z1.reshape(-1, 2, 24), z2.reshape(-1, 2, 24))
        terms.loss.backward()
        results["positions"] = dict(
            terms={k: v.item() for k, v in terms._asdict().items()},
            grads={k: p.grad.clone() for k, p in model.module.named_parameters()},
        )

        # K views, uneven ranks, both backwards; then VCReg of one view, gathered
        for name, (rows, d, k) in VIEW_CASES.items():
            xs = _views_inputs(rows, k, seed=len(name))
            start = sum(rows[:rank])
            mine = slice(start, start + rows[rank])
            for backward in ("analytic", "autograd"):
                model = torch.nn.parallel.DistributedDataParallel(_model(d, seed=1))
                z = model(torch.cat([x[mine] for x in xs]))
                terms = vt.VICRegLoss(backward=backward).terms(*z.split(rows[rank]), rank_me=True)
                terms.loss.backward()
                results[f"{name}_{backward}"] = dict(
                    terms={key: v.item() for key, v in terms._asdict().items() if key != "rank_me"},
                    grads={key: p.grad.clone() for key, p in model.module.named_parameters()},
                    rank_me=terms.rank_me.tolist(),
                )
        (x,) = _views_inputs(VCREG_ROWS, 1, seed=5)
        start = sum(VCREG_ROWS[:rank])
        model = torch.nn.parallel.DistributedDataParallel(_model(VCREG_D, seed=1))
        vcreg_terms = vt.VCRegLoss(convention="paper").terms(model(x[start : start + VCREG_ROWS[rank]]))
        vcreg_terms.loss.backward()
        results["rank_me"] = vt.rank_me(
            x[start : start + VCREG_ROWS[rank]] @ torch.ones(IN_FEATURES, 3).double()
        ).item()
        results["vcreg"] = dict(
            terms={key: v.item() for key, v in vcreg_terms._asdict().items()},
            grads={key: p.grad.clone() for key, p in model.module.named_parameters()},
        )

        # Without gathering, each rank computes the loss of its own rows.
        x1, x2 = _inputs((6, 6), seed=3)
        z1, z2 = _two_views(_model(24, seed=1), x1[6 * rank : 6 * rank + 6], x2[6 * rank : 6 * rank + 6])
        results["local"] = vt.VICRegLoss(gather_distributed=False)(z1, z2).item()

        # Bad input on one rank: an error on every rank, and the group still works afterwards.
        loss_fn = vt.VICRegLoss()
        everyone = _after_errors_batch()
        good = everyone[4 * rank : 4 * rank + 4]
        results["width_mismatch"] = _error_of(lambda: loss_fn(good[:, : 12 - rank], good[:, : 12 - rank]))
        bad = good[0] if rank == 1 else good  # 1-D on rank 1
        results["bad_rank"] = _error_of(lambda: loss_fn(bad, bad))
        mixed = good if rank == 0 else good.float()
        results["dtype_mismatch"] = _error_of(lambda: loss_fn(mixed, mixed))
        tiny = good[:rank]  # 0 rows on rank 0, 1 row on rank 1: global n = 1
        results["global_n_1"] = _error_of(lambda: loss_fn(tiny, tiny))
        # inputs that are not dense tensors, on one rank only: the same kind of error on both ranks
        not_tensor = good.numpy() if rank == 1 else good
        results["non_tensor"] = _error_of(lambda: loss_fn(not_tensor, not_tensor))
        sparse = good.to_sparse() if rank == 0 else good
        results["sparse_rank"] = _error_of(lambda: loss_fn(sparse, sparse))
        results["after_errors"] = loss_fn(good, good.flip(1)).item()
    except BaseException:
        results["failure"] = traceback.format_exc()
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()
    # Leave without the interpreter's teardown: with torch 2.14.1, a gloo process that ran autograd
    # through collectives sometimes aborts there ("terminate called without an active exception"), about
    # one run in eight, after all its work is done. The results are on disk and checked by the parent.
    os._exit(0)


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# every test here on one pytest-xdist worker, so that the module-scoped fixture below runs once
pytestmark = pytest.mark.xdist_group("torch_distributed")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Run the worker on 2 spawned gloo processes (once for all tests here); their results, by rank."""
    import torch.multiprocessing as mp

    out_dir = str(tmp_path_factory.mktemp("ddp"))
    context = mp.start_processes(_worker, args=(_free_port(), out_dir), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    try:
        while not context.join(timeout=max(1.0, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                pytest.fail(f"the {WORLD} gloo processes did not finish within {JOIN_TIMEOUT_S} s")
    finally:
        for p in context.processes:
            if p.is_alive():
                p.kill()
    results = [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=True) for r in range(WORLD)]
    for rank, result in enumerate(results):
        assert "failure" not in result, f"rank {rank} failed:\n{result['failure']}"
    return results


def _single_process(name):
    """Loss, terms and parameter gradients of one process on the concatenated batch, by the reference."""
    rows, d, convention = CASES[name]
    x1, x2 = _inputs(rows, seed=len(name))
    model = _model(d, seed=1)
    z1, z2 = _two_views(model, x1, x2)
    terms = reference_terms(z1, z2, convention=convention)
    terms["loss"].backward()
    return {k: v.item() for k, v in terms.items()}, dict(model.named_parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_ddp_matches_single_process_on_the_global_batch(ranks, name):
    want_terms, params = _single_process(name)
    largest = max(p.grad.abs().max().item() for p in params.values())
    for rank, result in enumerate(ranks):
        got = result[name]
        for key, want in want_terms.items():
            assert got["terms"][key] == pytest.approx(want, rel=1e-12, abs=1e-12), (rank, key)
        assert set(got["grads"]) == set(params)
        for key, p in params.items():
            err = (got["grads"][key] - p.grad).abs().max().item()
            assert err <= 1e-9 * largest, (rank, key, err, largest)


@pytest.mark.slow
def test_ddp_positions_match_single_process(ranks):
    """``(n, ..., d)`` embeddings under DDP: the mean over positions of the global batch's loss."""
    x1, x2 = _inputs(POSITIONS_ROWS, seed=21)
    model = _model(48, seed=1)
    z1, z2 = _two_views(model, x1, x2)
    want = reference_positions_terms(z1.reshape(-1, 2, 24), z2.reshape(-1, 2, 24))
    want["loss"].backward()
    largest = max(p.grad.abs().max().item() for p in model.parameters())
    for rank, result in enumerate(ranks):
        got = result["positions"]
        for key, value in want.items():
            assert got["terms"][key] == pytest.approx(value.item(), rel=1e-12, abs=1e-12), (rank, key)
        for key, p in model.named_parameters():
            assert (got["grads"][key] - p.grad).abs().max().item() <= 1e-9 * largest, (rank, key)


def _check_against(ranks, key, want, model):
    largest = max(p.grad.abs().max().item() for p in model.parameters())
    for rank, result in enumerate(ranks):
        got = result[key]
        for term, value in want.items():
            assert got["terms"][term] == pytest.approx(value, rel=1e-12, abs=1e-12), (rank, key, term)
        for name, p in model.named_parameters():
            assert (got["grads"][name] - p.grad).abs().max().item() <= 1e-9 * largest, (rank, key, name)


@pytest.mark.slow
@pytest.mark.parametrize("backward", ["analytic", "autograd"])
@pytest.mark.parametrize("name", list(VIEW_CASES))
def test_ddp_k_views_match_the_reference_on_the_global_batch(ranks, name, backward):
    rows, d, k = VIEW_CASES[name]
    xs = _views_inputs(rows, k, seed=len(name))
    model = _model(d, seed=1)
    want = reference_views_terms([model(x) for x in xs])
    want["loss"].backward()
    _check_against(ranks, f"{name}_{backward}", {t: v.item() for t, v in want.items()}, model)
    with torch.no_grad():  # every view's RankMe, of the global batch, on every rank
        want_ranks = [_reference_rank_me(model(x)) for x in xs]
    for result in ranks:
        assert result[f"{name}_{backward}"]["rank_me"] == pytest.approx(want_ranks, rel=1e-10)


def _reference_rank_me(z):
    s = torch.linalg.svdvals(z.double())
    p = s / s.sum() + 1e-7
    return torch.exp(-(p * p.log()).sum()).item()


@pytest.mark.slow
def test_ddp_rank_me_of_the_global_batch(ranks):
    (x,) = _views_inputs(VCREG_ROWS, 1, seed=5)
    want = _reference_rank_me(x @ torch.ones(IN_FEATURES, 3).double())  # rank one: about 1
    assert want < 1.001
    for result in ranks:
        assert result["rank_me"] == pytest.approx(want, rel=1e-10)


@pytest.mark.slow
def test_ddp_vcreg_is_the_global_batchs(ranks):
    (x,) = _views_inputs(VCREG_ROWS, 1, seed=5)
    model = _model(VCREG_D, seed=1)
    z = model(x)
    terms = reference_terms(z, z, sim_coeff=0.0, convention="paper")  # VCReg: half of it
    want = {key: terms[key] / 2 for key in ("loss", "variance", "covariance")}
    want["loss"].backward()
    stds = z.detach().var(dim=0).sqrt()
    values = {**{t: v.item() for t, v in want.items()}, "std_mean": stds.mean().item(), "std_min": stds.min().item()}
    _check_against(ranks, "vcreg", values, model)


@pytest.mark.slow
def test_without_gathering_each_rank_computes_its_own_batch(ranks):
    x1, x2 = _inputs((6, 6), seed=3)
    model = _model(24, seed=1)
    with torch.no_grad():
        for rank, result in enumerate(ranks):
            rows = slice(6 * rank, 6 * rank + 6)
            z1, z2 = _two_views(model, x1[rows], x2[rows])
            assert result["local"] == pytest.approx(reference_terms(z1, z2)["loss"].item(), rel=1e-12)
    assert ranks[0]["local"] != pytest.approx(ranks[1]["local"])


@pytest.mark.slow
def test_bad_input_on_one_rank_raises_on_every_rank_without_a_hang(ranks):
    r0, r1 = ranks
    assert "different widths" in r0["width_mismatch"] and "different widths" in r1["width_mismatch"]
    assert r1["bad_rank"].startswith("ValueError") and "2-D" in r1["bad_rank"] and "rank 1" in r1["bad_rank"]
    assert r0["bad_rank"].startswith("ValueError") and "rank(s) [1]" in r0["bad_rank"]
    assert r0["dtype_mismatch"].startswith("TypeError") and "dtype" in r0["dtype_mismatch"]
    assert r1["dtype_mismatch"] == r0["dtype_mismatch"]
    assert "at least 2 samples" in r0["global_n_1"] and r1["global_n_1"] == r0["global_n_1"]
    assert r1["non_tensor"].startswith("TypeError") and "torch.Tensor" in r1["non_tensor"]
    assert "rank 1" in r1["non_tensor"]
    assert r0["non_tensor"].startswith("TypeError") and "rank(s) [1]" in r0["non_tensor"]
    assert r0["sparse_rank"].startswith("TypeError") and "to_dense" in r0["sparse_rank"]
    assert r1["sparse_rank"].startswith("TypeError") and "rank(s) [0]" in r1["sparse_rank"]
    # The group still works: both ranks then computed the loss of the global batch.
    everyone = _after_errors_batch()
    want = reference_terms(everyone, everyone.flip(1))["loss"].item()
    assert r0["after_errors"] == pytest.approx(want, rel=1e-12)
    assert r1["after_errors"] == pytest.approx(want, rel=1e-12)
