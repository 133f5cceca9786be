"""Depthwise separable convolution (MobileNet, Xception), with TFLite-friendly atrous support."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from layers import conv_args  # noqa: E402
from layers.cost import LayerCost, conv_macs  # noqa: E402


def atrous_depthwise_conv2d(inputs, kernel, padding: str, dilation_rate):
    """Stride-1 dilated depthwise convolution as a sum of shifted, per-channel-scaled taps.

    ``tf.nn.depthwise_conv2d`` implements dilation as SpaceToBatchND → conv → BatchToSpaceND and
    the TFLite converter keeps those ops. The native op with ``dilations`` avoids them but only
    runs under oneDNN float32 (plain CPU kernels, float16 without AVX-512 reject it) and its
    oneDNN gradients are wrong. The tap sum is exact, differentiable everywhere and converts to
    builtin PAD, STRIDED_SLICE, MUL and ADD; it does the same ``k_h·k_w`` multiply-adds per output
    as the fused op, unfused.

    Args:
      inputs: ``(B, H, W, N)``.
      kernel: ``(k_h, k_w, N, dm)``.
      padding: ``"same"`` or ``"valid"``.
      dilation_rate: pair ``(d_h, d_w)`` of positive ints.

    Returns:
      ``(B, H_out, W_out, N·dm)``, channel ``n·dm + m`` from input channel ``n``.
    """
    k_h, k_w, channels, multiplier = kernel.shape
    d_h, d_w = dilation_rate
    span_h, span_w = d_h * (k_h - 1), d_w * (k_w - 1)
    if padding == "same":
        # TF's SAME puts the smaller half of the padding first.
        inputs = tf.pad(
            inputs,
            [
                [0, 0],
                [span_h // 2, span_h - span_h // 2],
                [span_w // 2, span_w - span_w // 2],
                [0, 0],
            ],
        )
    if multiplier > 1:
        inputs = inputs[..., None]  # (B, H, W, N, 1) broadcasts against the (N, dm) taps
    outputs = None
    for i in range(k_h):
        for j in range(k_w):
            tap = inputs[
                :, i * d_h : (i * d_h - span_h) or None, j * d_w : (j * d_w - span_w) or None
            ]
            weights = kernel[i, j] if multiplier > 1 else kernel[i, j, :, 0]
            term = tap * weights
            outputs = term if outputs is None else outputs + term
    if multiplier > 1:
        outputs = tf.reshape(
            outputs, tf.concat([tf.shape(outputs)[:3], [channels * multiplier]], axis=0)
        )
    return outputs


@keras.saving.register_keras_serializable(package="lightnets")
class DepthwiseSeparableConv2D(keras.layers.Layer):
    """A k×k depthwise convolution per channel followed by a 1×1 pointwise convolution.

    The factorisation of MobileNet and Xception: each of the ``N`` input channels is filtered by
    its own ``depth_multiplier`` k×k kernels, then a 1×1 convolution mixes the ``N·dm`` channels
    into ``filters`` outputs. No activation sits between the two (Xception found it hurts); an
    ``activation`` applies to the output.

    Dilation (DeepLab v3+'s atrous separable convolution) is computed by
    ``atrous_depthwise_conv2d`` rather than through the ``rate`` path of
    ``tf.nn.separable_conv2d``, which leaves SpaceToBatchND/BatchToSpaceND in TFLite models.

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
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.filters = conv_args.positive_int(filters, "filters")
        self.kernel_size = conv_args.pair(kernel_size, "kernel_size")
        self.strides = conv_args.pair(strides, "strides")
        self.padding = conv_args.padding_mode(padding)
        self.dilation_rate = conv_args.pair(dilation_rate, "dilation_rate")
        conv_args.check_strides_dilation(self.strides, self.dilation_rate)
        self.depth_multiplier = conv_args.positive_int(depth_multiplier, "depth_multiplier")
        self.use_bias = bool(use_bias)
        self.activation = keras.activations.get(activation)
        self.prune_depthwise = bool(prune_depthwise)
        self.depthwise_initializer = keras.initializers.get(depthwise_initializer)
        self.pointwise_initializer = keras.initializers.get(pointwise_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.depthwise_regularizer = keras.regularizers.get(depthwise_regularizer)
        self.pointwise_regularizer = keras.regularizers.get(pointwise_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.depthwise_constraint = keras.constraints.get(depthwise_constraint)
        self.pointwise_constraint = keras.constraints.get(pointwise_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 4 or input_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} needs a 4-D input (B, H, W, C) with a known channel "
                f"count, got input shape {input_shape}."
            )
        channels = int(input_shape[-1])
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: channels})
        self.depthwise_kernel = self.add_weight(
            name="depthwise_kernel",
            shape=(*self.kernel_size, channels, self.depth_multiplier),
            initializer=self.depthwise_initializer,
            regularizer=self.depthwise_regularizer,
            constraint=self.depthwise_constraint,
            trainable=True,
        )
        self.pointwise_kernel = self.add_weight(
            name="pointwise_kernel",
            shape=(1, 1, channels * self.depth_multiplier, self.filters),
            initializer=self.pointwise_initializer,
            regularizer=self.pointwise_regularizer,
            constraint=self.pointwise_constraint,
            trainable=True,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                trainable=True,
            )
        self.built = True

    def call(self, inputs):
        kernel = tf.cast(self.depthwise_kernel, self.compute_dtype)
        if max(self.dilation_rate) > 1:
            depthwise = atrous_depthwise_conv2d(inputs, kernel, self.padding, self.dilation_rate)
        else:
            depthwise = tf.nn.depthwise_conv2d(
                inputs, kernel, strides=(1, *self.strides, 1), padding=self.padding.upper()
            )
        outputs = tf.nn.conv2d(
            depthwise,
            tf.cast(self.pointwise_kernel, self.compute_dtype),
            strides=1,
            padding="VALID",
        )
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, self.compute_dtype))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

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
        channels = int(input_shape[-1])
        middle = channels * self.depth_multiplier
        out_hw = tuple(int(d) for d in self.compute_output_shape(input_shape)[1:3])
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
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            depth_multiplier=self.depth_multiplier,
            use_bias=self.use_bias,
            activation=keras.activations.serialize(self.activation),
            prune_depthwise=self.prune_depthwise,
            depthwise_initializer=keras.initializers.serialize(self.depthwise_initializer),
            pointwise_initializer=keras.initializers.serialize(self.pointwise_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            depthwise_regularizer=keras.regularizers.serialize(self.depthwise_regularizer),
            pointwise_regularizer=keras.regularizers.serialize(self.pointwise_regularizer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer),
            activity_regularizer=keras.regularizers.serialize(self.activity_regularizer),
            depthwise_constraint=keras.constraints.serialize(self.depthwise_constraint),
            pointwise_constraint=keras.constraints.serialize(self.pointwise_constraint),
            bias_constraint=keras.constraints.serialize(self.bias_constraint),
        )
        return config
