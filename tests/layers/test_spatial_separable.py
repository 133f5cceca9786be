import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from layers import SpatialSeparableConv2D, layer_cost
from layers.cost import conv_macs
from tests import model_checks

CASES = [
    ((2, 9, 9, 4), dict(filters=6, kernel_size=3)),
    ((1, 11, 8, 3), dict(filters=5, kernel_size=(5, 3), strides=2, padding="valid")),
    ((2, 10, 9, 4), dict(filters=4, kernel_size=7, strides=(1, 2), intermediate_filters=3)),
    ((2, 13, 12, 3), dict(filters=4, kernel_size=3, dilation_rate=(2, 3), padding="valid")),
    ((1, 8, 8, 2), dict(filters=3, kernel_size=3, dilation_rate=2, use_bias=False)),
]


def build(shape, kwargs, seed=0):
    layer = SpatialSeparableConv2D(**kwargs, bias_initializer="random_normal")
    layer.build(shape)
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.standard_normal(w.shape).astype("float32") for w in layer.weights])
    return layer


def full_conv_reference(x, layer):
    """The equivalent k_h×k_w conv: with nothing in between, the kernel is the product V·H."""
    kernel = tf.einsum("acp,bpm->abcm", layer.vertical_kernel[:, 0], layer.horizontal_kernel[0])
    out = tf.nn.conv2d(
        x,
        kernel,
        strides=(1, *layer.strides, 1),
        padding=layer.padding.upper(),
        dilations=layer.dilation_rate,
    )
    return out + layer.bias if layer.use_bias else out


@pytest.mark.parametrize("shape,kwargs", CASES)
def test_matches_full_conv_forward_and_gradients(shape, kwargs):
    layer = build(shape, kwargs)
    x = tf.constant(np.random.default_rng(1).standard_normal(shape), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        out, ref = layer(x), full_conv_reference(x, layer)
        out_loss, ref_loss = tf.reduce_sum(out**2), tf.reduce_sum(ref**2)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-3)
    assert tuple(out.shape) == tuple(layer.compute_output_shape(shape))
    sources = [x, *layer.trainable_weights]
    for got, want in zip(
        tape.gradient(out_loss, sources), tape.gradient(ref_loss, sources), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-2)


def test_intermediate_activation_matches_two_keras_convs():
    shape = (2, 9, 8, 4)
    layer = SpatialSeparableConv2D(
        5, 3, strides=2, intermediate_filters=6, intermediate_activation="relu", activation="relu6"
    )
    layer.build(shape)
    vertical, intermediate_bias, horizontal, bias = layer.get_weights()
    first = keras.layers.Conv2D(6, (3, 1), strides=(2, 1), padding="same", activation="relu")
    second = keras.layers.Conv2D(5, (1, 3), strides=(1, 2), padding="same", activation="relu6")
    first.build(shape)
    first.set_weights([vertical, intermediate_bias + 0.5])
    layer.set_weights([vertical, intermediate_bias + 0.5, horizontal, bias])
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    hidden = first(x)
    second.build(hidden.shape)
    second.set_weights([horizontal, bias])
    np.testing.assert_allclose(layer(x), second(hidden), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,kwargs", CASES)
def test_cost_matches_conv_macs_and_weights(shape, kwargs):
    layer = build(shape, kwargs)
    out_h, out_w = layer.compute_output_shape(shape)[1:3]
    k_h, k_w = layer.kernel_size
    middle = kwargs.get("intermediate_filters", kwargs["filters"])
    # The vertical conv leaves the width alone: it runs at (out_h, input width).
    macs = conv_macs((out_h, shape[2]), (k_h, 1), shape[-1], middle)
    macs += conv_macs((out_h, out_w), (1, k_w), middle, kwargs["filters"])
    cost = layer_cost(layer, shape)
    assert cost.macs == macs
    assert cost.params == sum(int(np.prod(w.shape)) for w in layer.trainable_weights)


def test_weights_prunable_and_config_round_trip():
    layer = SpatialSeparableConv2D(
        8,
        (7, 5),
        strides=1,
        padding="valid",
        dilation_rate=2,
        intermediate_filters=4,
        intermediate_activation="relu",
        use_bias=True,
        activation="swish",
        kernel_initializer="he_normal",
        kernel_regularizer=keras.regularizers.L2(1e-4),
        activity_regularizer="l1",
        bias_constraint="non_neg",
        name="spatial",
    )
    layer.build((None, 20, 20, 3))
    shapes = {w.name.split("/")[-1]: tuple(w.shape) for w in layer.weights}
    assert shapes == {
        "vertical_kernel:0": (7, 1, 3, 4),
        "intermediate_bias:0": (4,),
        "horizontal_kernel:0": (1, 5, 4, 8),
        "bias:0": (8,),
    }
    assert layer.get_prunable_weights() == [layer.vertical_kernel, layer.horizontal_kernel]
    # Two kernels of one shape must not be drawn identically from one unseeded initializer.
    square = SpatialSeparableConv2D(3, 3)
    square.build((None, 5, 5, 3))
    assert not np.array_equal(square.vertical_kernel[:, 0], square.horizontal_kernel[0])
    config = layer.get_config()
    assert SpatialSeparableConv2D.from_config(config).get_config() == config
    assert config["intermediate_filters"] == 4 and config["dilation_rate"] == (2, 2)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_computes_low_keeps_float32_variables(policy):
    shape, kwargs = CASES[0]
    exact = build(shape, kwargs)
    layer = SpatialSeparableConv2D(**kwargs, dtype=keras.mixed_precision.Policy(policy))
    layer.build(shape)
    layer.set_weights(exact.get_weights())
    x = np.random.default_rng(2).standard_normal(shape).astype("float32")
    out = layer(x)
    assert out.dtype == keras.mixed_precision.Policy(policy).compute_dtype
    assert all(w.dtype == tf.float32 for w in layer.weights)
    tol = 0.05 if policy == "mixed_float16" else 0.5
    np.testing.assert_allclose(tf.cast(out, tf.float32), exact(x), rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "kwargs,named",
    [
        (dict(filters=0, kernel_size=3), "filters"),
        (dict(filters=4, kernel_size=(3, 0)), "kernel_size"),
        (dict(filters=4, kernel_size=3, strides=2, dilation_rate=2), "dilation_rate"),
        (dict(filters=4, kernel_size=3, padding="causal"), "causal"),
        (dict(filters=4, kernel_size=3, intermediate_filters=-1), "intermediate_filters"),
    ],
)
def test_bad_arguments_raise_naming_the_value(kwargs, named):
    with pytest.raises(ValueError, match=named):
        SpatialSeparableConv2D(**kwargs)


def small_model(shape, kwargs, name):
    inputs = keras.Input(shape[1:])
    layer = SpatialSeparableConv2D(**kwargs, bias_initializer="random_normal", name=name)
    return keras.Model(inputs, layer(inputs))


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    built = [
        small_model(shape, kwargs, f"spatial_{i}") for i, (shape, kwargs) in enumerate(CASES[1:4])
    ]
    inputs = [
        np.random.default_rng(i).standard_normal((3, *shape[1:])).astype("float32")
        for i, (shape, _) in enumerate(CASES[1:4])
    ]
    x = np.random.default_rng(5).standard_normal((4, 9, 9, 4)).astype("float32")
    dense = small_model(
        (None, 9, 9, 4),
        dict(filters=6, kernel_size=3, intermediate_activation="relu"),
        "spatial_pruned",
    )
    pruned = model_checks.prune_train_strip(dense, x, np.zeros((4, 9, 9, 6), "float32"))
    return [*zip(built, inputs, strict=True), (pruned, x)]


def test_pruning_zeroes_both_kernels(models):
    layer = models[-1][0].get_layer("spatial_pruned")
    assert type(layer) is SpatialSeparableConv2D
    for kernel in (layer.vertical_kernel, layer.horizontal_kernel):
        assert np.mean(kernel.numpy() == 0) == pytest.approx(0.5, abs=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["keras", "saved_model"])
def test_reload_in_fresh_process(models, tmp_path, fmt):
    outputs = model_checks.predict_in_fresh_process(models, tmp_path, fmt=fmt)
    for (model, x), out in zip(models, outputs, strict=True):
        np.testing.assert_allclose(out, model.predict_on_batch(x), rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_tflite_float_matches_with_builtin_conv_ops(models):
    for model, x in models:
        flatbuffer = model_checks.tflite_convert(model)
        ops = model_checks.tflite_op_names(flatbuffer)
        assert ops <= {"CONV_2D", "RELU"}, ops
        np.testing.assert_allclose(
            model_checks.tflite_predict(flatbuffer, x),
            model.predict_on_batch(x),
            rtol=1e-5,
            atol=1e-5,
        )
