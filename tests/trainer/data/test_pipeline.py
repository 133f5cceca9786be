"""The input pipelines: sources, decoding, corrupt files, sharding and errors."""

import io
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from architectures.registry import Preprocessing
from configs.common import get_base_config
from trainer import data

PREP = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_fraction=0.875)


def data_config(**overrides):
    config = get_base_config().data
    config.update(overrides)
    return config


def labels_of(dataset):
    return np.concatenate([y.numpy() for _, y in dataset])


@pytest.fixture(scope="module")
def digits():
    return data.build_datasets(data_config(), image_size=16, preprocessing=PREP, batch_size=32)


def test_digits_batches_have_the_contract_shapes_and_dtypes(digits):
    images, labels = next(iter(digits.train))
    assert images.shape == (32, 16, 16, 3) and images.dtype == tf.float32
    assert labels.shape == (32,) and labels.dtype == tf.int32
    assert images.numpy().min() >= -1.0 and images.numpy().max() <= 1.0
    assert digits.num_classes == 10 and digits.class_names == [str(i) for i in range(10)]
    assert digits.augment == "light" and digits.corrupt_report() == []
    # Gray digits become RGB: the three channels are equal.
    np.testing.assert_array_equal(images[..., 0], images[..., 2])


def test_digits_split_is_fixed_stratified_and_complete(digits):
    from sklearn.datasets import load_digits

    all_labels = load_digits().target
    assert digits.train_examples + digits.val_examples == len(all_labels)
    assert digits.val_examples == math.ceil(0.2 * len(all_labels))  # sklearn rounds up
    val_labels = labels_of(digits.val)
    assert len(val_labels) == digits.val_examples
    # Stratified: each class's share of val equals its share of the whole set, up to rounding.
    np.testing.assert_allclose(
        np.bincount(val_labels, minlength=10), np.bincount(all_labels) * 0.2, atol=1
    )
    # The split does not depend on the run's seed, and val comes in a fixed order.
    other = data.build_datasets(
        data_config(), image_size=16, preprocessing=PREP, batch_size=50, seed=7
    )
    np.testing.assert_array_equal(labels_of(other.val), val_labels)
    images = np.concatenate([x.numpy() for x, _ in digits.val])
    images_again = np.concatenate([x.numpy() for x, _ in other.val])
    np.testing.assert_array_equal(images, images_again)


def test_digits_val_images_match_the_sklearn_pixels(digits):
    """Every val image, shrunk back to 8x8, is one of the dataset's digits of the same label."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    config = data_config(augment="none")
    bundle = data.build_datasets(
        config, image_size=8, preprocessing=Preprocessing(crop_fraction=1.0), batch_size=400
    )
    images, labels = next(iter(bundle.val))
    pixels = (images.numpy()[..., 0] * 0.5 + 0.5) * 16.0  # undo normalisation and 0..255 scaling
    flat, reference = pixels.reshape(len(pixels), -1), raw.images.reshape(len(raw.images), -1)
    squared = (flat**2).sum(1)[:, None] + (reference**2).sum(1)[None] - 2 * flat @ reference.T
    nearest = squared.argmin(axis=1)
    assert np.abs(flat - reference[nearest]).max() < 0.1
    np.testing.assert_array_equal(raw.target[nearest], labels.numpy())


def save(path, image, fmt, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **kwargs)


def class_colour(label):
    """A flat image per class: its label survives decode, crop and resize."""
    return np.full((20, 28, 3), [40 + 100 * label, 120, 200 - 100 * label], np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """train/{ant,bee} and val/{ant,bee}, every format and mode, one corrupt file in each split."""
    root = tmp_path_factory.mktemp("images")
    for split in ("train", "val"):
        for label, name in enumerate(["ant", "bee"]):
            rgb = Image.fromarray(class_colour(label))
            d = root / split / name
            save(d / "rgb.jpg", rgb, "JPEG", quality=95)
            save(d / "cmyk.JPEG", rgb.convert("CMYK"), "JPEG", quality=95)
            save(d / "rgba.png", rgb.convert("RGBA"), "PNG")
            save(d / "sub" / "frame.gif", rgb, "GIF")
            save(d / "plain.bmp", rgb, "BMP")
            save(d / "gray.png", rgb.convert("L"), "PNG")
            save(
                d / "gray16.png",
                Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257),
                "PNG",
            )
        (root / split / "bee" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
        (root / split / "ant" / "notes.txt").write_text("not an image, ignored")
    return root


def expected_normalised_colour(label, gray=False):
    colour = class_colour(label)[0, 0].astype(float)
    if gray:  # ITU-R 601-2 luma, as PIL's convert("L")
        colour = np.full(3, colour @ [0.299, 0.587, 0.114])
    return colour / 255.0 * 2 - 1


def test_folder_source_maps_classes_decodes_all_modes_and_reports_corrupt(folder):
    bundle = data.build_datasets(
        data_config(source=f"folder:{folder}", augment="none"),
        image_size=8,
        preprocessing=PREP,
        batch_size=4,
    )
    assert bundle.class_names == ["ant", "bee"] and bundle.num_classes == 2
    assert bundle.train_examples == bundle.val_examples == 15  # 7 per class + the broken file
    images, labels = [], []
    for x, y in bundle.val:
        images.append(x.numpy())
        labels.append(y.numpy())
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert len(labels) == 14 and images.shape[1:] == (8, 8, 3)
    # Sorted files per sorted class: cmyk, gray, gray16, plain, rgb, rgba, sub/frame.
    np.testing.assert_array_equal(labels, [0] * 7 + [1] * 7)
    for i, label in enumerate(labels):
        gray = i % 7 in (1, 2)
        np.testing.assert_allclose(
            images[i].mean(axis=(0, 1)), expected_normalised_colour(label, gray), atol=0.05
        )
    broken = str(folder / "val" / "bee" / "broken.jpg")
    assert bundle.corrupt_report() == [broken]
    # Training skips it too, and reports it once however often it comes round.
    for x, y in bundle.train.take(8):
        assert x.shape == (4, 8, 8, 3) and y.dtype == tf.int32
    assert bundle.corrupt_report() == [broken, str(folder / "train" / "bee" / "broken.jpg")]


def test_folder_training_uses_imagenet_crops_on_large_images(folder):
    config = data_config(source=f"folder:{folder}", cache="none", min_crop_area=0.5)
    bundle = data.build_datasets(config, image_size=80, preprocessing=PREP, batch_size=6)
    assert bundle.augment == "imagenet" and not bundle.cached
    seen = []
    for x, y in bundle.train.take(5):
        x, y = x.numpy(), y.numpy()
        for image, label in zip(x, y, strict=True):
            colour = image.mean(axis=(0, 1))
            candidates = [expected_normalised_colour(label, g) for g in (False, True)]
            assert min(np.abs(colour - c).max() for c in candidates) < 0.05
        seen.extend(y)
    assert set(seen) == {0, 1}


def test_on_corrupt_fail_stops_naming_the_file(folder):
    bundle = data.build_datasets(
        data_config(source=f"folder:{folder}", on_corrupt="fail", augment="none"),
        image_size=8,
        preprocessing=PREP,
        batch_size=4,
    )
    with pytest.raises(tf.errors.OpError, match=r"val/bee/broken\.jpg.*on_corrupt=skip"):
        for _ in bundle.val:
            pass


def write_shards(directory, prefix, shard_labels, corrupt_at=None):
    """ImageNet-style shards with 1-based labels; ``shard_labels`` is a list per shard."""
    paths = []
    for s, labels in enumerate(shard_labels):
        path = str(directory / f"{prefix}-{s:05d}-of-{len(shard_labels):05d}")
        with tf.io.TFRecordWriter(path) as writer:
            for r, label in enumerate(labels):
                buffer = io.BytesIO()
                Image.fromarray(class_colour(label)).save(buffer, "JPEG", quality=95)
                encoded = buffer.getvalue() if (s, r) != corrupt_at else b"garbage"
                example = tf.train.Example(
                    features=tf.train.Features(
                        feature={
                            "image/encoded": tf.train.Feature(
                                bytes_list=tf.train.BytesList(value=[encoded])
                            ),
                            "image/class/label": tf.train.Feature(
                                int64_list=tf.train.Int64List(value=[label + 1])
                            ),
                        }
                    )
                )
                writer.write(example.SerializeToString())
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    write_shards(root, "train", [[0, 1, 0], [1, 0, 1, 1]])
    val = write_shards(root, "validation", [[1, 0, 1]], corrupt_at=(0, 1))
    return root, val[0]


@pytest.mark.parametrize("pattern", ["*", "{split}-*"])
def test_tfrecord_source_reads_imagenet_shards(shards, pattern):
    root, val_shard = shards
    config = data_config(
        source=f"tfrecord:{root}/{pattern}", num_classes=2, label_offset=1, augment="none"
    )
    bundle = data.build_datasets(config, image_size=8, preprocessing=PREP, batch_size=3)
    assert (bundle.train_examples, bundle.val_examples, bundle.num_classes) == (7, 3, 2)
    np.testing.assert_array_equal(labels_of(bundle.val), [1, 1])
    assert bundle.corrupt_report() == [f"{val_shard}#1"]
    x, y = next(iter(bundle.train))
    assert x.shape == (3, 8, 8, 3)
    for image, label in zip(x.numpy(), y.numpy(), strict=True):
        np.testing.assert_allclose(
            image.mean(axis=(0, 1)), expected_normalised_colour(label), atol=0.05
        )


def test_tfrecord_count_reads_headers_only(shards):
    from trainer.data.sources import count_tfrecords

    root, val_shard = shards
    assert count_tfrecords(val_shard) == 3
    truncated = root / "truncated"
    truncated.write_bytes(Path(val_shard).read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated"):
        count_tfrecords(str(truncated))


@pytest.mark.parametrize("source,workers", [("digits", 3), ("tfrecord", 2), ("tfrecord", 3)])
def test_shards_are_disjoint_and_cover_the_split(shards, source, workers):
    """TFRecords shard by file (2 files, 2 workers) or, with more workers than files, by record."""
    from trainer.data.sources import open_source

    root, _ = shards
    config = data_config(
        source="digits" if source == "digits" else f"tfrecord:{root}/*",
        num_classes=2,
        label_offset=1,
    )
    split = open_source(config, image_size=8).train
    keys = []
    for i in range(workers):
        # Shuffled reads, a different seed per worker, as build_datasets does.
        shard_keys = [k.numpy() for _, _, k in split.read(10 + i, (workers, i))]
        assert len(shard_keys) == split.examples_in_shard((workers, i))
        keys.append(set(shard_keys))
    assert sum(len(k) for k in keys) == split.num_examples == len(set.union(*keys))


def test_input_context_shards_training_and_splits_the_batch():
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2
    )
    bundle = data.build_datasets(
        data_config(), image_size=8, preprocessing=PREP, batch_size=64, input_context=context
    )
    assert bundle.batch_size == 32 and bundle.train_examples == 1437 // 2
    assert next(iter(bundle.train))[0].shape == (32, 8, 8, 3)


def test_synthetic_source_is_deterministic_by_seed():
    config = data_config(source="synthetic", num_classes=5, synthetic_examples=40, augment="none")

    def first_val(seed):
        bundle = data.build_datasets(
            config, image_size=8, preprocessing=PREP, batch_size=8, seed=seed
        )
        return bundle, next(iter(bundle.val))

    bundle, (x0, y0) = first_val(0)
    _, (x1, _) = first_val(0)
    _, (x2, _) = first_val(1)
    assert (bundle.num_classes, bundle.train_examples, bundle.val_examples) == (5, 40, 8)
    np.testing.assert_array_equal(y0.numpy(), np.arange(8) % 5)
    np.testing.assert_array_equal(x0.numpy(), x1.numpy())
    assert not np.allclose(x0.numpy(), x2.numpy())


def test_bad_sources_fail_with_clear_errors(folder, tmp_path):
    def build(**overrides):
        data.build_datasets(
            data_config(**overrides), image_size=8, preprocessing=PREP, batch_size=4
        )

    with pytest.raises(ValueError, match="'imagenet'.*digits, synthetic, folder:<dir>"):
        build(source="imagenet")
    with pytest.raises(ValueError, match=f"'{tmp_path}/missing/train' does not exist"):
        build(source=f"folder:{tmp_path}/missing")
    (tmp_path / "mixed" / "train" / "ant").mkdir(parents=True)
    (tmp_path / "mixed" / "train" / "ant" / "a.png").write_bytes(b"")
    (tmp_path / "mixed" / "val" / "wasp").mkdir(parents=True)
    (tmp_path / "mixed" / "val" / "wasp" / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"missing in val \['ant'\], not in train \['wasp'\]"):
        build(source=f"folder:{tmp_path}/mixed")
    (tmp_path / "mixed" / "val" / "ant").mkdir()
    with pytest.raises(ValueError, match="val/ant' has no images"):
        build(source=f"folder:{tmp_path}/mixed")
    with pytest.raises(ValueError, match="No train TFRecord shards match"):
        build(source=f"tfrecord:{tmp_path}/*.tfrecord", num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        build(source=f"tfrecord:{tmp_path}/*")
    with pytest.raises(ValueError, match="on_corrupt='ignore'"):
        build(on_corrupt="ignore")
    with pytest.raises(ValueError, match="cache='disk'"):
        build(cache="disk")
    with pytest.raises(ValueError, match="val_fraction=1.0"):
        build(val_fraction=1.0)
    with pytest.raises(ValueError, match=r"num_parallel_calls=0 must be -1 \(AUTOTUNE\) or >= 1"):
        build(num_parallel_calls=0)
    with pytest.raises(ValueError, match="min_crop_area=0.0"):
        build(min_crop_area=0.0)


def test_tfds_without_the_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails as if absent
    with pytest.raises(ImportError, match="pip install tensorflow-datasets"):
        data.build_datasets(
            data_config(source="tfds:mnist"), image_size=8, preprocessing=PREP, batch_size=4
        )
