"""The benchmark run: every platform x dtype x mode x shape, timed, measured and cross-checked.

For each case (one platform, dtype, mode and shape) the implementations of :mod:`benchmarks.platforms`
are built on the same inputs, warmed up and timed interleaved (:mod:`benchmarks.timing`); then the peak
memory of one call of each is measured (:mod:`benchmarks.memory`, after the timing so that the
measurement does not slow the timed calls); and each loss is compared with the core's. Cases run in the
same process, one platform after another, so every ratio compares implementations timed side by side.
"""

from __future__ import annotations

import gc
import os
import platform as _platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

from . import memory
from .platforms import MODE_LABELS, MODES, Platform, discover
from .timing import time_interleaved

GRID_N = (128, 256, 512, 1024, 2048)
GRID_D = (2048, 8192)
# Not in the n x d grid but named by the targets (issue item 6): the dispatch overhead at a small size.
EXTRA_SHAPES = ((32, 128),)
QUICK_N = (32, 256)
QUICK_D = (1024,)
QUICK_EXTRA: tuple[tuple[int, int], ...] = ((32, 128),)


@dataclass
class Config:
    backends: tuple[str, ...] = ("numpy", "torch", "jax", "cupy")
    devices: tuple[str, ...] = ("cpu", "gpu")
    shapes: tuple[tuple[int, int], ...] = tuple((n, d) for d in GRID_D for n in GRID_N) + EXTRA_SHAPES
    dtypes: tuple[str, ...] = ("float32",)
    modes: tuple[str, ...] = MODES
    warmup: int = 2
    min_rounds: int = 5
    max_rounds: int = 30
    budget_s: float = 2.0
    memory: bool = True
    seed: int = 0
    progress: bool = True
    notes: list[str] = field(default_factory=list)


def quick_config(**overrides: Any) -> Config:
    """A small grid that runs in well under a minute on a 2-core CPU."""
    shapes = tuple((n, d) for d in QUICK_D for n in QUICK_N) + QUICK_EXTRA
    base = dict(shapes=shapes, warmup=1, min_rounds=3, max_rounds=10, budget_s=0.3)
    base.update(overrides)
    return Config(**base)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(platforms: list[Platform]) -> dict[str, Any]:
    """Machine, device names, library versions and thread counts."""
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "os": _platform.platform(),
        "cpu_count": os.cpu_count(),
        "devices": {p.name: p.device_name() for p in platforms},
        "versions": {
            name: _version(name)
            for name in (
                "vicreg",
                "numpy",
                "torch",
                "jax",
                "jaxlib",
                "cupy-cuda12x",
                "cupy-cuda13x",
                "lightly",
                "array-api-compat",
            )
        },
        "threads": {},
        "env": {
            k: os.environ[k]
            for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")
            if k in os.environ
        },
    }
    try:
        from threadpoolctl import threadpool_info

        env["threads"]["blas"] = [
            {k: info.get(k) for k in ("user_api", "internal_api", "num_threads", "prefix")}
            for info in threadpool_info()
        ]
    except Exception:
        pass
    if any(p.framework == "torch" for p in platforms):
        import torch

        env["threads"]["torch_intra_op"] = torch.get_num_threads()
        env["threads"]["torch_inter_op"] = torch.get_num_interop_threads()
    if any(p.framework == "jax" for p in platforms):
        import jax

        env["jax_backend"] = jax.default_backend()
    return env


def _rel_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def _ratios(impls: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """For each of our implementations: reference time / ours, ours / one matmul, memory ratios."""

    def t(role: str) -> float | None:
        r = impls.get(role)
        return r["time"]["median_ms"] if r else None

    def m(role: str) -> int | None:
        r = impls.get(role)
        return r.get("peak_bytes") if r else None

    out: dict[str, dict[str, float | None]] = {}
    for ours in ("vicreg", "adapter"):
        if ours not in impls:
            continue
        to = t(ours)
        mo = m(ours)
        row: dict[str, float | None] = {}
        for ref in ("official", "lightly"):
            tr = t(ref)
            row[f"speedup_vs_{ref}"] = tr / to if tr is not None and to else None
            mr = m(ref)
            row[f"memory_{ref}_over_ours"] = mr / mo if mr is not None and mo else None
        tm = t("matmul")
        row["over_matmul"] = to / tm if tm else None
        tg = t("gemms")
        row["over_gemms"] = to / tg if tg else None
        th = t("handwritten")
        row["over_handwritten"] = to / th if th else None
        out[ours] = row
    return out


def run_case(
    platform: Platform, dtype: str, mode: str, n: int, d: int, config: Config, tick: Callable[[], None] | None
) -> dict[str, Any]:
    """Time, measure and cross-check every implementation on one case."""
    z1, z2 = platform.inputs(n, d, dtype, config.seed)
    runners = platform.runners(mode, z1, z2)
    last: list[Any] = []
    stats = time_interleaved(
        [r.call for r in runners],
        warmup=config.warmup,
        min_rounds=config.min_rounds,
        max_rounds=config.max_rounds,
        budget_s=config.budget_s,
        tick=tick,
        outputs=last,
    )
    impls: dict[str, dict[str, Any]] = {}
    for runner, st in zip(runners, stats):
        impls[runner.role] = {"time": st}
    # the cross-check: each loss (from the last timed call) against the core's
    ref_loss = None
    result = None
    for runner, result in zip(runners, last):
        if runner.loss_of is None:
            continue
        loss = runner.loss_of(result)
        impls[runner.role]["loss"] = loss
        if runner.role == "vicreg":
            ref_loss = loss
    del last, result
    for runner in runners:
        entry = impls[runner.role]
        if "loss" in entry and ref_loss is not None:
            entry["rel_diff_vs_vicreg"] = _rel_diff(entry["loss"], ref_loss)
    method = platform.memory_method() if config.memory else None
    if config.memory:
        gc.collect()
        for runner in runners:
            try:
                impls[runner.role]["peak_bytes"] = platform.measure_memory(runner)
            except Exception as exc:  # a method unavailable here: leave it out, say why
                impls[runner.role]["peak_bytes"] = None
                impls[runner.role]["memory_error"] = f"{type(exc).__name__}: {exc}"
    del runners, z1, z2
    gc.collect()
    return {
        "platform": platform.name,
        "framework": platform.framework,
        "device": platform.device,
        "dtype": dtype,
        "mode": mode,
        "mode_label": MODE_LABELS[mode],
        "n": n,
        "d": d,
        "path": "gram n x n" if n < d else "covariance d x d",
        "memory_method": method,
        "impls": impls,
        "ratios": _ratios(impls),
    }


def run(config: Config, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole grid; returns the results dictionary written to ``results.json``."""
    t0 = time.perf_counter()
    load = [os.getloadavg()[0]]
    platforms, notes = discover(tuple(config.backends), tuple(config.devices))
    # The frameworks' modules are hundreds of thousands of objects: move them out of the collector's
    # sight so that the collections between cases take milliseconds, not half a second.
    gc.collect()
    gc.freeze()
    notes = list(config.notes) + notes
    jobs = []
    for p in platforms:
        for dtype in config.dtypes:
            if not p.supports(dtype):
                notes.append(f"{p.name}: {dtype} not supported, skipped")
                continue
            for mode in config.modes:
                for n, d in config.shapes:
                    jobs.append((p, dtype, mode, n, d))
    bar = None
    if config.progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(jobs), unit="case", dynamic_ncols=True, file=sys.stderr)
        except ImportError:
            bar = None
    cases = []
    for p, dtype, mode, n, d in jobs:
        if bar is not None:
            bar.set_description(f"{p.name} {dtype} {MODE_LABELS[mode]} n={n} d={d}")
        try:
            cases.append(run_case(p, dtype, mode, n, d, config, None))
        except Exception as exc:  # e.g. out of memory on a big case: record it and go on
            notes.append(f"{p.name} {dtype} {mode} n={n} d={d}: failed ({type(exc).__name__}: {exc})")
            log(notes[-1])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    results = {
        "meta": {
            "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time.time() - (time.perf_counter() - t0))),
            "seconds": None,
            "load": [*load, os.getloadavg()[0]],  # the 1-minute load average before and after
            "config": {k: v for k, v in asdict(config).items() if k != "notes"},
            "environment": environment(platforms),
            "memory_methods": {p.name: memory.METHODS.get(p.memory_method() or "", None) for p in platforms},
            "notes": notes,
        },
        "cases": cases,
    }
    results["targets"] = targets(cases)
    results["meta"]["seconds"] = time.perf_counter() - t0
    return results


def _find(cases, **kw):
    return [c for c in cases if all(c.get(k) == v for k, v in kw.items())]


def targets(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's item-6 targets (CPU, float32, forward+backward), evaluated on the cases present."""
    out: list[dict[str, Any]] = []

    def add(name, platform, ours, value, goal, met, detail=""):
        out.append(dict(target=name, platform=platform, ours=ours, value=value, goal=goal, met=met, detail=detail))

    for c in _find(cases, n=256, d=8192, dtype="float32", mode="backward", device="cpu"):
        bound = 8.0 if c["framework"] == "numpy" else 6.0
        for ours, r in c["ratios"].items():
            for ref in ("official", "lightly"):
                if r.get(f"speedup_vs_{ref}") is not None:
                    v = r[f"speedup_vs_{ref}"]
                    add(f"n=256 d=8192: faster than {ref}", c["platform"], ours, v, ">= 50x", v >= 50)
            if r.get("over_matmul") is not None:
                v = r["over_matmul"]
                add("n=256 d=8192: time / one z @ z.T", c["platform"], ours, v, f"<= {bound:g}x", v <= bound)
            if r.get("memory_official_over_ours") is not None:
                v = r["memory_official_over_ours"]
                add("n=256 d=8192: official peak memory / ours", c["platform"], ours, v, ">= 20x", v >= 20)
    for c in _find(cases, n=2048, d=2048, dtype="float32", mode="backward", device="cpu"):
        for ours, r in c["ratios"].items():
            if r.get("speedup_vs_official") is not None:
                v = r["speedup_vs_official"]
                add("n=2048 d=2048 (d x d path): faster than official", c["platform"], ours, v, ">= 1.3x", v >= 1.3)
    for c in _find(cases, n=32, d=128, dtype="float32", mode="backward", framework="torch", device="cpu"):
        for ours, r in c["ratios"].items():
            if r.get("over_handwritten") is not None:
                v = r["over_handwritten"]
                add("n=32 d=128: time / hand-written torch (eager)", c["platform"], ours, v, "<= 1.5x", v <= 1.5)
    return out
