"""HardSwish and HardSigmoid against their formulas and keras.applications' MobileNetV3 forms.

The shared layer checks (training, mixed precision, config, tfmot, reload, TFLite) run on both
in ``test_common.py``.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from layers import HardSigmoid, HardSwish
from tests import model_checks

# Both kinks (-3 and 3) and points on each piece.
X = np.linspace(-5, 5, 41, dtype=np.float32).reshape(1, 41, 1)


def test_values_follow_the_piecewise_linear_definitions():
    gate = np.clip(X + 3, 0, 6) / 6
    np.testing.assert_allclose(HardSigmoid()(X).numpy(), gate, atol=1e-7)
    np.testing.assert_allclose(HardSwish()(X).numpy(), X * gate, atol=1e-6)
    assert HardSwish()(X).numpy()[0, :9].max() == 0  # zero below -3
    np.testing.assert_allclose(HardSwish()(X).numpy()[0, -9:], X[0, -9:], atol=1e-6)


def test_equal_keras_applications_mobilenet_v3_activations():
    from tf_keras.src.applications import mobilenet_v3

    inputs = keras.Input((41, 1))
    reference = keras.Model(
        inputs, [mobilenet_v3.hard_sigmoid(inputs), mobilenet_v3.hard_swish(inputs)]
    )
    want_gate, want_swish = (t.numpy() for t in reference(X))
    np.testing.assert_allclose(HardSigmoid()(X).numpy(), want_gate, atol=1e-7)
    np.testing.assert_allclose(HardSwish()(X).numpy(), want_swish, atol=1e-6)


@pytest.mark.parametrize("layer", [HardSwish, HardSigmoid])
def test_gradients_are_the_slopes(layer):
    x = tf.constant([[-4.0, -1.0, 0.5, 4.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer()(x)
    slopes = tape.gradient(y, x).numpy()[0]
    if layer is HardSigmoid:
        np.testing.assert_allclose(slopes, [0, 1 / 6, 1 / 6, 0], atol=1e-7)
    else:  # d/dx x(x + 3)/6 = (2x + 3)/6 between the kinks
        np.testing.assert_allclose(slopes, [0, 1 / 6, 4 / 6, 1], atol=1e-6)


@pytest.mark.slow
def test_hard_swish_after_conv_and_batch_norm_is_one_tflite_op():
    """The converter folds BN into the conv; the add of 3 must still be matched as hard-swish."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, HardSwish()(x))
    ops = model_checks.tflite_op_names(model_checks.tflite_convert(model))
    assert ops == {"CONV_2D", "HARD_SWISH"}, ops
