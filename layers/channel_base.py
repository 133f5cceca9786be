"""The base of the layers that move or cut channels and own no weights (shuffle, split)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from layers import conv_args  # noqa: E402
from layers.cost import LayerCost  # noqa: E402


class ChannelLayer(keras.layers.Layer):
    """A layer over the channel (last) axis whose size a divisor must divide.

    Subclasses set ``divisor_name`` (their argument, e.g. ``groups``) and implement ``call``
    and ``compute_output_shape``. They cost zero multiply-adds and parameters (a memory
    operation, by the papers' convention) and give tfmot nothing to prune.
    """

    divisor_name = ""

    def __init__(self, divisor, **kwargs):
        super().__init__(**kwargs)
        setattr(self, self.divisor_name, conv_args.positive_int(divisor, self.divisor_name))
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    @property
    def divisor(self) -> int:
        return getattr(self, self.divisor_name)

    def build(self, input_shape):
        channels = conv_args.divisible_channels(
            tf.TensorShape(input_shape), type(self).__name__, self.divisor, self.divisor_name
        )
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: channels})
        self.built = True

    def compute_cost(self, input_shape) -> LayerCost:
        """Zero: the layer moves memory and owns no weights."""
        del input_shape
        return LayerCost(0, 0)

    def get_prunable_weights(self):
        """tfmot: nothing to prune."""
        return []

    def get_config(self):
        config = super().get_config()
        config[self.divisor_name] = self.divisor
        return config
