"""The input pipelines: sources, decoding, corrupt files, sharding and errors."""

import math

import numpy as np
import pytest
import tensorflow as tf

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
    distances = np.abs(pixels[:, None] - raw.images[None]).max(axis=(2, 3))
    nearest = distances.argmin(axis=1)
    assert distances.min(axis=1).max() < 0.1
    np.testing.assert_array_equal(raw.target[nearest], labels.numpy())
