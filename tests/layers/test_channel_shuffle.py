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


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_compute_dtype(policy):
    x = np.random.default_rng(0).standard_normal((2, 3, 3, 6)).astype("float32")
    out = ChannelShuffle(3, dtype=keras.mixed_precision.Policy(policy))(x)
    assert out.dtype == keras.mixed_precision.Policy(policy).compute_dtype
    np.testing.assert_array_equal(
        tf.cast(out, tf.float32),
        numpy_shuffle(tf.cast(tf.cast(x, out.dtype), tf.float32).numpy(), 3),
    )


def test_cost_config_and_prunable_weights():
    layer = ChannelShuffle(3, name="shuffle")
    layer.build((None, 8, 8, 12))
    cost = layer_cost(layer, (None, 8, 8, 12))
    assert (cost.macs, cost.params) == (0, 0)
    assert layer.get_prunable_weights() == [] and layer.weights == []
    config = layer.get_config()
    assert ChannelShuffle.from_config(config).get_config() == config
    assert config["groups"] == 3


@pytest.mark.parametrize("groups,named", [(0, "groups"), (-2, "-2"), (2.0, "2.0"), (True, "True")])
def test_bad_groups_raise(groups, named):
    with pytest.raises(ValueError, match=named):
        ChannelShuffle(groups)


def test_groups_not_dividing_channels_names_both_numbers():
    with pytest.raises(ValueError, match=r"groups=5.*\(12\)"):
        ChannelShuffle(5).build((None, 4, 4, 12))


def test_unknown_channels_raise():
    with pytest.raises(ValueError, match="static channel"):
        ChannelShuffle(2).build((None, 4, 4, None))


def conv_shuffle_model(groups, name):
    """A shuffle between two convs, as in a ShuffleNet unit, so pruning has weights to act on."""
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(12, 1, name=f"{name}_conv_a")(inputs)
    x = ChannelShuffle(groups, name=f"{name}_shuffle")(x)
    x = keras.layers.Conv2D(5, 1, name=f"{name}_conv_b")(x)
    return keras.Model(inputs, x)


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).standard_normal((3, 6, 6, 4)).astype("float32")
    pruned = model_checks.prune_train_strip(
        conv_shuffle_model(3, "pruned"), x, np.zeros((3, 6, 6, 5), "float32")
    )
    return [(conv_shuffle_model(4, "plain"), x), (pruned, x)]


def test_pruning_keeps_the_shuffle(models):
    pruned, _ = models[1]
    assert type(pruned.get_layer("pruned_shuffle")) is ChannelShuffle
    kernel = pruned.get_layer("pruned_conv_b").kernel.numpy()
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["keras", "saved_model"])
def test_reload_in_fresh_process(models, tmp_path, fmt):
    outputs = model_checks.predict_in_fresh_process(models, tmp_path, fmt=fmt)
    for (model, x), out in zip(models, outputs, strict=True):
        np.testing.assert_allclose(out, model.predict_on_batch(x), rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_tflite_builtin_ops_and_batch_resize(models):
    model, x = models[0]
    flatbuffer = model_checks.tflite_convert(model)
    assert model_checks.tflite_op_names(flatbuffer) <= {"CONV_2D", "RESHAPE", "TRANSPOSE", "SHAPE"}
    np.testing.assert_allclose(
        model_checks.tflite_predict(flatbuffer, x), model.predict_on_batch(x), atol=1e-5
    )
    int8 = model_checks.tflite_convert(model, quantize="int8")
    reference = model.predict_on_batch(x)
    error = np.abs(model_checks.tflite_predict(int8, x) - reference).max()
    assert error < 0.05 * np.abs(reference).max()
