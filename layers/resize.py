"""Bilinear resizing to a fixed size, as a layer: DeepLab's upsampling without a Lambda layer.

``keras.layers.UpSampling2D`` scales by integer factors only, but DeepLab resizes between sizes
that are not multiples of each other (a 513×513 input gives 33×33 features at output stride 16
and 129×129 at stride 4) and broadcasts a pooled 1×1 map back to the feature size. ``Resize2D``
resizes to a size fixed when the model is built, so every exported graph has static shapes and
converts to one TFLite ``RESIZE_BILINEAR`` (float and int8).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from layers import conv_args  # noqa: E402
from layers.cost import LayerCost  # noqa: E402

INTERPOLATIONS = ("bilinear", "nearest")


@keras.saving.register_keras_serializable(package="lightnets")
class Resize2D(keras.layers.Layer):
    """Resizes ``(B, H, W, C)`` maps to ``(B, height, width, C)`` (``tf.image.resize``).

    Half-pixel centres, no antialiasing: TensorFlow's ``tf.image.resize`` and TFLite's
    ``RESIZE_BILINEAR`` compute the same values. The output keeps the input's dtype (mixed
    precision).

    Args:
      size: int or pair ``(height, width)`` of the output.
      interpolation: ``"bilinear"`` or ``"nearest"``.

    Input shape:
      ``(B, H, W, C)``.

    Output shape:
      ``(B, height, width, C)``.

    Cost:
      zero multiply-adds and parameters (resizing is not counted, like pooling; a bilinear
      output value costs 4 multiplies).
    """

    def __init__(self, size, interpolation: str = "bilinear", **kwargs):
        super().__init__(**kwargs)
        self.size = conv_args.pair(size, "size")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"Resize2D: interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}."
            )
        self.interpolation = interpolation
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def call(self, inputs):
        outputs = tf.image.resize(inputs, self.size, method=self.interpolation)
        return tf.cast(outputs, inputs.dtype)

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        return tf.TensorShape([shape[0], *self.size, shape[-1]])

    def compute_cost(self, input_shape) -> LayerCost:
        """Zero multiply-adds and parameters (see the class docstring)."""
        del input_shape
        return LayerCost(0, 0)

    def get_prunable_weights(self):
        """tfmot: nothing to prune."""
        return []

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, interpolation=self.interpolation)
        return config
