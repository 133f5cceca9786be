"""ChannelSplit: numpy slicing as the reference, serialisation, pruning, TFLite, bad arguments."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from layers import ChannelSplit
from tests.model_checks import (
    predict_in_fresh_process,
    prune_train_strip,
    tflite_convert,
    tflite_op_names,
    tflite_predict,
)


def _split_model(shape=(5, 5, 6), num_splits=3, name="split") -> keras.Model:
    """Parts re-joined in reverse order behind a conv, so order and wiring both show."""
    inputs = keras.Input(shape)
    parts = ChannelSplit(num_splits, name=name)(inputs)
    x = keras.layers.Concatenate()(parts[::-1])
    outputs = keras.layers.Conv2D(4, 1, name="conv")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize(
    "shape, num_splits",
    [((2, 5, 7, 6), 2), ((1, 3, 3, 6), 3), ((3, 8), 4), ((2, 4, 4, 5), 1)],
)
def test_parts_equal_numpy_slices_and_gradients_flow(shape, num_splits):
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    layer = ChannelSplit(num_splits)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        parts = layer(xt)
        weighted = sum(float(i + 1) * tf.reduce_sum(p) for i, p in enumerate(parts))
    width = shape[-1] // num_splits
    assert len(parts) == num_splits
    for i, part in enumerate(parts):
        np.testing.assert_array_equal(part.numpy(), x[..., i * width : (i + 1) * width])
    expected_grad = np.repeat(np.arange(1, num_splits + 1, dtype="float32"), width)
    np.testing.assert_array_equal(
        tape.gradient(weighted, xt).numpy(), np.broadcast_to(expected_grad, shape)
    )
    assert [tuple(s) for s in layer.compute_output_shape((None, *shape[1:]))] == [
        (None, *shape[1:-1], width)
    ] * num_splits


def test_config_cost_and_mixed_precision():
    layer = ChannelSplit(3, name="s")
    clone = ChannelSplit.from_config(layer.get_config())
    assert clone.num_splits == 3 and clone.name == "s"
    assert layer.compute_cost((None, 7, 7, 9)).macs == 0
    assert layer.compute_cost((None, 7, 7, 9)).params == 0
    assert layer.get_prunable_weights() == []
    half = ChannelSplit(2, dtype="mixed_float16")(tf.ones((1, 2, 2, 4)))
    assert all(p.dtype == tf.float16 for p in half)


def test_keras_and_saved_model_round_trips_in_a_fresh_process(tmp_path):
    model = _split_model()
    x = np.random.default_rng(1).normal(size=(2, 5, 5, 6)).astype("float32")
    want = model(x).numpy()
    keras_out, saved_out = (
        predict_in_fresh_process([(model, x)], tmp_path, fmt=fmt)[0]
        for fmt in ("keras", "saved_model")
    )
    np.testing.assert_allclose(keras_out, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(saved_out, want, rtol=1e-6, atol=1e-6)


def test_tflite_uses_a_builtin_split_and_matches():
    model = _split_model(shape=(4, 4, 8), num_splits=2)
    x = np.random.default_rng(2).normal(size=(3, 4, 4, 8)).astype("float32")
    flatbuffer = tflite_convert(model)
    ops = tflite_op_names(flatbuffer)
    assert ops & {"SPLIT", "SPLIT_V", "STRIDED_SLICE", "SLICE"}, ops
    assert not any(op.startswith("Flex") for op in ops), ops
    np.testing.assert_allclose(tflite_predict(flatbuffer, x), model(x).numpy(), atol=1e-5)


def test_prunes_around_the_split():
    model = _split_model(shape=(4, 4, 6), num_splits=2)
    x = np.random.default_rng(3).normal(size=(4, 4, 4, 6)).astype("float32")
    y = np.zeros((4, 4, 4, 4), "float32")
    stripped = prune_train_strip(model, x, y, sparsity=0.5)
    assert isinstance(stripped.get_layer("split"), ChannelSplit)
    kernel = stripped.get_layer("conv").kernel.numpy()
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.1)


def test_bad_arguments_name_the_value():
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="num_splits"):
            ChannelSplit(bad)
    with pytest.raises(ValueError, match=r"num_splits=2 must divide the number of channels \(5\)"):
        ChannelSplit(2)(keras.Input((3, 3, 5)))
