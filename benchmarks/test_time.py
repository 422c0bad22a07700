"""How long the README's test command takes: the test part of the README's "set up and run the tests" line
(what ``.ci/run`` runs after installing), run several times one after another in the repository root, with
the load average before each run.

    python -m benchmarks.test_time --runs 3 --out benchmarks/results/tests

writes ``test_time.json`` (every run: seconds, pytest's summary line, exit status, load) and
``test_time.md`` (the median and range in minutes), which the README's and the development page's
figure for the suite's time comes from, once the last run is done (``test_time.partial.json`` holds the
runs so far: the suite checks the pages against the committed files, so writing those between runs
would fail the next run). Run it on a quiet machine, from a clean checkout with the
README's virtual environment installed; each run takes the suite's full time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_test_command() -> str:
    """The last command of the README's line after ``# set up and run the tests`` (the one ``.ci/run``
    reads): the test run, without the installation before it."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    line = lines[lines.index("# set up and run the tests") + 1]
    return line.split("&&")[-1].strip()


def run_once(command: str) -> dict[str, object]:
    load = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    summary = [line for line in proc.stdout.splitlines() if re.search(r"\d+ passed", line)]
    return {
        "seconds": round(seconds, 1),
        "summary": summary[-1].strip("= ") if summary else proc.stdout[-500:],
        "returncode": proc.returncode,
        "load_before": [round(x, 2) for x in load],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def markdown(record: dict[str, object]) -> str:
    runs = record["runs"]
    assert isinstance(runs, list)
    minutes = [r["seconds"] / 60 for r in runs]
    lines = [
        f"`{record['command']}`, {len(runs)} runs one after another, {record['date']}, commit {record['commit']},",
        f"{record['machine']}.",
        "",
        f"Median **{statistics.median(minutes):.1f} min** (range {min(minutes):.1f} to {max(minutes):.1f} min).",
        "",
        "| run | seconds | minutes | load before (1, 5, 15 min) | pytest |",
        "|---|---|---|---|---|",
    ]
    for i, r in enumerate(runs, 1):
        load = ", ".join(f"{x:.2f}" for x in r["load_before"])
        lines.append(f"| {i} | {r['seconds']:.0f} | {r['seconds'] / 60:.1f} | {load} | {r['summary']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.test_time", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="how many runs, one after another (default: 3)")
    parser.add_argument("--out", type=Path, default=None, help="folder for test_time.json and test_time.md")
    args = parser.parse_args(argv)
    command = readme_test_command()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    runs: list[dict[str, object]] = []
    record: dict[str, object] = {
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit.stdout.strip() or "unknown",
        "machine": f"{os.cpu_count()} CPU cores, Python {sys.version.split()[0]}",
        "runs": runs,
    }
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    for i in range(args.runs):
        result = run_once(command)
        runs.append(result)
        print(f"run {i + 1}: {result['seconds']:.0f} s, {result['summary']}", flush=True)
        if args.out is not None:  # after every run, so that an interrupted series keeps what it measured, but
            # beside the committed files: the suite checks the pages against those, so the next run would fail
            (args.out / "test_time.partial.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    if args.out is not None:
        (args.out / "test_time.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        (args.out / "test_time.md").write_text(markdown(record), encoding="utf-8")
        (args.out / "test_time.partial.json").unlink(missing_ok=True)
    print(markdown(record))
    return 0 if all(r["returncode"] == 0 for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
