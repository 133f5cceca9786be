"""ChannelSplit: numpy slicing as the reference (parts and gradients), cost, its TFLite op."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from layers import ChannelSplit
from tests.model_checks import tflite_convert, tflite_op_names, tflite_predict


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


def test_costs_nothing_and_has_nothing_to_prune():
    layer = ChannelSplit(3, name="s")
    assert layer.compute_cost((None, 7, 7, 9)).macs == 0
    assert layer.compute_cost((None, 7, 7, 9)).params == 0
    assert layer.get_prunable_weights() == []


@pytest.mark.slow
def test_tflite_uses_a_builtin_split_and_matches():
    inputs = keras.Input((4, 4, 8))
    model = keras.Model(inputs, keras.layers.Concatenate()(ChannelSplit(2)(inputs)[::-1]))
    x = np.random.default_rng(2).normal(size=(3, 4, 4, 8)).astype("float32")
    flatbuffer = tflite_convert(model)
    ops = tflite_op_names(flatbuffer)
    assert ops & {"SPLIT", "SPLIT_V", "STRIDED_SLICE", "SLICE"}, ops
    np.testing.assert_array_equal(
        tflite_predict(flatbuffer, x), np.concatenate([x[..., 4:], x[..., :4]], -1)
    )
