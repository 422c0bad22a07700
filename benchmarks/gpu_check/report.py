"""The report of ``python -m benchmarks.gpu_check``: ``gpu_report.json`` (the records, as recorded) and
``gpu_report.md``, which is :func:`markdown` of that JSON; tables are :func:`benchmarks.report.table`'s."""

from __future__ import annotations

import os
from typing import Any

from ..report import ms, table
from .common import PROG, SECTIONS, TITLES, jsonable, one_line, write_json
from .environment import device_name, driver_version


def _fmt(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "**no**"
    if isinstance(x, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in x.items())
    if isinstance(x, float):
        if x == 0 or 1e-2 <= abs(x) < 1e4:
            return f"{x:.4g}"
        return f"{x:.1e}"
    return str(x)


def _cell(x: Any) -> str:
    return one_line(_fmt(x), 400).replace("|", "\\|")


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    """:func:`benchmarks.report.table` of the values as cells (:func:`_cell`), and a blank line."""
    return [*table(headers, [[_cell(v) for v in row] for row in rows]), ""]


def _dict_table(rows: list[dict[str, Any]]) -> list[str]:
    headers = list(rows[0]) if rows else []
    return _table(headers, [[r.get(h) for h in headers] for r in rows]) if rows else []


def _accuracy(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def _seconds(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def _ratio(x: float | None) -> str:
    """One decimal below 100x (the suite's own tables give two below 10x)."""
    return "—" if x is None else f"{x:.1f}x" if x < 100 else f"{x:.0f}x"


STATUS_MARK = {"passed": "passed", "failed": "**FAILED**", "error": "**ERROR**", "skipped": "skipped"}


def _status(record: dict[str, Any]) -> str:
    return STATUS_MARK.get(record.get("status", "error"), str(record.get("status")))


def _section_head(number: int, name: str, record: dict[str, Any]) -> list[str]:
    lines = [f"## {number}. {TITLES[name]}: {_status(record)}", ""]
    if record.get("status") == "skipped" and record.get("reason"):
        lines += [f"Skipped: {record['reason']}.", ""]
    if record.get("error"):
        where = f" (at `{record['where']}`)" if record.get("where") else ""
        lines += [f"Error: {one_line(record['error'], 2000)}{where}", ""]
    return lines


def _md_environment(env: dict[str, Any]) -> list[str]:
    lines = ["## Environment", ""]
    if env.get("status") == "error":
        return [*lines, f"Could not be read: {env.get('error')}", ""]
    lines.append(f"- Device: **{device_name(env)}**; driver {driver_version(env)}")
    torch = env.get("torch") or {}
    if torch.get("devices"):
        for i, d in enumerate(torch["devices"]):
            lines.append(f"- GPU {i}: {d['name']}, compute capability {d['capability']}, {d['memory_gib']} GiB")
    cuda = []
    if torch.get("cuda"):
        cudnn = f", cuDNN {torch['cudnn']}" if torch.get("cudnn") else ""
        seen = "" if torch.get("cuda_available", True) else " (torch sees no GPU)"
        cuda.append(f"torch built for CUDA {torch['cuda']}{cudnn}{seen}")
    cupy = env.get("cupy") or {}
    if cupy.get("runtime"):
        cuda.append(f"CuPy CUDA runtime {cupy['runtime']}")
    jax = env.get("jax") or {}
    if "default_backend" in jax:
        cuda.append(f"JAX default backend {jax['default_backend']} ({', '.join(jax.get('gpus', [])) or 'no GPU'})")
    if cuda:
        lines.append(f"- CUDA: {'; '.join(cuda)}")
    for name in ("torch", "cupy", "jax"):
        info = env.get(name) or {}
        if info.get("error"):
            lines.append(f"- {name}: {info['error']}")
    versions = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v)
    lines.append(f"- Python {env.get('python')} on {env.get('os')}; {versions}")
    if env.get("env"):
        lines.append(f"- Environment: {', '.join(f'{k}={v}' for k, v in env['env'].items())}")
    return [*lines, ""]


def _md_tests(record: dict[str, Any]) -> list[str]:
    lines = _section_head(1, "tests", record)
    if record.get("command"):
        lines += [f"`{record['command']}` ({_seconds(record.get('seconds'))} s; output in `{record.get('log')}`)", ""]
    c = record.get("counts")
    if c:
        rows = [["all selected", c["passed"], c["failed"], c["errors"], c["skipped"]]]
        rows += [
            [b, v["passed"], v["failed"], v["errors"], v["skipped"]]
            for b, v in (record.get("by_backend") or {}).items()
        ]
        lines += _table(["tests", "passed", "failed", "errors", "skipped"], rows)
    if record.get("failures"):
        lines += ["Failures:", ""]
        lines += [f"- `{f['test']}` ({f.get('kind', 'failed')}): {f['message']}" for f in record["failures"]]
        lines.append("")
    if record.get("skip_reasons"):
        lines += ["Skipped, by reason:", ""]
        lines += [f"- {s['count']} x {s['reason']}" for s in record["skip_reasons"]]
        lines.append("")
    return lines


def _md_checks(record: dict[str, Any]) -> list[str]:
    lines = _section_head(2, "checks", record)
    checks = record.get("checks") or []
    if not checks:
        return lines
    lines += _table(
        ["check", "status", "result", "seconds"],
        [[c["name"], _status(c), c.get("message", ""), _seconds(c.get("seconds"))] for c in checks],
    )
    for c in checks:
        if c["status"] == "skipped":
            continue
        lines += [f"### {c['name']}: {_status(c)}", "", c.get("what", ""), ""]
        if c.get("why"):
            lines += [f"Why: {c['why']}", ""]
        if c.get("message"):
            lines += [f"Result: {c['message']}" + (f" (at `{c['where']}`)" if c.get("where") else ""), ""]
        for key in ("worst_error", "default_matmul_precision", "float64_gpu_vs_numpy", "dtypes"):
            if key in c:
                lines += [f"- {key.replace('_', ' ')}: {_fmt(c[key])}", ""]
        if c.get("rows"):
            lines += _dict_table(c["rows"])
    return lines


OURS_LABELS = {"vicreg": "core", "adapter": "adapter"}
BENCH_ROLES = ("vicreg", "adapter", "official", "lightly", "matmul", "gemms")
BENCH_HEADERS = [
    "platform",
    "dtype",
    "n x d",
    "vicreg core",
    "adapter",
    "official (d x d)",
    "lightly",
    "one matmul",
    "the loss's matmuls",
    "ours vs official",
    "ours / one matmul",
    "peak MiB ours / official",
]


def _md_bench(record: dict[str, Any]) -> list[str]:
    lines = _section_head(3, "bench", record)
    if record.get("shapes"):
        shapes = ", ".join(f"{n} x {d}" for n, d in record["shapes"])
        lines += [
            f"Forward+backward, median ms of interleaved rounds (device synchronised in every call); shapes "
            f'{shapes}; dtypes {", ".join(record.get("dtypes", []))}. "ours" is the adapter '
            "(`vicreg.torch.VICRegLoss`, `vicreg.jax.vicreg_loss`) where there is one, else the core. "
            f"Full tables: `{(record.get('files') or {}).get('markdown', 'bench/results.md')}`.",
            "",
        ]
    rows = []
    for r in record.get("rows") or []:
        t = r["median_ms"]
        mem = r.get("peak_mib") or {}
        rows.append(
            [
                r["platform"],
                r["dtype"],
                f"{r['n']} x {r['d']}",
                *(ms(t.get(k)) for k in BENCH_ROLES),
                f"{_ratio(r.get('speedup_vs_official'))} ({OURS_LABELS.get(r['ours'], r['ours'])})",
                _ratio(r.get("over_matmul")),
                f"{_fmt(mem.get(r['ours']))} / {_fmt(mem.get('official'))}",
            ]
        )
    if rows:
        lines += _table(BENCH_HEADERS, rows)
    for note in record.get("notes") or []:
        lines.append(f"- Note: {note}")
    return lines + ([""] if record.get("notes") else [])


def _md_train(record: dict[str, Any]) -> list[str]:
    lines = _section_head(4, "train", record)
    runs = record.get("runs") or []
    if runs:
        lines += [
            f"Digits, defaults, {record.get('epochs')} epoch(s); accuracies on the held-out 30%; "
            '"seconds" is `seconds` in the run\'s `metrics.json`, "wall" includes start-up.',
            "",
        ]
        lines += _table(
            [
                "example",
                "status",
                "linear probe",
                "random-init linear probe",
                "20-NN",
                "final loss",
                "epochs",
                "seconds",
                "wall s",
                "device",
            ],
            [
                [
                    r["example"],
                    _status(r),
                    _accuracy(r.get("linear_probe_accuracy")),
                    _accuracy(r.get("random_init_linear_probe_accuracy")),
                    _accuracy(r.get("knn_accuracy")),
                    _fmt(r.get("final_loss")),
                    _fmt(r.get("epochs")),
                    _seconds(r.get("seconds")),
                    _seconds(r.get("wall_s")),
                    _fmt(r.get("device")),
                ]
                for r in runs
            ],
        )
        for r in runs:
            if r["status"] != "passed":
                lines.append(f"- {r['example']}: {r.get('message') or r.get('error')}")
            if r.get("command"):
                lines.append(f"- {r['example']}: `{r['command']}`")
        lines.append("")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The Markdown report of a recorded run (the dict written to ``gpu_report.json``)."""
    lines = [f"# vicreg GPU check: {_status(report)}", ""]
    lines += [
        f"Command: `{report.get('command', PROG)}`; started {report.get('started', '?')}; "
        f"{_seconds(report.get('seconds'))} s in all.",
        "",
    ]
    if report.get("failed"):
        lines += ["Failed: " + "; ".join(report["failed"]), ""]
    lines += _md_environment(report.get("environment") or {})
    sections = report.get("sections") or {}
    summary = []
    for name in SECTIONS:
        record = sections.get(name) or {"status": "skipped"}
        summary.append([TITLES[name], _status(record), _seconds(record.get("seconds"))])
    lines += _table(["section", "status", "seconds"], summary)
    for name, render in (("tests", _md_tests), ("checks", _md_checks), ("bench", _md_bench), ("train", _md_train)):
        lines += render(sections.get(name) or {"status": "skipped", "reason": "not recorded"})
    return "\n".join(lines).rstrip() + "\n"


def failures(report: dict[str, Any]) -> list[str]:
    """What failed, one item per failed section, check, test or training run."""
    out = []
    for name, record in (report.get("sections") or {}).items():
        if record.get("status") not in ("failed", "error"):
            continue
        items = [c["name"] for c in record.get("checks", []) if c["status"] in ("failed", "error")]
        items += [r["example"] for r in record.get("runs", []) if r["status"] in ("failed", "error")]
        items += [f["test"] for f in record.get("failures", [])][:10]
        out.append(f"{name}: " + (", ".join(items) if items else one_line(record.get("error", record["status"]), 300)))
    return out


def write_report(report: dict[str, Any], out: str) -> str:
    """``gpu_report.json`` and ``gpu_report.md`` (the Markdown of that JSON) in ``out``; the Markdown's path."""
    write_json(os.path.join(out, "gpu_report.json"), report)
    path = os.path.join(out, "gpu_report.md")
    with open(path, "w") as fh:
        fh.write(markdown(jsonable(report)))
    return path
