"""Keras' DepthwiseConv2D with its dilation computed by ``conv_ops`` (clean TFLite atrous stages).

``keras.layers.DepthwiseConv2D`` dilates through ``tf.nn.depthwise_conv2d``, whose
SpaceToBatchND/BatchToSpaceND pair the TFLite converter keeps. This subclass has the same
arguments, weights and layer config, so weights written for the Keras layer load into it by
name; only ``call`` differs, running ``conv_ops.depthwise_conv2d``, which converts to one
dilated ``DEPTHWISE_CONV_2D``. MobileNet v2's atrous stages (DeepLab's output stride 16 or 8) are
built from it.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from layers import conv_ops  # noqa: E402


@keras.saving.register_keras_serializable(package="lightnets")
class AtrousDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """A (dilated) depthwise convolution; ``keras.layers.DepthwiseConv2D``'s arguments.

    Channels-last only.

    Input shape:
      ``(B, H, W, N)``.

    Output shape:
      ``(B, H_out, W_out, N·dm)``, as ``keras.layers.DepthwiseConv2D``.

    Cost:
      multiply-adds ``k_h·k_w·N·dm·H_out·W_out``; parameters ``k_h·k_w·N·dm`` (+ bias), the
      Keras layer's (``layers.cost`` counts it as a ``DepthwiseConv2D``).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.data_format != "channels_last":
            raise ValueError(
                f"AtrousDepthwiseConv2D: data_format must be 'channels_last', got "
                f"{self.data_format!r}."
            )

    def call(self, inputs):
        outputs = conv_ops.depthwise_conv2d(
            inputs,
            tf.cast(self.depthwise_kernel, self.compute_dtype),
            self.strides,
            self.padding,
            self.dilation_rate,
        )
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, self.compute_dtype))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs
