"""Every registered variant, every family: builds, trains a step, survives a .keras round trip.

Small on purpose (32×32 inputs, 10 classes): models are built once per worker, with seeded
weights, and shared between the checks; the round trip loads all of them in ONE fresh process.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from architectures import create_model, get_model_spec, list_models
from architectures.cost import model_cost
from tests.model_checks import predict_in_fresh_process

pytestmark = pytest.mark.slow

# Classifiers; the segmentation models have their own checks (tests/architectures/test_deeplab.py).
VARIANTS = [name for name in list_models() if get_model_spec(name).task == "classification"]
NUM_CLASSES = 10
BATCH = 8
_SMALL_MODELS: dict[str, keras.Model] = {}


def small_size(name: str) -> int:
    return max(32, get_model_spec(name).min_input_size)


def small_model(name: str) -> keras.Model:
    """The variant at 32×32 (or its minimum), 10 logits, no dropout; built once per worker."""
    if name not in _SMALL_MODELS:
        size = small_size(name)
        keras.utils.set_random_seed(0)
        _SMALL_MODELS[name] = create_model(
            name,
            input_shape=(size, size, 3),
            num_classes=NUM_CLASSES,
            dropout=0.0,
            classifier_activation="linear",  # create_model drops None arguments: ask for logits
        )
    return _SMALL_MODELS[name]


def batch(name: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    size = small_size(name)
    images = rng.normal(size=(BATCH, size, size, 3)).astype("float32")
    return images, rng.integers(0, NUM_CLASSES, size=(BATCH,)).astype("int32")


def test_at_least_every_family_is_registered():
    families = {get_model_spec(name).family for name in VARIANTS}
    assert {"mobilenet_v1", "mobilenet_v2", "fd_mobilenet"} <= families


@pytest.mark.parametrize("name", VARIANTS)
def test_builds_at_its_paper_size_and_refuses_smaller_than_its_minimum(name):
    spec = get_model_spec(name)
    model = create_model(name)
    assert model.name == name
    assert tuple(model.input_shape) == (None, spec.input_size, spec.input_size, 3)
    assert tuple(model.output_shape) == (None, spec.num_classes)
    assert model.get_layer("predictions").dtype == "float32"
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))
    trainable = sum(int(w.shape.num_elements()) for w in model.trainable_weights)
    assert model_cost(model).total_params == trainable
    keras.backend.clear_session()
    if spec.min_input_size > 1:
        too_small = spec.min_input_size - 1
        with pytest.raises(ValueError, match=str(spec.min_input_size)):
            create_model(name, input_shape=(too_small, too_small, 3))


@pytest.mark.parametrize("name", VARIANTS)
def test_one_sgd_step_at_small_size_lowers_the_loss(name):
    """Every trainable weight gets a gradient, and a step along it lowers the loss.

    BN runs on its moving statistics here: in training mode, a batch of 8 on the 1×1 final map
    of a 32×32 input normalises each channel to a near step function, so a loss measured that way
    can jump up across a step however small (ResNet-50 went up in 3 of 4 seeds). With frozen
    statistics the loss is smooth and the first-order decrease is a real check of the gradients.
    """
    model = small_model(name)
    images, labels = batch(name)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(labels, model(images, training=False))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads)
    norm = float(tf.linalg.global_norm(grads))
    before = float(loss)
    assert np.isfinite(before) and np.isfinite(norm) and norm > 0, (before, norm)
    # The learning rate makes the step 1e-3 long whatever the gradient's scale: small enough
    # to stay where the first-order decrease holds, large enough to beat float32 noise.
    optimizer = keras.optimizers.SGD(learning_rate=1e-3 / norm)
    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    after = float(loss_fn(labels, model(images, training=False)))
    assert after < before, (before, after)


@pytest.mark.parametrize("half", [0, 1])
def test_keras_round_trip_of_every_variant_in_a_fresh_process(tmp_path, half):
    """Every other variant per half, so pytest-xdist's two workers share the reloads."""
    names = VARIANTS[half::2]
    cases = [(small_model(name), batch(name, seed=1)[0]) for name in names]
    expected = [model(images, training=False).numpy() for model, images in cases]
    reloaded = predict_in_fresh_process(cases, tmp_path, fmt="keras", loader="lightnets")
    for name, want, got in zip(names, expected, reloaded, strict=True):
        assert got.shape == (BATCH, NUM_CLASSES), name
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)
