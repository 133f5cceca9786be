"""Training and evaluation input pipelines: ``build_datasets(config.data, ...) -> DataBundle``.

    source (sources.py) -> decode (decode.py, corrupt files skipped or fatal)
      -> [cache decoded images when they fit] -> shuffle -> augment (preprocessing.py)
      -> [random erasing] -> batch -> prefetch

Training data is infinite, shuffled, augmented and batched with ``drop_remainder``; validation
data is one pass in a fixed order with evaluation preprocessing. ``decode_image`` and
``serving_preprocess`` is the same decode and evaluation preprocessing for one encoded image, which
the SavedModel's image-bytes signature runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import tensorflow as tf

from architectures.registry import Preprocessing
from configs import validation
from trainer.data import decode, randaugment, sources
from trainer.data import preprocessing as prep
from trainer.data.decode import decode_image
from trainer.data.preprocessing import eval_preprocess

CACHE_MODES = ("auto", "memory", "none")
# ``cache=auto`` keeps decoded images in memory up to this share of the free RAM.
CACHE_MEMORY_SHARE = 0.25
# Folded into an example's seed for its random-erasing draws.
_ERASING_STREAM = 0x4552


@dataclasses.dataclass
class DataBundle:
    """The datasets of a run and what the trainer needs to know about them.

    Attributes:
      train: infinite ``(float32 [B, S, S, 3], int32 [B])`` batches, shuffled, augmented,
        normalised, ``drop_remainder``, prefetched.
      val: one pass of ``(float32 [b, S, S, 3], int32 [b])`` in a fixed order with evaluation
        preprocessing; the last batch may be smaller.
      num_classes: number of classes.
      train_examples: training examples in this input pipeline's shard (corrupt ones included).
      val_examples: validation examples (not sharded; corrupt ones included).
      class_names: class names, index = label.
      batch_size: examples per batch of this input pipeline.
      augment: the training augmentation policy used (``imagenet``, ``light``, ``randaugment`` or ``none``).
      cached: whether decoded training images are cached in memory.
      task: ``classification`` (labels ``[B]``) or ``segmentation`` (masks ``[B, S, S]``, 255
        ignored; ``trainer.data.segmentation``).
    """

    train: tf.data.Dataset
    val: tf.data.Dataset
    num_classes: int
    train_examples: int
    val_examples: int
    class_names: list[str]
    batch_size: int
    augment: str
    cached: bool
    _tracker: decode.CorruptTracker = dataclasses.field(repr=False)
    task: str = "classification"
    _failures: list[str] = dataclasses.field(default_factory=list, repr=False)

    def corrupt_report(self) -> list[str]:
        """Paths (or ``shard#record`` keys) of corrupt images skipped so far, first-seen order."""
        return self._tracker.paths

    def corrupt_summary(self, shown: int = 3) -> str | None:
        """One line counting the skipped corrupt images and naming the first ``shown``; None
        when there were none."""
        paths = self.corrupt_report()
        if not paths:
            return None
        more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
        return (
            f"Skipped {len(paths)} corrupt or unreadable image(s): {', '.join(paths[:shown])}"
            f"{more} (all listed in metrics.json 'corrupt_images')."
        )

    @contextlib.contextmanager
    def reporting_failures(self):
        """Around reading these datasets: a bad example that stops tf.data (a corrupt image
        with ``on_corrupt='fail'``, a label out of range) raises ValueError with its one-line
        message instead of the graph error.
        """
        try:
            yield
        except tf.errors.OpError as error:
            message = self._tracker.failure or next(iter(self._failures), None)
            if message is None:
                raise
            raise ValueError(message) from error


def _free_memory_bytes() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0


def _should_cache(mode: str, split: sources.Split) -> bool:
    if mode == "auto":
        return split.decoded_bytes <= CACHE_MEMORY_SHARE * _free_memory_bytes()
    return mode == "memory"


def _check_numbers(data_config) -> None:
    """Keys are checked before any file is listed, so a typo fails at once."""
    validation.require(
        data_config.num_parallel_calls == -1 or data_config.num_parallel_calls >= 1,
        "num_parallel_calls",
        data_config.num_parallel_calls,
        "must be -1 (AUTOTUNE) or >= 1",
        "data.",
    )
    validation.check_range(data_config, "shuffle_buffer", low=1, prefix="data.")
    validation.check_range(
        data_config, "min_crop_area", low=0.0, high=1.0, low_open=True, prefix="data."
    )
    validation.check_range(data_config, "label_offset", low=0, prefix="data.")
    validation.check_choice(data_config, "cache", CACHE_MODES, "data.")
    randaugment.validate(data_config)


def seed_stream(seed: int) -> tf.data.Dataset:
    """An infinite stream of stateless seeds ``[2]``, one per training example."""
    return tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)


def build_datasets(
    data_config,
    *,
    image_size: int,
    preprocessing: Preprocessing,
    batch_size: int,
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
) -> DataBundle:
    """Builds the training and validation pipelines described by ``config.data``.

    Args:
      data_config: ``config.data`` (keys in ``configs/common.py``).
      image_size: square output side ``S``.
      preprocessing: the variant's normalisation and crop defaults.
      batch_size: the global batch size. With ``input_context`` each input pipeline batches
        ``input_context.get_per_replica_batch_size(batch_size)`` and reads its own shard of the
        training data (for ``strategy.distribute_datasets_from_function``); validation is not
        sharded, so every worker evaluates the whole set.
      seed: shuffling and augmentation seed (the digits split does not depend on it).
      input_context: a ``tf.distribute.InputContext``, or None for one input pipeline.

    Returns:
      A ``DataBundle``; segmentation sources (``shapes``, ``segfolder:<dir>``) give one of
      image/mask batches (``trainer.data.segmentation``).

    Raises:
      ValueError: bad source, path, or data config value; the message names it.
    """
    if image_size < 1 or batch_size < 1:
        raise ValueError(f"image_size={image_size} and batch_size={batch_size} must be >= 1.")
    from trainer.data import segmentation  # it builds on this module's DataBundle

    if segmentation.is_segmentation_source(data_config.source):
        return segmentation.build_datasets(
            data_config,
            image_size=image_size,
            preprocessing=preprocessing,
            batch_size=batch_size,
            seed=seed,
            input_context=input_context,
        )
    _check_numbers(data_config)
    source = sources.open_source(data_config, image_size=image_size, seed=seed)
    if source.num_classes < 2:
        raise ValueError(
            f"Data '{source.name}' has {source.num_classes} class(es); a classifier needs at "
            f"least two (set --config.data.num_classes or add classes)."
        )
    tracker = decode.CorruptTracker(data_config.on_corrupt)
    augment = prep.resolve_augment(data_config.augment, image_size=image_size, source=source.name)
    parallel = data_config.num_parallel_calls
    shard = None
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        shard = (input_context.num_input_pipelines, input_context.input_pipeline_id)
        seed += input_context.input_pipeline_id

    cached = _should_cache(data_config.cache, source.train)
    train = _train_dataset(
        source.train,
        data_config,
        tracker,
        image_size=image_size,
        preprocessing=preprocessing,
        augment=augment,
        cache=cached,
        seed=seed,
        shard=shard,
        parallel=parallel,
    )
    val_cache = _should_cache(
        data_config.cache,
        dataclasses.replace(
            source.val, decoded_bytes=source.val.num_examples * image_size * image_size * 3 * 4
        ),
    )
    val = _val_dataset(
        source.val,
        tracker,
        image_size=image_size,
        preprocessing=preprocessing,
        parallel=parallel,
        cache=val_cache,
    )
    train_examples = source.train.examples_in_shard(shard)
    return DataBundle(
        train=train.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE),
        val=val.batch(batch_size).prefetch(tf.data.AUTOTUNE),
        num_classes=source.num_classes,
        train_examples=train_examples,
        val_examples=source.val.num_examples,
        class_names=list(source.class_names),
        batch_size=batch_size,
        augment=augment,
        cached=cached,
        _tracker=tracker,
        _failures=source.failures,
    )


def _decoded(
    split: sources.Split,
    dataset: tf.data.Dataset,
    tracker,
    *,
    parallel: int,
    deterministic: bool,
) -> tf.data.Dataset:
    """``(payload, label, key)`` -> ``(uint8 image, label)``, corrupt files handled."""
    if not split.encoded:
        return dataset.map(lambda image, label, key: (image, label))
    return decode.map_skipping_corrupt(
        dataset,
        lambda p, y: (decode_image(p), y),
        tracker,
        num_parallel_calls=parallel,
        deterministic=deterministic,
    )


def _train_dataset(
    split, data_config, tracker, *, image_size, preprocessing, augment, cache, seed, shard, parallel
) -> tf.data.Dataset:
    min_area = data_config.min_crop_area
    erasing = data_config.random_erasing

    def policy(image, seed_pair, encoded):
        if augment == "imagenet":
            return prep.imagenet_train_preprocess(
                image, seed_pair, image_size, preprocessing, min_area=min_area, encoded=encoded
            )
        if augment == "randaugment":
            return prep.randaugment_train_preprocess(
                image,
                seed_pair,
                image_size,
                preprocessing,
                n=data_config.randaugment_n,
                m=data_config.randaugment_m,
                min_area=min_area,
                encoded=encoded,
            )
        if encoded:
            image = decode_image(image)
        if augment == "light":
            return prep.light_train_preprocess(image, seed_pair, image_size, preprocessing)
        return eval_preprocess(image, image_size, preprocessing)

    def augment_image(image, seed_pair, encoded):
        image = policy(image, seed_pair, encoded)
        if not erasing:
            return image
        erase_seed = tf.random.experimental.stateless_fold_in(seed_pair, _ERASING_STREAM)
        return randaugment.random_erasing(image, erase_seed, erasing)

    def augment_decoded(examples):
        """``(image, label, ...)`` -> ``(augmented image, label)``, one seed per example."""
        return tf.data.Dataset.zip((examples, seed_stream(seed))).map(
            lambda ex, s: (augment_image(ex[0], s, False), ex[1]),
            num_parallel_calls=parallel,
            deterministic=False,
        )

    if cache:
        # The cache replays its first pass: read it shuffled so a bounded buffer on top does not
        # start from class-sorted files.
        examples = _decoded(
            split, split.read(seed, shard), tracker, parallel=parallel, deterministic=False
        ).cache()
        examples = examples.shuffle(
            min(split.num_examples, data_config.shuffle_buffer),
            seed=seed,
            reshuffle_each_iteration=True,
        ).repeat()
        return augment_decoded(examples)

    examples = split.read(seed, shard).repeat()
    if not split.encoded:
        return augment_decoded(examples)
    # Decode and augment in one step, so JPEG crops decode only the crop window.
    examples = tf.data.Dataset.zip((examples, seed_stream(seed))).map(
        lambda ex, s: ((ex[0], s), ex[1], ex[2])
    )
    fused = decode.map_skipping_corrupt(
        examples,
        lambda payload, label: (augment_image(payload[0], payload[1], True), label),
        tracker,
        num_parallel_calls=parallel,
        deterministic=False,
    )
    return fused


def _val_dataset(split, tracker, *, image_size, preprocessing, parallel, cache):
    examples = _decoded(
        split, split.read(None, None), tracker, parallel=parallel, deterministic=True
    )
    examples = examples.map(
        lambda image, label: (eval_preprocess(image, image_size, preprocessing), label),
        num_parallel_calls=parallel,
        deterministic=True,
    )
    # Cached after preprocessing (float32): evaluation is deterministic, every pass is identical.
    return examples.cache() if cache else examples


def serving_preprocess(image_size: int, preprocessing: Preprocessing):
    """Encoded image bytes (a scalar string tensor) -> the float32 ``[S, S, 3]`` model input.

    Decoding and evaluation preprocessing exactly as the validation pipeline applies them.
    """

    def preprocess(encoded):
        return eval_preprocess(decode_image(encoded), image_size, preprocessing)

    return preprocess
