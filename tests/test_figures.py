"""Every figure of the README and the docs pages comes from a committed run.

The tables and sentences between ``<!-- figures: ... -->`` and ``<!-- /figures -->`` are written by
``python -m benchmarks.pages`` from the files under ``benchmarks/results/``; the first test reruns it in
check mode. Every other measured figure on a page (a ratio such as ``4.64x``, a time, a size, a percentage,
an accuracy, a number in scientific notation) must appear, written the same way, in one of those files.
Figures that are definitions rather than measurements (a default, a goal, a tolerance) are written as code
(between backquotes) or listed in :data:`DEFINITIONS` with what they are.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import pages

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

#: A measured figure: a ratio, a time, a size, a rate, a percentage, an accuracy, a scientific number.
FIGURE = re.compile(
    r"(?<![\w.\-/])"
    r"(?:(?P<number>\d+(?:\.\d+)?)(?:x(?![\w])| ?(?:ms|s|min|minutes|MiB|MB|GiB|GB|KB|img/s)(?![\w/])|%)"
    r"|(?P<accuracy>0\.\d{3,})(?![\d])"
    r"|(?P<scientific>\d(?:\.\d+)?e[-+]?\d+)(?![\w.]))"
)

#: Figures that define something rather than measure it, per page: the figure and what it is.
DEFINITIONS: dict[str, dict[str, str]] = {
    "docs/loss.md": {"73.2": "the paper's published ImageNet linear top-1, quoted from the paper"},
}


def _normal(token: str) -> str:
    """``2.0e-08`` and ``2.0e-8`` alike."""
    match = re.fullmatch(r"(\d(?:\.\d+)?)e([-+]?)0*(\d+)", token)
    if match:
        return f"{match[1]}e{'-' if match[2] == '-' else ''}{match[3]}"
    return token


def _known() -> set[str]:
    text = "\n".join(
        path.read_text(encoding="utf-8", errors="replace")
        for path in sorted(RESULTS.rglob("*"))
        if path.is_file() and path.suffix in (".md", ".json", ".txt")
    )
    tokens = set(re.findall(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?", text))
    return {_normal(t) for t in tokens}


def _prose(text: str) -> str:
    """The page without its generated parts, code, comments and link targets."""
    text = pages.BLOCK.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def figures(text: str) -> list[str]:
    """The measured figures of a page's prose, each as written (number only)."""
    out = []
    for match in FIGURE.finditer(_prose(text)):
        out.append(match["number"] or match["accuracy"] or match["scientific"])
    return out


def test_the_figure_pattern():
    """What counts as a figure, and what does not."""
    text = (
        "4.64x faster, 31.9 ms and 69 s, 21.6 MiB, 329 img/s, 73.2%, probe 0.9852, gap 2e-8 and 4.0e-06; "
        "not: 256 x 8192, `1e-4`, eps 1e-4x2, v0.10.2, [a](docs/x-1.5x.md), 2048 columns"
    )
    assert figures(text) == ["4.64", "31.9", "69", "21.6", "329", "73.2", "0.9852", "2e-8", "4.0e-06"]


def test_generated_figures_match_the_committed_runs():
    """``python -m benchmarks.pages --check``: every generated table is what the committed files give."""
    assert pages.stale() == [], "run: python -m benchmarks.pages"


@pytest.mark.parametrize("page", pages.pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_figure_on_a_page_comes_from_a_committed_run(page):
    known = _known()
    allowed = DEFINITIONS.get(str(page.relative_to(ROOT)), {})
    missing = [f for f in figures(page.read_text(encoding="utf-8")) if _normal(f) not in known and f not in allowed]
    assert not missing, f"{page.name}: figures in no committed results file: {missing}"
