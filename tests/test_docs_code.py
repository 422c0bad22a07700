"""Every Python code block of ``README.md`` and ``docs/**/*.md``, run as a test on the backends installed.

A block is a fenced code block whose info string is ``python`` (or ``py``). An HTML comment on the line
before it (blank lines aside), invisible on GitHub and on the documentation site, may mark it:

* ``<!-- docs-test: gpu -->``: needs a CUDA GPU; skipped, with the reason, where none is visible.
* ``<!-- docs-test: torchrun -->``: runs under ``torchrun`` in several processes; always skipped here,
  naming the tests that run that path (``tests/test_torch_distributed.py``).
* ``<!-- docs-test: subprocess -->``: runs in a fresh interpreter (``python -W error``), for a block that
  must set the environment before a library is imported (``XLA_FLAGS`` for JAX's simulated devices).
* ``<!-- docs-test: continuation -->``: runs after the file's previous Python block, in its namespace.

Several marks go in one comment, separated by spaces or commas. A block that imports a library which is
not installed (``torch``, ``jax``, ``cupy``, ...) is skipped with that reason. Warnings are errors, as
everywhere in the suite (``filterwarnings`` in ``pyproject.toml``). Blocks run with the working directory
set to a temporary folder, and the environment variables they change are restored afterwards; they are
written with small shapes, so that all of them take seconds.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FLAGS = frozenset({"gpu", "torchrun", "subprocess", "continuation"})
_MARK = re.compile(r"^\s*<!--\s*docs-test:(?P<flags>[^>]*)-->\s*$")
_OPEN = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced Python block of a Markdown file."""

    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    flags: frozenset[str]
    previous: Block | None  # the file's previous Python block, for "continuation"

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"

    def chain(self) -> list[Block]:
        """The blocks to run, in order: this one and, for a continuation, those it continues."""
        if "continuation" in self.flags and self.previous is not None:
            return [*self.previous.chain(), self]
        return [self]


def _flags_before(lines: list[str], index: int) -> frozenset[str]:
    i = index - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    mark = _MARK.match(lines[i]) if i >= 0 else None
    return frozenset(re.split(r"[\s,]+", mark["flags"].strip())) - {""} if mark else frozenset()


def parse(path: Path) -> list[Block]:
    """The Python blocks of the Markdown file ``path``, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _OPEN.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        closing = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = i + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        info = opening["info"].split()
        if info and info[0] in ("python", "py"):
            body = textwrap.dedent(
                "\n".join(line[indent:] if line[:indent].isspace() else line for line in lines[i + 1 : end])
            )
            previous = blocks[-1] if blocks else None
            blocks.append(Block(path, i + 1, body + "\n", _flags_before(lines, i), previous))
        i = end + 1
    return blocks


BLOCKS = [block for path in FILES for block in parse(path)]


def _imported_modules(code: str) -> set[str]:
    """The top-level modules a block imports."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _cuda_gpu() -> str | None:
    """Why no CUDA GPU can run a block here, or ``None`` when one can."""
    if importlib.util.find_spec("torch") is not None:
        import torch

        return None if torch.cuda.is_available() else "torch.cuda.is_available() is False"
    if importlib.util.find_spec("cupy") is not None:
        try:
            import cupy

            return None if cupy.cuda.runtime.getDeviceCount() > 0 else "CuPy sees no device"
        except Exception as error:  # no driver
            return f"CuPy sees no device ({type(error).__name__})"
    return "neither PyTorch nor CuPy is installed"


def test_the_docs_have_python_blocks():
    """The collector finds the blocks (a change of fence syntax must not silently turn the tests off)."""
    per_file = {path.relative_to(ROOT).as_posix(): len(parse(path)) for path in FILES}
    assert per_file["README.md"] >= 3, per_file
    for page in ("docs/getting-started.md", "docs/pytorch.md", "docs/jax.md", "docs/numpy-cupy.md"):
        assert per_file.get(page, 0) >= 2, per_file


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.name)
def test_marks_are_known(block):
    unknown = block.flags - FLAGS
    assert not unknown, f"{block.name}: unknown docs-test mark(s) {sorted(unknown)}; known: {sorted(FLAGS)}"


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.name)
def test_code_block_runs(block, tmp_path, monkeypatch):
    if "torchrun" in block.flags:
        pytest.skip(
            "runs under torchrun in several processes; tests/test_torch_distributed.py runs this path with 2 "
            "processes (gloo)"
        )
    if "gpu" in block.flags and (reason := _cuda_gpu()) is not None:
        pytest.skip(f"needs a CUDA GPU: {reason}")
    chain = block.chain()
    for module in sorted(set().union(*(_imported_modules(b.code) for b in chain))):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module}, which is not installed")
    monkeypatch.chdir(tmp_path)
    if "subprocess" in block.flags:
        script = tmp_path / "block.py"
        script.write_text("".join(b.code for b in chain), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        result = subprocess.run(
            [sys.executable, "-W", "error", str(script)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, f"{block.name} failed:\n{result.stdout}\n{result.stderr}"
        return
    environ = dict(os.environ)
    namespace: dict[str, object] = {"__name__": "__main__"}
    try:
        for b in chain:
            # pad with blank lines so that a traceback's line numbers are the Markdown file's
            exec(compile("\n" * b.line + b.code, str(b.path), "exec"), namespace)
    finally:
        os.environ.clear()
        os.environ.update(environ)
