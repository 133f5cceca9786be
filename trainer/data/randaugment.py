"""RandAugment (Cubuk et al., 2020) and random erasing (Zhong et al., 2020) as stateless TF ops.

``randaugment(image, seed, n, m)`` applies ``n`` operations drawn uniformly (with replacement)
from ``OPS``, each with probability 1/2 (timm's ``rand-m9-n2`` policy, ``_RAND_INCREASING``
op set), at magnitude ``m`` in [0, 10]. With ``f = m / 10`` the operations are:

=================  ==========================================================================
auto_contrast      each channel stretched to [0, 255] (PIL ``ImageOps.autocontrast``)
equalize           per-channel histogram equalisation (PIL ``ImageOps.equalize``)
invert             ``255 - x``
rotate             ``±30 f`` degrees about the centre
posterize          keep ``8 - int(4 f)`` bits
solarize           invert pixels ``>= 256 - int(256 f)``
solarize_add       add ``int(110 f)`` to pixels ``< 128``, clipped
color              blend with the grayscale image, factor ``1 ± 0.9 f``
contrast           blend with the mean gray level, factor ``1 ± 0.9 f``
brightness         blend with black, factor ``1 ± 0.9 f``
sharpness          blend with PIL's 3×3 SMOOTH filter, factor ``1 ± 0.9 f``
shear_x, shear_y   shear by ``±0.3 f``
translate_x, _y    shift by ``±0.45 f`` of the side
=================  ==========================================================================

Images are uint8 ``[H, W, 3]``; each op returns uint8. Blends and geometric ops follow PIL's
arithmetic (blend truncates; affine maps sample pixel centres, nearest neighbour, gray 128
fill), so each op matches PIL on the same image (tests/test_recipes_augment.py). All
randomness comes from the per-example stateless ``seed``: the same seed gives the same image.

``random_erasing(image, seed, probability)`` replaces, with that probability, a box of area
``[0.02, 1/3]`` of the image and aspect ratio ``[0.3, 1/0.3]`` (log-uniform) by per-pixel normal
noise, on the normalised image (timm's ``RandomErasing(mode="pixel")``; one attempt, the box
clipped to the image instead of timm's up to 10 redraws).
"""

from __future__ import annotations

import math

import tensorflow as tf

from configs import validation

MAX_MAGNITUDE = 10.0
FILL = 128  # gray fill of the geometric ops' uncovered area (TF models' and AutoAugment's)
APPLY_PROBABILITY = 0.5
ERASE_AREA = (0.02, 1.0 / 3.0)
ERASE_LOG_RATIO = (math.log(0.3), math.log(1.0 / 0.3))


def validate(data_config) -> None:
    """``randaugment_n`` >= 0 integer, ``randaugment_m`` in [0, 10], ``random_erasing`` in [0, 1]."""
    validation.check_range(data_config, "randaugment_n", low=0, integer=True, prefix="data.")
    validation.check_range(
        data_config, "randaugment_m", low=0.0, high=MAX_MAGNITUDE, prefix="data."
    )
    validation.check_range(data_config, "random_erasing", low=0.0, high=1.0, prefix="data.")


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor) -> tf.Tensor:
    """PIL's ``Image.blend(degenerate, image, factor)``: float32, clipped, truncated to uint8."""
    low = tf.cast(degenerate, tf.float32)
    mixed = low + tf.cast(factor, tf.float32) * (tf.cast(image, tf.float32) - low)
    return tf.cast(tf.clip_by_value(mixed, 0.0, 255.0), tf.uint8)


def grayscale(image: tf.Tensor) -> tf.Tensor:
    """PIL's RGB -> L conversion, exactly: ``(19595 R + 38470 G + 7471 B + 32768) >> 16``."""
    rgb = tf.cast(image, tf.int32)
    weighted = rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 32768
    return tf.cast(tf.bitwise.right_shift(weighted, 16), tf.uint8)[..., None]


def auto_contrast(image: tf.Tensor) -> tf.Tensor:
    x = tf.cast(image, tf.float64)  # PIL's lookup table is computed in double precision
    low = tf.reduce_min(x, axis=[0, 1])
    high = tf.reduce_max(x, axis=[0, 1])
    scale = 255.0 / tf.maximum(high - low, 1.0)
    stretched = tf.cast(tf.clip_by_value(x * scale - low * scale, 0.0, 255.0), tf.uint8)
    return tf.where(high > low, stretched, image)


def _equalize_channel(channel: tf.Tensor) -> tf.Tensor:
    values = tf.cast(channel, tf.int32)
    histogram = tf.math.bincount(tf.reshape(values, [-1]), minlength=256, maxlength=256)
    nonzero = tf.boolean_mask(histogram, histogram > 0)
    step = (tf.reduce_sum(histogram) - nonzero[-1]) // 255
    safe_step = tf.maximum(step, 1)
    lut = (tf.cumsum(histogram, exclusive=True) + safe_step // 2) // safe_step
    lut = tf.clip_by_value(lut, 0, 255)
    equalized = tf.gather(lut, values)
    return tf.cast(tf.where(step > 0, equalized, values), tf.uint8)


def equalize(image: tf.Tensor) -> tf.Tensor:
    return tf.stack([_equalize_channel(image[..., c]) for c in range(3)], axis=-1)


def invert(image: tf.Tensor) -> tf.Tensor:
    return 255 - image


def posterize(image: tf.Tensor, bits) -> tf.Tensor:
    shift = tf.cast(8 - bits, tf.uint8)
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image: tf.Tensor, threshold) -> tf.Tensor:
    return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image: tf.Tensor, addition, threshold: int = 128) -> tf.Tensor:
    values = tf.cast(image, tf.int32)
    added = tf.cast(tf.minimum(values + addition, 255), tf.uint8)
    return tf.where(values < threshold, added, image)


def color(image: tf.Tensor, factor) -> tf.Tensor:
    return _blend(tf.image.grayscale_to_rgb(grayscale(image)), image, factor)


def contrast(image: tf.Tensor, factor) -> tf.Tensor:
    gray = tf.cast(grayscale(image), tf.float64)
    mean = tf.cast(tf.floor(tf.reduce_mean(gray) + 0.5), tf.uint8)
    return _blend(tf.fill(tf.shape(image), mean), image, factor)


def brightness(image: tf.Tensor, factor) -> tf.Tensor:
    return _blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor) -> tf.Tensor:
    """Blend with PIL's ``ImageFilter.SMOOTH`` (3×3, centre 5, others 1, / 13; borders kept)."""
    x = tf.cast(image, tf.float32)[None]
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "VALID")[0]
    smooth = tf.cast(tf.clip_by_value(tf.floor(smooth + 0.5), 0.0, 255.0), tf.uint8)
    degenerate = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
    shape = tf.shape(image)
    interior = tf.pad(tf.ones(shape[:2] - 2, tf.bool), [[1, 1], [1, 1]])[..., None]
    return _blend(tf.where(interior, degenerate, image), image, factor)


def affine(image: tf.Tensor, matrix) -> tf.Tensor:
    """PIL's ``image.transform(size, AFFINE, matrix, NEAREST, fillcolor=128)``.

    ``matrix = (a, b, c, d, e, f)`` maps an output pixel centre ``(x + .5, y + .5)`` to the input
    point ``(a x + b y + c, d x + e y + f)``, which falls in the input pixel ``floor(...)``. TF's
    transform samples ``round`` of the same map at ``(x, y)``, hence the half-pixel shifts.
    """
    a, b, c, d, e, f = (tf.cast(v, tf.float32) for v in matrix)
    transform = tf.stack([a, b, c + 0.5 * (a + b) - 0.5, d, e, f + 0.5 * (d + e) - 0.5, 0.0, 0.0])[
        None
    ]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform,
        output_shape=tf.shape(image)[:2],
        fill_value=float(FILL),
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )
    return out[0]


def rotate(image: tf.Tensor, degrees) -> tf.Tensor:
    """Counter-clockwise about the image centre, as PIL's ``image.rotate(degrees)``."""
    shape = tf.cast(tf.shape(image), tf.float32)
    cx, cy = shape[1] / 2.0, shape[0] / 2.0
    theta = -tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    a, b = tf.cos(theta), tf.sin(theta)
    d, e = -tf.sin(theta), tf.cos(theta)
    return affine(image, (a, b, a * -cx + b * -cy + cx, d, e, d * -cx + e * -cy + cy))


def shear_x(image: tf.Tensor, factor) -> tf.Tensor:
    return affine(image, (1.0, factor, 0.0, 0.0, 1.0, 0.0))


def shear_y(image: tf.Tensor, factor) -> tf.Tensor:
    return affine(image, (1.0, 0.0, 0.0, factor, 1.0, 0.0))


def translate_x(image: tf.Tensor, pixels) -> tf.Tensor:
    return affine(image, (1.0, 0.0, pixels, 0.0, 1.0, 0.0))


def translate_y(image: tf.Tensor, pixels) -> tf.Tensor:
    return affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, pixels))


def _enhance_factor(f, sign):
    return 1.0 + 0.9 * f * sign


def _ops(image: tf.Tensor, f: float, sign: tf.Tensor) -> dict:
    """Each op as a thunk at fraction ``f = m / 10`` of full strength; ``sign`` is ±1."""
    side = tf.cast(tf.shape(image)[:2], tf.float32)
    return {
        "auto_contrast": lambda: auto_contrast(image),
        "equalize": lambda: equalize(image),
        "invert": lambda: invert(image),
        "rotate": lambda: rotate(image, 30.0 * f * sign),
        "posterize": lambda: posterize(image, 8 - int(4 * f)),
        "solarize": lambda: solarize(image, 256 - int(256 * f)),
        "solarize_add": lambda: solarize_add(image, int(110 * f)),
        "color": lambda: color(image, _enhance_factor(f, sign)),
        "contrast": lambda: contrast(image, _enhance_factor(f, sign)),
        "brightness": lambda: brightness(image, _enhance_factor(f, sign)),
        "sharpness": lambda: sharpness(image, _enhance_factor(f, sign)),
        "shear_x": lambda: shear_x(image, 0.3 * f * sign),
        "shear_y": lambda: shear_y(image, 0.3 * f * sign),
        "translate_x": lambda: translate_x(image, 0.45 * f * sign * side[1]),
        "translate_y": lambda: translate_y(image, 0.45 * f * sign * side[0]),
    }


OPS = (
    "auto_contrast",
    "equalize",
    "invert",
    "rotate",
    "posterize",
    "solarize",
    "solarize_add",
    "color",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)


def randaugment(image: tf.Tensor, seed: tf.Tensor, n: int, m: float) -> tf.Tensor:
    """``n`` random ops of ``OPS`` at magnitude ``m``, each applied with probability 1/2.

    Args:
      image: uint8 ``[H, W, 3]``.
      seed: int ``[2]`` stateless seed.
      n: number of ops drawn.
      m: magnitude in [0, 10].

    Returns:
      uint8 ``[H, W, 3]``.
    """
    f = float(m) / MAX_MAGNITUDE
    for op_seed in tf.unstack(tf.random.experimental.stateless_split(seed, max(n, 1)))[:n]:
        pick_seed, apply_seed, sign_seed = tf.unstack(
            tf.random.experimental.stateless_split(op_seed, 3)
        )
        index = tf.random.stateless_uniform([], pick_seed, 0, len(OPS), dtype=tf.int32)
        sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
        ops = _ops(image, f, sign)
        branches = [ops[name] for name in OPS]
        changed = tf.switch_case(index, branches)
        apply = tf.random.stateless_uniform([], apply_seed) < APPLY_PROBABILITY
        image = tf.ensure_shape(tf.where(apply, changed, image), image.shape)
    return image


def random_erasing(image: tf.Tensor, seed: tf.Tensor, probability: float) -> tf.Tensor:
    """Erases one random box with per-pixel N(0, 1) noise with ``probability`` (normalised image).

    Args:
      image: float32 ``[H, W, C]``, normalised.
      seed: int ``[2]`` stateless seed.
      probability: chance that the image is erased at all.
    """
    apply_seed, area_seed, ratio_seed, place_seed, noise_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 5)
    )
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    area = tf.cast(height * width, tf.float32) * tf.random.stateless_uniform(
        [], area_seed, *ERASE_AREA
    )
    ratio = tf.exp(tf.random.stateless_uniform([], ratio_seed, *ERASE_LOG_RATIO))
    box_h = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area * ratio)), tf.int32), 1, height)
    box_w = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area / ratio)), tf.int32), 1, width)
    corner = tf.random.stateless_uniform(
        [2], place_seed, minval=0, maxval=tf.int32.max, dtype=tf.int32
    ) % tf.stack([height - box_h + 1, width - box_w + 1])
    rows, cols = tf.range(height), tf.range(width)
    inside = ((rows >= corner[0]) & (rows < corner[0] + box_h))[:, None] & (
        (cols >= corner[1]) & (cols < corner[1] + box_w)
    )[None, :]
    noise = tf.random.stateless_normal(shape, noise_seed, dtype=image.dtype)
    erased = tf.where(inside[..., None], noise, image)
    apply = tf.random.stateless_uniform([], apply_seed) < probability
    return tf.where(apply, erased, image)
