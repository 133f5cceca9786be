"""Depthwise separable convolution (MobileNet, Xception), with TFLite-friendly atrous support."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from layers import conv_args, conv_ops  # noqa: E402
from layers.conv_base import Conv2DBase  # noqa: E402
from layers.cost import LayerCost, conv_macs  # noqa: E402


@keras.saving.register_keras_serializable(package="lightnets")
class DepthwiseSeparableConv2D(Conv2DBase):
    """A k×k depthwise convolution per channel followed by a 1×1 pointwise convolution.

    The factorisation of MobileNet and Xception: each of the ``N`` input channels is filtered by
    its own ``depth_multiplier`` k×k kernels, then a 1×1 convolution mixes the ``N·dm`` channels
    into ``filters`` outputs. No activation sits between the two (Xception found it hurts); an
    ``activation`` applies to the output.

    Dilation (DeepLab v3+'s atrous separable convolution) runs TensorFlow's dilated depthwise
    path; with a fixed input size it converts to one dilated TFLite ``DEPTHWISE_CONV_2D`` (no
    SpaceToBatchND/BatchToSpaceND). Unequal strides run on every CPU kernel set
    (``conv_ops.depthwise_conv2d``).

    Args:
      filters: number of output channels ``M``.
      kernel_size: int or pair ``(k_h, k_w)`` of the depthwise kernel.
      strides: int or pair, applied by the depthwise conv.
      padding: ``"same"`` or ``"valid"``.
      dilation_rate: int or pair; must be 1 when ``strides > 1``.
      depth_multiplier: depthwise outputs per input channel ``dm``.
      use_bias: whether to add a bias of shape ``(filters,)`` after the pointwise conv.
      activation: activation applied to the output.
      prune_depthwise: whether tfmot also prunes the depthwise kernel (by default only the
        pointwise kernel, which holds almost all the weights and MACs, is pruned).
      depthwise_initializer, pointwise_initializer, bias_initializer: initializers.
      depthwise_regularizer, pointwise_regularizer, bias_regularizer, activity_regularizer:
        regularizers.
      depthwise_constraint, pointwise_constraint, bias_constraint: constraints.

    Weights:
      ``depthwise_kernel`` ``(k_h, k_w, N, dm)``, ``pointwise_kernel`` ``(1, 1, N·dm, M)``,
      ``bias`` ``(M,)``.

    Input shape:
      ``(B, H, W, N)``.

    Output shape:
      ``(B, H_out, W_out, M)``; ``H_out = ceil(H / s)`` for ``"same"``,
      ``ceil((H - d·(k_h - 1)) / s)`` for ``"valid"``.

    Cost:
      multiply-adds ``H_out·W_out·N·dm·(k_h·k_w + M)``, i.e. ``H·W·N·(K² + M)`` for stride 1 and
      ``dm = 1``; parameters ``k_h·k_w·N·dm + N·dm·M`` (+ ``M`` bias).
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="same",
        dilation_rate=1,
        depth_multiplier=1,
        use_bias=True,
        activation=None,
        prune_depthwise=False,
        depthwise_initializer="glorot_uniform",
        pointwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        pointwise_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        depthwise_constraint=None,
        pointwise_constraint=None,
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
                "depthwise": {
                    "initializer": depthwise_initializer,
                    "regularizer": depthwise_regularizer,
                    "constraint": depthwise_constraint,
                },
                "pointwise": {
                    "initializer": pointwise_initializer,
                    "regularizer": pointwise_regularizer,
                    "constraint": pointwise_constraint,
                },
            },
            **kwargs,
        )
        self.depth_multiplier = conv_args.positive_int(depth_multiplier, "depth_multiplier")
        self.prune_depthwise = bool(prune_depthwise)
        # Identity on the depthwise output. Int8 TFLite quantizes that tensor (the two convs are
        # two ops), so quantization-aware training replaces this with a fake-quant
        # (compression/quantization.py); not an argument, not in the config.
        self.depthwise_tap = keras.activations.linear

    def build_weights(self, channels: int) -> None:
        self.depthwise_kernel = self.add_kernel(
            "depthwise_kernel", (*self.kernel_size, channels, self.depth_multiplier), "depthwise"
        )
        self.pointwise_kernel = self.add_kernel(
            "pointwise_kernel", (1, 1, channels * self.depth_multiplier, self.filters), "pointwise"
        )

    def call(self, inputs):
        depthwise = conv_ops.depthwise_conv2d(
            inputs,
            self.cast(self.depthwise_kernel),
            self.strides,
            self.padding,
            self.dilation_rate,
        )
        outputs = tf.nn.conv2d(
            self.depthwise_tap(depthwise),
            self.cast(self.pointwise_kernel),
            strides=1,
            padding="VALID",
        )
        return self.finish(outputs)

    def compute_cost(self, input_shape) -> LayerCost:
        """Multiply-adds and trainable parameters for an input of ``input_shape`` (B, H, W, N)."""
        channels = int(input_shape[-1])
        middle = channels * self.depth_multiplier
        out_hw = self.output_hw(input_shape)
        macs = conv_macs(out_hw, self.kernel_size, channels, middle, groups=channels)
        macs += conv_macs(out_hw, (1, 1), middle, self.filters)
        params = self.kernel_size[0] * self.kernel_size[1] * middle + middle * self.filters
        params += self.filters if self.use_bias else 0
        return LayerCost(int(macs), int(params))

    def get_prunable_weights(self):
        """tfmot: the pointwise kernel, plus the depthwise kernel when ``prune_depthwise``."""
        if self.prune_depthwise:
            return [self.depthwise_kernel, self.pointwise_kernel]
        return [self.pointwise_kernel]

    def get_config(self):
        config = super().get_config()
        config.update(depth_multiplier=self.depth_multiplier, prune_depthwise=self.prune_depthwise)
        return config
