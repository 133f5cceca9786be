"""ShuffleNet's channel shuffle as a proper layer (safe to save, load, prune and convert)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from layers import conv_args  # noqa: E402
from layers.cost import LayerCost  # noqa: E402

IMPLEMENTATIONS = ("auto", "transpose", "gather")


def shuffle_permutation(channels: int, groups: int) -> np.ndarray:
    """Source channel of each output channel: ``out[..., j] = in[..., perm[j]]``.

    Channels are read as a ``(groups, channels / groups)`` matrix and written out transposed, so
    output ``j`` takes input ``(j mod groups)·(channels / groups) + j div groups``.
    """
    return np.arange(channels).reshape(groups, channels // groups).T.reshape(-1)


@keras.saving.register_keras_serializable(package="lightnets")
class ChannelShuffle(keras.layers.Layer):
    """Channel shuffle (ShuffleNet): interleaves the channels of ``groups`` groups.

    After a grouped convolution each output group has only seen its own input group; shuffling
    lets the next grouped convolution mix information across groups. Channels are viewed as a
    ``(groups, C / groups)`` matrix, transposed and flattened back.

    Two formulations give identical results (``implementation``):

    * ``"transpose"``: collapse batch and spatial dims, reshape to ``(-1, groups, C / groups)``,
      transpose the last two axes (a 3-D transpose, never above 5-D), reshape back.
    * ``"gather"``: one ``tf.gather`` along channels with the static permutation.

    ``"auto"`` picks the one measured fastest (see ``docs/benchmarks.md``): ``"transpose"``.

    Args:
      groups: number of groups ``g``; must divide the channel count.
      implementation: ``"auto"``, ``"transpose"`` or ``"gather"``.

    Input shape:
      ``(B, ..., C)`` with a static ``C``; batch and spatial dims may be dynamic.

    Output shape:
      Same as the input.

    Cost:
      zero multiply-adds and zero parameters (a memory permutation, by the papers' convention).
    """

    def __init__(self, groups, implementation="auto", **kwargs):
        super().__init__(**kwargs)
        self.groups = conv_args.positive_int(groups, "groups")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}."
            )
        self.implementation = implementation
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        channels = input_shape[-1] if input_shape.rank else None
        if channels is None:
            raise ValueError(
                f"ChannelShuffle needs a static channel dimension, got input shape {input_shape}."
            )
        channels = int(channels)
        if channels % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide the number of channels ({channels}); "
                f"use a groups value that divides {channels}."
            )
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: channels})
        self._permutation = shuffle_permutation(channels, self.groups)
        self.built = True

    @property
    def resolved_implementation(self) -> str:
        """The formulation ``call`` runs."""
        return "transpose" if self.implementation == "auto" else self.implementation

    def call(self, inputs):
        if self.groups == 1:
            return inputs
        if self.resolved_implementation == "gather":
            return tf.gather(inputs, self._permutation, axis=-1)
        channels = inputs.shape[-1]
        grouped = tf.reshape(inputs, (-1, self.groups, channels // self.groups))
        shuffled = tf.transpose(grouped, (0, 2, 1))
        return tf.reshape(shuffled, tf.shape(inputs))

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def compute_cost(self, input_shape) -> LayerCost:
        """Zero: a shuffle moves memory and owns no weights."""
        del input_shape
        return LayerCost(0, 0)

    def get_prunable_weights(self):
        """tfmot: nothing to prune."""
        return []

    def get_config(self):
        config = super().get_config()
        config.update(groups=self.groups, implementation=self.implementation)
        return config
