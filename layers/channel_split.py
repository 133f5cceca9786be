"""ShuffleNet v2's channel split as a proper layer (a Lambda or a raw tf.split would not save,
prune or load safely)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from layers.channel_base import ChannelLayer  # noqa: E402


@keras.saving.register_keras_serializable(package="lightnets")
class ChannelSplit(ChannelLayer):
    """Cuts the channel (last) axis into ``num_splits`` equal, contiguous parts.

    ShuffleNet v2 sends one half of a unit's channels through unchanged and the other through the
    convolution branch; the channel shuffle at the end of the previous unit decides which channels
    land in which half, so contiguous halves are all the split needs.

    Args:
      num_splits: number of equal parts; must divide the channel count.

    Input shape:
      ``(B, ..., C)`` with a static ``C``.

    Output shape:
      a list of ``num_splits`` tensors ``(B, ..., C / num_splits)``; part ``i`` holds channels
      ``i·C/n`` to ``(i + 1)·C/n − 1``.

    Cost:
      zero multiply-adds and zero parameters.
    """

    divisor_name = "num_splits"

    def __init__(self, num_splits=2, **kwargs):
        super().__init__(num_splits, **kwargs)
        # Identity on the input. Int8 TFLite gives SPLIT's outputs their input's scale, and a
        # concatenation downstream imposes its own on the part it takes, which the converter
        # carries back through SPLIT to the other parts too; quantization-aware training
        # replaces this with a fake-quant (compression/quantization.py), which pins the split's
        # scale, so the file requantizes only the concatenated part, as the QAT model does.
        # Not an argument, not in the config.
        self.input_tap = keras.activations.linear

    def call(self, inputs):
        return tf.split(self.input_tap(inputs), self.num_splits, axis=-1)

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        part = shape[:-1] + [None if shape[-1] is None else shape[-1] // self.num_splits]
        return [tf.TensorShape(part) for _ in range(self.num_splits)]
