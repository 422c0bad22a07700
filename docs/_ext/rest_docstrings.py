"""A Griffe extension that renders this project's docstrings in the documentation site.

The docstrings of ``vicreg`` are written for ``help()`` and for readers of the source: Google-style
``Args:``/``Returns:``/``Raises:`` sections, with reStructuredText inline markup (``:func:`name```,
``:class:``, ``:mod:``, ``:meth:``, ``:data:``, ``:math:`` roles, ``.. math::`` blocks, ``::`` literal
blocks and ``>>>`` doctest blocks). mkdocstrings renders docstrings as Markdown, so before it parses them
this extension rewrites, in the loaded objects only (the source is untouched):

* a cross-reference role into a Markdown cross-reference ``[`name`][vicreg.module.name]``, the name
  resolved in the scope of the object whose docstring it is, as Python would (imports included); a name
  that does not resolve is logged as a warning, which fails ``mkdocs build --strict``;
* ``:math:`x``` into ``$x$`` and each equation of a ``.. math::`` block into a ``$$ ... $$`` block, which
  ``pymdownx.arithmatex`` hands to MathJax;
* a ``::`` literal block into a ``text`` code block (those blocks show formulas and sketches, not
  runnable code: runnable examples are doctests, which the test suite runs);
* a doctest block into a ``pycon`` code block (Markdown would otherwise read ``>>>`` as nested quotes).

mkdocs.yml loads it with ``extensions: [!relative $config_dir/docs/_ext/rest_docstrings.py]``.
"""

from __future__ import annotations

import logging
import re
import textwrap
from typing import Any

import griffe

# Under the "mkdocs" logger, so that a warning counts towards `mkdocs build --strict`.
_log = logging.getLogger("mkdocs.plugins.vicreg_docs")

_ROLE = re.compile(r":(?P<role>func|class|meth|mod|data|attr|exc|obj):`(?P<target>[^`]+)`")
_MATH_ROLE = re.compile(r":math:`(?P<tex>[^`]+)`")
_MATH_DIRECTIVE = re.compile(r"^(?P<indent>[ ]*)\.\. math::[ ]*(?P<rest>.*)$")
_DOCTEST = re.compile(r"^(?P<indent>[ ]*)>>> ")
_FENCE = re.compile(r"^[ ]*(```|~~~)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block(lines: list[str], start: int, indent: int) -> int:
    """The end (exclusive) of the indented block that starts at ``lines[start]``: the lines indented deeper
    than ``indent``, and blank lines between them."""
    end = start
    i = start
    while i < len(lines):
        if lines[i].strip():
            if _indent(lines[i]) <= indent:
                break
            end = i + 1
        i += 1
    return end


def _equations(body: str) -> list[str]:
    """The equations of a ``.. math::`` body: its paragraphs (reST renders each as one display)."""
    return [p.strip("\n") for p in re.split(r"\n[ ]*\n", textwrap.dedent(body)) if p.strip()]


def convert(text: str, resolve: Any) -> str:
    """``text`` (a docstring) with its reST markup turned into Markdown; ``resolve(name)`` returns the full
    path of a cross-referenced name, or ``None``."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    in_fence = False
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            in_fence = not in_fence
            out.append(line)
            i += 1
            continue
        if in_fence:
            out.append(line)
            i += 1
            continue
        math = _MATH_DIRECTIVE.match(line)
        if math:
            pad = math["indent"]
            end = _block(lines, i + 1, len(pad))
            body = "\n".join(lines[i + 1 : end])
            if math["rest"].strip():
                # the first equation starts on the directive's line: re-indent it like the lines below
                deeper = next((ln[: _indent(ln)] for ln in lines[i + 1 : end] if ln.strip()), pad + "    ")
                body = deeper + math["rest"].strip() + ("\n" + body if body else "")
            for equation in _equations(body):
                out += ["", f"{pad}$$", *(pad + e for e in equation.splitlines()), f"{pad}$$"]
            out.append("")
            i = end
            continue
        if _DOCTEST.match(line):
            pad = _DOCTEST.match(line)["indent"]  # type: ignore[index]
            end = i
            while end < len(lines) and lines[end].strip():
                end += 1
            out += [f"{pad}```pycon", *(ln[len(pad) :] if ln.startswith(pad) else ln for ln in lines[i:end])]
            out.append(f"{pad}```")
            i = end
            continue
        if line.rstrip().endswith("::") and not line.strip().startswith(".."):
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and _indent(lines[j]) > _indent(line):
                end = _block(lines, j, _indent(line))
                stripped = line.rstrip()
                if stripped.strip() == "::" or stripped[:-2].endswith(" "):
                    head = stripped[:-2].rstrip()  # "text ::" and a lone "::" lose the marker
                else:
                    head = stripped[:-1]  # "text::" reads "text:"
                pad = " " * _indent(line)
                if head.strip():
                    out += [_inline(head, resolve), ""]
                code = textwrap.dedent("\n".join(lines[j:end]))
                out += [f"{pad}```text", *(pad + c if c else c for c in code.splitlines()), f"{pad}```"]
                i = end
                continue
        out.append(_inline(line, resolve))
        i += 1
    return "\n".join(out)


def _inline(line: str, resolve: Any) -> str:
    line = _MATH_ROLE.sub(lambda m: f"${m['tex'].strip()}$", line)

    def role(match: re.Match[str]) -> str:
        target = match["target"].strip().lstrip("!")
        short = target.startswith("~")
        target = target.lstrip("~").lstrip(".")
        title = target.rsplit(".", 1)[-1] if short else target
        path = resolve(target)
        if path is None:
            _log.warning("vicreg docs: cannot resolve %s reference %r", match["role"], match["target"])
            return f"`{title}`"
        return f"[`{title}`][{path}]"

    return _ROLE.sub(role, line)


def _resolver(obj: griffe.Object) -> Any:
    def resolve(target: str) -> str | None:
        head, _, rest = target.partition(".")
        collection = obj.modules_collection
        candidates = []
        try:
            candidates.append(obj.resolve(head) + (f".{rest}" if rest else ""))
        except Exception:  # griffe.NameResolutionError, or an alias that does not resolve
            pass
        candidates.append(target)  # a full path, e.g. vicreg._terms.off_diagonal
        for path in candidates:
            try:
                found = collection.get_member(path)
            except Exception:
                continue
            if found is not None:
                return path
        return None

    return resolve


class RestDocstrings(griffe.Extension):
    """Rewrite the reST markup of every docstring of the loaded packages as Markdown (see the module)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()
        self._walk(pkg, seen)

    def _walk(self, obj: griffe.Object, seen: set[int]) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value, _resolver(obj))
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, seen)  # type: ignore[arg-type]
