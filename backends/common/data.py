"""Datasets for the training examples, as NumPy arrays (no deep-learning framework needed).

Every loader returns a :class:`Dataset`: images ``float32`` in ``[0, 1]`` with layout ``(N, C, H, W)``,
integer labels, and a train / held-out split. Three sources:

* ``None`` (default): scikit-learn's digits, 1,797 grey 8x8 images shipped inside scikit-learn (no
  download), upsampled bilinearly to ``image_size`` (default 16) and split 70/30, stratified by class,
  with a fixed seed (the same split for every training seed).
* a folder in ImageFolder layout: one subfolder per class holding image files; if it has ``train/`` and
  ``val/`` (or ``test/``) subfolders of that layout those are the split, otherwise the same stratified
  70/30 split is drawn. Images are converted to RGB and resized to ``image_size`` (default 32). Everything
  is loaded into memory: meant for small and medium data sets.
* an extracted CIFAR-10 python folder (``cifar-10-batches-py``: ``data_batch_1..5``, ``test_batch``,
  ``batches.meta``): its own 50,000 / 10,000 split. Its files are pickles, read by
  :class:`CifarUnpickler`, which builds nothing but what the official files hold (dicts, bytes, lists,
  numbers and NumPy arrays): a file that refers to anything else is refused before any of it is run.

A missing or malformed path raises :class:`DataError` (a ``ValueError``) saying what was expected.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .cli import UsageError

SPLIT_SEED = 0
TEST_FRACTION = 0.3
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class DataError(UsageError):
    """The ``--data`` path is missing or not in a supported layout."""


@dataclass
class Dataset:
    """A train / held-out split of images, as NumPy arrays.

    ``x_*``: ``float32`` ``(N, C, H, W)`` in ``[0, 1]``; ``y_*``: ``int64`` ``(N,)`` class indices into
    ``classes``. ``mean`` and ``std`` are the per-channel statistics of ``x_train`` (for normalisation).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    mean: tuple[float, ...] = field(init=False)
    std: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.mean = tuple(float(m) for m in self.x_train.mean(axis=(0, 2, 3)))
        self.std = tuple(float(max(s, 1e-3)) for s in self.x_train.std(axis=(0, 2, 3)))

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, n: int, seed: int = SPLIT_SEED) -> Dataset:
        """At most ``n`` training and ``n`` held-out images, stratified by class when possible."""
        x_tr, y_tr = _take(self.x_train, self.y_train, n, seed)
        x_te, y_te = _take(self.x_test, self.y_test, n, seed)
        return Dataset(self.name, x_tr, y_tr, x_te, y_te, list(self.classes))


def _take(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n >= len(y):
        return x, y
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    stratify = y if n >= np.count_nonzero(counts) and counts[counts > 0].min() >= 2 else None
    idx, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=stratify, random_state=seed)
    idx = np.sort(idx)
    return x[idx], y[idx]


def split(
    x: np.ndarray,
    y: np.ndarray,
    name: str,
    classes: list[str],
    test_fraction: float = TEST_FRACTION,
    seed: int = SPLIT_SEED,
) -> Dataset:
    """Stratified train / held-out split with a fixed seed."""
    from sklearn.model_selection import train_test_split

    idx_tr, idx_te = train_test_split(np.arange(len(y)), test_size=test_fraction, stratify=y, random_state=seed)
    return Dataset(name, x[idx_tr], y[idx_tr], x[idx_te], y[idx_te], classes)


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``(N, C, H, W)`` float images to ``size x size`` (edges aligned to pixel
    centres, like ``torch.nn.functional.interpolate(..., mode="bilinear", align_corners=False)``)."""
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images.astype(np.float32, copy=False)

    def weights(src: int) -> np.ndarray:
        # Interpolation matrix (size x src) for one axis.
        pos = (np.arange(size) + 0.5) * src / size - 0.5
        pos = np.clip(pos, 0, src - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, src - 1)
        frac = pos - lo
        m = np.zeros((size, src))
        m[np.arange(size), lo] += 1 - frac
        m[np.arange(size), hi] += frac
        return m

    out = np.einsum("ih,nchw,jw->ncij", weights(h), images.astype(np.float64), weights(w))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def load_digits(image_size: int = 16) -> Dataset:
    """scikit-learn's digits: 1,797 8x8 grey images of 10 classes, upsampled to ``image_size``."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]  # pixel values are 0..16
    x = resize(x, image_size)
    y = bunch.target.astype(np.int64)
    return split(x, y, "digits", [str(c) for c in bunch.target_names])


class RefusedPickle(pickle.UnpicklingError):
    """A pickle that refers to something :class:`CifarUnpickler` does not build (nothing of it was run)."""


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The globals a pickled NumPy array refers to, under the module names NumPy 1.x (``numpy.core``) and
    2.x (``numpy._core``) write, mapped to this NumPy's objects (so that no module is imported by name)."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - NumPy 1.x (its numpy._core is a stub, if any)
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    found: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        # protocols 0-4 (the official files: Python 2's cPickle, protocol 2): _reconstruct, then __setstate__
        found[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        # protocol 5 (Python 3's default): _frombuffer(bytes, dtype, shape, order)
        found[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return found


class CifarUnpickler(pickle.Unpickler):
    """Reads a CIFAR-10 python file without running anything it holds.

    The official files are dicts of bytes, lists of numbers or bytes and ``uint8`` NumPy arrays, pickled
    by Python 2's cPickle (protocol 2). Unpickling them refers to three globals only: NumPy's array
    reconstruction function, ``numpy.ndarray`` and ``numpy.dtype`` (and, for files pickled again by
    Python 3, NumPy's ``_frombuffer``). :meth:`find_class` returns those and refuses every other global
    with :class:`RefusedPickle`: a crafted file cannot make the reader call ``os.system`` or import a
    module. Python 2 strings come back as ``bytes`` (``encoding="bytes"``, as the dataset's page says).
    """

    def __init__(self, file: Any) -> None:
        super().__init__(file, encoding="bytes")
        self._allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise RefusedPickle(f"it refers to {module}.{name}, which no CIFAR-10 file holds") from None


def _text_keys(value: Any) -> Any:
    """A dict read with ``encoding="bytes"`` with its ``bytes`` keys decoded (``b"data"`` -> ``"data"``)."""
    if not isinstance(value, dict):
        return value
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in value.items()}


def _is_cifar10(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "batches.meta")) or os.path.isfile(os.path.join(path, "data_batch_1"))


def load_cifar10(path: str, image_size: int = 32) -> Dataset:
    """An extracted CIFAR-10 python folder (the ``cifar-10-batches-py`` of the official archive)."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    missing = [f for f in names if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise DataError(
            f"{path!r} looks like a CIFAR-10 python folder but lacks {', '.join(missing)}; extract "
            "cifar-10-python.tar.gz and pass its cifar-10-batches-py folder"
        )

    def unpickle(name: str) -> dict:
        file = os.path.join(path, name)
        try:
            with open(file, "rb") as f:
                content = _text_keys(CifarUnpickler(f).load())
        except RefusedPickle as e:
            raise DataError(
                f"{file!r} is not a CIFAR-10 python file: {e}; nothing in it was run. Extract "
                "cifar-10-python.tar.gz again and pass its cifar-10-batches-py folder"
            ) from e
        except Exception as e:
            raise DataError(f"cannot read CIFAR-10 file {file!r}: {e}") from e
        if not isinstance(content, dict):
            raise DataError(f"CIFAR-10 file {file!r} is malformed: a {type(content).__name__}, not a dict")
        return content

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        b = unpickle(name)
        try:
            x = np.asarray(b["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(b["labels"], dtype=np.int64)
            if y.shape != (len(x),):
                raise ValueError(f"{y.size} labels for {len(x)} images")
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"CIFAR-10 file {name!r} in {path!r} is malformed: {e}") from e
        return x, y

    parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
    x_tr = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    y_tr = np.concatenate([p[1] for p in parts])
    x_te, y_te = batch("test_batch")
    x_te = x_te.astype(np.float32) / 255.0
    names = unpickle("batches.meta").get("label_names", [str(i) for i in range(10)])
    classes = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
    return Dataset("cifar10", resize(x_tr, image_size), y_tr, resize(x_te, image_size), y_te, classes)


def _class_dirs(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _read_folder(path: str, classes: list[str], image_size: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    images, labels = [], []
    for label, cls in enumerate(classes):
        cdir = os.path.join(path, cls)
        if not os.path.isdir(cdir):
            continue
        for fname in sorted(os.listdir(cdir)):
            if not fname.lower().endswith(IMAGE_EXTENSIONS):
                continue
            fpath = os.path.join(cdir, fname)
            try:
                with Image.open(fpath) as im:
                    im = im.convert("RGB").resize((image_size, image_size), Image.BICUBIC)
                    images.append(np.asarray(im, dtype=np.uint8))
            except OSError as e:
                raise DataError(f"cannot read image {fpath!r}: {e}") from e
            labels.append(label)
    if not images:
        raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of {path!r}")
    x = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return x, np.asarray(labels, dtype=np.int64)


def load_image_folder(path: str, image_size: int = 32) -> Dataset:
    """An ImageFolder-layout directory, split by its ``train/`` + ``val/``/``test/`` subfolders if it has
    them, otherwise 70/30 stratified."""
    sub = {e.name.lower(): e.path for e in os.scandir(path) if e.is_dir()}
    held = sub.get("val") or sub.get("test") or sub.get("valid") or sub.get("validation")
    name = os.path.basename(os.path.normpath(path))
    if "train" in sub and held:
        classes = _class_dirs(sub["train"])
        if not classes:
            raise DataError(f"{sub['train']!r} has no class subfolders")
        x_tr, y_tr = _read_folder(sub["train"], classes, image_size)
        x_te, y_te = _read_folder(held, classes, image_size)
        return Dataset(name, x_tr, y_tr, x_te, y_te, classes)
    classes = _class_dirs(path)
    if len(classes) < 2:
        raise DataError(
            f"{path!r} is not an image folder: expected one subfolder per class (at least two) holding "
            "image files, or train/ and val/ subfolders of that layout, or a CIFAR-10 python folder"
        )
    x, y = _read_folder(path, classes, image_size)
    counts = np.bincount(y, minlength=len(classes))
    if counts.min() < 2:
        empty = [c for c, k in zip(classes, counts) if k < 2]
        raise DataError(f"class folders with fewer than 2 images in {path!r}: {', '.join(empty)}")
    return split(x, y, name, classes)


def load_dataset(data: str | None = None, image_size: int | None = None, subset: int | None = None) -> Dataset:
    """The dataset named by ``--data`` (see the module docstring), optionally cut to ``subset`` images."""
    if data is None:
        ds = load_digits(image_size or 16)
    else:
        path = os.path.expanduser(str(data))
        if not os.path.exists(path):
            raise DataError(f"--data {data!r} does not exist")
        if not os.path.isdir(path):
            raise DataError(
                f"--data {data!r} is a file; pass a folder (ImageFolder layout or an extracted "
                "CIFAR-10 python folder such as cifar-10-batches-py)"
            )
        ds = load_cifar10(path, image_size or 32) if _is_cifar10(path) else load_image_folder(path, image_size or 32)
    return ds.subset(subset) if subset else ds
