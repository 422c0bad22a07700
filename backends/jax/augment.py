"""Augmentation presets in JAX (dm-pix), run on the device inside the jitted training step.

The recipes are those of ``backends/common/augment.py`` (torchvision), ported to pure functions of
``(image, key)`` on ONE ``(H, W, C)`` float image in ``[0, 1]``; :func:`two_views` maps them over a batch
with ``jax.vmap``, one key per image. Because every image's views depend only on that image and its key,
the views are the same whether the batch runs on one device or is split over several.

``digits`` (small grey glyphs; both views from the same distribution, no flip or crop that would change
the class):

* random affine warp, bilinear, zero fill: rotation ``U(-12, 12)`` degrees, translation ``U(-0.12, 0.12)``
  of the side on each axis, scale ``U(0.8, 1.1)``, horizontal shear ``U(-8, 8)`` degrees;
* with probability 0.8, brightness ``x * b`` then contrast ``c (x - mean) + mean``, ``b, c ~ U(0.6, 1.4)``;
* additive Gaussian noise ``sigma = 0.05``; clip to ``[0, 1]``; normalise with the data set's mean and std.

``natural`` (the official asymmetric recipe; blur p = 1.0 / 0.1 and solarisation p = 0.0 / 0.2 for the
first / second view): random resized crop (area ``U(0.08, 1)``, aspect ratio log-uniform in
``[3/4, 4/3]``), horizontal flip p = 0.5, with p = 0.8 colour jitter (brightness 0.4, contrast 0.4,
saturation 0.2, hue 0.1), grayscale p = 0.2, Gaussian blur (sigma ``U(0.1, 2)``, kernel about a tenth of
the side), solarisation (threshold 0.5), normalisation. Saturation, hue and grayscale need RGB images and
are skipped for other channel counts.

Differences from torchvision, all within the recipes' intent: bilinear instead of nearest resampling in
the affine warp, sub-pixel instead of whole-pixel translations, the colour-jitter operations in a fixed
order, crop sizes clipped to the image instead of rejection-sampled, and dm-pix's saturation (HSV scaling,
as ``tf.image``) instead of a blend with the grey image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import dm_pix as pix
import jax
import jax.numpy as jnp

PRESETS = ("digits", "natural")

Augment = Callable[[jax.Array, jax.Array], jax.Array]  # (image (H, W, C), key) -> image
TwoViews = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]  # (images, keys) -> (v1, v2)


def _uniform(key: jax.Array, low: float, high: float) -> jax.Array:
    return jax.random.uniform(key, (), jnp.float32, low, high)


def _warp(image: jax.Array, inverse: jax.Array, offset: jax.Array) -> jax.Array:
    """Resample ``image`` at ``inverse @ (y, x) + offset`` for every output pixel ``(y, x)`` (bilinear,
    zero outside), the channel axis untouched."""
    m = jnp.eye(3, dtype=image.dtype).at[:2, :2].set(inverse)
    off = jnp.zeros(3, image.dtype).at[:2].set(offset)
    return pix.affine_transform(image, m, offset=off, order=1, mode="constant", cval=0.0)


def random_affine(
    key: jax.Array,
    image: jax.Array,
    degrees: float = 12.0,
    translate: float = 0.12,
    scale: tuple[float, float] = (0.8, 1.1),
    shear: float = 8.0,
) -> jax.Array:
    r"""Random rotation, scale, horizontal shear and translation about the image centre ``c``.

    The forward map is :math:`p' = s\,R(\theta)\,S(\phi)\,(p - c) + c + t` on pixel coordinates
    ``(y, x)``; the image is resampled at the inverse map of each output pixel.
    """
    h, w = image.shape[0], image.shape[1]
    ka, kt, ks, kh = jax.random.split(key, 4)
    theta = jnp.deg2rad(_uniform(ka, -degrees, degrees))
    t = jax.random.uniform(kt, (2,), jnp.float32, -translate, translate) * jnp.array([h, w], jnp.float32)
    s = _uniform(ks, *scale)
    phi = jnp.deg2rad(_uniform(kh, -shear, shear))
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    rot = jnp.array([[cos, -sin], [sin, cos]])  # acts on (y, x)
    shr = jnp.array([[1.0, 0.0], [jnp.tan(phi), 1.0]])  # x += tan(phi) * y
    forward = s * rot @ shr
    inverse = jnp.linalg.inv(forward)
    c = jnp.array([(h - 1) / 2, (w - 1) / 2], jnp.float32)
    return _warp(image, inverse, c - inverse @ (c + t))


def random_resized_crop(key: jax.Array, image: jax.Array, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> jax.Array:
    """A crop of random area (fraction ``U(scale)``) and aspect ratio (log-uniform in ``ratio``) at a
    random position, resized (bilinear) to the image's own size."""
    h, w = image.shape[0], image.shape[1]
    ka, kr, ky, kx = jax.random.split(key, 4)
    area = _uniform(ka, *scale) * h * w
    r = jnp.exp(_uniform(kr, math.log(ratio[0]), math.log(ratio[1])))  # width / height
    ch = jnp.clip(jnp.sqrt(area / r), 1.0, h)
    cw = jnp.clip(jnp.sqrt(area * r), 1.0, w)
    y0 = _uniform(ky, 0.0, 1.0) * (h - ch)
    x0 = _uniform(kx, 0.0, 1.0) * (w - cw)
    sy, sx = ch / h, cw / w
    # output pixel centre (i + 0.5) maps to y0 + (i + 0.5) * sy in the input, centre convention - 0.5
    inverse = jnp.diag(jnp.array([sy, sx]))
    offset = jnp.array([y0 + 0.5 * sy - 0.5, x0 + 0.5 * sx - 0.5])
    return _warp(image, inverse, offset)


def _maybe(key: jax.Array, p: float, fn: Callable[[jax.Array], jax.Array], image: jax.Array) -> jax.Array:
    """``fn(image)`` with probability ``p`` (both branches are computed; images here are small)."""
    if p <= 0.0:
        return image
    if p >= 1.0:
        return fn(image)
    return jnp.where(jax.random.bernoulli(key, p), fn(image), image)


def brightness_contrast(key: jax.Array, image: jax.Array, brightness: float, contrast: float) -> jax.Array:
    kb, kc = jax.random.split(key)
    image = jnp.clip(image * _uniform(kb, 1 - brightness, 1 + brightness), 0.0, 1.0)
    return jnp.clip(pix.adjust_contrast(image, _uniform(kc, 1 - contrast, 1 + contrast)), 0.0, 1.0)


def colour_jitter(key: jax.Array, image: jax.Array, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1) -> jax.Array:
    kbc, ks, kh = jax.random.split(key, 3)
    image = brightness_contrast(kbc, image, brightness, contrast)
    if image.shape[-1] == 3:
        image = jnp.clip(pix.adjust_saturation(image, _uniform(ks, 1 - saturation, 1 + saturation)), 0.0, 1.0)
        image = jnp.clip(pix.adjust_hue(image, _uniform(kh, -hue, hue)), 0.0, 1.0)
    return image


def normalise(image: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    return (image - jnp.asarray(mean, image.dtype)) / jnp.asarray(std, image.dtype)


def digits_view(mean: Sequence[float], std: Sequence[float]) -> Augment:
    def view(image: jax.Array, key: jax.Array) -> jax.Array:
        ka, kp, kj, kn = jax.random.split(key, 4)
        x = random_affine(ka, image)
        x = _maybe(kp, 0.8, lambda im: brightness_contrast(kj, im, 0.4, 0.4), x)
        x = jnp.clip(x + 0.05 * jax.random.normal(kn, x.shape, x.dtype), 0.0, 1.0)
        return normalise(x, mean, std)

    return view


def natural_view(size: int, mean: Sequence[float], std: Sequence[float], blur_p: float, solarize_p: float) -> Augment:
    kernel = max(3, round(size * 0.1) // 2 * 2 + 1)

    def view(image: jax.Array, key: jax.Array) -> jax.Array:
        kc, kf, kp, kj, kg, kb, ks, kbp = jax.random.split(key, 8)
        x = random_resized_crop(kc, image)
        x = pix.random_flip_left_right(kf, x)
        x = _maybe(kp, 0.8, lambda im: colour_jitter(kj, im), x)
        if x.shape[-1] == 3:
            x = _maybe(kg, 0.2, lambda im: pix.rgb_to_grayscale(im, keep_dims=True), x)
        x = _maybe(kbp, blur_p, lambda im: pix.gaussian_blur(im, _uniform(kb, 0.1, 2.0), kernel), x)
        x = _maybe(ks, solarize_p, lambda im: pix.solarize(im, 0.5), x)
        return normalise(x, mean, std)

    return view


def preset(name: str, size: int, mean: Sequence[float], std: Sequence[float]) -> tuple[Augment, Augment]:
    """``"digits"`` or ``"natural"`` -> ``(view1, view2)``, each ``(image (H, W, C), key) -> image``."""
    if name == "digits":
        v = digits_view(mean, std)
        return v, v
    if name == "natural":
        return natural_view(size, mean, std, 1.0, 0.0), natural_view(size, mean, std, 0.1, 0.2)
    raise ValueError(f"unknown augmentation preset {name!r}; choose one of {PRESETS}")


def two_views(views: tuple[Augment, Augment]) -> TwoViews:
    """``(images (B, H, W, C), keys (B,)) -> (view1 (B, H, W, C), view2 (B, H, W, C))``: each image's two
    views from two keys split from its own."""
    v1, v2 = views

    def one(image: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        k1, k2 = jax.random.split(key)
        return v1(image, k1), v2(image, k2)

    return jax.vmap(one)
