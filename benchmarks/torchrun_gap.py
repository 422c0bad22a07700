"""How far a 2-process ``torchrun`` training run is from the same run in one process, over seeds.

``python -m benchmarks.torchrun_gap`` runs the PyTorch example's small command
(``--subset 256 --epochs 2 --batch-size 64``) for each seed and precision twice: once as ``python -m
backends.torch.train --threads 1`` and once under ``torchrun --standalone --nproc_per_node=2`` (gloo, the
CPU), and reports the relative gap of each epoch's loss. In float64 the two runs are the same computation to
rounding; in float32 the rounding of the first steps (sums in another order across processes) is amplified
by training, by an amount that depends on the seed. ``--out DIR`` writes ``torchrun_gap.json`` and
``torchrun_gap.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--subset", "256", "--epochs", "2", "--batch-size", "64"]
PRECISIONS = {"float32": [], "float64": ["--float64"]}


def _environment() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")
    }
    env.update(TQDM_DISABLE="1", PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def _losses(out: str, *extra: str, processes: int) -> list[float]:
    """The epoch losses of one run of the command (1 process, or ``processes`` under torchrun)."""
    if processes == 1:
        cmd = [sys.executable, "-m", "backends.torch.train", "--threads", "1"]
    else:
        torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
        if torchrun is None:
            raise SystemExit("torchrun is not on the PATH")
        cmd = [torchrun, "--standalone", f"--nproc_per_node={processes}", "-m", "backends.torch.train"]
    proc = subprocess.run(
        [*cmd, *FLAGS, "--out", out, *extra], cwd=ROOT, env=_environment(), capture_output=True, text=True
    )
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(out, "metrics.json")) as f:
        return [row["loss"] for row in json.load(f)["history"]]


def measure(seed: int, precision: str) -> dict[str, Any]:
    """One seed in one precision: both runs' epoch losses and their relative gaps."""
    with tempfile.TemporaryDirectory() as tmp:
        extra = ["--seed", str(seed), *PRECISIONS[precision]]
        one = _losses(os.path.join(tmp, "one"), *extra, processes=1)
        two = _losses(os.path.join(tmp, "two"), *extra, processes=2)
    gaps = [abs(a - b) / abs(b) for a, b in zip(two, one, strict=True)]
    return {"seed": seed, "precision": precision, "one": one, "two": two, "gaps": gaps, "gap": max(gaps)}


def table(runs: list[dict[str, Any]], load: list[float]) -> str:
    lines = [
        f"`torchrun --standalone --nproc_per_node=2 -m backends.torch.train {' '.join(FLAGS)}` against "
        f"`python -m backends.torch.train {' '.join(FLAGS)} --threads 1`, the same `--seed`; "
        f"load average {min(load):.2f}-{max(load):.2f}",
        "",
        "| precision | seeds | largest relative gap of an epoch loss: median (range) | per seed |",
        "|---|---:|---|---|",
    ]
    for precision in PRECISIONS:
        mine = [r for r in runs if r["precision"] == precision]
        if not mine:
            continue
        gaps = [r["gap"] for r in mine]
        per_seed = ", ".join(f"{r['seed']}: {r['gap']:.1e}" for r in mine)
        lines.append(
            f"| {precision} | {len(mine)} | {statistics.median(gaps):.1e} ({min(gaps):.1e} to {max(gaps):.1e}) "
            f"| {per_seed} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.torchrun_gap", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8, help="seeds 0 .. SEEDS-1 (default: 8)")
    parser.add_argument("--precisions", default="float32,float64", help="comma-separated (default: both)")
    parser.add_argument("--out", help="also write torchrun_gap.json and torchrun_gap.md into this folder")
    args = parser.parse_args(argv)
    precisions = args.precisions.split(",")
    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown:
        parser.error(f"--precisions: unknown {unknown}; choose from {', '.join(PRECISIONS)}")
    if args.seeds < 1:
        parser.error("--seeds: need at least 1")
    runs, load = [], [os.getloadavg()[0]]
    for seed in range(args.seeds):
        for precision in precisions:
            runs.append(measure(seed, precision))
            load.append(os.getloadavg()[0])
            print(f"seed {seed} {precision}: {runs[-1]['gap']:.2e}", file=sys.stderr)
    text = table(runs, load)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "torchrun_gap.json"), "w") as f:
            json.dump({"flags": FLAGS, "load": load, "runs": runs}, f, indent=1)
        with open(os.path.join(args.out, "torchrun_gap.md"), "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
