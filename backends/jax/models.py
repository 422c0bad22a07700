r"""Encoders and the VICReg expander ("projector") in flax NNX, the same architectures as
``backends/torch/models.py`` so that the two examples' results compare.

Images are NHWC (flax's layout). Initialisation follows PyTorch's: the small ResNet and the projector use
PyTorch's default layer initialisation (:math:`U(-1/\sqrt{\text{fan\_in}}, 1/\sqrt{\text{fan\_in}})`,
i.e. variance :math:`1 / (3\,\text{fan\_in})`, for weights and biases), resnet18/50 use torchvision's
(He-normal, fan-out, for convolutions). BatchNorm uses PyTorch's momentum 0.1 (flax ``momentum=0.9``) and
``eps=1e-5``; in train mode it normalises with the batch statistics and updates the running averages, in eval
mode (``model.eval()``) it uses the running averages. With ``axis_name`` (data parallel under
``jax.shard_map``) the batch statistics are averaged over the devices of that mesh axis (synchronised
BatchNorm, as the official code's ``SyncBatchNorm``), so a step equals the single-device step on the global
batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

#: PyTorch's default ``nn.Conv2d`` / ``nn.Linear`` weight initialisation, ``kaiming_uniform(a=sqrt(5))``.
torch_default_init = jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
#: torchvision's ResNet convolutions: ``kaiming_normal(mode="fan_out", nonlinearity="relu")``.
he_fan_out = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")

BN_MOMENTUM = 0.9  # flax keeps 0.9 of the old running average: PyTorch's momentum=0.1
BN_EPS = 1e-5


def batch_norm(features: int, axis_name: str | None, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(features, momentum=BN_MOMENTUM, epsilon=BN_EPS, axis_name=axis_name, rngs=rngs)


def conv(cin: int, cout: int, k: int, stride: int, init, rngs: nnx.Rngs) -> nnx.Conv:
    """Bias-free ``k x k`` convolution with PyTorch's symmetric padding ``k // 2``."""
    p = k // 2
    return nnx.Conv(
        cin, cout, (k, k), strides=stride, padding=((p, p), (p, p)), use_bias=False, kernel_init=init, rngs=rngs
    )


class BasicBlock(nnx.Module):
    """torchvision's ``BasicBlock``: ``relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))``; the shortcut
    is ``bn(conv1x1(x))`` when the stride or the width changes."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, init, axis_name, rngs: nnx.Rngs):
        self.conv1 = conv(cin, width, 3, stride, init, rngs)
        self.bn1 = batch_norm(width, axis_name, rngs)
        self.conv2 = conv(width, width, 3, 1, init, rngs)
        self.bn2 = batch_norm(width, axis_name, rngs)
        self.down = (
            nnx.Sequential(conv(cin, width, 1, stride, init, rngs), batch_norm(width, axis_name, rngs))
            if stride != 1 or cin != width
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return nnx.relu(y + (x if self.down is None else self.down(x)))


class Bottleneck(nnx.Module):
    """torchvision's ``Bottleneck`` (ResNet v1.5: the stride on the 3x3 convolution), expansion 4."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, init, axis_name, rngs: nnx.Rngs):
        cout = width * self.expansion
        self.conv1 = conv(cin, width, 1, 1, init, rngs)
        self.bn1 = batch_norm(width, axis_name, rngs)
        self.conv2 = conv(width, width, 3, stride, init, rngs)
        self.bn2 = batch_norm(width, axis_name, rngs)
        self.conv3 = conv(width, cout, 1, 1, init, rngs)
        self.bn3 = batch_norm(cout, axis_name, rngs)
        self.down = (
            nnx.Sequential(conv(cin, cout, 1, stride, init, rngs), batch_norm(cout, axis_name, rngs))
            if stride != 1 or cin != cout
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = nnx.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return nnx.relu(y + (x if self.down is None else self.down(x)))


class ResNet(nnx.Module):
    """A ResNet encoder: stem, stages of residual blocks, global average pooling -> ``(N, out_dim)``.

    ``small_stem``: a 3x3 stride-1 convolution and no max-pool (images of 64 px or less, as for CIFAR);
    otherwise the ImageNet stem (7x7 stride-2 convolution, 3x3 stride-2 max-pool).
    """

    def __init__(
        self,
        block,
        layers: Sequence[int],
        widths: Sequence[int],
        in_channels: int,
        *,
        stem_width: int,
        small_stem: bool,
        init,
        axis_name: str | None,
        rngs: nnx.Rngs,
    ):
        self.small_stem = small_stem
        k = 3 if small_stem else 7
        self.stem_conv = conv(in_channels, stem_width, k, 1 if small_stem else 2, init, rngs)
        self.stem_bn = batch_norm(stem_width, axis_name, rngs)
        blocks, c = [], stem_width
        for i, (n, w) in enumerate(zip(layers, widths)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(c, w, stride, init, axis_name, rngs))
                c = w * block.expansion
        self.blocks = nnx.List(blocks)
        self.out_dim = c

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.stem_bn(self.stem_conv(x)))
        if not self.small_stem:
            x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for block in self.blocks:
            x = block(x)
        return jnp.mean(x, axis=(1, 2))


def build_encoder(
    arch: str, in_channels: int, image_size: int, *, axis_name: str | None = None, rngs: nnx.Rngs
) -> ResNet:
    """``resnet_tiny`` (3x3 stem of 32 channels, one ``BasicBlock`` per stage at widths 32-64-128, strides
    1-2-2: 128-d features), ``resnet18`` (512-d) or ``resnet50`` (2048-d), randomly initialised."""
    if arch == "resnet_tiny":
        return ResNet(
            BasicBlock,
            (1, 1, 1),
            (32, 64, 128),
            in_channels,
            stem_width=32,
            small_stem=True,
            init=torch_default_init,
            axis_name=axis_name,
            rngs=rngs,
        )
    if arch in ("resnet18", "resnet50"):
        block, layers = (BasicBlock, (2, 2, 2, 2)) if arch == "resnet18" else (Bottleneck, (3, 4, 6, 3))
        return ResNet(
            block,
            layers,
            (64, 128, 256, 512),
            in_channels,
            stem_width=64,
            small_stem=image_size <= 64,
            init=he_fan_out,
            axis_name=axis_name,
            rngs=rngs,
        )
    raise ValueError(f"unknown --arch {arch!r}; choose resnet_tiny, resnet18 or resnet50")


class Projector(nnx.Module):
    """The official expander, ``[Linear -> BatchNorm -> ReLU]`` for every width but the last, then a
    ``Linear``, all without biases. ``dims=[8192, 8192, 8192]`` on a 2048-d ResNet-50 is the paper's.

    The official code gives the hidden ``Linear`` layers a bias, which the BatchNorm after them removes
    again: in training mode its gradient is zero but for rounding, which the optimizer would turn into
    steps that change nothing but the rounding of later steps. Without it the function is the same."""

    def __init__(self, in_dim: int, dims: Sequence[int], *, axis_name: str | None = None, rngs: nnx.Rngs):
        layers, d = [], in_dim
        for w in dims[:-1]:
            layers.append(nnx.Linear(d, w, use_bias=False, kernel_init=torch_default_init, rngs=rngs))
            layers.append(batch_norm(w, axis_name, rngs))
            d = w
        self.hidden = nnx.List(layers)
        self.out = nnx.Linear(d, dims[-1], use_bias=False, kernel_init=torch_default_init, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(0, len(self.hidden), 2):
            x = nnx.relu(self.hidden[i + 1](self.hidden[i](x)))
        return self.out(x)


class VICRegNet(nnx.Module):
    """Encoder (``backbone``) then projector; ``__call__`` gives the embeddings the loss sees, ``backbone``
    alone the representation that is evaluated."""

    def __init__(
        self,
        arch: str,
        in_channels: int,
        image_size: int,
        proj_dims: Sequence[int],
        *,
        axis_name: str | None = None,
        rngs: nnx.Rngs,
    ):
        self.backbone = build_encoder(arch, in_channels, image_size, axis_name=axis_name, rngs=rngs)
        self.projector = Projector(self.backbone.out_dim, proj_dims, axis_name=axis_name, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.projector(self.backbone(x))
