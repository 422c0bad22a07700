"""Encoders and the VICReg expander ("projector") in PyTorch."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.resnet import BasicBlock, conv1x1


class ResNetTiny(nn.Module):
    """A small ResNet for 8x8 to 32x32 images on a CPU: a 3x3 stem, then one torchvision ``BasicBlock``
    per stage at widths ``(32, 64, 128)`` and strides ``(1, 2, 2)``, global average pooling.
    Output: ``(N, widths[-1])`` features."""

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks, c = [], widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or c != w:
                down = nn.Sequential(conv1x1(c, w, stride), nn.BatchNorm2d(w))
            blocks.append(BasicBlock(c, w, stride=stride, downsample=down))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.blocks(self.stem(x))), 1)


def torchvision_resnet(arch: str, in_channels: int, image_size: int) -> nn.Module:
    """torchvision's resnet18/resnet50 (random init), classifier removed. For images of 64 px or less the
    stem becomes the small-image one (3x3 conv, stride 1, no max-pool), as for CIFAR."""
    net = {"resnet18": resnet18, "resnet50": resnet50}[arch](weights=None)
    if image_size <= 64:
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    net.out_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net


def build_encoder(arch: str, in_channels: int, image_size: int) -> nn.Module:
    if arch == "resnet_tiny":
        return ResNetTiny(in_channels)
    if arch in ("resnet18", "resnet50"):
        return torchvision_resnet(arch, in_channels, image_size)
    raise ValueError(f"unknown --arch {arch!r}")


def build_projector(in_dim: int, dims: list[int]) -> nn.Sequential:
    """The official expander, ``[Linear -> BatchNorm1d -> ReLU]`` for every width but the last, then a
    ``Linear``, all without biases. ``dims=[8192, 8192, 8192]`` on a 2048-d ResNet-50 is the paper's.

    The official code gives the hidden ``Linear`` layers a bias, which the BatchNorm after them removes
    again: in training mode its gradient is zero but for rounding, and an optimizer turns that rounding
    into steps that change nothing but how later steps round (measured at seed 0: with it, the gap between
    a 1-process and a 2-process run after 8 steps was 5 times larger). Without it the network computes the
    same function."""
    layers: list[nn.Module] = []
    d = in_dim
    for w in dims[:-1]:
        layers += [nn.Linear(d, w, bias=False), nn.BatchNorm1d(w), nn.ReLU(inplace=True)]
        d = w
    layers.append(nn.Linear(d, dims[-1], bias=False))
    return nn.Sequential(*layers)


class VICRegNet(nn.Module):
    """Encoder (``backbone``) followed by the projector; ``forward`` returns the embeddings the loss
    sees, ``backbone`` alone gives the representation that is evaluated."""

    def __init__(self, arch: str, in_channels: int, image_size: int, proj_dims: list[int]):
        super().__init__()
        self.backbone = build_encoder(arch, in_channels, image_size)
        self.projector = build_projector(self.backbone.out_dim, proj_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))
