"""Augmentation presets with ``torchvision.transforms.v2`` on image tensors (the torch side of the shared
pieces; other backends may port the same recipes, e.g. with dm-pix).

Each preset is a pair of transforms ``(view1, view2)`` acting on ONE ``(C, H, W)`` float tensor in
``[0, 1]`` and returning it normalised. (A v2 transform applied to a batch draws one set of random
parameters for the whole batch, so apply them per sample, as :class:`TwoViews` does.) Randomness comes from
torch's global generator, so seeding it fixes the views.
"""

from __future__ import annotations

from typing import Sequence

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


def natural_preset(
    size: int, mean: Sequence[float], std: Sequence[float]
) -> tuple[v2.Transform, v2.Transform]:
    """The official asymmetric recipe (facebookresearch/vicreg, ``augmentations.py``): random resized crop
    (scale 0.08-1), horizontal flip, colour jitter (0.4, 0.4, 0.2, 0.1) with p=0.8, grayscale p=0.2, then
    Gaussian blur p=1.0 / 0.1 and solarization p=0.0 / 0.2 for the first / second view. The blur kernel
    is scaled to the image (23 px at 224)."""
    kernel = max(3, int(round(size * 0.1)) // 2 * 2 + 1)

    def view(blur_p: float, solarize_p: float) -> v2.Transform:
        steps = [
            v2.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=v2.InterpolationMode.BICUBIC,
                                 antialias=True),
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


class TwoViews(torch.utils.data.Dataset):
    """A map-style dataset of ``(view1, view2)`` pairs of one image each, for a ``DataLoader``.

    ``images`` is a ``(N, C, H, W)`` float tensor in ``[0, 1]``.
    """

    def __init__(self, images: torch.Tensor, transforms: tuple[v2.Transform, v2.Transform]):
        self.images = images
        self.t1, self.t2 = transforms

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]
        return self.t1(x), self.t2(x)
