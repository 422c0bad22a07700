"""``python -m vicreg``: compute the loss and its terms on every installed backend and print them side by side.

The same random float32 pair of views goes through NumPy, PyTorch, JAX and CuPy (each one only if it is
installed and, for CuPy, a GPU is present); the rows should agree to float32 precision.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
from typing import Any

import vicreg


def _backends() -> dict[str, Callable[[Any], Any]]:
    """name -> function turning a NumPy array into that backend's array, for each installed backend."""
    found: dict[str, Callable[[Any], Any]] = {"numpy": lambda a: a}
    if importlib.util.find_spec("torch"):
        import torch

        found["torch (cpu)"] = torch.from_numpy
        if torch.cuda.is_available():
            found["torch (cuda)"] = lambda a: torch.from_numpy(a).cuda()
    if importlib.util.find_spec("jax"):
        import jax.numpy as jnp

        found["jax"] = jnp.asarray
    if importlib.util.find_spec("cupy"):
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() > 0:
                found["cupy"] = cupy.asarray
        except Exception:  # no driver or no device: CuPy cannot run here
            pass
    return found


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vicreg", description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=_at_least(2), default=256, help="batch size, at least 2 (default 256)")
    parser.add_argument("-d", type=_at_least(1), default=2048, help="embedding width (default 2048)")
    parser.add_argument("--convention", choices=vicreg.CONVENTIONS, default="official")
    args = parser.parse_args(argv)

    import numpy as np

    rng = np.random.default_rng(0)
    z1 = rng.standard_normal((args.n, args.d), dtype=np.float32)
    z2 = (z1 + 0.5 * rng.standard_normal((args.n, args.d), dtype=np.float32)).astype(np.float32)
    fields = vicreg.VICRegTerms._fields
    print(f"VICReg ({args.convention}) of a random pair, n={args.n}, d={args.d}, float32")
    print(f"{'backend':<14}" + "".join(f"{f:>13}" for f in fields))
    for name, convert in _backends().items():
        terms = vicreg.vicreg_terms(convert(z1), convert(z2), convention=args.convention)
        print(f"{name:<14}" + "".join(f"{float(getattr(terms, f)):>13.6f}" for f in fields))


if __name__ == "__main__":
    main()
