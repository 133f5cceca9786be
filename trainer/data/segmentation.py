"""Segmentation data: images with per-pixel class masks, augmented jointly.

Sources (``config.data.source``):

* ``shapes``: seeded synthetic scenes, no download. Circles, squares and triangles (classes 1-3,
  0 is background) of varied sizes and noisy colours, overlapping, on textured noisy backgrounds;
  masks are exact (a pixel belongs to the topmost shape covering its centre).
  ``data.synthetic_examples`` scenes, ``data.val_fraction`` of them for validation.
* ``segfolder:<dir>``: real data in the PASCAL VOC layout: ``JPEGImages/<id>.jpg`` and
  ``SegmentationClass/<id>.png`` listed by ``ImageSets/Segmentation/{train,val}.txt``; or
  ``<dir>/{train,val}/{images,masks}/`` with masks named like their images (``.png``). Masks are
  palette PNGs (their indices are the labels, as VOC's) or grey-level label ids; 255 is ignored.
  The class count is ``data.num_classes``, else the largest label seen + 1; class names come from
  ``<dir>/class_names.txt`` (one a line) when present.

Training: resize the shorter side to ``S``, scale by a random factor in ``[data.min_scale,
data.max_scale]``, pad to at least ``S`` (image with grey, mask with the ignore label), cut one
random ``S×S`` window from both, flip both left-right with probability 1/2. Masks are always
resized with nearest neighbour, so labels are never blended. Evaluation: shorter side to ``S``,
centre crop. Batches are ``(float32 [B, S, S, 3], int32 [B, S, S])``.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from architectures.registry import Preprocessing
from configs import validation
from deploy.segmentation_metrics import IGNORE_LABEL
from trainer.data import decode, sources
from trainer.data import preprocessing as prep
from trainer.data.pipeline import DataBundle

SHAPE_CLASSES = ("background", "circle", "square", "triangle")
SOURCES = ("shapes", "segfolder:<dir>")
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
# Image padding of the random crop: mid-grey, about the mean pixel.
_PAD_VALUE = 128.0


def is_segmentation_source(source: str) -> bool:
    """Whether ``config.data.source`` names a segmentation source (``SOURCES``)."""
    return source == "shapes" or source.startswith("segfolder:")


# -- the synthetic shapes ---------------------------------------------------------------------


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random colour gradient with stripes and pixel noise, float ``[S, S, 3]`` in [0, 255]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(0, 255, (2, 3))
    angle = rng.uniform(0, np.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
    image = base[0] + (base[1] - base[0]) * np.clip(ramp, 0, 1)
    frequency, phase = rng.uniform(2, 10), rng.uniform(0, 2 * np.pi)
    stripes = np.sin(2 * np.pi * frequency * (xx * np.sin(angle) - yy * np.cos(angle)) + phase)
    image += rng.uniform(10, 40) * stripes[..., None]
    image += rng.normal(0, rng.uniform(5, 25), image.shape)
    return np.clip(image, 0, 255)


def _shape_mask(kind: int, size: int, cy: float, cx: float, radius: float, angle: float):
    """Boolean ``[S, S]``: pixel centres inside a circle (1), square (2) or triangle (3)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dy, dx = yy - cy, xx - cx
    if kind == 1:
        return dy * dy + dx * dx <= radius * radius
    # Rotate into the shape's frame.
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    if kind == 2:
        half = radius * 0.85
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    # Equilateral triangle inscribed in the circle of ``radius``: three half-planes.
    inside = np.ones_like(u, dtype=bool)
    for k in range(3):
        theta = angle + 2 * np.pi * k / 3
        inside &= np.cos(theta) * dx + np.sin(theta) * dy <= radius / 2
    return inside


def shapes_scene(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One seeded scene: uint8 image ``[S, S, 3]`` and uint8 mask ``[S, S]`` (labels 0-3).

    1 to 4 shapes with radii from 15 % to 30 % of the side, at any position (overlapping, partly
    outside), each of its own noisy colour; later shapes are drawn on top.
    """
    rng = np.random.default_rng(seed)
    image = _texture(rng, size)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, 5)):
        kind = int(rng.integers(1, len(SHAPE_CLASSES)))
        radius = rng.uniform(0.15, 0.3) * size
        cy, cx = rng.uniform(0.1, 0.9, 2) * size
        inside = _shape_mask(kind, size, cy, cx, radius, rng.uniform(0, 2 * np.pi))
        # A flat random colour with its own noise: shapes differ from the background by their
        # outline and fill, and from each other only by their outline (colours are not classes).
        fill = rng.uniform(0, 255, 3) + rng.normal(0, rng.uniform(3, 15), (size, size, 3))
        image[inside] = np.clip(fill, 0, 255)[inside]
        mask[inside] = kind
    return image.astype(np.uint8), mask


def _shapes_arrays(count: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    scenes = [shapes_scene(seed * 1_000_003 + i, size) for i in range(count)]
    return np.stack([s[0] for s in scenes]), np.stack([s[1] for s in scenes])


# -- segfolder ----------------------------------------------------------------------------------


def read_mask(path: str) -> np.ndarray:
    """A PNG mask as uint8 label ids ``[H, W]``: palette indices, or grey levels.

    Raises:
      ValueError: an RGB mask (colours are not labels), naming the file.
    """
    from PIL import Image

    with Image.open(path) as mask:
        if mask.mode not in ("P", "L", "I", "I;16"):
            raise ValueError(
                f"Mask '{path}' is a {mask.mode} image; segfolder masks must be palette PNGs "
                f"(as PASCAL VOC's) or grey-level label ids (0..classes-1, 255 = ignore)."
            )
        return np.asarray(mask, dtype=np.uint8)


def _segfolder_pairs(directory: str, split: str) -> list[tuple[str, str]]:
    """``(image path, mask path)`` of one split, in the VOC layout or train/val folders."""
    list_file = os.path.join(directory, "ImageSets", "Segmentation", f"{split}.txt")
    if os.path.isfile(list_file):
        with open(list_file) as f:
            ids = [line.strip() for line in f if line.strip()]
        pairs = [
            (
                os.path.join(directory, "JPEGImages", f"{name}.jpg"),
                os.path.join(directory, "SegmentationClass", f"{name}.png"),
            )
            for name in ids
        ]
    else:
        images_dir = os.path.join(directory, split, "images")
        if not os.path.isdir(images_dir):
            raise ValueError(
                f"segfolder '{directory}' has neither ImageSets/Segmentation/{split}.txt (PASCAL "
                f"VOC layout) nor {split}/images/ and {split}/masks/ folders."
            )
        names = sorted(
            n for n in os.listdir(images_dir) if n.lower().endswith(sources.IMAGE_EXTENSIONS)
        )
        pairs = [
            (
                os.path.join(images_dir, name),
                os.path.join(directory, split, "masks", os.path.splitext(name)[0] + ".png"),
            )
            for name in names
        ]
    missing = [p for pair in pairs for p in pair if not os.path.isfile(p)]
    if missing or not pairs:
        raise ValueError(
            f"segfolder '{directory}' split '{split}': "
            + (f"{len(missing)} listed file(s) missing, e.g. '{missing[0]}'." if missing else "")
            + ("no examples." if not pairs else "")
        )
    return pairs


def _segfolder_class_names(directory: str, data_config, largest_label: int) -> list[str]:
    names_file = os.path.join(directory, "class_names.txt")
    if os.path.isfile(names_file):
        with open(names_file) as f:
            names = [line.strip() for line in f if line.strip()]
    else:
        count = data_config.num_classes or largest_label + 1
        names = list(VOC_CLASSES) if count == len(VOC_CLASSES) else [str(i) for i in range(count)]
    if largest_label >= len(names):
        raise ValueError(
            f"segfolder '{directory}' has masks with label {largest_label} but "
            f"{len(names)} classes; set data.num_classes (or class_names.txt) to at least "
            f"{largest_label + 1} (255 is the ignore label)."
        )
    return names


# -- joint augmentation -------------------------------------------------------------------------


def _resize_pair(image, mask, height, width):
    """Image bilinear (float32), mask nearest neighbour (uint8)."""
    image = tf.image.resize(image, tf.stack([height, width]), method="bilinear")
    mask = tf.image.resize(mask[..., None], tf.stack([height, width]), method="nearest")
    return image, tf.cast(mask[..., 0], tf.uint8)


def _shorter_side_to(image, mask, size):
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.reduce_min(shape)
    new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), size)
    return _resize_pair(image, mask, new[0], new[1])


def train_augment(image, mask, seed, size: int, *, min_scale: float, max_scale: float):
    """Random scale, pad, crop and flip applied identically to an image and its mask.

    Args:
      image: uint8 or float ``[H, W, 3]``.
      mask: uint8 ``[H, W]`` labels.
      seed: int ``[2]`` stateless seed.
      size: output side ``S``.
      min_scale, max_scale: range of the random scale factor (after the shorter side is ``S``).

    Returns:
      float32 ``[S, S, 3]`` in [0, 255] (not normalised) and uint8 ``[S, S]``; pixels padded in
      are ``IGNORE_LABEL``.
    """
    seeds = tf.random.experimental.stateless_split(seed, 3)
    image = tf.cast(image, tf.float32)
    image, mask = _shorter_side_to(image, mask, size)
    scale = tf.random.stateless_uniform([], seeds[0], min_scale, max_scale)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scaled = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), 1)
    image, mask = _resize_pair(image, mask, scaled[0], scaled[1])
    pad_h, pad_w = tf.maximum(size - scaled[0], 0), tf.maximum(size - scaled[1], 0)
    paddings = [[0, pad_h], [0, pad_w]]
    image = tf.pad(image - _PAD_VALUE, [*paddings, [0, 0]]) + _PAD_VALUE
    mask = tf.pad(tf.cast(mask, tf.int32) - IGNORE_LABEL, paddings) + IGNORE_LABEL
    # One window for both: crop the image with the mask as a fourth channel.
    stacked = tf.concat([image, tf.cast(mask, tf.float32)[..., None]], axis=-1)
    stacked = tf.image.stateless_random_crop(stacked, [size, size, 4], seed=seeds[1])
    stacked = tf.image.stateless_random_flip_left_right(stacked, seed=seeds[2])
    return stacked[..., :3], tf.cast(stacked[..., 3], tf.uint8)


def eval_resize(image, mask, size: int):
    """Shorter side to ``S`` (mask: nearest neighbour), centre ``S×S`` crop of both."""
    image, mask = _shorter_side_to(tf.cast(image, tf.float32), mask, size)
    return prep.center_crop(image, size), prep.center_crop(mask, size)


# -- the bundle ---------------------------------------------------------------------------------


def _finish_example(image, mask, size: int, preprocessing: Preprocessing):
    image = tf.ensure_shape(prep.normalize(image, preprocessing), [size, size, 3])
    return image, tf.ensure_shape(tf.cast(mask, tf.int32), [size, size])


def build_datasets(
    data_config,
    *,
    image_size: int,
    preprocessing: Preprocessing,
    batch_size: int,
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
) -> DataBundle:
    """``trainer.data.build_datasets`` for a segmentation source (see the module docstring).

    Returns:
      A ``DataBundle`` with ``task="segmentation"``: ``(float32 [B, S, S, 3], int32 [B, S, S])``
      batches, 255 where pixels are ignored.

    Raises:
      ValueError: a bad source, path or value, named.
    """
    validation.check_range(data_config, "min_scale", low=0.0, low_open=True, prefix="data.")
    validation.check_range(data_config, "max_scale", low=data_config.min_scale, prefix="data.")
    source = data_config.source
    if source == "shapes":
        validation.check_range(data_config, "synthetic_examples", low=2, prefix="data.")
        count = data_config.synthetic_examples
        val_count = max(1, int(round(count * data_config.val_fraction)))
        # The scenes do not move with the run's seed (validation stays comparable); drawn at
        # the training size so a scale of 1 is the scene itself.
        images, masks = _shapes_arrays(count, image_size, seed=0)
        train = tf.data.Dataset.from_tensor_slices((images[val_count:], masks[val_count:]))
        val = tf.data.Dataset.from_tensor_slices((images[:val_count], masks[:val_count]))
        class_names = list(SHAPE_CLASSES)
        train_count = count - val_count
    elif source.startswith("segfolder:") and source.partition(":")[2]:
        directory = source.partition(":")[2]
        if not os.path.isdir(directory):
            raise ValueError(f"segfolder directory '{directory}' does not exist.")
        splits = {split: _segfolder_pairs(directory, split) for split in ("train", "val")}
        if data_config.num_classes is None:
            # The class count is the largest label: every mask is read once to find it.
            largest = max(
                int(np.max(labels[labels != IGNORE_LABEL], initial=0))
                for labels in (read_mask(m) for pairs in splits.values() for _, m in pairs)
            )
        else:
            largest = data_config.num_classes - 1
        class_names = _segfolder_class_names(directory, data_config, largest)

        def load(image_path, mask_path):
            mask = tf.numpy_function(
                lambda path: read_mask(path.decode()), [mask_path], tf.uint8, stateful=False
            )
            return decode.decode_image(tf.io.read_file(image_path)), tf.ensure_shape(
                mask, [None, None]
            )

        def dataset(split):
            images, masks = zip(*splits[split], strict=True)
            return tf.data.Dataset.from_tensor_slices((list(images), list(masks))).map(
                load, num_parallel_calls=tf.data.AUTOTUNE
            )

        train, val = dataset("train"), dataset("val")
        train_count = len(splits["train"])
        val_count = len(splits["val"])
    else:
        raise ValueError(
            f"Unknown segmentation data source '{source}'; valid ones are {', '.join(SOURCES)} "
            f"(set --config.data.source)."
        )
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        train = train.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        seed += input_context.input_pipeline_id
    augment = data_config.augment != "none"
    min_scale, max_scale = data_config.min_scale, data_config.max_scale

    def augment_example(example, example_seed):
        image, mask = example
        if augment:
            image, mask = train_augment(
                image, mask, example_seed, image_size, min_scale=min_scale, max_scale=max_scale
            )
        else:
            image, mask = eval_resize(image, mask, image_size)
        return _finish_example(image, mask, image_size, preprocessing)

    train = train.cache().shuffle(train_count, seed=seed, reshuffle_each_iteration=True).repeat()
    seeds = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)
    train = tf.data.Dataset.zip((train, seeds)).map(
        augment_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False
    )
    val = val.map(
        lambda image, mask: _finish_example(
            *eval_resize(image, mask, image_size), image_size, preprocessing
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).cache()
    return DataBundle(
        train=train.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE),
        val=val.batch(batch_size).prefetch(tf.data.AUTOTUNE),
        num_classes=len(class_names),
        train_examples=train_count,
        val_examples=val_count,
        class_names=class_names,
        batch_size=batch_size,
        augment="segmentation" if augment else "none",
        cached=True,
        _tracker=decode.CorruptTracker("fail"),
        task="segmentation",
    )
