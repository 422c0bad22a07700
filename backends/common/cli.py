"""The command line every training example accepts, so that all backends take the same flags.

Framework-free on purpose: every example parses and checks its arguments (:func:`build_parser`,
:func:`check_args`) before it imports torch or JAX, so a wrong flag is answered at once, with the error on
the first line (:class:`Parser`), and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any, NoReturn


class UsageError(ValueError):
    """A command-line option that cannot be honoured; the examples report it as a usage error (exit 2)."""


#: The defaults for the embedded digits dataset on a CPU. ``proj_dims`` is the expander's widths, dash
#: separated; the official ImageNet expander is "8192-8192-8192".
DEFAULTS: dict[str, Any] = {
    "data": None,
    "epochs": 20,
    "batch_size": 256,
    "lr": None,  # per optimizer: see OPTIMIZER_DEFAULTS
    "weight_decay": None,
    "warmup_epochs": 3,
    "optimizer": "lars",
    "arch": "resnet_tiny",
    "proj_dims": "512-512-512",
    "image_size": None,  # 16 for digits, 32 for CIFAR-10 and image folders
    "sim_coeff": 25.0,
    "std_coeff": 25.0,
    "cov_coeff": 1.0,
    "variance_target": 1.0,
    "seed": 0,
    "out": None,
    "resume": None,
    "workers": 0,
    "subset": None,
}

ARCHS = ("resnet_tiny", "resnet18", "resnet50")
MIN_IMAGE_SIZE = 4
OPTIMIZERS = ("adamw", "lars")
#: What ``--data`` names, for its help and its errors.
DATA_FOLDERS = (
    "an image folder (one subfolder per class, optionally under train/ and val/ or test/) or an "
    "extracted CIFAR-10 python folder (cifar-10-batches-py)"
)
#: ``--lr`` and ``--weight-decay`` when not given. LARS (the default) takes the official recipe's form,
#: a peak lr of ``base_lr * batch_size / 256``, weight decay 1e-6, but ``base_lr = 3.2`` where the official
#: ImageNet runs use 0.2: a digits run has about 100 steps, not half a million. It trains as well as AdamW
#: here (linear probe 0.987 for both) and, unlike AdamW, does not amplify rounding from step to step, so a
#: run's losses do not depend on how many processes computed it.
OPTIMIZER_DEFAULTS = {
    "adamw": {"base_lr": 4e-3, "weight_decay": 1e-4},
    "lars": {"base_lr": 3.2, "weight_decay": 1e-6},
}


def resolve_optimizer_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill ``args.lr`` / ``args.weight_decay`` left as ``None`` from :data:`OPTIMIZER_DEFAULTS`
    (LARS: ``3.2 * batch_size / 256``), in place; returns ``args``."""
    d = OPTIMIZER_DEFAULTS[args.optimizer]
    if args.lr is None:
        args.lr = d["base_lr"] * (args.batch_size / 256 if args.optimizer == "lars" else 1.0)
    if args.weight_decay is None:
        args.weight_decay = d["weight_decay"]
    return args


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def batch_size(text: str) -> int:
    """At least 2: the variance and covariance terms need two rows, and BatchNorm refuses one."""
    value = _integer(text)
    if value < 2:
        raise argparse.ArgumentTypeError(
            f"must be at least 2 (the variance and covariance need two embeddings), got {text}"
        )
    return value


def image_size(text: str) -> int:
    """At least 4: the smallest side every augmentation preset and encoder handles."""
    value = _integer(text)
    if value < MIN_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_IMAGE_SIZE} pixels, got {text}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 0.5 or 1e-4, got {text!r}") from None
    if not value >= 0:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def parse_dims(text: str) -> list[int]:
    """``"8192-8192-8192"`` -> ``[8192, 8192, 8192]``: the projector's layer widths."""
    try:
        dims = [int(part) for part in text.split("-")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected dash-separated positive integers such as 512-512-512, got {text!r}"
        ) from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"projector widths must be positive, got {text!r}")
    return dims


def plain(text: str) -> str:
    """``text`` without its reStructuredText markup, for the terminal: ``:func:`name``` and ````code````
    become ``name`` and ``code``, ``**bold**`` becomes ``bold``."""
    text = re.sub(r":[\w:]+:`~?([^`]*)`", r"\1", text)  # :func:`x`, :mod:`x`, :py:class:`~x`
    text = re.sub(r"``([^`]*)``", r"\1", text)
    return re.sub(r"\*\*([^*]*)\*\*", r"\1", text)


def check_paths(args: argparse.Namespace) -> None:
    """``UsageError`` for a ``--data`` that is not a folder, checked before any framework loads (the
    loader checks its layout). ``--out`` and ``--resume`` are checked by
    :func:`backends.common.run.resolve_out`, on the process that writes."""
    data = getattr(args, "data", None)
    if data is None:
        return
    path = os.path.expanduser(str(data))
    if not os.path.exists(path):
        raise UsageError(f"--data {data!r} does not exist; expected a folder: {DATA_FOLDERS}")
    if not os.path.isdir(path):
        raise UsageError(f"--data {data!r} is a file; expected a folder: {DATA_FOLDERS}")


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors say what is wrong on the first line, and only then where to look
    (argparse's own put a usage block of every option before the message)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n{self.prog}: see --help for the options\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default, except ``None`` (its help says what happens then); a flag's
    ``False`` reads "off". Every option needs a help text: argparse shows nothing for one without."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is argparse.SUPPRESS:
            return action.help or ""
        if action.nargs == 0 and action.default is False:
            return (action.help or "") + " (default: off)"
        return (action.help or "") + " (default: %(default)s)"


def build_parser(backend: str, description: str | None = None, **defaults: Any) -> argparse.ArgumentParser:
    """The shared ``argparse`` parser of the training examples.

    ``backend`` names the example (``"torch"``, ``"numpy"``, ``"jax"``, ``"cupy"``); it goes into the
    default output folder ``runs/<backend>-<time>``. Keyword arguments override :data:`DEFAULTS` (for
    example ``epochs=20``). A backend may add its own options to the returned parser.

    Flags: ``--data --epochs --batch-size --lr --weight-decay --warmup-epochs --optimizer --arch
    --proj-dims --image-size --sim-coeff --std-coeff --cov-coeff --variance-target --seed --out --resume
    --workers --subset``.
    """
    unknown = set(defaults) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"build_parser: unknown defaults {sorted(unknown)}")
    d = {**DEFAULTS, **defaults}
    p = Parser(
        prog=f"python -m backends.{backend}.train",
        description=plain(description or f"VICReg training example ({backend})."),
        formatter_class=_Formatter,
    )
    p.set_defaults(backend=backend)
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        default=d["data"],
        metavar="PATH",
        help=f"{DATA_FOLDERS}; default: scikit-learn's digits",
    )
    g.add_argument(
        "--image-size",
        type=image_size,
        default=d["image_size"],
        help="side of the square training images (default 16 for digits, 32 otherwise)",
    )
    g.add_argument(
        "--subset",
        type=positive_int,
        default=d["subset"],
        metavar="N",
        help="use only N training and N held-out images (stratified), for quick checks; at least --batch-size "
        "(default: all of them)",
    )
    g.add_argument("--workers", type=non_negative_int, default=d["workers"], help="data-loading worker processes")
    g = p.add_argument_group("model and optimisation")
    g.add_argument(
        "--arch",
        choices=ARCHS,
        default=d["arch"],
        help="encoder: a small ResNet for 8x8-32x32 images, or torchvision's resnet18/resnet50",
    )
    g.add_argument(
        "--proj-dims",
        type=parse_dims,
        default=d["proj_dims"],
        metavar="D-D-D",
        help='projector widths; the official one is "8192-8192-8192"',
    )
    g.add_argument("--epochs", type=positive_int, default=d["epochs"], help="passes over the training images")
    g.add_argument(
        "--batch-size",
        type=batch_size,
        default=d["batch_size"],
        help="the global batch: under several processes or devices, the sum of their shares",
    )
    g.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=d["optimizer"],
        help="LARS, as in the official recipe, or AdamW",
    )
    g.add_argument(
        "--lr",
        type=non_negative_float,
        default=d["lr"],
        help="peak learning rate, after the linear warm-up and before the cosine decay (default: "
        "3.2 x batch-size / 256 for lars; 4e-3 for adamw)",
    )
    g.add_argument(
        "--weight-decay",
        type=non_negative_float,
        default=d["weight_decay"],
        help="default: 1e-6 for lars, 1e-4 for adamw; never applied to biases and norm weights",
    )
    g.add_argument(
        "--warmup-epochs",
        type=non_negative_float,
        default=d["warmup_epochs"],
        help="epochs of linear learning-rate warm-up, fractions allowed",
    )
    g = p.add_argument_group("loss (convention 'official')")
    g.add_argument("--sim-coeff", type=non_negative_float, default=d["sim_coeff"], help="invariance weight")
    g.add_argument("--std-coeff", type=non_negative_float, default=d["std_coeff"], help="variance weight")
    g.add_argument("--cov-coeff", type=non_negative_float, default=d["cov_coeff"], help="covariance weight")
    g.add_argument(
        "--variance-target",
        type=non_negative_float,
        default=d["variance_target"],
        help="gamma, the target per-dimension standard deviation",
    )
    g = p.add_argument_group("run")
    g.add_argument(
        "--seed",
        type=non_negative_int,
        default=d["seed"],
        help="fixes the initial weights, the order of the images and every image's views",
    )
    g.add_argument(
        "--out",
        default=d["out"],
        metavar="DIR",
        help="output folder for metrics.json, curves.png and checkpoints "
        f"(default: a fresh folder runs/{backend}-<date>-<time>)",
    )
    g.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=d["resume"],
        metavar="DIR",
        help="continue from the last checkpoint of DIR (default: of --out, or of the newest "
        f"runs/{backend}-* folder that has a checkpoint)",
    )
    # Simulates an interruption after this many epochs (used by the resume test).
    p.add_argument("--stop-after", type=positive_int, default=None, help=argparse.SUPPRESS)
    return p


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace, processes: int = 1) -> argparse.Namespace:
    """Refuse, as a usage error (``parser.error``, exit status 2), values that parse but would fail later.

    ``processes``: how many processes share each batch (the launcher's world size). Checked here: a
    ``--data`` that is not a folder (:func:`check_paths`), a ``--subset`` smaller than one batch (no full
    batch to train on) and a ``--batch-size`` that does not split evenly over the processes (each would
    see a different share; the loss would still be exact, but BatchNorm and the equivalence with one
    process need equal shares). Returns ``args``.
    """
    try:
        check_paths(args)
    except UsageError as e:
        parser.error(str(e))
    if args.subset is not None and args.subset < args.batch_size:
        parser.error(
            f"--subset {args.subset} is smaller than --batch-size {args.batch_size}: there would be "
            "no full batch to train on; pass a --batch-size of at most the subset"
        )
    if processes > 1 and args.batch_size % processes:
        parser.error(
            f"--batch-size {args.batch_size} (the global batch) does not split evenly over "
            f"{processes} processes; pass a multiple of {processes}"
        )
    return args
