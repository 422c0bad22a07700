"""Run folders and checkpoint files (framework-free): where a run writes, how it finds its last checkpoint
when resumed, and why a run that fails before its first checkpoint leaves no folder behind.

The folder is only named when the command line is checked (:func:`resolve_out`); the first line the run
logs creates it (:func:`backends.common.report.log`), and :func:`removed_on_failure` deletes it again if the
run fails before it wrote a checkpoint, so that a wrong ``--data`` leaves no empty ``runs/...`` behind and a
bare ``--resume`` never picks a run that has nothing to resume.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import time
from collections.abc import Iterator

from .cli import UsageError

CHECKPOINT = "checkpoint"  # DIR/checkpoint.<ext>, overwritten each epoch
#: The flags that decide what a checkpoint holds (the network's shapes, the optimizer's state, the data):
#: a resumed run must repeat them.
RESUME_FLAGS = ("data", "subset", "image_size", "arch", "proj_dims", "optimizer", "float64")


def default_out(backend: str, root: str = "runs") -> str:
    """A fresh folder name ``runs/<backend>-<YYYYmmdd-HHMMSS>`` (suffixed if it exists)."""
    base = os.path.join(root, f"{backend}-{time.strftime('%Y%m%d-%H%M%S')}")
    out, i = base, 1
    while os.path.exists(out):
        out, i = f"{base}-{i}", i + 1
    return out


def latest_run(backend: str, root: str = "runs", ext: str = "pt") -> str | None:
    """The ``runs/<backend>-*`` folder whose checkpoint was written last, or ``None`` when no such folder
    holds a checkpoint. Folders without one (a run stopped in its first epoch) are skipped."""
    ckpts = [checkpoint_path(p, ext) for p in glob.glob(os.path.join(root, f"{backend}-*")) if os.path.isdir(p)]
    ckpts = [c for c in ckpts if os.path.isfile(c)]
    return os.path.dirname(max(ckpts, key=os.path.getmtime)) if ckpts else None


def check_out(out: str) -> None:
    """``UsageError`` when the run could not write into the folder ``out``: it is a file, it is not
    writable, or the folder it would be created in is a file or is not writable. Creates nothing."""
    path = os.path.abspath(os.path.expanduser(out))
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise UsageError(f"--out {out!r} is a file; expected a folder (created if missing)")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"--out {out!r} is not writable; expected a folder this user can write in")
        return
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"--out {out!r} cannot be created: {parent!r} is a file; expected a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out!r} cannot be created: {parent!r} is not writable")


def resolve_out(args, announce=print) -> tuple[str, str | None]:
    """``(out_dir, checkpoint_to_resume_or_None)`` from parsed ``--out`` and ``--resume``; creates nothing.

    ``--resume`` alone resumes ``--out`` if given, else the newest ``runs/<backend>-*`` with a checkpoint,
    and says which through ``announce``; ``--resume DIR`` resumes that folder (and writes there unless
    ``--out`` says otherwise). ``UsageError`` when there is no checkpoint to resume, or when ``--out``
    cannot be written (:func:`check_out`).

    Idempotent: it writes the answer back into ``args.out`` and ``args.resume`` (the checkpoint file), so
    that a second call (the training loop's, after the command line's) finds the same folder.
    """
    ext = getattr(args, "checkpoint_ext", "pt")
    if args.out is not None:
        check_out(args.out)
    if args.resume is None:
        args.out = args.out or default_out(args.backend)
        return args.out, None
    src = args.out if args.resume == "last" else args.resume
    if src is None:
        src = latest_run(args.backend, ext=ext)
        if src is None:
            raise UsageError(
                f"--resume: no runs/{args.backend}-* folder holds a checkpoint ({CHECKPOINT}.{ext}); pass --resume DIR"
            )
        announce(f"--resume: continuing {src}, the newest runs/{args.backend}-* folder with a checkpoint")
    ckpt = src if os.path.isfile(src) else checkpoint_path(src, ext)
    if not os.path.isfile(ckpt):
        raise UsageError(
            f"--resume: no checkpoint {ckpt!r}; expected a run folder holding {CHECKPOINT}.{ext}, or that file"
        )
    args.out = args.out or os.path.dirname(ckpt) or "."
    args.resume = ckpt
    return args.out, ckpt


@contextlib.contextmanager
def removed_on_failure(out: str | None, ext: str = "pt") -> Iterator[None]:
    """Delete ``out`` if the block raises before a checkpoint exists there and the folder did not exist
    when the block began (so a folder the user made, or a run being resumed, is never touched); parent
    folders it would have created with it (``runs/``) go too when left empty. ``out=None`` (a process that
    writes nothing) does nothing."""
    new = []  # out and its ancestors that do not exist yet, deepest first
    path = os.path.abspath(out) if out is not None else None
    while path and not os.path.exists(path):
        new.append(path)
        path = os.path.dirname(path)
    try:
        yield
    except BaseException:
        if new and os.path.isdir(new[0]) and not os.path.exists(checkpoint_path(new[0], ext)):
            shutil.rmtree(new[0], ignore_errors=True)
            for parent in new[1:]:
                with contextlib.suppress(OSError):  # not empty: something else lives there now
                    os.rmdir(parent)
        raise


def check_resumed_flags(saved: dict, args, path: str) -> None:
    """``UsageError`` naming every flag of :data:`RESUME_FLAGS` that differs between the run that wrote the
    checkpoint ``path`` (its ``saved`` arguments) and this one: a checkpoint of another network or
    optimizer would otherwise fail deep inside the framework, or load an optimizer state of the wrong
    kind without a word."""
    differ = [
        f"--{key.replace('_', '-')} {saved[key]!r} there, {getattr(args, key, None)!r} here"
        for key in RESUME_FLAGS
        if key in saved and saved[key] != getattr(args, key, None)
    ]
    if differ:
        raise UsageError(f"--resume: {path!r} was written with other flags ({'; '.join(differ)}); pass the same ones")


def checkpoint_path(out: str, ext: str = "pt") -> str:
    return os.path.join(out, f"{CHECKPOINT}.{ext}")


def atomic_save(path: str, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``, so an interrupted save never leaves a torn
    checkpoint behind."""
    tmp = f"{path}.tmp"
    write(tmp)
    os.replace(tmp, path)
