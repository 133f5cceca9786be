"""Image preprocessing for training and evaluation: crops, resizes, flips and normalisation.

Every function works on one image ``[H, W, C]`` (uint8 or float in [0, 255]) inside a tf.data map
and returns float32 ``[size, size, 3]`` normalised as the variant expects:
``(pixel / 255 - mean) / std`` (``architectures.registry.Preprocessing``).

Randomness is stateless: each training example carries its own ``seed`` (shape ``[2]``), so a
pipeline is reproducible from the run's seed whatever the threading.
"""

from __future__ import annotations

import tensorflow as tf

from architectures.registry import Preprocessing
from configs import validation
from trainer.data import decode, randaugment

AUGMENTATIONS = ("auto", "imagenet", "light", "none", "randaugment")
# ImageNet-style crops sample aspect ratios in [3/4, 4/3] (Szegedy et al., torchvision).
CROP_ASPECT_RATIOS = (3.0 / 4.0, 4.0 / 3.0)
# Images this small (CIFAR, digits) lose the object under 8 %-area crops: use the light policy.
LIGHT_MAX_SIZE = 64


def resolve_augment(augment: str, *, image_size: int, source: str) -> str:
    """Picks the training augmentation policy; ``auto`` means light for small images and digits.

    Raises:
      ValueError: ``augment`` is not one of ``AUGMENTATIONS``.
    """
    validation.check_choice({"augment": augment}, "augment", AUGMENTATIONS, "data.")
    if augment != "auto":
        return augment
    return "light" if image_size <= LIGHT_MAX_SIZE or source == "digits" else "imagenet"


def normalize(image: tf.Tensor, preprocessing: Preprocessing) -> tf.Tensor:
    """``(image / 255 - mean) / std`` per channel, as float32 ``[..., 3]``."""
    mean = tf.constant(preprocessing.mean, tf.float32)
    std = tf.constant(preprocessing.std, tf.float32)
    return (tf.cast(image, tf.float32) / 255.0 - mean) / std


def eval_resize_size(image_size: int, preprocessing: Preprocessing) -> int:
    """Shorter side before the evaluation centre crop: ``floor(image_size / crop_fraction)``."""
    if not 0.0 < preprocessing.crop_fraction <= 1.0:
        raise ValueError(
            f"Preprocessing.crop_fraction={preprocessing.crop_fraction} must be in (0, 1]."
        )
    return int(image_size / preprocessing.crop_fraction)


def resize_shorter_side(image: tf.Tensor, size: int, method: str = "bilinear") -> tf.Tensor:
    """Resizes so the shorter side is ``size``, keeping the aspect ratio; float32 output.

    Antialiasing is on, so downscaling averages like PIL's resize instead of aliasing.
    """
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.minimum(height, width)
    new_height = tf.maximum(size, tf.cast(tf.round(height * scale), tf.int32))
    new_width = tf.maximum(size, tf.cast(tf.round(width * scale), tf.int32))
    return tf.image.resize(
        image, tf.stack([new_height, new_width]), method=method, antialias=method != "nearest"
    )


def center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """The central ``size x size`` window of an image at least that large."""
    shape = tf.shape(image)
    top = (shape[0] - size) // 2
    left = (shape[1] - size) // 2
    return image[top : top + size, left : left + size]


def _to_rgb(image: tf.Tensor) -> tf.Tensor:
    if image.shape.rank != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"Expected an image [H, W, 1 or 3], got shape {image.shape}.")
    return tf.image.grayscale_to_rgb(image) if image.shape[-1] == 1 else image


def eval_preprocess(image: tf.Tensor, image_size: int, preprocessing: Preprocessing) -> tf.Tensor:
    """Evaluation preprocessing: resize the shorter side to ``size / crop_fraction``, centre crop.

    Args:
      image: a decoded image ``[H, W, C]`` (C = 1 or 3), uint8 or float in [0, 255].
      image_size: output side ``S``.
      preprocessing: the variant's normalisation, crop fraction and interpolation.

    Returns:
      float32 ``[S, S, 3]``, normalised.
    """
    image = _to_rgb(image)
    resized = resize_shorter_side(
        image, eval_resize_size(image_size, preprocessing), preprocessing.interpolation
    )
    out = normalize(center_crop(resized, image_size), preprocessing)
    return tf.ensure_shape(out, [image_size, image_size, 3])


def light_train_preprocess(
    image: tf.Tensor, seed: tf.Tensor, image_size: int, preprocessing: Preprocessing
) -> tf.Tensor:
    """Small-image augmentation: a random translation, no flip (digits are not mirror-symmetric).

    The image is resized as for evaluation (shorter side ``S / crop_fraction``), zero-padded by
    ``S // 16`` and a random ``S x S`` window is cut, so training and evaluation see the same scale.
    """
    image = _to_rgb(image)
    side = eval_resize_size(image_size, preprocessing)
    square = center_crop(resize_shorter_side(image, side, preprocessing.interpolation), side)
    pad = image_size // 16
    padded = tf.pad(square, [[pad, pad], [pad, pad], [0, 0]])
    crop = tf.image.stateless_random_crop(padded, [image_size, image_size, 3], seed=seed)
    return normalize(crop, preprocessing)


def _sample_crop_window(image_shape: tf.Tensor, seed: tf.Tensor, min_area: float):
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape,
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=CROP_ASPECT_RATIOS,
        area_range=(min_area, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return begin, size


def _crop_and_flip(image_or_bytes, seed, image_size, preprocessing, min_area, encoded):
    """Random resized crop and flip: float32 ``[S, S, 3]`` in [0, 255], not yet normalised."""
    if not 0.0 < min_area <= 1.0:
        raise ValueError(f"config.data.min_crop_area={min_area} must be in (0, 1].")
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if encoded:
        crop = decode.decode_and_crop(
            image_or_bytes, lambda shape: _sample_crop_window(shape, crop_seed, min_area)
        )
    else:
        image = _to_rgb(image_or_bytes)
        begin, size = _sample_crop_window(tf.shape(image), crop_seed, min_area)
        crop = tf.slice(image, begin, size)
    resized = tf.image.resize(crop, [image_size, image_size], method=preprocessing.interpolation)
    return tf.image.stateless_random_flip_left_right(resized, seed=flip_seed)


def imagenet_train_preprocess(
    image_or_bytes: tf.Tensor,
    seed: tf.Tensor,
    image_size: int,
    preprocessing: Preprocessing,
    *,
    min_area: float = 0.08,
    encoded: bool = False,
) -> tf.Tensor:
    """ImageNet-style augmentation: random resized crop, resize to ``S``, random horizontal flip.

    The crop covers a uniformly drawn fraction of the area in ``[min_area, 1]`` with aspect ratio
    in ``[3/4, 4/3]`` (whole image after 10 failed attempts). For encoded JPEGs only the crop window
    is decoded, which is several times faster on large photos.

    Args:
      image_or_bytes: a decoded ``[H, W, C]`` image, or encoded bytes when ``encoded``.
      seed: int ``[2]`` stateless seed of this example.
      image_size: output side ``S``.
      preprocessing: normalisation and interpolation.
      min_area: smallest crop area fraction (0.08 for large models, 0.25 for small ones).
      encoded: whether ``image_or_bytes`` still has to be decoded.

    Returns:
      float32 ``[S, S, 3]``, normalised.
    """
    flipped = _crop_and_flip(image_or_bytes, seed, image_size, preprocessing, min_area, encoded)
    return tf.ensure_shape(normalize(flipped, preprocessing), [image_size, image_size, 3])


# Folded into an example's seed for its RandAugment draws (the crop and flip keep the seed's).
_RANDAUGMENT_STREAM = 0x5241


def randaugment_train_preprocess(
    image_or_bytes: tf.Tensor,
    seed: tf.Tensor,
    image_size: int,
    preprocessing: Preprocessing,
    *,
    n: int,
    m: float,
    min_area: float = 0.08,
    encoded: bool = False,
) -> tf.Tensor:
    """``imagenet_train_preprocess``'s crop and flip, then RandAugment (timm's order).

    RandAugment (``trainer/data/randaugment.py``) runs on the uint8 crop, before normalisation.
    Arguments as ``imagenet_train_preprocess``'s, plus ``n`` ops at magnitude ``m``.
    """
    flipped = _crop_and_flip(image_or_bytes, seed, image_size, preprocessing, min_area, encoded)
    pixels = tf.cast(tf.clip_by_value(tf.round(flipped), 0.0, 255.0), tf.uint8)
    pixels = tf.ensure_shape(pixels, [image_size, image_size, 3])
    seed = tf.random.experimental.stateless_fold_in(seed, _RANDAUGMENT_STREAM)
    augmented = randaugment.randaugment(pixels, seed, n, m)
    return tf.ensure_shape(normalize(augmented, preprocessing), [image_size, image_size, 3])
