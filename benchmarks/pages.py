"""The figures of the README and the docs pages, written from the committed runs.

A page marks each generated part with a pair of HTML comments::

    <!-- figures: NAME [ARGUMENT] -->
    ... written by this module ...
    <!-- /figures -->

``python -m benchmarks.pages`` rewrites every such part of ``README.md`` and ``docs/*.md`` from the files
under ``benchmarks/results/``; ``python -m benchmarks.pages --check`` changes nothing and exits 1 naming each
part that differs from what the files give (the test suite runs it). ``NAME`` is one of :data:`WRITERS`:
``include PATH`` copies a committed Markdown table as it is; the others compute a table or a line from the
JSON files the benchmark commands write. A figure outside these parts must still appear in a committed
results file (``tests/test_figures.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(
    r"(<!-- figures: (?P<name>[\w-]+)(?: (?P<argument>[^>]*?))? -->\n)(?P<body>.*?)(<!-- /figures -->)", re.S
)


def pages() -> list[Path]:
    """The README and every page of the documentation site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]


def _json(path: str) -> Any:
    with open(RESULTS / path, encoding="utf-8") as f:
        return json.load(f)


def ratio(x: float) -> str:
    """A ratio as the pages write it: 3 significant figures."""
    return f"{x:.3g}x"


def ms(x: float) -> str:
    """Milliseconds: 3 significant figures, whole numbers from 100 on."""
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


# ------------------------------------------------------------------------------------------ writers


def include(argument: str) -> str:
    """A committed Markdown file, as it is."""
    return (ROOT / argument).read_text(encoding="utf-8").strip("\n")


def include_text(argument: str) -> str:
    """A committed plain-text output, as a code block."""
    return "```text\n" + include(argument) + "\n```"


#: Families of the precision sweep's cases, by the start of the case's name.
FAMILIES = (
    ("whitened", r"whitened"),
    ("one dominant", r"one dominant"),
    ("dominant decorrelated groups", r"\d+ dominant decorrelated"),
    ("dominant in the others' null space", r"\d+ dominant in the others' null space"),
    ("d = 1", r"d = 1"),
    ("constant columns", r"constant columns"),
    ("one row differs", r"one row differs"),
    ("geometric spectrum", r"geometric spectrum"),
    ("mean 1000", r"mean 1000"),
    ("huge magnitudes (std 1e8 to 1e76)", r"large"),
    ("one column near overflow, the rest at 1e-5", r"one column at"),
)


def precision_families(argument: str = "") -> str:
    """Per family of the precision sweep: the largest float32 loss and gradient errors over its cases and
    every entry point, ours beside the official float32 formulation's, and the worst float64 error."""
    sweep = _json("precision/precision.json")
    lines = [
        "| cases | float32 loss error: ours (official) | float32 gradient error: ours (official) | float64, worst |",
        "|---|---|---|---|",
    ]
    seen = set()
    for label, pattern in FAMILIES:
        rows = [r for r in sweep["rows"] if re.match(pattern, r["case"])]
        if not rows:
            continue
        seen.update(r["case"] for r in rows)
        ours = [e for r in rows for e in r["ours"].values()]
        loss, grad = (max(e["float32"][i] for e in ours) for i in (0, 1))
        official = [max(r["official_float32"][i] for r in rows) for i in (0, 1)]
        worst64 = max(max(e["float64"]) for e in ours)
        lines.append(f"| {label} | {loss:.1e} ({official[0]:.1e}) | {grad:.1e} ({official[1]:.1e}) | {worst64:.0e} |")
    missing = [r["case"] for r in sweep["rows"] if r["case"] not in seen]
    if missing:
        raise ValueError(f"precision cases in no family: {missing}")
    return "\n".join(lines)


def precision_summary(argument: str = "") -> str:
    """One sentence: how many cases, how many met, float64's worst."""
    sweep = _json("precision/precision.json")
    rows = sweep["rows"]
    worst64 = max(max(e["float64"]) for r in rows for e in r["ours"].values())
    return (
        f"{len(rows)} cases, each through {len(sweep['entry_points'])} entry points; float64 within "
        f"{worst64:.0e} of the float64 reference at worst."
    )


def autocast_notes(argument: str = "") -> str:
    """The reduced-precision sweep in a few sentences: cases met, the default's worst errors beside the
    official formulation's under bfloat16 autocast, where float16 autocast loses the official loss, and
    how "medium" compares."""
    rows = _json("precision/autocast.json")["rows"]
    columns = [r["autocast"] for r in rows]
    met = sum(all(o <= max(t, 1e-5) for o, t in zip(c["default"], c["official"]["bfloat16"])) for c in columns)
    default = [max(c["default"][i] for c in columns) for i in (0, 1)]
    official = [max(c["official"]["bfloat16"][i] for c in columns) for i in (0, 1)]
    lost16 = sum(not all(math.isfinite(e) for e in c["official"]["float16"]) for c in columns)
    medium_worse = sum(
        any(m > max(t, 1e-5) for m, t in zip(c["levels"]["medium"], c["official"]["bfloat16"])) for c in columns
    )
    return (
        f'The default under autocast (`"high"`) meets the target in {met} of {len(rows)} cases. Its largest '
        f"errors are {default[0]:.1e} (loss) and {default[1]:.1e} (gradient), where the official formulation "
        f"under bfloat16 autocast reaches {official[0]:.1e} and {official[1]:.1e}. Under float16 autocast the "
        f'official formulation gives an inf or NaN in {lost16} cases. One bfloat16 pass (`"medium"`) is '
        f"less accurate than the official formulation under bfloat16 autocast in {medium_worse} cases: "
        f"both round the same centred embeddings to bfloat16, and which of the two comes closer is then "
        f"chance; it is not the default."
    )


def precision_notes(argument: str = "") -> str:
    """Which cases of the sweep exceed 10 x the official float32 error somewhere, how far, and float64's
    worst case."""
    rows = _json("precision/precision.json")["rows"]
    above, worst_above = [], [0.0, 0.0]  # the cases above 10 x official; the largest such loss / gradient error
    for r in rows:
        worst = [max(e["float32"][i] for e in r["ours"].values()) for i in (0, 1)]
        for i in (0, 1):
            if worst[i] > 10 * r["official_float32"][i]:
                worst_above[i] = max(worst_above[i], worst[i])
                if r not in above:
                    above.append(r)
    loss, grad = worst_above
    worst64 = max(rows, key=lambda r: max(max(e["float64"]) for e in r["ours"].values()))
    value64 = max(max(e["float64"]) for e in worst64["ours"].values())
    text = f"Every case of that run meets the target (`met`: yes in all {len(rows)} rows). "
    if above:
        text += (
            f"Where some entry point's float32 error is above 10 x the official one ({len(above)} of the "
            f"{len(rows)} cases), that error is still at most {loss:.1e} for the loss and {grad:.1e} for a "
            "gradient, inside the `1e-5` floor. "
        )
    return text + f"The worst float64 error is {value64:.0e} ({worst64['case']}), against the `1e-10` target."


def _case(targets: dict[str, Any], platform: str, n: int, d: int, mode: str = "backward") -> dict[str, Any]:
    for case in targets["cases"]:
        if (case["platform"], case["n"], case["d"], case["mode"], case["dtype"]) == (platform, n, d, mode, "float32"):
            return case
    raise KeyError((platform, n, d, mode))


def _median(case: dict[str, Any], impl: str) -> float:
    return case["impls"][impl]["time"]["median_ms"]


def _target(targets: dict[str, Any], prefix: str, platform: str, ours: str = "vicreg") -> dict[str, Any]:
    for t in targets["targets"]:
        if t["target"].startswith(prefix) and t["platform"] == platform and t["ours"] == ours:
            return t
    raise KeyError((prefix, platform, ours))


def _met(t: dict[str, Any]) -> str:
    return "met" if t["met"] else "**not met**"


def targets_table(argument: str = "") -> str:
    """docs/benchmarks.md: forward+backward, float32, median ms of each implementation, and peak memory."""
    targets = _json("targets/results.json")
    lines = [
        "| platform | n x d | vicreg core | adapter | official (d x d) | lightly | one matmul "
        "| the 4 GEMMs alone | peak MiB ours (core / adapter) / official |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, d in ((256, 8192), (2048, 2048), (32, 128)):
        for platform in ("numpy", "torch-cpu", "jax-cpu"):
            try:
                case = _case(targets, platform, n, d)
            except KeyError:
                continue
            impls = case["impls"]

            def cell(impl: str, impls: dict[str, Any] = impls, case: dict[str, Any] = case) -> str:
                return ms(_median(case, impl)) if impl in impls else "—"

            def mib(impl: str, impls: dict[str, Any] = impls) -> str:
                peak = impls.get(impl, {}).get("peak_bytes")
                return f"{peak / 2**20:.3g}" if peak else "—"

            memory = " / ".join(mib(i) for i in ("vicreg", "adapter", "official") if i in impls)
            lines.append(
                f"| {platform} | {n} x {d} | {cell('vicreg')} | {cell('adapter')} | {cell('official')} "
                f"| {cell('lightly')} | {cell('matmul')} | {cell('gemms')} | {memory} |"
            )
    return "\n".join(lines)


def targets_goals(argument: str = "") -> str:
    """docs/benchmarks.md: every target of the targets run, its value per entry point and whether it is met."""
    targets = _json("targets/results.json")
    lines = ["| target | platform | ours | value | goal | |", "|---|---|---|---|---|---|"]
    for t in targets["targets"]:
        ours = {"vicreg": "core", "adapter": "adapter"}.get(t["ours"], t["ours"])
        lines.append(f"| {t['target']} | {t['platform']} | {ours} | {ratio(t['value'])} | {t['goal']} | {_met(t)} |")
    return "\n".join(lines)


def targets_run(argument: str = "") -> str:
    """The targets run's command, date, duration and load."""
    meta = _json("targets/results.json")["meta"]
    load = meta.get("load")
    text = f"`{meta['command']}`, {meta['started']}, {meta['seconds']:.0f} s"
    if load:
        text += f", load average {min(load):.2f}-{max(load):.2f}"
    return text


def _standalone_row(row: dict[str, Any]) -> str:
    return f"{ratio(row['ratio'])} ({row['ratio_min']:.3g}-{row['ratio_max']:.3g})"


#: The platform and implementation of each entry point the README's speed rows give.
ENTRIES = (
    ("numpy", "vicreg"),
    ("torch-cpu", "vicreg"),
    ("torch-cpu", "adapter"),
    ("jax-cpu", "vicreg"),
    ("jax-cpu", "adapter"),
)


def readme_headline(argument: str = "") -> str:
    """The README's headline table."""
    targets = _json("targets/results.json")
    standalone = {r["library"]: r for r in _json("standalone/standalone.json")["rows"]}
    big = {p: _case(targets, p, 256, 8192) for p in ("numpy", "torch-cpu", "jax-cpu")}
    command = "`" + targets["meta"]["command"].replace(" --no-progress", "") + "`"
    speed = "n=256 d=8192: faster than official"
    t = {(p, o): _target(targets, speed, p, o) for p, o in ENTRIES}
    lightly = [_target(targets, "n=256 d=8192: faster than lightly", "torch-cpu", o) for o in ("vicreg", "adapter")]
    memory = [
        _target(targets, "n=256 d=8192: official peak memory", p, o)
        for p, o in (("numpy", "vicreg"), ("torch-cpu", "adapter"), ("jax-cpu", "adapter"))
    ]

    def both(pair: list[dict[str, Any]]) -> str:
        return " / ".join(ratio(x["value"]) for x in pair)

    def times(platform: str, impls: tuple[str, ...]) -> str:
        return " / ".join(ms(_median(big[platform], i)) for i in impls)

    rows = [
        (
            "speed vs official `d x d`, NumPy (`value_and_grad`)",
            f"{ratio(t['numpy', 'vicreg']['value'])} faster ({_met(t['numpy', 'vicreg'])}: goal 50x): "
            f"{times('numpy', ('vicreg',))} ms vs {times('numpy', ('official',))} ms",
            command,
        ),
        (
            "speed vs official, PyTorch (`vicreg_loss` / `VICRegLoss`)",
            f"{both([t['torch-cpu', 'vicreg'], t['torch-cpu', 'adapter']])} faster: "
            f"{times('torch-cpu', ('vicreg', 'adapter'))} ms vs {times('torch-cpu', ('official',))} ms",
            "same command",
        ),
        (
            "speed vs lightly, PyTorch (`vicreg_loss` / `VICRegLoss`)",
            f"{both(lightly)} faster: {times('torch-cpu', ('vicreg', 'adapter'))} ms vs "
            f"{times('torch-cpu', ('lightly',))} ms",
            "same command",
        ),
        (
            "speed vs official, JAX (`vicreg_loss` / `vicreg.jax`, jitted)",
            f"{both([t['jax-cpu', 'vicreg'], t['jax-cpu', 'adapter']])} faster: "
            f"{times('jax-cpu', ('vicreg', 'adapter'))} ms vs {times('jax-cpu', ('official',))} ms",
            "same command",
        ),
        ("peak memory vs official, NumPy / PyTorch / JAX", f"{both(memory)} less", "same command"),
        (
            "time of one call over one `z @ z.T` (`value_and_grad`; `vicreg_loss(...).backward()`; jitted "
            "`value_and_grad`), each library alone in fresh processes: median (range) over the processes",
            "; ".join(
                f"{name} {_standalone_row(standalone[lib])} (goal {goal}x: "
                f"{'met' if standalone[lib]['ratio'] <= goal else '**not met**'})"
                for lib, name, goal in (("numpy", "NumPy", 8), ("torch", "PyTorch", 6), ("jax", "JAX", 6))
            ),
            "`python -m benchmarks.standalone --processes 5`",
        ),
    ]
    views_path = RESULTS / "views" / "views.json"
    if views_path.exists():
        views = {r["library"]: r["rows"] for r in _json("views/views.json")["results"]}
        cells = []
        for lib in ("torch", "jax"):
            if lib in views:
                base = views[lib]["K = 2"]["median_ms"]
                four, rank = views[lib]["K = 4"]["median_ms"], views[lib]["K = 2 + rank_me"]["median_ms"]
                goal = "met" if rank <= 1.1 * base else "**not met**"
                cells.append(f"{lib} {ratio(four / base)} / {ratio(rank / base)} (RankMe's goal 1.1x: {goal})")
        rows.append(
            (
                "four views (K = 4), and RankMe beside the loss, against the two-view loss and gradient "
                "(JAX's rounds are bimodal: [Benchmarks](docs/benchmarks.md#more-views-and-rankme-benchmarksviews))",
                "; ".join(cells),
                "`python -m benchmarks.views`",
            )
        )
    gap_path = RESULTS / "torchrun" / "torchrun_gap.json"
    if gap_path.exists():
        runs = _json("torchrun/torchrun_gap.json")["runs"]
        cells = []
        for precision in ("float32", "float64"):
            gaps = [r["gap"] for r in runs if r["precision"] == precision]
            if gaps:
                cells.append(
                    f"{precision}: {statistics.median(gaps):.1e} ({min(gaps):.1e} to {max(gaps):.1e}) over "
                    f"{len(gaps)} seeds"
                )
        rows.append(
            (
                "training under `torchrun`, 2 processes against 1: largest relative gap of an epoch loss, "
                "median (range)",
                "; ".join(cells),
                "`python -m benchmarks.torchrun_gap`",
            )
        )
    training_path = RESULTS / "training" / "training.json"
    if training_path.exists():
        rows.append(training_row())
    lines = ["| what | result | reproduce |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def _spread(values: list[float], fmt: str) -> str:
    """The median and the range of ``values``, or the one value where every run gave it."""
    med, low, high = (f"{v:{fmt}}" for v in (statistics.median(values), min(values), max(values)))
    return f"{med} (every run)" if low == high else f"{med} ({low}-{high})"


def training_row() -> tuple[str, str, str]:
    summary = training_summary()
    cells = [f"{b} {s['probe']}, {s['img_s']} img/s, {s['seconds']} s" for b, s in summary["backends"].items()]
    return (
        f"training on digits, median (range) of {summary['runs']} runs each: linear probe, training images "
        "per second, wall time",
        "; ".join(cells),
        "`python -m benchmarks.training`",
    )


def training_summary() -> dict[str, Any]:
    data = _json("training/training.json")
    backends: dict[str, dict[str, str]] = {}
    runs = 0
    for backend in ("torch", "numpy", "jax"):
        mine = [r for r in data["runs"] if r["backend"] == backend]
        if not mine:
            continue
        runs = len(mine)
        backends[backend] = {
            "probe": _spread([r["linear_probe_accuracy"] for r in mine], ".4f"),
            "random": _spread([r["random_init_linear_probe_accuracy"] for r in mine], ".4f"),
            "knn": _spread([r["knn_accuracy"] for r in mine], ".4f"),
            "img_s": _spread([r["images_per_second"] for r in mine], ".0f"),
            "seconds": _spread([r["wall_s"] for r in mine], ".0f"),
        }
    return {"runs": runs, "backends": backends, "load": data.get("load", [])}


def training_table(argument: str = "") -> str:
    """docs/training.md: per backend, median (range) of the committed training runs."""
    summary = training_summary()
    load = summary["load"]
    lines = [
        f"Median (range) of {summary['runs']} runs per backend, each `python -m backends.BACKEND.train` with "
        f"its defaults from a fresh process; load average {min(load):.2f}-{max(load):.2f}."
        if load
        else "",
        "",
        "| backend | linear probe | random-init probe | 20-NN | training img/s | wall time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for backend, s in summary["backends"].items():
        lines.append(f"| {backend} | {s['probe']} | {s['random']} | {s['knn']} | {s['img_s']} | {s['seconds']} |")
    return "\n".join(lines).lstrip("\n")


def speed_line(argument: str) -> str:
    """One library's headline speed, for its guide: ``speed-line numpy|torch|jax``."""
    targets = _json("targets/results.json")
    standalone = {r["library"]: r for r in _json("standalone/standalone.json")["rows"]}
    platform = {"numpy": "numpy", "torch": "torch-cpu", "jax": "jax-cpu"}[argument]
    case = _case(targets, platform, 256, 8192)
    over = "n=256 d=8192: time / one z @ z.T"
    speed = "n=256 d=8192: faster than official"
    memory = "n=256 d=8192: official peak memory"
    # the core's entry point and the adapter's, each as (the call, what follows its name); NumPy has no adapter
    names = {
        "numpy": (("vicreg.value_and_grad", ""), None),
        "torch": (("vicreg.vicreg_loss", ""), ("vicreg.torch.VICRegLoss", "")),
        "jax": (("vicreg.vicreg_loss", " (jitted)"), ("vicreg.jax.vicreg_loss", " (jitted)")),
    }
    parts = []
    for impl, named in zip(("vicreg", "adapter"), names[argument], strict=True):
        if named is None:
            continue
        call, note = named
        parts.append(
            f"`{call}`{note} took "
            f"{ms(_median(case, impl))} ms, {ratio(_target(targets, over, platform, impl)['value'])} one "
            f"`z @ z.T`, {ratio(_target(targets, speed, platform, impl)['value'])} faster than the official "
            f"formulation with {ratio(_target(targets, memory, platform, impl)['value'])} less peak memory"
        )
    fresh = standalone[argument]
    return (
        "At 256 x 8192, float32, forward+backward, in the committed targets run: "
        + "; ".join(parts)
        + f". Each library alone in fresh processes (`python -m benchmarks.standalone`): "
        f"{_standalone_row(fresh)} one `z @ z.T`, median (range)."
    )


#: The generated parts a page may hold, by name.
WRITERS: dict[str, Callable[[str], str]] = {
    "include": include,
    "include-text": include_text,
    "precision-families": precision_families,
    "precision-summary": precision_summary,
    "precision-notes": precision_notes,
    "autocast-notes": autocast_notes,
    "targets-table": targets_table,
    "targets-goals": targets_goals,
    "targets-run": targets_run,
    "readme-headline": readme_headline,
    "training-table": training_table,
    "speed-line": speed_line,
}


def render(text: str, where: str = "") -> str:
    """``text`` with every generated part written afresh."""

    def write(match: re.Match[str]) -> str:
        name, argument = match["name"], match["argument"] or ""
        if name not in WRITERS:
            raise ValueError(f"{where}: unknown figures part {name!r}; known: {', '.join(WRITERS)}")
        return f"{match.group(1)}{WRITERS[name](argument)}\n{match.group(5)}"

    return BLOCK.sub(write, text)


def stale() -> list[str]:
    """The pages whose generated parts differ from what the committed results give."""
    out = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        if render(text, str(page)) != text:
            out.append(str(page.relative_to(ROOT)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pages", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a page is out of date")
    args = parser.parse_args(argv)
    if args.check:
        out = stale()
        for page in out:
            print(f"{page}: its figures differ from the committed results (python -m benchmarks.pages)")
        return 1 if out else 0
    for page in pages():
        text = page.read_text(encoding="utf-8")
        new = render(text, str(page))
        if new != text:
            page.write_text(new, encoding="utf-8")
            print(f"wrote {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
