"""Augmentation presets with ``torchvision.transforms.v2`` on image tensors (the torch side of the shared
pieces; other backends may port the same recipes, e.g. with dm-pix).

Each preset is a pair of transforms ``(view1, view2)`` acting on ONE ``(C, H, W)`` float tensor in
``[0, 1]`` and returning it normalised. (A v2 transform applied to a batch draws one set of random
parameters for the whole batch, so apply them per sample, as :class:`TwoViews` does.) Randomness comes from
torch's global generator; :class:`TwoViews` seeds it per image from ``(seed, epoch, image index)``, so an
image's views do not depend on which process, data-loading worker or batch position draws them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.transforms import v2

PRESETS = ("digits", "natural")


def digits_preset(mean: Sequence[float], std: Sequence[float]) -> tuple[v2.Transform, v2.Transform]:
    """Small grey images of glyphs: a small affine warp (scale, rotation, translation, shear), brightness
    and contrast jitter and additive Gaussian noise. No flips or crops that would change the class
    (a mirrored 2 is not a 2). Both views draw from the same distribution."""
    t = v2.Compose(
        [
            v2.RandomAffine(degrees=12, translate=(0.12, 0.12), scale=(0.8, 1.1), shear=8),
            v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4)], p=0.8),
            v2.GaussianNoise(mean=0.0, sigma=0.05, clip=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )
    return t, t


def natural_preset(size: int, mean: Sequence[float], std: Sequence[float]) -> tuple[v2.Transform, v2.Transform]:
    """The official asymmetric recipe (facebookresearch/vicreg, ``augmentations.py``): random resized crop
    (scale 0.08-1), horizontal flip, colour jitter (0.4, 0.4, 0.2, 0.1) with p=0.8, grayscale p=0.2, then
    Gaussian blur p=1.0 / 0.1 and solarization p=0.0 / 0.2 for the first / second view. The blur kernel
    is scaled to the image (23 px at 224)."""
    kernel = max(3, round(size * 0.1) // 2 * 2 + 1)

    def view(blur_p: float, solarize_p: float) -> v2.Transform:
        steps = [
            v2.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=blur_p),
            v2.RandomSolarize(threshold=0.5, p=solarize_p),
            v2.ToDtype(torch.float32),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
        return v2.Compose(steps)

    return view(1.0, 0.0), view(0.1, 0.2)


def preset(name: str, size: int, mean: Sequence[float], std: Sequence[float]):
    """``"digits"`` or ``"natural"`` -> ``(view1, view2)``."""
    if name == "digits":
        return digits_preset(mean, std)
    if name == "natural":
        return natural_preset(size, mean, std)
    raise ValueError(f"unknown augmentation preset {name!r}; choose one of {PRESETS}")


def view_seed(seed: int, epoch: int, index: int) -> int:
    """The 64-bit seed of image ``index``'s two views in ``epoch``: a hash of the three numbers
    (``numpy.random.SeedSequence``), so that nearby triples give unrelated streams."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0])


class TwoViews(torch.utils.data.Dataset):
    """A map-style dataset of ``(view1, view2)`` pairs of one image each, for a ``DataLoader``.

    ``images`` is a ``(N, C, H, W)`` float tensor in ``[0, 1]``. The views of image ``i`` are drawn with
    torch's generator seeded by :func:`view_seed` ``(seed, epoch, i)`` (set the epoch with
    :meth:`set_epoch`) inside ``torch.random.fork_rng``, so they are a function of that triple alone: the
    same whether one process or several, with or without worker processes, draw them, and the same when a
    run is resumed. The caller's generator state is left as it was.
    """

    def __init__(self, images: torch.Tensor, transforms: tuple[v2.Transform, v2.Transform], seed: int = 0):
        self.images = images
        self.t1, self.t2 = transforms
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]
        with torch.random.fork_rng(devices=[]):
            # the CPU generator alone: torch.manual_seed would also queue every accelerator's (100 us)
            torch.default_generator.manual_seed(view_seed(self.seed, self.epoch, int(i)))
            return self.t1(x), self.t2(x)
