"""DepthwiseSeparableConv2D against a numpy reference (forward and exact gradients), its cost."""

import numpy as np
import pytest
import tf_keras as keras

from layers import DepthwiseSeparableConv2D, layer_cost
from layers.cost import conv_macs
from tests import model_checks
from tests.layers import reference

# (input shape, kwargs): strides (equal and not), both paddings, dilation, odd sizes, depth
# multiplier, batch 1. The dilated cases (rates 2-4, both paddings) are the check that the native
# dilated depthwise path's gradients stay exact (they run against the numpy reference's).
CASES = [
    ((2, 9, 9, 4), dict(filters=6, kernel_size=3)),
    ((1, 7, 11, 3), dict(filters=5, kernel_size=3, strides=2, padding="valid")),
    ((2, 10, 9, 4), dict(filters=8, kernel_size=(3, 5), strides=(2, 1))),
    ((1, 11, 10, 3), dict(filters=4, kernel_size=(5, 3), strides=(1, 3), padding="valid")),
    ((2, 13, 12, 3), dict(filters=4, kernel_size=3, dilation_rate=2, padding="valid")),
    ((1, 12, 12, 2), dict(filters=3, kernel_size=3, dilation_rate=(3, 2), depth_multiplier=2)),
    ((2, 11, 13, 3), dict(filters=2, kernel_size=3, dilation_rate=4)),
    ((1, 12, 11, 2), dict(filters=3, kernel_size=3, dilation_rate=3, padding="valid")),
    ((2, 8, 8, 3), dict(filters=4, kernel_size=1, depth_multiplier=3, use_bias=False)),
]


def build(shape, kwargs, seed=0):
    layer = DepthwiseSeparableConv2D(**kwargs, bias_initializer="random_normal")
    layer.build(shape)
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.standard_normal(w.shape).astype("float32") for w in layer.weights])
    return layer


def numpy_forward_and_vjp(x, layer, upstream):
    """Depthwise conv (a grouped conv with one input channel per group), 1×1 conv, bias."""
    channels = x.shape[-1]
    depthwise = reference.depthwise_as_grouped(layer.depthwise_kernel.numpy())
    pointwise = layer.pointwise_kernel.numpy()
    args = dict(
        strides=layer.strides, padding=layer.padding, dilation=layer.dilation_rate, groups=channels
    )
    middle = reference.conv2d(x, depthwise, **args)
    out = reference.conv2d(middle, pointwise, padding="valid")
    if layer.use_bias:
        out = out + layer.bias.numpy()
    d_middle, d_pointwise = reference.conv2d_vjp(middle, pointwise, upstream, padding="valid")
    d_x, d_depthwise = reference.conv2d_vjp(x, depthwise, d_middle, **args)
    grads = [d_x, reference.grouped_as_depthwise(d_depthwise, channels), d_pointwise]
    if layer.use_bias:
        grads.append(upstream.sum(axis=(0, 1, 2)))
    return out, grads


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("shape,kwargs", CASES)
def test_matches_the_numpy_reference_forward_and_gradients(shape, kwargs, graph):
    x = np.random.default_rng(1).standard_normal(shape).astype("float32")
    reference.assert_layer_matches(build(shape, kwargs), x, numpy_forward_and_vjp, graph=graph)


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


@pytest.mark.slow
@pytest.mark.parametrize("shape,kwargs", CASES, ids=[str(i) for i in range(len(CASES))])
def test_tflite_has_one_depthwise_and_one_pointwise_op_and_no_space_to_batch(shape, kwargs):
    inputs = keras.Input(shape[1:])
    model = keras.Model(inputs, build(shape, kwargs)(inputs))
    x = np.random.default_rng(3).standard_normal((3, *shape[1:])).astype("float32")
    flatbuffer = model_checks.tflite_convert(model)
    ops = model_checks.tflite_op_names(flatbuffer)
    # Unequal strides too: TFLite's kernels take them, whatever this machine's do; a dilated
    # depthwise conv of a fixed-size input folds into one dilated DEPTHWISE_CONV_2D.
    assert ops == {"DEPTHWISE_CONV_2D", "CONV_2D"}, ops
    np.testing.assert_allclose(model_checks.tflite_predict(flatbuffer, x), model(x), atol=1e-5)
