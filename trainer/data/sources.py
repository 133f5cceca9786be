"""Data sources: where examples come from, before decoding and preprocessing.

``open_source(data_config, image_size=..., seed=...)`` parses ``config.data.source`` and returns a
``Source`` with a ``train`` and a ``val`` ``Split``. A split reads elements
``(payload, label, key)``: ``payload`` is encoded image bytes (``Split.encoded``) or a uint8
``[H, W, 3]`` image, ``label`` an int32 class index, ``key`` a string naming the example (a file
path, ``shard#record``) so a corrupt one can be reported.

Sources:
  digits           scikit-learn's 1,797 real 8x8 digits, scaled to 0..255, upsampled (bilinear) to
                   the image size, gray -> RGB; a fixed stratified train/val split
                   (``val_fraction``), identical on every run and machine.
  synthetic        random uint8 images, ``synthetic_examples`` for train and ``val_fraction`` of that
                   for val, ``num_classes`` (default 10) balanced classes; deterministic by seed.
  folder:<dir>     ``<dir>/train/<class>/*.jpg|jpeg|png|bmp|gif`` and ``<dir>/val/<class>/...``
                   (sub-folders of a class are included); classes are the sorted folder names.
  tfrecord:<glob>  ImageNet-format ``tf.train.Example`` shards (``image/encoded``,
                   ``image/class/label`` minus ``label_offset``). A glob containing ``{split}``
                   is expanded with ``train`` and ``validation``; otherwise the glob's matches are
                   split by file name: ``train*`` for train and ``validation*``/``val*`` for val
                   (the names ImageNet's ``build_imagenet_data.py`` writes). ``num_classes`` is
                   required, since counting labels would read every shard.
  tfds:<name>      a TensorFlow Datasets dataset already prepared under ``data_dir`` (splits
                   ``train`` and ``validation``, else ``test``; features ``label`` and one image);
                   needs ``tensorflow-datasets``. Corrupt images are reported by ``tfds_id``.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from configs import validation

SOURCES = ("digits", "synthetic", "folder:<dir>", "tfrecord:<glob>", "tfds:<name>")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# The digits split must not move with the run's seed: validation numbers stay comparable.
DIGITS_SPLIT_SEED = 0
# Photos decode to roughly this many times their JPEG size; used to decide whether a cache fits.
DECODED_PER_ENCODED_BYTE = 12
TFRECORD_CYCLE_LENGTH = 16


@dataclasses.dataclass
class Split:
    """One split of a source.

    Attributes:
      read: ``(shuffle_seed, shard) -> tf.data.Dataset`` of ``(payload, label, key)``, one pass.
        ``shuffle_seed=None`` gives a fixed order; an int gives an order reshuffled on every
        iteration (files, and records within ``shuffle_buffer``). ``shard=(count, index)`` keeps
        one of ``count`` disjoint parts.
      num_examples: examples in the split (before sharding).
      encoded: whether payloads are encoded bytes.
      decoded_bytes: estimated bytes of all decoded images, to decide whether caching fits.
      file_counts: examples per file for sources sharded by file (TFRecord), else None.
    """

    read: Callable[[int | None, tuple[int, int] | None], tf.data.Dataset]
    num_examples: int
    encoded: bool
    decoded_bytes: int
    file_counts: list[int] | None = None

    def examples_in_shard(self, shard: tuple[int, int] | None) -> int:
        """Examples that ``read(..., shard)`` yields (corrupt ones included)."""
        if shard is None:
            return self.num_examples
        count, index = shard
        if self.file_counts is not None and len(self.file_counts) >= count:
            return sum(self.file_counts[index::count])
        return len(range(index, self.num_examples, count))


@dataclasses.dataclass
class Source:
    """A data source's splits and classes.

    Attributes:
      failures: messages of bad examples found while reading (e.g. a TFRecord label outside
        ``[0, num_classes)``), appended before the read raises inside tf.data, so the caller can
        report the message instead of the graph's traceback.
    """

    name: str
    train: Split
    val: Split
    class_names: list[str]
    failures: list[str] = dataclasses.field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def open_source(data_config, *, image_size: int, seed: int = 0) -> Source:
    """Opens ``data_config.source``.

    Raises:
      ValueError: unknown source (the message lists the valid ones), missing directory or files
        (naming the path), mismatched class folders, missing ``num_classes`` for TFRecords.
      ImportError: ``tfds:`` without ``tensorflow-datasets`` installed.
    """
    source = data_config.source
    kind, _, arg = source.partition(":")
    if kind in ("digits", "synthetic") and not arg:
        opener = _open_digits if kind == "digits" else _open_synthetic
        return opener(data_config, image_size=image_size, seed=seed)
    if kind in ("folder", "tfrecord", "tfds") and arg:
        opener = {"folder": _open_folder, "tfrecord": _open_tfrecord, "tfds": _open_tfds}[kind]
        return opener(arg, data_config)
    raise ValueError(
        f"Unknown data source '{source}'; valid sources are {', '.join(SOURCES)} "
        f"(set --config.data.source)."
    )


def _shard(dataset: tf.data.Dataset, shard: tuple[int, int] | None) -> tf.data.Dataset:
    return dataset if shard is None else dataset.shard(*shard)


def _check_val_fraction(data_config) -> float:
    return validation.check_range(
        data_config,
        "val_fraction",
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
        prefix="data.",
    )


def _in_memory_split(
    images: np.ndarray,
    labels: np.ndarray,
    prefix: str,
    prepare: Callable,
    image_size: int,
    shuffle_buffer: int,
) -> Split:
    """A split over arrays held in memory; ``prepare`` maps a stored image to uint8 [S, S, 3]."""
    keys = np.array([f"{prefix}#{i}" for i in range(len(labels))])

    def read(shuffle_seed, shard):
        dataset = _shard(tf.data.Dataset.from_tensor_slices((images, labels, keys)), shard)
        if shuffle_seed is not None:
            dataset = dataset.shuffle(
                min(len(labels), shuffle_buffer), seed=shuffle_seed, reshuffle_each_iteration=True
            )
        return dataset.map(
            lambda x, y, k: (prepare(x), y, k),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    return Split(
        read, len(labels), encoded=False, decoded_bytes=len(labels) * image_size * image_size * 3
    )


def _open_digits(data_config, *, image_size: int, seed: int) -> Source:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    del seed  # the split is fixed on purpose
    digits = load_digits()
    # Digit pixels are counts 0..16 of a 4x4 block; scale to the usual 0..255.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    train_idx, val_idx = train_test_split(
        np.arange(len(labels)),
        test_size=_check_val_fraction(data_config),
        stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )

    def prepare(image):
        resized = tf.image.resize(image, [image_size, image_size], method="bilinear")
        gray = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
        return tf.image.grayscale_to_rgb(gray)

    def split(idx, name):
        return _in_memory_split(
            images[idx],
            labels[idx],
            f"digits/{name}",
            prepare,
            image_size,
            data_config.shuffle_buffer,
        )

    names = [str(i) for i in range(10)]
    return Source("digits", split(train_idx, "train"), split(val_idx, "val"), names)


def _open_synthetic(data_config, *, image_size: int, seed: int) -> Source:
    num_classes = data_config.num_classes or 10
    num_train = data_config.synthetic_examples
    if num_classes < 1 or num_train < 1:
        raise ValueError(
            f"Synthetic data needs num_classes >= 1 and synthetic_examples >= 1, got "
            f"{num_classes} and {num_train}."
        )
    num_val = max(1, int(num_train * _check_val_fraction(data_config)))

    def split(count, stream, name):
        def read(shuffle_seed, shard):
            index = _shard(tf.data.Dataset.range(count), shard)
            if shuffle_seed is not None:
                index = index.shuffle(
                    min(count, data_config.shuffle_buffer),
                    seed=shuffle_seed,
                    reshuffle_each_iteration=True,
                )

            def make(i):
                pixels = tf.random.stateless_uniform(
                    [image_size, image_size, 3],
                    seed=tf.stack([seed * 2 + stream, i]),
                    minval=0,
                    maxval=256,
                    dtype=tf.int32,
                )
                key = tf.strings.join([f"synthetic/{name}#", tf.strings.as_string(i)])
                return tf.cast(pixels, tf.uint8), tf.cast(i % num_classes, tf.int32), key

            return index.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

        return Split(read, count, encoded=False, decoded_bytes=count * image_size * image_size * 3)

    names = [str(i) for i in range(num_classes)]
    return Source("synthetic", split(num_train, 0, "train"), split(num_val, 1, "val"), names)


def _list_class_folder(split_dir: str) -> dict[str, list[str]]:
    if not os.path.isdir(split_dir):
        raise ValueError(
            f"Image folder '{split_dir}' does not exist; the folder source expects "
            f"<dir>/train/<class>/*.jpg and <dir>/val/<class>/*.jpg."
        )
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not classes:
        raise ValueError(
            f"Image folder '{split_dir}' has no class sub-folders; expected "
            f"{split_dir}/<class>/*.jpg."
        )
    files = {}
    for name in classes:
        found = []
        for root, _, names in os.walk(os.path.join(split_dir, name), followlinks=True):
            found += [os.path.join(root, f) for f in names if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not found:
            raise ValueError(
                f"Class folder '{os.path.join(split_dir, name)}' has no images "
                f"({', '.join(IMAGE_EXTENSIONS)})."
            )
        files[name] = sorted(found)
    return files


def _open_folder(directory: str, data_config) -> Source:
    train_files = _list_class_folder(os.path.join(directory, "train"))
    val_files = _list_class_folder(os.path.join(directory, "val"))
    class_names = list(train_files)
    if list(val_files) != class_names:
        missing = sorted(set(class_names) - set(val_files))
        extra = sorted(set(val_files) - set(class_names))
        raise ValueError(
            f"Class folders of '{directory}/val' do not match '{directory}/train': "
            f"missing in val {missing}, not in train {extra}."
        )
    if len(class_names) < 2:
        raise ValueError(
            f"Image folder '{directory}/train' has {len(class_names)} class folder(s) "
            f"({', '.join(class_names)}); a classifier needs at least two: add a folder per class."
        )

    def split(files_by_class):
        paths = [p for name in class_names for p in files_by_class[name]]
        labels = np.array(
            [i for i, name in enumerate(class_names) for _ in files_by_class[name]], np.int32
        )
        encoded_bytes = sum(os.path.getsize(p) for p in paths)

        def read(shuffle_seed, shard):
            dataset = _shard(tf.data.Dataset.from_tensor_slices((paths, labels)), shard)
            if shuffle_seed is not None:
                # Paths are cheap: shuffle them all, so no class-sorted runs survive.
                dataset = dataset.shuffle(
                    len(paths), seed=shuffle_seed, reshuffle_each_iteration=True
                )
            return dataset.map(
                lambda p, y: (tf.io.read_file(p), y, p),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=shuffle_seed is None,
            )

        return Split(
            read, len(paths), encoded=True, decoded_bytes=encoded_bytes * DECODED_PER_ENCODED_BYTE
        )

    return Source(f"folder:{directory}", split(train_files), split(val_files), class_names)


def count_tfrecords(path: str) -> int:
    """Number of records in a TFRecord file, reading only the 12-byte record headers."""
    count, position = 0, 0
    with tf.io.gfile.GFile(path, "rb") as f:
        size = f.size()
        while position < size:
            f.seek(position)
            header = f.read(12)  # uint64 length, uint32 length CRC
            (length,) = struct.unpack("<Q", header[:8]) if len(header) == 12 else (size,)
            position += 12 + length + 4  # header, payload, payload CRC
            if position > size:
                raise ValueError(f"TFRecord file '{path}' is truncated (record {count}).")
            count += 1
    return count


def _tfrecord_files(pattern: str) -> tuple[list[str], list[str]]:
    if "{split}" in pattern:
        train = sorted(tf.io.gfile.glob(pattern.replace("{split}", "train")))
        val = sorted(tf.io.gfile.glob(pattern.replace("{split}", "validation")))
    else:
        matches = sorted(tf.io.gfile.glob(pattern))
        train = [p for p in matches if os.path.basename(p).startswith("train")]
        val = [p for p in matches if os.path.basename(p).startswith(("validation", "val"))]
    for name, files in (("train", train), ("validation", val)):
        if not files:
            raise ValueError(
                f"No {name} TFRecord shards match '{pattern}'; use a glob with "
                f"{{split}} (e.g. /data/{{split}}-*) or one whose matches are named "
                f"train-* and validation-*."
            )
    return train, val


def _open_tfrecord(pattern: str, data_config) -> Source:
    num_classes = data_config.num_classes
    if not num_classes:
        raise ValueError(
            "TFRecord sources need data.num_classes (--config.data.num_classes, e.g. 1000 for "
            "ImageNet), since finding it would read every shard."
        )
    offset = data_config.label_offset
    features = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    }
    failures: list[str] = []

    def check_label(label, key):
        # Out-of-range labels one-hot to all zeros and train silently at zero loss: refuse them.
        if not 0 <= label < num_classes:
            failures.append(
                f"TFRecord label {int(label) + offset} of {key.decode()} minus label_offset="
                f"{offset} is {int(label)}, outside [0, {num_classes}); for 1-based labels set "
                f"--config.data.label_offset=1, else fix --config.data.num_classes."
            )
            raise ValueError(failures[-1])
        return label

    def parse(serialized, key):
        example = tf.io.parse_single_example(serialized, features)
        label = tf.cast(example["image/class/label"] - offset, tf.int32)
        label = tf.numpy_function(check_label, [label, key], tf.int32, stateful=False)
        return example["image/encoded"], tf.ensure_shape(label, []), key

    def records(path):
        indexed = tf.data.TFRecordDataset(path).enumerate()
        return indexed.map(
            lambda i, record: (record, tf.strings.join([path, "#", tf.strings.as_string(i)]))
        )

    def split(files):
        encoded_bytes = sum(tf.io.gfile.stat(p).length for p in files)

        def read(shuffle_seed, shard):
            # Shard by file when every worker gets at least one, else by record: then the file
            # order and interleave must be the same on every worker for the parts to be disjoint.
            by_file = shard is not None and len(files) >= shard[0]
            by_record = shard is not None and not by_file
            dataset = _shard(tf.data.Dataset.from_tensor_slices(files), shard if by_file else None)
            if shuffle_seed is not None and not by_record:
                dataset = dataset.shuffle(
                    len(files), seed=shuffle_seed, reshuffle_each_iteration=True
                )
            dataset = dataset.interleave(
                records,
                cycle_length=min(len(files), TFRECORD_CYCLE_LENGTH),
                block_length=1,
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=shuffle_seed is None or by_record,
            )
            if by_record:
                dataset = dataset.shard(*shard)
            if shuffle_seed is not None:
                dataset = dataset.shuffle(
                    data_config.shuffle_buffer, seed=shuffle_seed + 1, reshuffle_each_iteration=True
                )
            return dataset.map(
                parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=shuffle_seed is None
            )

        counts = [count_tfrecords(p) for p in files]
        return Split(
            read,
            sum(counts),
            encoded=True,
            decoded_bytes=encoded_bytes * DECODED_PER_ENCODED_BYTE,
            file_counts=counts,
        )

    train_files, val_files = _tfrecord_files(pattern)
    _check_tfrecord_features(train_files[0], features)
    names = [str(i) for i in range(num_classes)]
    return Source(f"tfrecord:{pattern}", split(train_files), split(val_files), names, failures)


def _check_tfrecord_features(path: str, features: dict) -> None:
    """Reads the first record of ``path``: its features must include ``features``' keys.

    Raises:
      ValueError: keys missing, naming those found.
    """
    for record in tf.data.TFRecordDataset(path).take(1):
        found = sorted(tf.train.Example.FromString(record.numpy()).features.feature)
        missing = [key for key in features if key not in found]
        if missing:
            raise ValueError(
                f"TFRecord file '{path}' lacks the feature key(s) {missing}; it has {found}. "
                f"The tfrecord source reads ImageNet-format tf.train.Examples "
                f"({', '.join(features)})."
            )


def _open_tfds(name: str, data_config) -> Source:
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(
            f"Data source 'tfds:{name}' needs TensorFlow Datasets: pip install tensorflow-datasets"
        ) from err
    builder = tfds.builder(name, data_dir=data_config.data_dir or None)
    splits = builder.info.splits
    val_name = "validation" if "validation" in splits else "test"
    label_feature = builder.info.features["label"]
    image_key = next(
        k for k, f in builder.info.features.items() if isinstance(f, tfds.features.Image)
    )

    def split(split_name):
        def read(shuffle_seed, shard):
            # Shuffled file order differs per worker seed: shard only a fixed order.
            shuffle_files = shuffle_seed is not None and shard is None
            read_config = tfds.ReadConfig(
                shuffle_seed=shuffle_seed, try_autocache=False, add_tfds_id=True
            )
            dataset = builder.as_dataset(
                split=split_name,
                shuffle_files=shuffle_files,
                read_config=read_config,
                decoders={image_key: tfds.decode.SkipDecoding()},
            )
            dataset = _shard(dataset, shard)
            if shuffle_seed is not None:
                dataset = dataset.shuffle(
                    data_config.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True
                )
            return dataset.map(
                lambda ex: (ex[image_key], tf.cast(ex["label"], tf.int32), ex["tfds_id"])
            )

        num = splits[split_name].num_examples
        return Split(
            read,
            num,
            encoded=True,
            decoded_bytes=splits[split_name].num_bytes * DECODED_PER_ENCODED_BYTE,
        )

    return Source(f"tfds:{name}", split("train"), split(val_name), list(label_feature.names))
