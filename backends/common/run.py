"""Run folders and checkpoint files (framework-free): where a run writes, and how it finds its last
checkpoint when resumed."""

from __future__ import annotations

import glob
import os
import time

from .data import UsageError

CHECKPOINT = "checkpoint"  # DIR/checkpoint.<ext>, overwritten each epoch


def default_out(backend: str, root: str = "runs") -> str:
    """A fresh folder name ``runs/<backend>-<YYYYmmdd-HHMMSS>`` (suffixed if it exists)."""
    base = os.path.join(root, f"{backend}-{time.strftime('%Y%m%d-%H%M%S')}")
    out, i = base, 1
    while os.path.exists(out):
        out, i = f"{base}-{i}", i + 1
    return out


def latest_run(backend: str, root: str = "runs") -> str | None:
    """The most recently modified ``runs/<backend>-*`` folder, or ``None``."""
    runs = [p for p in glob.glob(os.path.join(root, f"{backend}-*")) if os.path.isdir(p)]
    return max(runs, key=os.path.getmtime) if runs else None


def resolve_out(args) -> tuple[str, str | None]:
    """``(out_dir, checkpoint_to_resume_or_None)`` from parsed ``--out`` and ``--resume``.

    ``--resume`` alone resumes ``--out`` if given, else the newest ``runs/<backend>-*``; ``--resume DIR``
    resumes that folder (and writes there unless ``--out`` says otherwise). ``UsageError`` when there is no
    checkpoint to resume.
    """
    ext = getattr(args, "checkpoint_ext", "pt")
    if args.resume is None:
        out = args.out or default_out(args.backend)
        os.makedirs(out, exist_ok=True)
        return out, None
    src = args.out if args.resume == "last" else args.resume
    if src is None:
        src = latest_run(args.backend)
        if src is None:
            raise UsageError(f"--resume: no runs/{args.backend}-* folder to resume; pass --resume DIR")
    ckpt = src if os.path.isfile(src) else checkpoint_path(src, ext)
    if not os.path.isfile(ckpt):
        raise UsageError(f"--resume: no checkpoint {ckpt!r}")
    out = args.out or os.path.dirname(ckpt) or "."
    os.makedirs(out, exist_ok=True)
    return out, ckpt


def checkpoint_path(out: str, ext: str = "pt") -> str:
    return os.path.join(out, f"{CHECKPOINT}.{ext}")


def atomic_save(path: str, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``, so an interrupted save never leaves a torn
    checkpoint behind."""
    tmp = f"{path}.tmp"
    write(tmp)
    os.replace(tmp, path)
