"""Section 3, bench: the benchmark suite (:mod:`benchmarks.suite`) on the GPU platforms only; its own
``results.json``/``.md``/``.png`` go to ``DIR/bench`` and the report keeps one row per case."""

from __future__ import annotations

import os
import traceback
from typing import Any

from .common import PROG, one_line

BENCH_SHAPES = ((256, 2048), (2048, 2048), (256, 8192), (2048, 8192))
QUICK_BENCH_SHAPES = ((256, 2048),)
BENCH_DTYPES = ("float32", "bfloat16")


def bench_config(quick: bool) -> Any:
    """The suite's :class:`~benchmarks.suite.Config` for the GPU platforms, forward+backward, float32 and
    bfloat16; ``quick``: one shape and the quick timing budget."""
    from ..suite import Config, quick_config

    common = dict(
        backends=("torch", "jax", "cupy"), devices=("gpu",), dtypes=BENCH_DTYPES, modes=("backward",), progress=False
    )
    if quick:
        return quick_config(shapes=QUICK_BENCH_SHAPES, **common)
    return Config(shapes=BENCH_SHAPES, **common)


def bench_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per case of a suite run: median ms per implementation and our ratios (``ours``: the
    adapter where there is one, else the core)."""
    rows = []
    for case in results["cases"]:
        ours = "adapter" if "adapter" in case["ratios"] else "vicreg"
        ratios = case["ratios"].get(ours, {})
        diffs = [r["rel_diff_vs_vicreg"] for r in case["impls"].values() if r.get("rel_diff_vs_vicreg") is not None]
        rows.append(
            {
                "platform": case["platform"],
                "dtype": case["dtype"],
                "mode": case["mode"],
                "n": case["n"],
                "d": case["d"],
                "median_ms": {role: r["time"]["median_ms"] for role, r in case["impls"].items()},
                "peak_mib": {role: r["peak_bytes"] / 2**20 for role, r in case["impls"].items() if r.get("peak_bytes")},
                "ours": ours,
                "speedup_vs_official": ratios.get("speedup_vs_official"),
                "speedup_vs_lightly": ratios.get("speedup_vs_lightly"),
                "over_matmul": ratios.get("over_matmul"),
                "over_gemms": ratios.get("over_gemms"),
                "max_loss_rel_diff": max(diffs, default=None),
            }
        )
    return rows


def section_bench(out: str, quick: bool) -> dict[str, Any]:
    """The benchmark suite on the GPU platforms; its own files go to ``DIR/bench``. Failed when no GPU
    platform was found or a case failed (out of memory, an exception)."""
    from .. import report, suite

    config = bench_config(quick)
    results = suite.run(config, log=lambda s: print(s, flush=True))
    results["meta"]["command"] = f"{PROG} (bench section{', --quick' if quick else ''})"
    try:
        files = {k: os.path.relpath(v, out) for k, v in report.write(results, os.path.join(out, "bench")).items()}
    except Exception as exc:  # the timings are in hand: keep them even if the suite's files fail
        traceback.print_exc()
        files = {"error": one_line(f"{type(exc).__name__}: {exc}")}
    notes = results["meta"]["notes"]
    failed = [n for n in notes if ": failed (" in n]
    rows = bench_rows(results)
    record: dict[str, Any] = {
        "status": "failed" if failed or not rows else "passed",
        "shapes": [list(s) for s in config.shapes],
        "dtypes": list(config.dtypes),
        "modes": list(config.modes),
        "rows": rows,
        "notes": notes,
        "devices": results["meta"]["environment"]["devices"],
        "files": files,
    }
    if failed:
        record["error"] = "; ".join(failed)
    elif not rows:
        record["error"] = "no GPU platform ran: " + "; ".join(notes)
    return record
