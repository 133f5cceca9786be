"""GroupConv2D: every formulation against a numpy reference, how ``auto`` chooses, its cost."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from layers import GroupConv2D, conv_ops, layer_cost
from layers.grouped import native_grouped_conv_ok
from tests import model_checks
from tests.layers import reference

# (input shape, kwargs, implementations besides "auto"): strides, both paddings, dilation, odd and
# non-square sizes, batch 1, one input channel per group (depthwise), groups=1.
CASES = [
    ((2, 9, 7, 12), dict(filters=6, kernel_size=1, groups=3), ("native", "split", "matmul")),
    ((1, 9, 7, 12), dict(filters=6, kernel_size=1, groups=3, strides=2), ("native", "matmul")),
    (
        (1, 9, 7, 12),
        dict(filters=9, kernel_size=3, groups=3, strides=2, padding="valid"),
        ("native", "split"),
    ),
    (
        (2, 11, 10, 16),
        dict(filters=8, kernel_size=(3, 5), groups=4, dilation_rate=(2, 1)),
        ("native", "split"),
    ),
    (
        (2, 8, 8, 8),
        dict(filters=16, kernel_size=3, groups=8, padding="valid", use_bias=False),
        ("native", "split", "depthwise"),
    ),
    (
        (1, 7, 9, 6),
        dict(filters=12, kernel_size=3, groups=6, strides=(2, 1)),
        ("native", "depthwise"),
    ),
    (
        (1, 10, 9, 4),
        dict(filters=8, kernel_size=3, groups=4, dilation_rate=2),
        ("native", "split", "depthwise"),
    ),
    ((2, 6, 6, 4), dict(filters=6, kernel_size=3, groups=1, activation="relu"), ("split",)),
]
CASE_IDS = [f"{kw['kernel_size']}-g{kw['groups']}-{i}" for i, (_, kw, _) in enumerate(CASES)]


def make_layer(shape, kwargs, implementation="auto", seed=0):
    layer = GroupConv2D(**kwargs, implementation=implementation)
    layer.build(shape)
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.standard_normal(w.shape).astype("float32") for w in layer.weights])
    return layer


def numpy_forward_and_vjp(x, layer, upstream):
    """The layer in numpy: grouped conv + bias + activation, and its exact gradients."""
    args = dict(
        strides=layer.strides,
        padding=layer.padding,
        dilation=layer.dilation_rate,
        groups=layer.groups,
    )
    kernel = layer.kernel.numpy()
    pre = reference.conv2d(x, kernel, **args)
    if layer.use_bias:
        pre = pre + layer.bias.numpy()
    relu = layer.get_config()["activation"] == "relu"
    out = np.maximum(pre, 0) if relu else pre
    grad_pre = upstream * (pre > 0) if relu else upstream
    d_x, d_kernel = reference.conv2d_vjp(x, kernel, grad_pre, **args)
    grads = [d_x, d_kernel] + ([grad_pre.sum(axis=(0, 1, 2))] if layer.use_bias else [])
    return out, grads


def native_is_trainable(kwargs):
    dilation = kwargs.get("dilation_rate", 1)
    dilated = max((dilation, dilation) if isinstance(dilation, int) else dilation) > 1
    return kwargs["groups"] == 1 or native_grouped_conv_ok("float32", dilated)


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("shape,kwargs,impls", CASES, ids=CASE_IDS)
def test_every_formulation_matches_the_numpy_reference(shape, kwargs, impls, graph):
    x = np.random.default_rng(1).standard_normal(shape).astype("float32")
    for implementation in ("auto", *impls):
        layer = make_layer(shape, kwargs, implementation)
        if implementation == "native" and not native_is_trainable(kwargs):
            with pytest.raises(ValueError, match="implementation='auto'"):
                layer(x)
            continue
        reference.assert_layer_matches(
            layer, x, numpy_forward_and_vjp, graph=graph, label=implementation
        )


def test_auto_follows_what_the_kernels_can_do():
    """depthwise for one channel per group; native where grouped kernels train; split elsewhere."""
    depthwise = make_layer((1, 8, 8, 6), dict(filters=12, kernel_size=3, groups=6))
    assert depthwise.resolved_implementation() == "depthwise"
    grouped = make_layer((1, 8, 8, 12), dict(filters=12, kernel_size=1, groups=3))
    expected = "native" if native_grouped_conv_ok("float32", False) else "split"
    assert grouped.resolved_implementation() == expected
    assert expected == (
        "native" if conv_ops.gpu_available() or conv_ops.onednn_enabled() else "split"
    )
    # Exports trace for where they run, whatever this machine's kernels are.
    with conv_ops.tracing_for("tflite"):
        assert grouped.resolved_implementation() == "native"
    with conv_ops.tracing_for("any_tf"):
        assert grouped.resolved_implementation() == "split"
        assert depthwise.resolved_implementation() == "depthwise"


def test_xla_auto_uses_split_on_cpu_and_matches():
    """XLA's CPU grouped conv is the slow path Keras takes; under jit the layer splits instead."""
    shape, kwargs = CASES[3][0], CASES[3][1]
    layer = make_layer(shape, kwargs)
    x = np.random.default_rng(3).standard_normal(shape).astype("float32")
    chosen = []

    @tf.function(jit_compile=True)
    def compiled(x):
        chosen.append(layer.resolved_implementation())
        return layer(x)

    want = (
        reference.conv2d(x, layer.kernel.numpy(), dilation=layer.dilation_rate, groups=layer.groups)
        + layer.bias.numpy()
    )
    np.testing.assert_allclose(compiled(x), want, rtol=1e-4, atol=1e-4)
    native = conv_ops.gpu_available() and native_grouped_conv_ok("float32", True)
    assert chosen == ["native" if native else "split"]


def test_weights_transfer_from_keras_grouped_conv():
    shape = (2, 8, 8, 12)
    keras_conv = keras.layers.Conv2D(6, 3, groups=3, padding="same", bias_initializer="ones")
    x = np.random.default_rng(2).standard_normal(shape).astype("float32")
    want = keras_conv(x)
    layer = GroupConv2D(6, 3, groups=3)
    layer.build(shape)
    layer.set_weights(keras_conv.get_weights())
    np.testing.assert_allclose(layer(x), want, rtol=1e-5, atol=1e-4)
    assert [w.name.split("/")[-1] for w in layer.weights] == ["kernel:0", "bias:0"]


def test_cost_matches_keras_grouped_conv_and_the_formula():
    shape = (None, 28, 28, 240)
    layer = GroupConv2D(240, 1, groups=3, use_bias=False)
    layer.build(shape)
    keras_conv = keras.layers.Conv2D(240, 1, groups=3, use_bias=False)
    keras_conv.build(shape)
    cost = layer_cost(layer, shape)
    assert cost.macs == 28 * 28 * 240 * 1 * 240 // 3
    assert cost == layer_cost(keras_conv, shape)
    strided = GroupConv2D(64, 3, groups=4, strides=2, padding="valid")
    strided.build((None, 15, 15, 32))
    assert strided.compute_cost((None, 15, 15, 32)).macs == 7 * 7 * 32 * 9 * 64 // 4
    assert strided.compute_cost((None, 15, 15, 32)).params == 9 * 8 * 64 + 64
    assert layer.get_prunable_weights() == [layer.kernel]


@pytest.mark.slow
def test_tflite_ops_of_each_formulation():
    expected_ops = {
        "auto": {"CONV_2D"},  # TFLite's grouped CONV_2D, which XNNPack runs grouped
        "native": {"CONV_2D"},
        "split": {"SPLIT", "CONV_2D", "CONCATENATION"},
        "depthwise": {"DEPTHWISE_CONV_2D"},
    }
    rng = np.random.default_rng(6)
    for implementation, kwargs in [
        ("auto", dict(filters=12, kernel_size=1, groups=3)),
        ("split", dict(filters=12, kernel_size=3, groups=3, strides=2)),
        ("native", dict(filters=12, kernel_size=3, groups=3, dilation_rate=2)),
        ("depthwise", dict(filters=24, kernel_size=3, groups=12, strides=2)),
    ]:
        inputs = keras.Input((9, 9, 12))
        layer = GroupConv2D(**kwargs, implementation=implementation, name="gconv")
        with conv_ops.tracing_for("tflite"):  # explicit "native" builds on every kernel set
            model = keras.Model(inputs, layer(inputs))
        x = rng.standard_normal((3, 9, 9, 12)).astype("float32")
        flatbuffer = model_checks.tflite_convert(model)
        assert model_checks.tflite_op_names(flatbuffer) == expected_ops[implementation]
        want = reference.conv2d(
            x,
            layer.kernel.numpy(),
            strides=layer.strides,
            dilation=layer.dilation_rate,
            groups=layer.groups,
        )
        np.testing.assert_allclose(
            model_checks.tflite_predict(flatbuffer, x), want + layer.bias.numpy(), atol=1e-4
        )
