"""The benchmark suite (``python -m benchmarks``): its bookkeeping on a tiny grid, and the agreement of
every implementation it times with the core. No timing assertions: speed lives in ``benchmarks/``."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

import vicreg
from benchmarks import memory, references, report, suite, timing
from benchmarks.__main__ import config_from_args, main, parser
from benchmarks.platforms import host_arrays

# Both paths of the core: n < d (Gram matrix) and n >= d (d x d covariance).
SHAPES = [(7, 12), (16, 5)]


def views64(n: int, d: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    a, b = host_arrays(n, d, seed)
    return a.astype(np.float64), b.astype(np.float64)


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# --- the references agree with the core -------------------------------------------------------------


def test_off_diagonal_is_every_entry_off_the_diagonal():
    c = np.arange(25.0).reshape(5, 5)
    got = references._off_diagonal(c)
    assert got.shape == (4, 5)
    assert sorted(got.ravel()) == sorted(c[~np.eye(5, dtype=bool)])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_official_numpy_matches_core(shape):
    z1, z2 = views64(*shape)
    loss, (g1, g2) = vicreg.value_and_grad(z1, z2)
    assert rel(references.official_numpy(np, z1, z2), loss) < 1e-12
    ref_loss, (r1, r2) = references.official_numpy_value_and_grad(np, z1, z2)
    assert rel(ref_loss, loss) < 1e-12
    assert rel(r1, g1) < 1e-10 and rel(r2, g2) < 1e-10


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_torch_references_match_core(shape):
    torch = pytest.importorskip("torch")
    z1, z2 = views64(*shape)
    loss, (g1, g2) = vicreg.value_and_grad(z1, z2)
    fns = {"official": references.official_torch, "handwritten": references.handwritten_torch}
    lightly = references.lightly_torch()
    if lightly is not None:
        fns["lightly"] = lightly
    for name, fn in fns.items():
        a = torch.tensor(z1, requires_grad=True)
        b = torch.tensor(z2, requires_grad=True)
        out = fn(a, b)
        ga, gb = torch.autograd.grad(out, (a, b))
        assert rel(out.item(), loss) < 1e-12, name
        assert rel(ga.numpy(), g1) < 1e-10 and rel(gb.numpy(), g2) < 1e-10, name


def test_handwritten_torch_computes_half_precision_in_float32():
    torch = pytest.importorskip("torch")
    z1, z2 = (torch.from_numpy(x) for x in host_arrays(16, 32))
    half = references.handwritten_torch(z1.bfloat16(), z2.bfloat16())
    assert half.dtype == torch.float32
    assert rel(half.item(), vicreg.vicreg_loss(z1.bfloat16(), z2.bfloat16()).item()) < 1e-5


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_official_jax_matches_core(shape):
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    z1, z2 = views64(*shape)
    loss, (g1, g2) = vicreg.value_and_grad(z1, z2)
    with jax.enable_x64(True):
        a, b = jnp.asarray(z1), jnp.asarray(z2)
        value, (ga, gb) = jax.jit(jax.value_and_grad(references.official_jax, argnums=(0, 1)))(a, b)
        assert value.dtype == jnp.float64
        assert rel(value, loss) < 1e-12
        assert rel(ga, g1) < 1e-10 and rel(gb, g2) < 1e-10


def test_host_arrays_are_reproducible_float32_with_both_hinge_sides():
    a, b = host_arrays(64, 40, seed=1)
    c, _ = host_arrays(64, 40, seed=1)
    assert a.dtype == np.float32 and np.array_equal(a, c) and not np.array_equal(a, b)
    std = a.std(axis=0, ddof=1)
    assert (std < 1).any() and (std > 1).any()


# --- timing and memory bookkeeping -------------------------------------------------------------------


def test_summarise_known_samples():
    s = timing.summarise([0.004, 0.001, 0.003, 0.002, 0.005])
    assert s["rounds"] == 5
    assert math.isclose(s["median_ms"], 3.0) and math.isclose(s["min_ms"], 1.0) and math.isclose(s["max_ms"], 5.0)
    assert math.isclose(s["q1_ms"], 2.0) and math.isclose(s["q3_ms"], 4.0) and math.isclose(s["iqr_ms"], 2.0)


def test_time_interleaved_shuffles_the_order_and_counts_rounds():
    order: list[str] = []
    calls = [lambda k=k: order.append(k) for k in "abc"]
    stats = timing.time_interleaved(calls, warmup=1, min_rounds=40, max_rounds=40, budget_s=0.0)
    assert order[:3] == list("abc")  # warm-up, in order
    rounds = [order[3 + 3 * r : 6 + 3 * r] for r in range(40)]
    assert all(sorted(r) == list("abc") for r in rounds)  # each call once per round
    # every call follows every other one within a round (a rotation would fix each one's predecessor)
    pairs = {(r[i], r[i + 1]) for r in rounds for i in range(2)}
    assert pairs == {(x, y) for x in "abc" for y in "abc" if x != y}
    again: list[str] = []
    timing.time_interleaved([lambda k=k: again.append(k) for k in "abc"], warmup=1, min_rounds=40, max_rounds=40)
    assert again == order  # seeded: a rerun repeats the order
    assert [s["rounds"] for s in stats] == [40, 40, 40]
    assert all(s["min_ms"] <= s["q1_ms"] <= s["median_ms"] <= s["q3_ms"] <= s["max_ms"] for s in stats)


def test_time_interleaved_lets_each_call_settle_untimed(monkeypatch):
    """After each timed call, a pause of a tenth of its duration, capped; not counted in its time."""
    pauses: list[float] = []
    monkeypatch.setattr(timing.time, "sleep", pauses.append)
    clock = iter(range(0, 10_000, 1))  # perf_counter: every reading one second later
    monkeypatch.setattr(timing.time, "perf_counter", lambda: float(next(clock)))
    stats = timing.time_interleaved([lambda: None, lambda: None], warmup=0, min_rounds=3, max_rounds=3)
    assert pauses == [0.1] * 6  # 1 s per call: 0.1 s each
    assert all(s["median_ms"] == 1000.0 for s in stats)  # the pause is not in the call's time
    pauses.clear()
    timing.time_interleaved([lambda: None], warmup=0, min_rounds=2, max_rounds=2, settle=1.0, settle_max_s=0.25)
    assert pauses == [0.25, 0.25]


def test_time_interleaved_stops_at_the_budget_or_the_maximum():
    stats = timing.time_interleaved([lambda: None], warmup=0, min_rounds=2, max_rounds=7, budget_s=0.0)
    assert stats[0]["rounds"] == 2
    stats = timing.time_interleaved([lambda: None], warmup=0, min_rounds=2, max_rounds=7, budget_s=60.0)
    assert stats[0]["rounds"] == 7


def test_tracemalloc_sees_numpy_buffers():
    nbytes = 4 * 2**20
    peak = memory.tracemalloc_peak(lambda: np.ones(nbytes // 8).sum())  # a temporary, freed at once
    assert nbytes <= peak < nbytes + 2**16


@pytest.mark.skipif(not memory.rss_available(), reason="needs Linux /proc/self/clear_refs")
def test_rss_peak_sees_torch_allocations():
    torch = pytest.importorskip("torch")
    nbytes = 48 * 2**20
    peak = memory.rss_peak(lambda: float(torch.ones(nbytes // 4).sum()))
    assert 0.9 * nbytes < peak < 1.5 * nbytes


def test_xla_peak_of_a_d_by_d_product():
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    x = jnp.ones((8, 256), jnp.float32)
    stats = jax.jit(lambda x: x.T @ x).lower(x).compile().memory_analysis()
    assert memory.xla_peak(stats) >= 256 * 256 * 4


# --- the whole pipeline on a tiny grid -----------------------------------------------------------------


# every test here on one pytest-xdist worker, so that the module-scoped fixture below runs once
pytestmark = pytest.mark.xdist_group("benchmarks")


@pytest.fixture(scope="module")
def tiny_results():
    config = suite.Config(
        backends=("numpy", "torch", "jax"),
        devices=("cpu",),
        shapes=((6, 10), (12, 5)),
        modes=("forward", "backward"),
        warmup=1,
        min_rounds=2,
        max_rounds=2,
        budget_s=0.0,
        progress=False,
    )
    return suite.run(config, log=lambda s: None)


def test_tiny_run_bookkeeping(tiny_results):
    cases = tiny_results["cases"]
    platforms = {c["platform"] for c in cases}
    assert {"numpy"} <= platforms
    expected_cases = len(platforms) * 2 * 2
    assert len(cases) == expected_cases
    for c in cases:
        roles = set(c["impls"])
        assert {"vicreg", "official", "matmul", "gemms"} <= roles
        if c["framework"] == "torch":
            assert "handwritten" in roles
        assert c["path"] == ("gram n x n" if c["n"] < c["d"] else "covariance d x d")
        for role, entry in c["impls"].items():
            t = entry["time"]
            assert t["rounds"] == 2
            assert 0 < t["min_ms"] <= t["median_ms"] <= t["max_ms"]
            assert entry["peak_bytes"] is None or entry["peak_bytes"] >= 0
            if role not in ("matmul", "gemms"):
                # every timed implementation computes the same loss as the core (float32 inputs)
                assert entry["rel_diff_vs_vicreg"] < 1e-5, (c["platform"], role)
        for ours, r in c["ratios"].items():
            med = {k: v["time"]["median_ms"] for k, v in c["impls"].items()}
            assert math.isclose(r["speedup_vs_official"], med["official"] / med[ours])
            assert math.isclose(r["over_matmul"], med[ours] / med["matmul"])
            assert math.isclose(r["over_gemms"], med[ours] / med["gemms"])


def test_tiny_run_memory_sees_the_d_by_d_matrix(tiny_results):
    """The official formulation's peak includes its d x d covariance; at n < d the core's does not."""
    for c in tiny_results["cases"]:
        if c["memory_method"] is None or c["n"] >= c["d"]:
            continue
        official = c["impls"]["official"]["peak_bytes"]
        if c["memory_method"] in ("tracemalloc", "xla"):  # exact accounting (RSS counts whole pages)
            assert official >= c["d"] * c["d"] * 4 / 2, c["platform"]


def test_report_writes_json_markdown_and_png(tiny_results, tmp_path):
    """Smoke test of the report writer (its contents are checked by the bookkeeping tests)."""
    paths = report.write(tiny_results, str(tmp_path))
    assert set(paths) == {"json", "md", "png"}
    for p in paths.values():
        assert os.path.getsize(p) > 0
    with open(paths["json"]) as fh:
        data = json.load(fh)
    assert len(data["cases"]) == len(tiny_results["cases"])
    assert data["meta"]["environment"]["versions"]["numpy"] == np.__version__
    with open(paths["md"]) as fh:
        md = fh.read()
    rows = [line for line in md.splitlines() if line.startswith("| numpy ")]
    assert len(rows) == sum(len(c["ratios"]) for c in tiny_results["cases"] if c["platform"] == "numpy")
    assert "results.png" in md


def test_targets_are_evaluated_from_matching_cases():
    def case(framework, n, d, ours_ms, official_ms, matmul_ms, mem):
        impls = {
            "vicreg": {"time": {"median_ms": ours_ms}, "peak_bytes": mem},
            "official": {"time": {"median_ms": official_ms}, "peak_bytes": 100 * mem},
            "matmul": {"time": {"median_ms": matmul_ms}},
        }
        return dict(
            platform=framework,
            framework=framework,
            device="cpu",
            dtype="float32",
            mode="backward",
            n=n,
            d=d,
            impls=impls,
            ratios=suite._ratios(impls),
        )

    got = suite.targets([case("numpy", 256, 8192, 10.0, 1000.0, 2.0, 1), case("numpy", 2048, 2048, 10.0, 12.0, 5, 1)])
    by_name = {t["target"]: t for t in got}
    faster = by_name["n=256 d=8192: faster than official"]
    assert faster["met"] and faster["value"] == 100
    assert by_name["n=256 d=8192: time / one z @ z.T"]["met"]  # 5x <= 8x for NumPy
    assert by_name["n=256 d=8192: official peak memory / ours"]["value"] == 100
    assert not by_name["n=2048 d=2048 (d x d path): faster than official"]["met"]  # 1.2x < 1.3x


# --- command line --------------------------------------------------------------------------------------


def test_cli_options_build_the_config():
    cfg = config_from_args(parser().parse_args(["--quick"]))
    assert cfg.shapes == suite.quick_config().shapes and cfg.budget_s < 1
    cfg = config_from_args(parser().parse_args(["--n", "4,8", "--d", "16", "--shapes", "3x5", "--rounds", "2,4"]))
    assert cfg.shapes == ((4, 16), (8, 16), (3, 5)) and (cfg.min_rounds, cfg.max_rounds) == (2, 4)
    cfg = config_from_args(parser().parse_args(["--backends", "numpy", "--modes", "backward", "--dtypes", "bfloat16"]))
    assert cfg.backends == ("numpy",) and cfg.modes == ("backward",) and cfg.dtypes == ("bfloat16",)
    assert config_from_args(parser().parse_args([])).shapes == suite.Config().shapes


@pytest.mark.parametrize(
    "argv", [["--backends", "tensorflow"], ["--n", "0"], ["--shapes", "8by4"], ["--modes", "sideways"]]
)
def test_cli_rejects_bad_options(argv, capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(argv)
    assert "error" in capsys.readouterr().err


def test_main_writes_results(tmp_path):
    """Smoke test: the command line runs a one-case grid and writes its three outputs."""
    argv = [
        "--backends",
        "numpy",
        "--n",
        "8",
        "--d",
        "16",
        "--rounds",
        "1",
        "--warmup",
        "0",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    assert {"results.json", "results.md", "results.png"} <= set(os.listdir(tmp_path))


def test_unsupported_dtype_is_skipped_with_a_note():
    cfg = suite.Config(
        backends=("numpy",),
        devices=("cpu",),
        shapes=((4, 6),),
        dtypes=("bfloat16",),
        modes=("forward",),
        warmup=0,
        min_rounds=1,
        max_rounds=1,
        progress=False,
        memory=False,
    )
    out = suite.run(cfg, log=lambda s: None)
    assert out["cases"] == [] and any("bfloat16 not supported" in n for n in out["meta"]["notes"])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gemms_row_computes_the_products_of_the_loss(shape):
    from benchmarks.platforms import _products

    z1, z2 = views64(*shape)
    gram = shape[0] < shape[1]
    m1 = z1 @ z1.T if gram else z1.T @ z1
    fwd = _products("forward", z1, z2)()
    assert len(fwd) == 2 and np.allclose(fwd[0], m1)
    bwd = _products("backward", z1, z2)()
    assert len(bwd) == 4 and np.allclose(bwd[2], m1 @ z1 if gram else z1 @ m1)
    assert bwd[2].shape == z1.shape


def test_compare_ablation_fixes_the_exact_columns_during_the_call_only():
    """Bookkeeping test of the benchmark tool, not a check of the loss (the precision sweep is that):
    ``benchmarks.compare --columns K`` times the current code with ``K`` exact columns: inside the call
    the Gram path takes ``K`` whatever the data (and still computes the loss, to rounding, on unit-scale
    data), and the library's own choice of ``0``, 8 or ``n - 1`` is back afterwards."""
    import array_api_compat.numpy as np_xp

    from benchmarks import compare
    from vicreg import _loss, _terms

    z1, z2 = views64(16, 64)
    seen = []

    def call():
        stats = _loss.statistics(np_xp, (z1.copy(), z2.copy()), vicreg.VICRegLoss())
        seen.append((_terms.column_counts(16, 64), stats.views[0].top.shape))
        return vicreg.value_and_grad(z1, z2)

    loss, (g1, _) = compare._with_columns(3, call)()
    assert seen == [((3,), (16, 3))] and _terms.column_counts(16, 64) == (0, 8, 15)
    exact_loss, (exact_g1, _) = vicreg.value_and_grad(z1, z2)
    assert rel(loss, exact_loss) < 1e-12 and rel(g1, exact_g1) < 1e-12


def test_compare_merges_the_processes_runs_by_entry_point():
    """Bookkeeping of ``benchmarks.compare --processes N``: each entry point's runs (one per worker process)
    are kept, and the table's figures are the medians over them, the ratio's with its range."""
    from benchmarks import compare

    def row(name, base, current):
        return {"name": name, "base": {"median_ms": base}, "current": {"median_ms": current}}

    runs = [[row("a", 10.0, 11.0)], [row("b", 4.0, 2.0)], [row("a", 20.0, 18.0)], [row("a", 10.0, 12.0)]]
    rows = {r["name"]: r for r in compare.summarise_runs(runs)}
    assert list(rows) == ["a", "b"] and len(rows["a"]["runs"]) == 3
    assert rows["a"]["base_ms"] == 10.0 and rows["a"]["current_ms"] == 12.0
    assert rows["a"]["ratio"] == 1.1 and rows["a"]["ratio_range"] == [0.9, 1.2]
    assert rows["b"]["ratio"] == 0.5 and rows["b"]["ratio_range"] == [0.5, 0.5]


def test_standalone_runs_each_library_in_fresh_processes_and_summarises(tmp_path):
    """Bookkeeping of ``python -m benchmarks.standalone`` on a tiny shape: one fresh process per library and
    run, the ratio of the two medians per process, the median over processes, and both output files."""
    from benchmarks import standalone

    out = tmp_path / "standalone"
    argv = ["--n", "8", "--d", "32", "--rounds", "2", "--processes", "2", "--libraries", "numpy", "--out", str(out)]
    assert standalone.main(argv) == 0
    data = json.loads((out / "standalone.json").read_text())
    assert [r["library"] for r in data["runs"]] == ["numpy", "numpy"]
    for run in data["runs"]:
        assert run["call_ms"] > 0 and run["matmul_ms"] > 0
        assert math.isclose(run["ratio"], run["call_ms"] / run["matmul_ms"])
        assert run["faults_per_call"] >= 0
    (row,) = data["rows"]
    assert row["processes"] == 2
    assert row["ratio_min"] <= row["ratio"] <= row["ratio_max"]
    assert "| numpy | 2 |" in (out / "standalone.md").read_text()


def test_standalone_rejects_unknown_libraries(capsys):
    from benchmarks import standalone

    with pytest.raises(SystemExit):
        standalone.main(["--libraries", "numpy,tensorflow"])
    assert "unknown libraries ['tensorflow']" in capsys.readouterr().err


def test_views_benchmark_times_every_row_against_its_baseline(tmp_path):
    from benchmarks import views

    views.main(
        ["--n", "8", "--d", "32", "--libraries", "numpy", "--rounds", "2", "--budget", "0.1", "--out", str(tmp_path)]
    )
    saved = json.loads((tmp_path / "views.json").read_text())
    rows = saved["results"][0]["rows"]
    assert set(rows) == {"K = 2", "K = 4", "K = 2, terms (forward only)", "K = 2, terms + rank_me (forward only)"}
    assert all(r["rounds"] >= 2 and r["median_ms"] > 0 for r in rows.values())
    text = (tmp_path / "views.md").read_text()
    assert "| numpy | K = 4 |" in text and "load" in text


def test_training_and_gap_scripts_refuse_bad_options(capsys):
    from benchmarks import torchrun_gap, training

    with pytest.raises(SystemExit):
        training.main(["--backends", "torch,tensorflow"])
    assert "--backends: unknown ['tensorflow']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        torchrun_gap.main(["--precisions", "float16"])
    assert "--precisions: unknown ['float16']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        torchrun_gap.main(["--seeds", "0"])
    assert "--seeds: need at least 1" in capsys.readouterr().err


def test_training_log_excerpt_keeps_the_first_and_last_epochs():
    from benchmarks.training import excerpt

    log = "header\nsetup\nepoch   1/3 a\nepoch   2/3 b\nepoch   3/3 c\nlinear probe 0.9\n"
    assert excerpt(log) == "header\nsetup\nepoch   1/3 a\n...\nepoch   3/3 c\nlinear probe 0.9"
    assert excerpt("epoch 1\nepoch 2\nend") == "epoch 1\nepoch 2\nend"


def test_gap_table_states_median_range_and_every_seed():
    from benchmarks.torchrun_gap import table

    runs = [{"seed": s, "precision": "float32", "gap": g} for s, g in enumerate([1e-5, 3e-5, 2e-5])]
    text = table(runs, [0.5, 0.7])
    assert "| float32 | 3 | 2.0e-05 (1.0e-05 to 3.0e-05) | 0: 1.0e-05, 1: 3.0e-05, 2: 2.0e-05 |" in text
    assert "load average 0.50-0.70" in text


def test_pages_rewrite_only_the_marked_parts_and_check_mode_fails_on_a_stale_one(tmp_path, monkeypatch):
    from benchmarks import pages

    (tmp_path / "table.md").write_text("| a |\n|---|\n| 1.23x |\n")
    monkeypatch.setattr(pages, "ROOT", tmp_path)
    page = tmp_path / "README.md"
    page.write_text("intro 4.5x\n<!-- figures: include table.md -->\nold\n<!-- /figures -->\nend\n")
    monkeypatch.setattr(pages, "pages", lambda: [page])
    assert pages.stale() == ["README.md"]
    assert pages.main(["--check"]) == 1
    assert pages.main([]) == 0
    assert (
        page.read_text()
        == "intro 4.5x\n<!-- figures: include table.md -->\n| a |\n|---|\n| 1.23x |\n<!-- /figures -->\nend\n"
    )
    assert pages.stale() == [] and pages.main(["--check"]) == 0
    page.write_text("<!-- figures: nonsense -->\n<!-- /figures -->\n")
    with pytest.raises(ValueError, match="unknown figures part 'nonsense'"):
        pages.stale()
