"""Spatially separable convolution: Inception-v3's k×1 then 1×k factorisation of a k×k conv."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from layers import conv_args, conv_ops  # noqa: E402
from layers.conv_base import Conv2DBase  # noqa: E402
from layers.cost import LayerCost, conv_macs  # noqa: E402


@keras.saving.register_keras_serializable(package="lightnets")
class SpatialSeparableConv2D(Conv2DBase):
    """A ``k_h×1`` convolution followed by a ``1×k_w`` convolution (Inception-v3).

    Replaces a k×k kernel by two one-dimensional ones. The first (vertical) conv maps the ``N``
    input channels to ``intermediate_filters`` channels (default ``filters``, as Inception-v3's
    1×7/7×1 pairs do) and carries the vertical stride and dilation; the second (horizontal) conv
    maps them to ``filters`` with the horizontal stride and dilation. By default nothing sits in
    between, so the layer is one linear map of rank at most ``intermediate_filters`` per tap;
    ``intermediate_activation`` (Inception-v3 puts BN + ReLU there) makes it two layers, and then
    the intermediate also gets a bias when ``use_bias``. Dilated factors train on every CPU
    kernel set (``conv_ops.conv2d``).

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
        super().__init__(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            dilation_rate=dilation_rate,
            use_bias=use_bias,
            activation=activation,
            bias_initializer=bias_initializer,
            bias_regularizer=bias_regularizer,
            bias_constraint=bias_constraint,
            activity_regularizer=activity_regularizer,
            kernel_settings={
                "kernel": {
                    "initializer": kernel_initializer,
                    "regularizer": kernel_regularizer,
                    "constraint": kernel_constraint,
                }
            },
            **kwargs,
        )
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
        # Identity on the intermediate tensor (after its activation). Int8 TFLite quantizes it
        # (two CONV_2D ops), so quantization-aware training replaces this with a fake-quant
        # (compression/quantization.py); not an argument, not in the config.
        self.intermediate_tap = keras.activations.linear

    @property
    def _middle(self) -> int:
        return self.intermediate_filters or self.filters

    @property
    def _intermediate_bias(self) -> bool:
        return self.use_bias and self.intermediate_activation is not None

    def build_weights(self, channels: int) -> None:
        k_h, k_w = self.kernel_size
        self.vertical_kernel = self.add_kernel("vertical_kernel", (k_h, 1, channels, self._middle))
        self.intermediate_bias = (
            self.add_bias("intermediate_bias", self._middle) if self._intermediate_bias else None
        )
        self.horizontal_kernel = self.add_kernel(
            "horizontal_kernel", (1, k_w, self._middle, self.filters)
        )

    def call(self, inputs):
        (s_h, s_w), (d_h, d_w) = self.strides, self.dilation_rate
        hidden = conv_ops.conv2d(
            inputs, self.cast(self.vertical_kernel), (s_h, 1), self.padding, (d_h, 1)
        )
        if self.intermediate_activation is not None:
            if self.intermediate_bias is not None:
                hidden = tf.nn.bias_add(hidden, self.cast(self.intermediate_bias))
            hidden = self.intermediate_activation(hidden)
        outputs = conv_ops.conv2d(
            self.intermediate_tap(hidden),
            self.cast(self.horizontal_kernel),
            (1, s_w),
            self.padding,
            (1, d_w),
        )
        return self.finish(outputs)

    def compute_cost(self, input_shape) -> LayerCost:
        """Multiply-adds and trainable parameters for an input of ``input_shape`` (B, H, W, N)."""
        channels, width = int(input_shape[-1]), int(input_shape[2])
        k_h, k_w = self.kernel_size
        out_h, out_w = self.output_hw(input_shape)
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
            intermediate_filters=self.intermediate_filters,
            intermediate_activation=(
                None
                if self.intermediate_activation is None
                else keras.activations.serialize(self.intermediate_activation)
            ),
        )
        return config
