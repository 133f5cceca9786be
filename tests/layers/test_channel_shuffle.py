import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from layers import ChannelShuffle, layer_cost
from tests import model_checks


def numpy_shuffle(x, groups):
    """Explicit index permutation: output channel j reads input channel (j % g)·(C/g) + j // g."""
    channels = x.shape[-1]
    per_group = channels // groups
    source = [(j % groups) * per_group + j // groups for j in range(channels)]
    return x[..., source]


@pytest.mark.parametrize(
    "shape,groups",
    [
        ((2, 5, 7, 12), 3),
        ((1, 3, 3, 240), 8),
        ((2, 4, 6), 2),
        ((3, 10), 5),
        ((2, 4, 4, 8), 1),
        ((2, 2, 3, 4, 6), 3),
    ],
)
def test_matches_numpy_permutation_and_gradient(shape, groups):
    x = tf.constant(np.random.default_rng(0).standard_normal(shape), tf.float32)
    layer = ChannelShuffle(groups)
    upstream = np.random.default_rng(1).standard_normal(shape).astype("float32")
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x)
        loss = tf.reduce_sum(out * upstream)
    np.testing.assert_array_equal(out, numpy_shuffle(x.numpy(), groups))
    # The gradient of a permutation is the inverse permutation of the upstream gradient.
    expected = np.empty_like(upstream)
    expected[..., numpy_shuffle(np.arange(shape[-1]), groups)] = upstream
    np.testing.assert_array_equal(tape.gradient(loss, x), expected)
    assert tuple(layer.compute_output_shape(shape)) == shape


@pytest.mark.parametrize("channels,groups", [(12, 3), (240, 8), (116, 2)])
def test_shuffle_g_then_shuffle_c_over_g_is_identity(channels, groups):
    x = np.random.default_rng(0).standard_normal((2, 3, 3, channels)).astype("float32")
    out = ChannelShuffle(channels // groups)(ChannelShuffle(groups)(x))
    np.testing.assert_array_equal(out, x)


def test_dynamic_batch_and_spatial_dims_in_tf_function():
    layer = ChannelShuffle(4)
    fn = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 8))])
    for shape in [(1, 3, 5, 8), (4, 2, 2, 8)]:
        x = np.random.default_rng(0).standard_normal(shape).astype("float32")
        np.testing.assert_array_equal(fn(x), numpy_shuffle(x, 4))


def test_costs_nothing_and_has_nothing_to_prune():
    layer = ChannelShuffle(3, name="shuffle")
    layer.build((None, 8, 8, 12))
    cost = layer_cost(layer, (None, 8, 8, 12))
    assert (cost.macs, cost.params) == (0, 0)
    assert layer.get_prunable_weights() == [] and layer.weights == []


@pytest.mark.slow
def test_tflite_is_a_reshape_transpose_reshape():
    inputs = keras.Input((6, 6, 12))
    model = keras.Model(inputs, ChannelShuffle(4)(inputs))
    x = np.random.default_rng(0).standard_normal((3, 6, 6, 12)).astype("float32")
    flatbuffer = model_checks.tflite_convert(model)
    assert model_checks.tflite_op_names(flatbuffer) <= {"RESHAPE", "TRANSPOSE", "SHAPE"}
    np.testing.assert_array_equal(model_checks.tflite_predict(flatbuffer, x), numpy_shuffle(x, 4))
