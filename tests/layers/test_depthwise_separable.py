import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from layers import DepthwiseSeparableConv2D, layer_cost
from layers.cost import conv_macs
from tests import model_checks

# (input shape, kwargs): strides, both paddings, dilation, odd sizes, depth multiplier, batch 1.
CASES = [
    ((2, 9, 9, 4), dict(filters=6, kernel_size=3)),
    ((1, 7, 11, 3), dict(filters=5, kernel_size=3, strides=2, padding="valid")),
    ((2, 10, 9, 4), dict(filters=8, kernel_size=(3, 5), strides=(2, 1))),
    ((2, 13, 12, 3), dict(filters=4, kernel_size=3, dilation_rate=2, padding="valid")),
    ((1, 12, 12, 2), dict(filters=3, kernel_size=3, dilation_rate=(3, 2), depth_multiplier=2)),
    ((2, 8, 8, 3), dict(filters=4, kernel_size=1, depth_multiplier=3, use_bias=False)),
]


def reference(x, layer):
    """Independent reference: tf.nn.depthwise_conv2d (its own dilation path), then a 1×1 conv."""
    depthwise = tf.nn.depthwise_conv2d(
        x,
        layer.depthwise_kernel,
        strides=(1, *layer.strides, 1),
        padding=layer.padding.upper(),
        dilations=layer.dilation_rate,
    )
    out = tf.nn.conv2d(depthwise, layer.pointwise_kernel, strides=1, padding="VALID")
    if layer.use_bias:
        out = out + layer.bias
    return layer.activation(out)


def build(shape, kwargs, seed=0):
    layer = DepthwiseSeparableConv2D(**kwargs, bias_initializer="random_normal")
    layer.build(shape)
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.standard_normal(w.shape).astype("float32") for w in layer.weights])
    return layer


@pytest.mark.parametrize("shape,kwargs", CASES)
def test_matches_reference_forward_and_gradients(shape, kwargs):
    layer = build(shape, kwargs)
    x = tf.constant(np.random.default_rng(1).standard_normal(shape), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        out, ref = layer(x), reference(x, layer)
        out_loss, ref_loss = tf.reduce_sum(out**2), tf.reduce_sum(ref**2)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)
    assert tuple(out.shape) == tuple(layer.compute_output_shape(shape))
    sources = [x, *layer.trainable_weights]
    for got, want in zip(
        tape.gradient(out_loss, sources), tape.gradient(ref_loss, sources), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("shape,kwargs", CASES)
def test_cost_matches_conv_macs_and_weights(shape, kwargs):
    layer = build(shape, kwargs)
    out_hw = tuple(layer.compute_output_shape(shape)[1:3])
    channels, dm, filters = shape[-1], layer.depth_multiplier, kwargs["filters"]
    macs = conv_macs(out_hw, layer.kernel_size, channels, channels * dm, groups=channels)
    macs += conv_macs(out_hw, (1, 1), channels * dm, filters)
    cost = layer_cost(layer, shape)
    assert cost.macs == macs
    assert cost.params == sum(int(np.prod(w.shape)) for w in layer.trainable_weights)


def test_cost_formula_for_stride_one():
    layer = DepthwiseSeparableConv2D(32, 3)
    height, width, n, m, k = 14, 14, 16, 32, 3
    assert layer.compute_cost((None, height, width, n)).macs == height * width * n * (k * k + m)


def test_weight_names_shapes_and_prunable_weights():
    layer = DepthwiseSeparableConv2D(8, 3, depth_multiplier=2)
    layer.build((None, 5, 5, 3))
    shapes = {w.name.split("/")[-1]: tuple(w.shape) for w in layer.weights}
    assert shapes == {
        "depthwise_kernel:0": (3, 3, 3, 2),
        "pointwise_kernel:0": (1, 1, 6, 8),
        "bias:0": (8,),
    }
    assert layer.get_prunable_weights() == [layer.pointwise_kernel]
    both = DepthwiseSeparableConv2D(8, 3, prune_depthwise=True)
    both.build((None, 5, 5, 3))
    assert both.get_prunable_weights() == [both.depthwise_kernel, both.pointwise_kernel]


def test_config_round_trip_keeps_every_argument():
    layer = DepthwiseSeparableConv2D(
        8,
        (3, 5),
        strides=1,
        padding="valid",
        dilation_rate=2,
        depth_multiplier=2,
        use_bias=False,
        activation="relu6",
        prune_depthwise=True,
        depthwise_initializer="he_normal",
        pointwise_regularizer=keras.regularizers.L2(1e-4),
        activity_regularizer="l1",
        bias_constraint="non_neg",
        name="sep",
    )
    config = layer.get_config()
    clone = DepthwiseSeparableConv2D.from_config(config)
    assert clone.get_config() == config
    assert config["dilation_rate"] == (2, 2) and config["prune_depthwise"] is True
    assert keras.activations.serialize(clone.activation) == "relu6"


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_computes_low_keeps_float32_variables(policy):
    shape, kwargs = CASES[3]
    exact = build(shape, kwargs)
    layer = DepthwiseSeparableConv2D(**kwargs, dtype=keras.mixed_precision.Policy(policy))
    layer.build(shape)
    layer.set_weights(exact.get_weights())
    x = np.random.default_rng(2).standard_normal(shape).astype("float32")
    out = layer(x)
    assert out.dtype == keras.mixed_precision.Policy(policy).compute_dtype
    assert all(w.dtype == tf.float32 for w in layer.weights)
    tol = 0.05 if policy == "mixed_float16" else 0.3
    np.testing.assert_allclose(tf.cast(out, tf.float32), exact(x), rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "kwargs,named",
    [
        (dict(filters=0, kernel_size=3), "filters"),
        (dict(filters=4, kernel_size=0), "kernel_size"),
        (dict(filters=4, kernel_size=3, strides=2, dilation_rate=2), "dilation_rate"),
        (dict(filters=4, kernel_size=3, padding="full"), "full"),
        (dict(filters=4, kernel_size=3, depth_multiplier=0), "depth_multiplier"),
        (dict(filters=2.5, kernel_size=3), "2.5"),
    ],
)
def test_bad_arguments_raise_naming_the_value(kwargs, named):
    with pytest.raises(ValueError, match=named):
        DepthwiseSeparableConv2D(**kwargs)


def test_stride_with_dilation_error_names_both():
    with pytest.raises(ValueError, match=r"strides=\(2, 2\).*dilation_rate=\(3, 3\)"):
        DepthwiseSeparableConv2D(4, 3, strides=2, dilation_rate=3)


def test_unknown_channels_raise():
    with pytest.raises(ValueError, match="channel"):
        DepthwiseSeparableConv2D(4, 3).build((None, 8, 8, None))


def small_model(shape, kwargs, name):
    inputs = keras.Input(shape[1:])
    outputs = DepthwiseSeparableConv2D(**kwargs, bias_initializer="random_normal", name=name)(
        inputs
    )
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def models():
    """Models covering stride, dilation and depth multiplier, plus a pruned-and-stripped one."""
    keras.utils.set_random_seed(0)
    built = [small_model(shape, kwargs, f"sep_{i}") for i, (shape, kwargs) in enumerate(CASES[1:5])]
    x = np.random.default_rng(3).standard_normal((4, 9, 9, 4)).astype("float32")
    dense = small_model(
        (None, 9, 9, 4), dict(filters=6, kernel_size=3, prune_depthwise=True), "sep_pruned"
    )
    pruned = model_checks.prune_train_strip(dense, x, np.zeros((4, 9, 9, 6), "float32"))
    inputs = [
        np.random.default_rng(i).standard_normal((3, *shape[1:])).astype("float32")
        for i, (shape, _) in enumerate(CASES[1:5])
    ]
    return [*zip(built, inputs, strict=True), (pruned, x)]


def test_pruning_zeroes_both_kernels_and_keeps_plain_layer(models):
    pruned, _ = models[-1]
    layer = pruned.get_layer("sep_pruned")
    assert type(layer) is DepthwiseSeparableConv2D
    for kernel in (layer.depthwise_kernel, layer.pointwise_kernel):
        assert np.mean(kernel.numpy() == 0) == pytest.approx(0.5, abs=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["keras", "saved_model"])
def test_reload_in_fresh_process(models, tmp_path, fmt):
    outputs = model_checks.predict_in_fresh_process(models, tmp_path, fmt=fmt)
    for (model, x), out in zip(models, outputs, strict=True):
        np.testing.assert_allclose(out, model.predict_on_batch(x), rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_tflite_float_matches_and_uses_plain_ops(models):
    for model, x in models:
        flatbuffer = model_checks.tflite_convert(model)
        ops = model_checks.tflite_op_names(flatbuffer)
        assert not ops & {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"}, ops
        layer = model.layers[-1]
        if max(layer.dilation_rate) == 1:
            assert ops == {"DEPTHWISE_CONV_2D", "CONV_2D"}, ops
        # Converted with batch 1, run with the input's batch: resizing works.
        np.testing.assert_allclose(
            model_checks.tflite_predict(flatbuffer, x), model.predict_on_batch(x), atol=1e-5
        )
