"""RankMe against an independent reference: the float64 SVD of the embeddings as given, ``p = s / sum(s) +
1e-7``, ``exp(-sum p log p)`` (the paper's form). The library computes it from the eigenvalues of the Gram
matrix the loss builds (centred, then a rank-two update), so these tests also cover that reconstruction, on
both paths (``n x n`` and ``d x d``), with exact columns, large means, positions, and every backend."""

from __future__ import annotations

import contextlib
from unittest import mock

import numpy as np
import pytest

import vicreg
from vicreg import _native, _rank_me

F32_FLOOR = float(np.sqrt(_rank_me.NOISE * np.finfo(np.float32).eps))  # documented: 1.4e-3


def reference_rank_me(z) -> float:
    s = np.linalg.svd(np.asarray(z, np.float64), compute_uv=False)
    p = s / s.sum() + 1e-7
    return float(np.exp(-np.sum(p * np.log(p))))


def rel(a, b) -> float:
    return abs(float(a) - b) / abs(b)


def spectra(n: int, d: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Embeddings with known structure: full rank, low rank (with and without a mean), a mean far larger
    than the spread, and one dimension far larger than the rest."""
    rng = np.random.default_rng(seed)
    gauss = rng.standard_normal((n, d))
    return {
        "full": gauss,
        "rank1": np.outer(rng.standard_normal(n), rng.standard_normal(d)),
        "rank1_mean": np.outer(rng.standard_normal(n), rng.standard_normal(d)) + 3.0,
        "rank5": rng.standard_normal((n, 5)) @ rng.standard_normal((5, d)),
        "large_mean": 0.01 * gauss + 5.0,
        "relu_like": np.maximum(gauss @ rng.standard_normal((d, d)) / np.sqrt(d), 0.0),
        "dominant": gauss * np.r_[1e4, np.ones(d - 1)],
    }


GRAM, DXD = (24, 96), (90, 24)  # n <= d / 2: the n x n Gram path; otherwise the d x d path


@pytest.mark.parametrize("shape", [GRAM, DXD], ids=["gram", "dxd"])
def test_float64_matches_the_svd_on_every_backend(backend, shape):
    strict = contextlib.nullcontext()
    if backend.name == "array_api_strict":  # the fixture disables extensions; RankMe needs linalg
        import array_api_strict

        array_api_strict.set_array_api_strict_flags(enabled_extensions=("linalg",))
        strict = contextlib.ExitStack()
        strict.callback(array_api_strict.set_array_api_strict_flags, enabled_extensions=())
    with strict:
        for name, z in spectra(*shape).items():
            got = vicreg.rank_me(backend.asarray(z))
            assert got.shape == ()
            assert rel(backend.to_numpy(got), reference_rank_me(z)) < 1e-10, name


@pytest.mark.parametrize("shape", [GRAM, DXD, (256, 1024)], ids=["gram", "dxd", "256x1024"])
def test_float32_within_its_documented_accuracy(shape):
    for name, z in spectra(*shape, seed=1).items():
        z32 = z.astype(np.float32)
        want = reference_rank_me(z32)
        got = vicreg.rank_me(z32)
        assert got.dtype == np.float32
        if name == "dominant" and shape == DXD:
            # the d x d path's floor is relative to the covariance matrix's size, which the dominant
            # dimension sets: the other 23 dimensions (1e-4 of its singular value) drop out
            assert rel(got, reference_rank_me(z32[:, :1])) < 1e-4
            continue
        assert rel(got, want) < 2e-5, (name, float(got), want)


def test_float32_floor_on_a_slowly_decaying_spectrum():
    """Singular values from 1 down to 1e-6 of the largest: those below the floor drop out, so the float32
    value lies between the SVD's RankMe of the spectrum cut at the floor (a bit below, for eigenvalues near
    it) and the full one."""
    n, d = 128, 512
    rng = np.random.default_rng(2)
    sigma = np.geomspace(1.0, 1e-6, n)
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    v, _ = np.linalg.qr(rng.standard_normal((d, n)))
    z = (u * sigma) @ v.T
    full = reference_rank_me(z)
    p = np.where(sigma >= F32_FLOOR, sigma, 0.0)
    p = p / p.sum() + 1e-7
    cut = float(np.exp(-np.sum(p * np.log(p))))
    got = float(vicreg.rank_me(z.astype(np.float32)))
    assert cut * (1 - 1e-3) <= got <= full * (1 + 1e-6), (cut, got, full)
    assert rel(vicreg.rank_me(z), full) < 1e-8  # float64: the floor is 4e-8, below every value here


def test_positions_are_averaged():
    z = np.random.default_rng(3).standard_normal((16, 3, 40))
    want = np.mean([reference_rank_me(z[:, p]) for p in range(3)])
    assert rel(vicreg.rank_me(z), want) < 1e-10


def test_terms_reuse_gives_the_same_values_for_every_view():
    z1, z2, z3 = (spectra(24, 96, seed=s)["relu_like"] for s in range(3))
    terms = vicreg.vicreg_terms(z1, z2, z3, rank_me=True)
    assert type(terms).__name__ == "VICRegTermsWithRankMe" and terms.rank_me.shape == (3,)
    for value, z in zip(terms.rank_me, (z1, z2, z3)):
        assert rel(value, reference_rank_me(z)) < 1e-10
    plain = vicreg.vicreg_terms(z1, z2, z3)
    assert type(plain) is vicreg.VICRegTerms and terms[:6] == tuple(plain)
    vc = vicreg.vcreg_terms(z1, rank_me=True)
    assert rel(vc.rank_me, reference_rank_me(z1)) < 1e-10 and vc.rank_me.shape == ()


def test_no_eigenvalue_solve_unless_asked():
    import array_api_compat

    calls = []
    table = _native.lookup(array_api_compat.array_namespace(np.zeros(1)))  # the namespace the core uses
    original = table.eigvalsh

    def counting(xp, m):
        calls.append(m.shape)
        return original(xp, m)

    z1, z2 = spectra(24, 96)["full"], spectra(24, 96, seed=9)["full"]
    with mock.patch.object(table, "eigvalsh", counting):
        vicreg.vicreg_terms(z1, z2)
        vicreg.value_and_grad(z1, z2)
        assert calls == []
        vicreg.vicreg_terms(z1, z2, rank_me=True)
    assert calls == [(2, 24, 24)]  # one batched solve, one matrix per view


@pytest.mark.filterwarnings(  # NumPy warns where an inf or NaN meets arithmetic, as it should
    "ignore:invalid value encountered:RuntimeWarning", "ignore:overflow encountered:RuntimeWarning"
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_inputs_give_nan(dtype):
    z = spectra(24, 96)["full"].astype(dtype)
    for bad in (np.nan, np.inf):
        x = z.copy()
        x[3, 5] = bad
        assert np.isnan(vicreg.rank_me(x))
    assert np.isnan(vicreg.rank_me(np.zeros_like(z)))  # 0 / 0, as for an SVD


@pytest.mark.filterwarnings(  # NumPy warns where an inf or NaN meets arithmetic, as it should
    "ignore:invalid value encountered:RuntimeWarning", "ignore:overflow encountered:RuntimeWarning"
)
@pytest.mark.parametrize("scale", [1e-30, 1e15, 1e30])
def test_huge_and_tiny_magnitudes_never_give_a_finite_wrong_value(scale):
    """Scaled embeddings have the same RankMe; where the squares overflow the compute dtype, NaN."""
    for name, z in spectra(24, 96, seed=4).items():
        if name == "dominant":
            continue
        x = (z * scale).astype(np.float32)
        got = float(vicreg.rank_me(x))
        if not np.isnan(got):
            assert rel(got, reference_rank_me(x)) < 2e-5, (name, scale)
        else:
            assert scale > 1e18, (name, scale)  # float32 squares overflow above about 1.8e19


def test_not_differentiated_and_bad_flags():
    torch = pytest.importorskip("torch")
    import vicreg.torch as vt

    z = torch.tensor(spectra(24, 96)["full"], requires_grad=True)
    for backward in ("analytic", "autograd"):
        terms = vt.VICRegLoss(backward=backward).terms(z, z.flip(0), rank_me=True)
        assert not terms.rank_me.requires_grad and terms.loss.requires_grad
        assert rel(terms.rank_me[0].item(), reference_rank_me(z.detach().numpy())) < 1e-10
    assert not vt.rank_me(z).requires_grad
    with pytest.raises(TypeError, match="rank_me must be True or False"):
        vicreg.vicreg_terms(z.detach().numpy(), z.detach().numpy(), rank_me="yes")


def test_jax_rank_me_under_jit_and_grad():
    jax = pytest.importorskip("jax")
    import vicreg.jax as vj

    z = spectra(24, 96)["rank1_mean"]
    with jax.enable_x64(True):
        x = jax.numpy.asarray(z)
        assert rel(jax.jit(vj.rank_me)(x), reference_rank_me(z)) < 1e-10
        assert float(jax.numpy.abs(jax.grad(vj.rank_me)(x)).max()) == 0.0
        terms = jax.jit(lambda a: vj.vicreg_terms(a, a[::-1], rank_me=True))(x)
        assert rel(terms.rank_me[0], reference_rank_me(z)) < 1e-10


def test_a_namespace_without_linalg_is_a_clear_error():
    import array_api_strict

    array_api_strict.set_array_api_strict_flags(enabled_extensions=())
    try:
        with pytest.raises(TypeError, match=r"linalg\.eigvalsh"):
            vicreg.rank_me(array_api_strict.asarray(spectra(24, 96)["full"]))
    finally:
        array_api_strict.reset_array_api_strict_flags()
