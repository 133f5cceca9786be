"""MobileNet v3's hard-sigmoid and hard-swish as proper layers (no Lambda, no TFOpLambda).

Both are piecewise-linear stand-ins for sigmoid and swish (Howard et al., 2019): ``relu6(x + 3)
/ 6`` is 0 below -3, 1 above 3 and linear between, so it costs an add, a clipped max and a
multiply, with no exponential, and quantizes without a lookup table.

They are written as exactly ``relu6(x + 3) / 6`` and ``x * relu6(x + 3) / 6``: the TFLite
converter recognises this form and fuses hard-swish into one ``HARD_SWISH`` op (float and int8;
TensorFlow issue 49188 is the report of a form it does not fuse). keras.applications' MobileNetV3
builds the same function from ``ReLU``, ``Multiply`` and auto-generated ``TFOpLambda`` layers.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402


class _ElementwiseActivation(keras.layers.Layer):
    """An activation without weights or arguments; any input shape, same output shape.

    Cost: zero multiply-adds and zero parameters (activations are free by the papers'
    convention, ``layers.cost``).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_prunable_weights(self):
        """tfmot: nothing to prune."""
        return []


@keras.saving.register_keras_serializable(package="lightnets")
class HardSigmoid(_ElementwiseActivation):
    """Hard sigmoid ``relu6(x + 3) / 6``: MobileNet v3's squeeze-and-excite gate.

    Input shape: any. Output shape: the input's, values in [0, 1].
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Identity on ``relu6(x + 3)``. Int8 TFLite computes the gate as an ADD (ReLU6 fused)
        # then a MUL, so that tensor is quantized; quantization-aware training replaces this
        # with a fake-quant (compression/quantization.py). Not an argument, not in the config.
        self.hidden_tap = keras.activations.linear

    def call(self, inputs):
        return self.hidden_tap(tf.nn.relu6(inputs + 3.0)) / 6.0


@keras.saving.register_keras_serializable(package="lightnets")
class HardSwish(_ElementwiseActivation):
    """Hard swish ``x * relu6(x + 3) / 6``: MobileNet v3's nonlinearity in its deeper layers.

    Converts to TFLite's fused ``HARD_SWISH`` op, in float and in int8.

    Input shape: any. Output shape: the input's.
    """

    def call(self, inputs):
        return inputs * tf.nn.relu6(inputs + 3.0) / 6.0
