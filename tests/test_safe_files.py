"""Files the training examples read are read without running anything in them (issue 33).

A pickle can make its reader call any function it names: a checkpoint or a CIFAR-10 batch file with one
extra entry whose unpickling calls ``os.system`` would run a command. The PyTorch-based examples read
``--resume``'s checkpoint with ``torch.load(..., weights_only=True)`` and the CIFAR-10 python files with
a restricted unpickler (:class:`backends.common.data.CifarUnpickler`); a file that needs more is a usage
error (exit status 2) saying that nothing in it was run.

The crafted files here carry :class:`MakesMarker`, whose unpickling creates a folder: the tests check
that the folder is absent after the refusal and then, in this process, that the same file read the unsafe
way does create it (the payload is live, so the refusal is what kept it from running). The genuine files
are a real checkpoint of a short run and CIFAR-10 files written with the opcodes and globals of the
official archive's (Python 2's cPickle, protocol 2: :func:`python2_pickle`), no download.
"""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import re
import shutil
import struct
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from backends import common  # noqa: E402
from backends.torch import loop, train  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A few seconds per run (as in test_examples.py): 8x8 digits, 96 images, batches of 32, 2 epochs.
FAST = [
    "--subset",
    "96",
    "--batch-size",
    "32",
    "--image-size",
    "8",
    "--proj-dims",
    "64-64-64",
    "--warmup-epochs",
    "0.5",
    "--epochs",
    "2",
]
REFUSED = "is not a checkpoint of this example"
NOTHING_RUN = "nothing in it was run"


class MakesMarker:
    """Unpickling it calls ``os.mkdir(path)``: what a crafted file would do with ``os.system``, harmless
    and visible. The pickle names ``os.mkdir`` itself, not this class, so any process can unpickle it."""

    def __init__(self, path: os.PathLike | str):
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (self.path,)


# ---------------------------------------------------------------------------------------------- checkpoints


# every test here on one pytest-xdist worker, so that the module-scoped fixture below runs once
pytestmark = pytest.mark.xdist_group("safe_files")


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A genuine run folder: the FAST run stopped after its first epoch (``--stop-after 1``), with its
    checkpoint; tests copy it."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    assert train.main([*FAST, "--stop-after", "1", "--out", str(out)]) == {}
    return out


def copy_run(stopped_run, tmp_path) -> str:
    out = tmp_path / "run"
    shutil.copytree(stopped_run, out)
    return str(out)


def plant(run_dir: str, marker) -> str:
    """The run's checkpoint with one more entry, a :class:`MakesMarker` for ``marker``; its path."""
    path = os.path.join(run_dir, "checkpoint.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["extra"] = MakesMarker(marker)
    torch.save(ckpt, path)
    return path


def test_genuine_checkpoint_holds_only_plain_data_and_resumes(stopped_run, tmp_path):
    """The checkpoint a run writes loads with ``weights_only=True`` and a resumed run finishes from it, the
    first epoch kept as the interrupted run logged it (exactness: test_examples.py's resume test)."""
    out = copy_run(stopped_run, tmp_path)
    ckpt = loop.read_checkpoint(os.path.join(out, "checkpoint.pt"))
    assert ckpt["epoch"] == 1 and isinstance(ckpt["args"], dict) and ckpt["args"]["subset"] == 96
    m = train.main([*FAST, "--out", out, "--resume"])
    with open(os.path.join(out, "log.txt")) as f:
        assert "resumed from" in f.read()
    assert [r["epoch"] for r in m["history"]] == [1, 2] and m["history"][0] == ckpt["history"][0]


def test_checkpoint_that_would_run_code_is_refused(stopped_run, tmp_path, capsys):
    """``--resume`` of a checkpoint with an extra entry whose unpickling calls ``os.mkdir``: exit status 2,
    a message saying it is not this example's checkpoint and that nothing in it was run, no folder made."""
    out, marker = copy_run(stopped_run, tmp_path), tmp_path / "marker"
    path = plant(out, marker)
    with pytest.raises(SystemExit) as e:
        train.main([*FAST, "--out", out, "--resume"])
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert REFUSED in err and NOTHING_RUN in err and "mkdir" in err and "Traceback" not in err
    assert not marker.exists()
    assert not os.path.exists(os.path.join(out, "metrics.json"))
    # the payload is live: the unsafe load the example used to do runs it
    torch.load(path, weights_only=False)
    assert marker.is_dir()


def test_files_that_are_not_checkpoints_are_usage_errors(tmp_path):
    """A tensor, a dict without the run's state, and bytes torch cannot read: each refused by name."""
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save({"model": {}}, tmp_path / "partial.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    for name, detail in (("tensor.pt", "lacks model"), ("partial.pt", "lacks optimizer"), ("junk.pt", NOTHING_RUN)):
        path = str(tmp_path / name)
        with pytest.raises(common.UsageError, match=REFUSED) as e:
            loop.read_checkpoint(path)
        assert path in str(e.value) and detail in str(e.value)


@pytest.mark.slow
def test_checkpoint_that_would_run_code_is_refused_under_torchrun(stopped_run, tmp_path):
    """The same checkpoint resumed by 2 processes under torchrun (gloo): rank 0 refuses it and tells rank
    1, and both stop with the usage error (status 2), none waiting for the other; no folder made. About
    15 s here.

    torchrun ends the other workers (SIGTERM, status -15) as soon as one has failed: under load rank 1 is
    sometimes ended that way just before its own status 2. What must not happen is a rank failing any
    other way: left waiting in the broadcast, rank 1 dies of a gloo error with a traceback."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on the PATH")
    out, marker = copy_run(stopped_run, tmp_path), tmp_path / "marker"
    plant(out, marker)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env.update(TQDM_DISABLE="1", PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""))
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "backends.torch.train", *FAST]
    proc = subprocess.run(
        [*cmd, "--out", out, "--resume", "--threads", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = proc.stderr
    statuses = [int(s) for s in re.findall(r"^\s*exitcode\s*:\s*(-?\d+)", err, re.MULTILINE)]  # torchrun's summary
    assert proc.returncode != 0 and len(statuses) == 2 and 2 in statuses, err[-4000:]
    assert set(statuses) <= {2, -15}, err[-4000:]
    assert REFUSED in err and NOTHING_RUN in err and not re.search(r"\[rank\d\]: Traceback", err), err[-4000:]
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ CIFAR-10


def python2_pickle(obj: Any) -> bytes:
    """``obj`` as Python 2's ``cPickle.dump(obj, f, 2)`` wrote the official CIFAR-10 python files: ``bytes``
    as Python 2 strings (``SHORT_BINSTRING`` / ``BINSTRING``), ``uint8`` arrays as NumPy 1.x pickled them
    (``numpy.core.multiarray._reconstruct``, then the array's state with its ``numpy.dtype``). Python 3's
    pickler cannot write this: under protocol 2 it writes each ``bytes`` as a call of ``_codecs.encode``.
    Takes dicts, lists, tuples, ``None``, ints, ``bytes`` and C-ordered ``uint8`` arrays."""
    out = bytearray(pickle.PROTO + b"\x02")
    write = out.extend

    def put(x: Any) -> None:
        if isinstance(x, dict):
            write(pickle.EMPTY_DICT + pickle.MARK)
            for k, v in x.items():
                put(k)
                put(v)
            write(pickle.SETITEMS)
        elif isinstance(x, list):
            write(pickle.EMPTY_LIST + pickle.MARK)
            for v in x:
                put(v)
            write(pickle.APPENDS)
        elif isinstance(x, tuple):
            write(b"" if 0 < len(x) < 4 else pickle.MARK)
            for v in x:
                put(v)
            write(
                {0: pickle.EMPTY_TUPLE, 1: pickle.TUPLE1, 2: pickle.TUPLE2, 3: pickle.TUPLE3}.get(len(x), pickle.TUPLE)
            )
        elif x is None:
            write(pickle.NONE)
        elif isinstance(x, bytes):
            short = len(x) < 256
            write(pickle.SHORT_BINSTRING + bytes([len(x)]) if short else pickle.BINSTRING + struct.pack("<i", len(x)))
            write(x)
        elif isinstance(x, int):
            if 0 <= x < 256:
                write(pickle.BININT1 + bytes([x]))
            elif 0 <= x < 65536:
                write(pickle.BININT2 + struct.pack("<H", x))
            else:
                write(pickle.BININT + struct.pack("<i", x))
        elif isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.flags.c_contiguous:
            # _reconstruct(ndarray, (0,), "b"), then __setstate__((1, shape, dtype, fortran, data)), where
            # dtype is numpy.dtype("u1", 0, 1) with __setstate__((3, "|", None, None, None, -1, -1, 0))
            write(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
            put((0,))
            put(b"b")
            write(pickle.TUPLE3 + pickle.REDUCE + pickle.MARK)
            put(1)
            put(tuple(x.shape))
            write(b"cnumpy\ndtype\n")
            put((b"u1", 0, 1))
            write(pickle.REDUCE)
            put((3, b"|", None, None, None, -1, -1, 0))
            write(pickle.BUILD + pickle.NEWFALSE)
            put(x.tobytes())
            write(pickle.TUPLE + pickle.BUILD)
        else:
            raise TypeError(f"python2_pickle does not write {type(x).__name__}")

    put(obj)
    write(pickle.STOP)
    return bytes(out)


def official_batch(n: int, seed: int, label: bytes) -> dict[bytes, Any]:
    """A batch as the official files hold it: ``n`` images as an ``n x 3072`` uint8 array (the red, green,
    blue planes of 32x32, row-major), their labels as a list of ints, bytes keys."""
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": label,
        b"labels": [int(c) for c in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"image_{seed}_{i}.png".encode() for i in range(n)],
    }


CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_official_cifar10(root, n: int = 4) -> dict[str, dict[bytes, Any]]:
    """A cifar-10-batches-py folder of ``n`` images per training batch and ``n`` test images in the
    official format; the batches written, by file name."""
    os.makedirs(root, exist_ok=True)
    batches = {f"data_batch_{i}": official_batch(n, i, f"training batch {i} of 5".encode()) for i in range(1, 6)}
    batches["test_batch"] = official_batch(n, 0, b"testing batch 1 of 1")
    meta = {b"num_cases_per_batch": 10000, b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}
    for name, content in [*batches.items(), ("batches.meta", meta)]:
        with open(os.path.join(root, name), "wb") as f:
            f.write(python2_pickle(content))
    return batches


def test_python2_pickle_writes_the_official_format():
    """What the helper writes is what cPickle wrote: protocol 2, Python 2 strings, NumPy 1.x's globals and
    no others; plain ``pickle.load(..., encoding="bytes")`` (the dataset page's recipe) reads it back."""
    batch = official_batch(3, 0, b"training batch 1 of 5")
    blob = python2_pickle(batch)
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(blob)]
    assert ops[0] == ("PROTO", 2)
    assert {arg for name, arg in ops if name == "GLOBAL"} == {
        "numpy.core.multiarray _reconstruct",
        "numpy ndarray",
        "numpy dtype",
    }
    assert ("SHORT_BINSTRING", "data") in ops and not any("UNICODE" in name or "BYTES" in name for name, _ in ops)
    back = pickle.loads(blob, encoding="bytes")
    assert back.keys() == batch.keys() and back[b"labels"] == batch[b"labels"]
    assert back[b"data"].dtype == np.uint8 and np.array_equal(back[b"data"], batch[b"data"])


def test_official_format_cifar10_folder_loads(tmp_path):
    """The restricted unpickler reads the official format: the images in CIFAR-10's plane order, the labels,
    the class names as text."""
    batches = write_official_cifar10(tmp_path)
    ds = common.load_dataset(str(tmp_path))
    assert ds.name == "cifar10" and ds.classes == CLASSES
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    train_data = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    np.testing.assert_array_equal(ds.x_train, train_data.reshape(-1, 3, 32, 32) / np.float32(255))
    train_labels = [c for i in range(1, 6) for c in batches[f"data_batch_{i}"][b"labels"]]
    np.testing.assert_array_equal(ds.y_train, train_labels)
    np.testing.assert_array_equal(ds.y_test, batches["test_batch"][b"labels"])


def test_official_format_cifar10_folder_trains(tmp_path):
    """``--data`` of such a folder, end to end: one short epoch on 8x8 images."""
    write_official_cifar10(tmp_path / "cifar", n=8)
    flags = ["--data", str(tmp_path / "cifar"), "--image-size", "8", "--batch-size", "8", "--proj-dims", "32-32"]
    m = train.main([*flags, "--epochs", "1", "--warmup-epochs", "0.5", "--out", str(tmp_path / "run")])
    assert [r["images"] for r in m["history"]] == [40]
    with open(tmp_path / "run" / "metrics.json") as f:
        assert json.load(f)["history"] == m["history"]


def test_cifar10_file_that_would_run_code_is_refused(tmp_path, capsys):
    """A ``data_batch_1`` whose genuine entries come with one more, which calls ``os.mkdir`` when
    unpickled: ``DataError`` naming the file, exit status 2 from the example, no folder made."""
    folder, marker = tmp_path / "cifar", tmp_path / "marker"
    batches = write_official_cifar10(folder)
    crafted = {k.decode(): v for k, v in batches["data_batch_1"].items()}
    crafted["extra"] = MakesMarker(marker)
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump(crafted, f)
    with pytest.raises(common.DataError, match="data_batch_1") as e:
        common.load_dataset(str(folder))
    assert NOTHING_RUN in str(e.value) and "mkdir" in str(e.value)
    with pytest.raises(SystemExit) as e:
        train.main(["--data", str(folder), "--image-size", "8", "--batch-size", "8", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "data_batch_1" in err and NOTHING_RUN in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "o").exists()
    # the payload is live: the unrestricted unpickler the reader used to be runs it
    with open(folder / "data_batch_1", "rb") as f:
        pickle.load(f, encoding="latin1")
    assert marker.is_dir()


def test_cifar10_files_of_another_shape_are_data_errors(tmp_path):
    """Content the unpickler builds but that is no CIFAR-10 batch: refused by name, not a traceback."""
    write_official_cifar10(tmp_path)
    for content, message in (
        ([1, 2, 3], "a list, not a dict"),
        ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1]}, "2 labels for 4 images"),
        ({b"labels": [0]}, "malformed"),
    ):
        with open(tmp_path / "data_batch_2", "wb") as f:
            f.write(python2_pickle(content))
        with pytest.raises(common.DataError, match=message) as e:
            common.load_dataset(str(tmp_path))
        assert "data_batch_2" in str(e.value)
