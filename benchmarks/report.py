"""Writing a run out: ``results.json``, ``results.md`` (tables) and ``results.png`` (time vs n, log scale)."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from .platforms import MODE_LABELS, ROLE_LABELS

MiB = 2.0**20


def ms(x: float | None) -> str:
    """A time in ms with three significant digits or so (``"—"`` for none)."""
    if x is None:
        return "—"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table: the header, the separator and one line per row of cells (text,
    already escaped)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _ratio(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.0f}x" if x >= 100 else f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def _mib(b: int | None) -> str:
    if b is None:
        return "—"
    m = b / MiB
    return f"{m:.0f}" if m >= 100 else f"{m:.1f}" if m >= 1 else f"{m:.2f}"


def _t(case: dict[str, Any], role: str) -> float | None:
    r = case["impls"].get(role)
    return r["time"]["median_ms"] if r else None


def _mem(case: dict[str, Any], role: str) -> int | None:
    r = case["impls"].get(role)
    return r.get("peak_bytes") if r else None


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    env = meta["environment"]
    lines = ["# vicreg benchmark", ""]
    lines.append(f"Command: `{meta['command'].strip()}`; {meta['started']}; {meta['seconds']:.0f} s in all.")
    lines.append("")
    for name, dev in env["devices"].items():
        lines.append(f"- **{name}**: {dev}; memory: {meta['memory_methods'].get(name) or 'not measured'}")
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    lines.append(f"- Python {env['python']}, {versions}")
    threads = []
    if "torch_intra_op" in env["threads"]:
        threads.append(f"torch intra-op {env['threads']['torch_intra_op']}")
    for info in env["threads"].get("blas", []):
        threads.append(f"{info.get('internal_api')} ({info.get('user_api')}) {info.get('num_threads')}")
    if threads:
        lines.append(f"- Threads: {', '.join(threads)}; {env['cpu_count']} logical CPUs")
    if env.get("env"):
        lines.append(f"- Environment: {', '.join(f'{k}={v}' for k, v in env['env'].items())}")
    cfg = meta["config"]
    lines.append(
        f"- Method: {cfg['warmup']} warm-up calls each, then {cfg['min_rounds']}-{cfg['max_rounds']} interleaved "
        f"rounds (shuffled order, {cfg['budget_s']} s budget per case); median time in ms (IQR in results.json); "
        "device synchronised inside every timed call."
    )
    for note in meta["notes"]:
        lines.append(f"- Note: {note}")
    lines.append("")

    if results.get("targets"):
        lines += ["## Targets (issue item 6: CPU, float32, forward+backward)", ""]
        lines += table(
            ["target", "platform", "ours", "measured", "goal", "met"],
            [
                [
                    t["target"],
                    t["platform"],
                    ROLE_LABELS[t["ours"]],
                    _ratio(t["value"]),
                    t["goal"],
                    "yes" if t["met"] else "**no**",
                ]
                for t in results["targets"]
            ],
        )
        lines.append("")

    lines += ["## Times and memory", ""]
    lines.append(
        "Times: median ms. *speed-up* = reference time / ours; *x matmul* = ours / one `z @ z.T` "
        "(`z.T @ z` when n >= d) in the same framework; *x GEMMs* = ours / the loss's matrix products alone "
        "(2 forward, 4 forward+backward); memory: peak MiB of one call (outputs included). "
        "`vicreg (core)` is `vicreg.vicreg_loss` (on torch/jax arrays it takes the adapter's "
        "differentiation rule by itself; `vicreg.value_and_grad` for NumPy/CuPy forward+backward); "
        "`adapter` is `vicreg.torch.VICRegLoss` / `vicreg.jax.vicreg_loss`."
    )
    lines.append("")
    headers = [
        "platform",
        "dtype",
        "mode",
        "n",
        "d",
        "ours",
        "ours ms",
        "official ms",
        "lightly ms",
        "hand-written ms",
        "matmul ms",
        "GEMMs ms",
        "vs official",
        "vs lightly",
        "x matmul",
        "x GEMMs",
        "ours MiB",
        "official MiB",
        "memory ratio",
    ]
    rows = []
    for c in results["cases"]:
        for ours, r in c["ratios"].items():
            rows.append(
                [
                    c["platform"],
                    c["dtype"],
                    MODE_LABELS[c["mode"]],
                    str(c["n"]),
                    str(c["d"]),
                    "core" if ours == "vicreg" else "adapter",
                    ms(_t(c, ours)),
                    ms(_t(c, "official")),
                    ms(_t(c, "lightly")),
                    ms(_t(c, "handwritten")),
                    ms(_t(c, "matmul")),
                    ms(_t(c, "gemms")),
                    _ratio(r.get("speedup_vs_official")),
                    _ratio(r.get("speedup_vs_lightly")),
                    _ratio(r.get("over_matmul")),
                    _ratio(r.get("over_gemms")),
                    _mib(_mem(c, ours)),
                    _mib(_mem(c, "official")),
                    _ratio(r.get("memory_official_over_ours")),
                ]
            )
    lines += [*table(headers, rows), ""]
    worst = [
        (c["platform"], c["mode"], c["n"], c["d"], role, e["rel_diff_vs_vicreg"])
        for c in results["cases"]
        for role, e in c["impls"].items()
        if e.get("rel_diff_vs_vicreg") is not None and c["dtype"] == "float32"
    ]
    if worst:
        w = max(worst, key=lambda x: x[-1])
        lines.append(
            f"Cross-check: every float32 loss agrees with the core's to a relative {w[-1]:.1e} at worst "
            f"({w[0]} {MODE_LABELS[w[1]]} n={w[2]} d={w[3]}, {ROLE_LABELS[w[4]]})."
        )
        lines.append("")
    return "\n".join(lines)


_STYLE = {
    "vicreg": ("-", "o"),
    "adapter": ("-", "s"),
    "official": ("--", "x"),
    "lightly": ("-.", "^"),
    "handwritten": (":", "."),
    "matmul": (":", "v"),
}
# "gemms" is in results.json and the table, not the plot (it would crowd it)


def plot(results: dict[str, Any], path: str) -> bool:
    """Time vs n, log-log, one panel per (mode, d), one colour per platform and one line style per
    implementation. Returns False (and writes nothing) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cases = list(results["cases"])
    modes = [m for m in MODE_LABELS if any(c["mode"] == m for c in cases)]
    ds = sorted({c["d"] for c in cases})
    # panels only for d with at least two n (a line needs two points)
    ds = [d for d in ds if len({c["n"] for c in cases if c["d"] == d}) >= 2] or ds
    if not modes or not ds:
        return False
    platforms = sorted({(c["platform"], c["dtype"]) for c in cases})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(
        len(modes), len(ds), figsize=(4.6 * len(ds) + 2.6, 3.4 * len(modes)), squeeze=False, sharex=True
    )
    handles: dict[str, Any] = {}
    for i, mode in enumerate(modes):
        for j, d in enumerate(ds):
            ax = axes[i][j]
            for k, (pname, dtype) in enumerate(platforms):
                colour = colours[k % len(colours)]
                sel = sorted(
                    (
                        c
                        for c in cases
                        if c["platform"] == pname and c["dtype"] == dtype and c["mode"] == mode and c["d"] == d
                    ),
                    key=lambda c: c["n"],
                )
                if not sel:
                    continue
                for role, (ls, marker) in _STYLE.items():
                    pts = [(c["n"], _t(c, role)) for c in sel if _t(c, role) is not None]
                    if not pts:
                        continue
                    xs, ys = zip(*pts)
                    suffix = "" if dtype == "float32" else f" {dtype}"
                    label = f"{pname}{suffix}: {ROLE_LABELS[role]}"
                    (h,) = ax.plot(xs, ys, ls=ls, marker=marker, color=colour, lw=1.2, ms=4, label=label)
                    handles.setdefault(label, h)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{MODE_LABELS[mode]}, d = {d}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            if i == len(modes) - 1:
                ax.set_xlabel("batch size n")
            if j == 0:
                ax.set_ylabel("time per call (ms)")
    fig.legend(list(handles.values()), list(handles.keys()), loc="center right", fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 2.4 / (4.6 * len(ds) + 2.6), 1))
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return True


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/Inf become None."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def write(results: dict[str, Any], out_dir: str) -> dict[str, str]:
    """Write ``results.json``, ``results.md`` and ``results.png`` into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "json": os.path.join(out_dir, "results.json"),
        "md": os.path.join(out_dir, "results.md"),
        "png": os.path.join(out_dir, "results.png"),
    }
    with open(paths["json"], "w") as fh:
        json.dump(_clean(results), fh, indent=1)
    md = markdown(results)
    if plot(results, paths["png"]):
        md += "\n![time vs n](results.png)\n"
    else:
        del paths["png"]
    with open(paths["md"], "w") as fh:
        fh.write(md)
    return paths
