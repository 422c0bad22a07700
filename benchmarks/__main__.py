"""``python -m benchmarks``: run the cross-backend benchmark and write results.json, results.md and
results.png. ``--quick`` runs a small grid (well under a minute on a 2-core CPU)."""

from __future__ import annotations

import argparse
import sys
import time

from . import report
from .platforms import FRAMEWORKS, MODES
from .suite import GRID_D, GRID_N, Config, quick_config, run


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _choices(allowed: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        values = tuple(v.strip() for v in text.split(",") if v.strip())
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}; got {text!r}")
        return values

    return parse


def _shapes(text: str) -> tuple[tuple[int, int], ...]:
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            n, d = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"shapes are NxD, e.g. 256x8192; got {item!r}") from None
        if n < 2 or d < 1:
            raise argparse.ArgumentTypeError(f"need n >= 2 and d >= 1; got {item!r}")
        out.append((n, d))
    return tuple(out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time and measure vicreg against the official d x d formulation, lightly and one matmul, "
        "on every installed backend.",
    )
    p.add_argument(
        "--backends",
        type=_choices(FRAMEWORKS),
        default=FRAMEWORKS,
        help="comma-separated, from numpy,torch,jax,cupy (default: every one installed)",
    )
    p.add_argument(
        "--devices",
        type=_choices(("cpu", "gpu")),
        default=("cpu", "gpu"),
        help="cpu, gpu or cpu,gpu (default: both, GPU where present)",
    )
    p.add_argument("--n", type=_ints, default=None, help=f"batch sizes (default {','.join(map(str, GRID_N))})")
    p.add_argument("--d", type=_ints, default=None, help=f"widths (default {','.join(map(str, GRID_D))})")
    p.add_argument(
        "--shapes",
        type=_shapes,
        default=None,
        help="extra NxD cases outside the n x d grid (default 32x128, the dispatch-overhead target)",
    )
    p.add_argument(
        "--dtypes",
        type=_choices(("float32", "bfloat16")),
        default=("float32",),
        help="float32 (default) and/or bfloat16 (torch and jax only)",
    )
    p.add_argument(
        "--modes",
        type=_choices(MODES),
        default=MODES,
        help="forward and/or backward (= forward+backward; default both)",
    )
    p.add_argument("--quick", action="store_true", help="a small grid, well under a minute on a 2-core CPU")
    p.add_argument("--out", default="bench-out", help="output folder (default ./bench-out)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per implementation and case")
    p.add_argument(
        "--rounds",
        type=_ints,
        default=None,
        metavar="MIN[,MAX]",
        help="interleaved timing rounds per case: at least MIN, at most MAX",
    )
    p.add_argument("--budget", type=float, default=None, help="seconds of timing per case beyond MIN rounds")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    base = quick_config() if args.quick else Config()
    grid_given = args.n is not None or args.d is not None
    shapes = base.shapes
    if grid_given:
        ns = args.n or (GRID_N if not args.quick else tuple(sorted({n for n, _ in base.shapes})))
        ds = args.d or (GRID_D if not args.quick else tuple(sorted({d for _, d in base.shapes})))
        shapes = tuple((n, d) for d in ds for n in ns)
    if args.shapes is not None:
        shapes = (shapes if grid_given else ()) + args.shapes
    cfg = Config(
        backends=args.backends,
        devices=args.devices,
        shapes=shapes,
        dtypes=args.dtypes,
        modes=args.modes,
        warmup=base.warmup if args.warmup is None else args.warmup,
        min_rounds=base.min_rounds if args.rounds is None else args.rounds[0],
        max_rounds=base.max_rounds if args.rounds is None else args.rounds[-1],
        budget_s=base.budget_s if args.budget is None else args.budget,
        memory=not args.no_memory,
        progress=not args.no_progress,
    )
    if cfg.min_rounds > cfg.max_rounds:
        raise SystemExit("--rounds: MIN must not exceed MAX")
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    config = config_from_args(args)
    t0 = time.perf_counter()
    results = run(config, log=lambda s: print(s, file=sys.stderr))
    paths = report.write(results, args.out)
    for t in results["targets"]:
        print(
            f"{'met ' if t['met'] else 'MISS'} {t['target']} [{t['platform']}, {t['ours']}]: "
            f"{t['value']:.2f} (goal {t['goal']})"
        )
    print(f"wrote {', '.join(paths.values())} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
