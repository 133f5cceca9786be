"""Spatially separable convolution: Inception-v3's k×1 then 1×k factorisation of a k×k conv."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from layers import conv_args  # noqa: E402
from layers.cost import LayerCost, conv_macs  # noqa: E402


def _fresh(initializer):
    """A copy of ``initializer``: one unseeded instance used twice draws the same values twice."""
    return type(initializer).from_config(initializer.get_config())


@keras.saving.register_keras_serializable(package="lightnets")
class SpatialSeparableConv2D(keras.layers.Layer):
    """A ``k_h×1`` convolution followed by a ``1×k_w`` convolution (Inception-v3, §3.2.1 survey).

    Replaces a k×k kernel by two one-dimensional ones. The first (vertical) conv maps the ``N``
    input channels to ``intermediate_filters`` channels (default ``filters``, as Inception-v3's
    1×7/7×1 pairs do) and carries the vertical stride and dilation; the second (horizontal) conv
    maps them to ``filters`` with the horizontal stride and dilation. By default nothing sits in
    between, so the layer is one linear map of rank at most ``intermediate_filters`` per tap;
    ``intermediate_activation`` (Inception-v3 puts BN + ReLU there) makes it two layers, and then
    the intermediate also gets a bias when ``use_bias``.

    Args:
      filters: number of output channels ``M``.
      kernel_size: int ``k`` or pair ``(k_h, k_w)``.
      strides: int or pair ``(s_h, s_w)``.
      padding: ``"same"`` or ``"valid"``.
      dilation_rate: int or pair; must be 1 when ``strides > 1``.
      intermediate_filters: channels ``P`` between the two convs; ``None`` means ``filters``.
      intermediate_activation: activation between the two convs; ``None`` for none.
      use_bias: whether to add a bias of shape ``(filters,)`` (and ``(P,)`` after the first conv
        when there is an intermediate activation).
      activation: activation applied to the output.
      kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
      activity_regularizer, kernel_constraint, bias_constraint: as for ``Conv2D``; kernel
      settings apply to both kernels.

    Weights:
      ``vertical_kernel`` ``(k_h, 1, N, P)``, ``horizontal_kernel`` ``(1, k_w, P, M)``, ``bias``
      ``(M,)``, ``intermediate_bias`` ``(P,)`` (only with an intermediate activation).

    Input shape:
      ``(B, H, W, N)``.

    Output shape:
      ``(B, H_out, W_out, M)``, the same as a ``k_h×k_w`` ``Conv2D`` with these arguments.

    Cost:
      multiply-adds ``H_out·W·N·P·k_h + H_out·W_out·P·M·k_w`` (``"valid"`` has ``W`` the input
      width: the vertical conv does not touch it), i.e. ``H·W·k·(N·P + P·M)`` for stride 1
      against ``H·W·k²·N·M`` for the full conv; parameters ``k_h·N·P + k_w·P·M`` (+ biases).
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="same",
        dilation_rate=1,
        intermediate_filters=None,
        intermediate_activation=None,
        use_bias=True,
        activation=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.filters = conv_args.positive_int(filters, "filters")
        self.kernel_size = conv_args.pair(kernel_size, "kernel_size")
        self.strides = conv_args.pair(strides, "strides")
        self.padding = conv_args.padding_mode(padding)
        self.dilation_rate = conv_args.pair(dilation_rate, "dilation_rate")
        conv_args.check_strides_dilation(self.strides, self.dilation_rate)
        self.intermediate_filters = (
            None
            if intermediate_filters is None
            else conv_args.positive_int(intermediate_filters, "intermediate_filters")
        )
        self.intermediate_activation = (
            None
            if intermediate_activation is None
            else keras.activations.get(intermediate_activation)
        )
        self.use_bias = bool(use_bias)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    @property
    def _middle(self) -> int:
        return self.intermediate_filters or self.filters

    @property
    def _intermediate_bias(self) -> bool:
        return self.use_bias and self.intermediate_activation is not None

    def _kernel(self, name, shape):
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=_fresh(self.kernel_initializer),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            trainable=True,
        )

    def _bias(self, name, size):
        return self.add_weight(
            name=name,
            shape=(size,),
            initializer=_fresh(self.bias_initializer),
            regularizer=self.bias_regularizer,
            constraint=self.bias_constraint,
            trainable=True,
        )

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 4 or input_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} needs a 4-D input (B, H, W, C) with a known channel "
                f"count, got input shape {input_shape}."
            )
        channels = int(input_shape[-1])
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: channels})
        k_h, k_w = self.kernel_size
        self.vertical_kernel = self._kernel("vertical_kernel", (k_h, 1, channels, self._middle))
        self.intermediate_bias = (
            self._bias("intermediate_bias", self._middle) if self._intermediate_bias else None
        )
        self.horizontal_kernel = self._kernel(
            "horizontal_kernel", (1, k_w, self._middle, self.filters)
        )
        self.bias = self._bias("bias", self.filters) if self.use_bias else None
        self.built = True

    def call(self, inputs):
        (s_h, s_w), (d_h, d_w) = self.strides, self.dilation_rate
        padding = self.padding.upper()
        hidden = tf.nn.conv2d(
            inputs,
            tf.cast(self.vertical_kernel, self.compute_dtype),
            strides=(1, s_h, 1, 1),
            padding=padding,
            dilations=(1, d_h, 1, 1),
        )
        if self.intermediate_activation is not None:
            if self.intermediate_bias is not None:
                hidden = tf.nn.bias_add(hidden, tf.cast(self.intermediate_bias, hidden.dtype))
            hidden = self.intermediate_activation(hidden)
        outputs = tf.nn.conv2d(
            hidden,
            tf.cast(self.horizontal_kernel, self.compute_dtype),
            strides=(1, 1, s_w, 1),
            padding=padding,
            dilations=(1, 1, d_w, 1),
        )
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, outputs.dtype))
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(
            conv_args.conv_output_shape(
                tf.TensorShape(input_shape).as_list(),
                self.filters,
                self.kernel_size,
                self.strides,
                self.padding,
                self.dilation_rate,
            )
        )

    def compute_cost(self, input_shape) -> LayerCost:
        """Multiply-adds and trainable parameters for an input of ``input_shape`` (B, H, W, N)."""
        channels, width = int(input_shape[-1]), int(input_shape[2])
        k_h, k_w = self.kernel_size
        out_h, out_w = (int(d) for d in self.compute_output_shape(input_shape)[1:3])
        macs = conv_macs((out_h, width), (k_h, 1), channels, self._middle)
        macs += conv_macs((out_h, out_w), (1, k_w), self._middle, self.filters)
        params = k_h * channels * self._middle + k_w * self._middle * self.filters
        if self.use_bias:
            params += self.filters + (self._middle if self._intermediate_bias else 0)
        return LayerCost(int(macs), int(params))

    def get_prunable_weights(self):
        """tfmot: both kernels."""
        return [self.vertical_kernel, self.horizontal_kernel]

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            intermediate_filters=self.intermediate_filters,
            intermediate_activation=(
                None
                if self.intermediate_activation is None
                else keras.activations.serialize(self.intermediate_activation)
            ),
            use_bias=self.use_bias,
            activation=keras.activations.serialize(self.activation),
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer),
            activity_regularizer=keras.regularizers.serialize(self.activity_regularizer),
            kernel_constraint=keras.constraints.serialize(self.kernel_constraint),
            bias_constraint=keras.constraints.serialize(self.bias_constraint),
        )
        return config
