"""SpatialSeparableConv2D against a numpy reference (forward and exact gradients), its cost."""

import numpy as np
import pytest
import tf_keras as keras

from layers import SpatialSeparableConv2D, layer_cost
from layers.cost import conv_macs
from tests.layers import reference

CASES = [
    ((2, 9, 9, 4), dict(filters=6, kernel_size=3)),
    ((1, 11, 8, 3), dict(filters=5, kernel_size=(5, 3), strides=2, padding="valid")),
    ((2, 10, 9, 4), dict(filters=4, kernel_size=7, strides=(1, 2), intermediate_filters=3)),
    ((2, 13, 12, 3), dict(filters=4, kernel_size=3, dilation_rate=(2, 3), padding="valid")),
    ((1, 8, 8, 2), dict(filters=3, kernel_size=3, dilation_rate=2, use_bias=False)),
    (
        (2, 9, 8, 3),
        dict(filters=4, kernel_size=(3, 5), intermediate_filters=5, intermediate_activation="relu"),
    ),
]


def build(shape, kwargs, seed=0):
    layer = SpatialSeparableConv2D(**kwargs, bias_initializer="random_normal")
    layer.build(shape)
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.standard_normal(w.shape).astype("float32") for w in layer.weights])
    return layer


def numpy_forward_and_vjp(x, layer, upstream):
    """k_h×1 conv (vertical stride and dilation) [-> bias -> ReLU] -> 1×k_w conv -> bias."""
    (s_h, s_w), (d_h, d_w) = layer.strides, layer.dilation_rate
    vertical = dict(strides=(s_h, 1), padding=layer.padding, dilation=(d_h, 1))
    horizontal = dict(strides=(1, s_w), padding=layer.padding, dilation=(1, d_w))
    v_kernel, h_kernel = layer.vertical_kernel.numpy(), layer.horizontal_kernel.numpy()
    hidden = reference.conv2d(x, v_kernel, **vertical)
    relu = layer.intermediate_activation is not None
    if relu:
        pre = hidden + layer.intermediate_bias.numpy()
        hidden = np.maximum(pre, 0)
    out = reference.conv2d(hidden, h_kernel, **horizontal)
    if layer.use_bias:
        out = out + layer.bias.numpy()
    d_hidden, d_h_kernel = reference.conv2d_vjp(hidden, h_kernel, upstream, **horizontal)
    if relu:
        d_hidden = d_hidden * (pre > 0)
    d_x, d_v_kernel = reference.conv2d_vjp(x, v_kernel, d_hidden, **vertical)
    grads = [d_x, d_v_kernel]
    if relu:
        grads.append(d_hidden.sum(axis=(0, 1, 2)))
    grads.append(d_h_kernel)
    if layer.use_bias:
        grads.append(upstream.sum(axis=(0, 1, 2)))
    return out, grads


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("shape,kwargs", CASES)
def test_matches_the_numpy_reference_forward_and_gradients(shape, kwargs, graph):
    x = np.random.default_rng(1).standard_normal(shape).astype("float32")
    reference.assert_layer_matches(build(shape, kwargs), x, numpy_forward_and_vjp, graph=graph)


def test_without_intermediate_activation_it_equals_the_rank_limited_full_conv():
    """Nothing in between: the layer is one k_h×k_w conv whose kernel is the product V·H."""
    shape, kwargs = CASES[0]
    layer = build(shape, kwargs)
    x = np.random.default_rng(2).standard_normal(shape).astype("float32")
    full = np.einsum(
        "acp,bpm->abcm", layer.vertical_kernel.numpy()[:, 0], layer.horizontal_kernel.numpy()[0]
    )
    want = reference.conv2d(x, full) + layer.bias.numpy()
    np.testing.assert_allclose(layer(x), want, rtol=1e-4, atol=1e-4)


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


def test_weights_and_fresh_initializers_per_kernel():
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
