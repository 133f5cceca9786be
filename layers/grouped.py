"""Grouped 2-D convolution that actually runs faster than the dense convolution it replaces."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from tf_keras.src.utils import control_flow_util  # noqa: E402

from layers import conv_args  # noqa: E402
from layers.cost import LayerCost, conv_macs  # noqa: E402
from layers.depthwise_separable import atrous_depthwise_conv2d  # noqa: E402

IMPLEMENTATIONS = ("auto", "native", "split", "matmul", "depthwise")


def _in_xla_context() -> bool:
    """Whether the op being built will be compiled by XLA (``jit_compile=True``)."""
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


@keras.saving.register_keras_serializable(package="lightnets")
class GroupConv2D(keras.layers.Layer):
    """Grouped 2-D convolution (ResNeXt, ShuffleNet), channels last.

    The ``N`` input channels are cut into ``groups`` equal slices; slice ``g`` is convolved with
    its own ``M / groups`` filters and the results are concatenated in group order. Numerically
    this is Keras ``Conv2D(groups=...)``, and the kernel is stored in the same layout, so weights
    transfer both ways and tfmot prunes ``kernel``.

    Keras' grouped conv is no faster than a dense conv on CPU because it always goes through XLA,
    whose CPU grouped convolution is slow. TensorFlow's own ``Conv2D`` kernel (oneDNN on CPU,
    cuDNN on GPU) and TFLite's CONV_2D (XNNPack) do deliver the saving, so ``"auto"`` picks:

    * ``"depthwise"`` when each group has one input channel (``N == groups``) and there is no
      dilation: a depthwise conv with ``depth_multiplier = M / groups``, the op every runtime
      optimises best (dilated depthwise convs do not convert to one TFLite op);
    * ``"split"`` inside an XLA-compiled function on a machine without a GPU;
    * ``"native"`` otherwise: one ``tf.nn.conv2d`` with the grouped kernel (one TFLite CONV_2D).

    ``"split"`` (split the channels, convolve each slice, concatenate) and ``"matmul"`` (1×1
    only: split, one matrix product per group, concatenate) stay available as overrides.

    Args:
      filters: number of output channels ``M``; a multiple of ``groups``.
      kernel_size: int or pair ``(k_h, k_w)``.
      groups: number of groups ``G``; divides both ``N`` and ``M``.
      strides: int or pair.
      padding: ``"same"`` or ``"valid"``.
      dilation_rate: int or pair; must be 1 when ``strides > 1``.
      use_bias: whether to add a bias of shape ``(M,)``.
      activation: activation applied to the output.
      kernel_initializer, bias_initializer: initializers.
      kernel_regularizer, bias_regularizer, activity_regularizer: regularizers.
      kernel_constraint, bias_constraint: constraints.
      implementation: ``"auto"``, ``"native"``, ``"split"``, ``"matmul"`` (1×1 kernels only) or
        ``"depthwise"`` (``N == groups`` only).

    Weights:
      ``kernel`` ``(k_h, k_w, N / G, M)``; ``bias`` ``(M,)``.

    Input shape:
      ``(B, H, W, N)``.

    Output shape:
      ``(B, H_out, W_out, M)``; ``H_out = ceil(H / s)`` for ``"same"``,
      ``ceil((H - d·(k_h - 1)) / s)`` for ``"valid"``.

    Cost:
      multiply-adds ``H_out·W_out·N·k_h·k_w·M / G`` (``H·W·N·K²·M/G`` at stride 1), a ``G``-th
      of the dense conv's; parameters ``k_h·k_w·N·M / G`` (+ ``M`` bias).
    """

    def __init__(
        self,
        filters,
        kernel_size,
        groups,
        strides=1,
        padding="same",
        dilation_rate=1,
        use_bias=True,
        activation=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        implementation="auto",
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.filters = conv_args.positive_int(filters, "filters")
        self.groups = conv_args.positive_int(groups, "groups")
        if self.filters % self.groups:
            raise ValueError(
                f"groups={groups} must divide filters={filters}; choose filters as a multiple "
                f"of {groups} or a groups value that divides {filters}."
            )
        self.kernel_size = conv_args.pair(kernel_size, "kernel_size")
        self.strides = conv_args.pair(strides, "strides")
        self.dilation_rate = conv_args.pair(dilation_rate, "dilation_rate")
        conv_args.check_strides_dilation(self.strides, self.dilation_rate)
        self.padding = conv_args.padding_mode(padding)
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}."
            )
        if implementation == "matmul" and self.kernel_size != (1, 1):
            raise ValueError(
                f"implementation='matmul' needs a 1x1 kernel, got kernel_size={kernel_size!r}; "
                "use 'auto', 'native' or 'split' for larger kernels."
            )
        self.implementation = implementation
        self.use_bias = bool(use_bias)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError(
                f"GroupConv2D needs a known channel dimension, got input shape {input_shape}."
            )
        in_channels = int(in_channels)
        if in_channels % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide the input channels ({in_channels}) and "
                f"filters ({self.filters}); choose a groups value that divides both."
            )
        if self.implementation == "depthwise" and in_channels != self.groups:
            raise ValueError(
                f"implementation='depthwise' needs input channels == groups, got {in_channels} "
                f"channels and groups={self.groups}; use 'auto' or 'native'."
            )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: in_channels})
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, in_channels // self.groups, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            trainable=True,
            dtype=self.dtype,
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
                dtype=self.dtype,
            )
        self.built = True

    def resolved_implementation(self) -> str:
        """The formulation ``call`` uses now (``"auto"`` resolved for this input and context)."""
        if self.implementation != "auto":
            return self.implementation
        if self.groups > 1 and self.kernel.shape[2] == 1 and self.dilation_rate == (1, 1):
            return "depthwise"
        if self.groups > 1 and _in_xla_context() and not tf.config.list_logical_devices("GPU"):
            return "split"
        return "native"

    def call(self, inputs):
        kernel = tf.cast(self.kernel, self.compute_dtype)
        bias = tf.cast(self.bias, self.compute_dtype) if self.use_bias else None
        formulation = {
            "native": self._native,
            "split": self._split,
            "matmul": self._matmul,
            "depthwise": self._depthwise,
        }[self.resolved_implementation()]
        outputs = formulation(inputs, kernel, bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    # Each formulation adds the bias itself, per group where it splits, so TFLite fuses it into
    # the CONV_2D / FULLY_CONNECTED ops instead of leaving an ADD after the concatenation.

    def _native(self, inputs, kernel, bias):
        outputs = tf.nn.conv2d(
            inputs,
            kernel,
            strides=(1, *self.strides, 1),
            padding=self.padding.upper(),
            dilations=(1, *self.dilation_rate, 1),
        )
        return outputs if bias is None else tf.nn.bias_add(outputs, bias)

    def _split(self, inputs, kernel, bias):
        slices = tf.split(inputs, self.groups, axis=-1)
        kernels = tf.split(kernel, self.groups, axis=-1)
        biases = [None] * self.groups if bias is None else tf.split(bias, self.groups)
        return tf.concat(
            [self._native(*args) for args in zip(slices, kernels, biases, strict=True)], axis=-1
        )

    def _matmul(self, inputs, kernel, bias):
        if self.strides != (1, 1):
            # A 1x1 kernel with stride s reads pixels 0, s, 2s, ... under either padding.
            inputs = inputs[:, :: self.strides[0], :: self.strides[1], :]
        pixels = tf.reshape(inputs, (-1, inputs.shape[-1]))
        slices = tf.split(pixels, self.groups, axis=-1)
        kernels = tf.split(tf.reshape(kernel, (-1, self.filters)), self.groups, axis=-1)
        biases = [None] * self.groups if bias is None else tf.split(bias, self.groups)
        outputs = []
        for x, k, b in zip(slices, kernels, biases, strict=True):
            y = tf.matmul(x, k)
            outputs.append(y if b is None else tf.nn.bias_add(y, b))
        outputs = tf.concat(outputs, axis=-1)
        return tf.reshape(outputs, tf.concat([tf.shape(inputs)[:3], [self.filters]], axis=0))

    def _depthwise(self, inputs, kernel, bias):
        k_h, k_w = self.kernel_size
        # (kh, kw, 1, G·m) -> (kh, kw, G, m): group g's filters are outputs g·m .. g·m + m - 1,
        # exactly where depthwise_conv2d writes input channel g's m outputs.
        kernel = tf.reshape(kernel, (k_h, k_w, self.groups, self.filters // self.groups))
        if max(self.dilation_rate) > 1:
            outputs = atrous_depthwise_conv2d(inputs, kernel, self.padding, self.dilation_rate)
        else:
            outputs = tf.nn.depthwise_conv2d(
                inputs, kernel, strides=(1, *self.strides, 1), padding=self.padding.upper()
            )
        return outputs if bias is None else tf.nn.bias_add(outputs, bias)

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape).as_list()
        spatial = [
            conv_args.output_length(size, k, self.padding, s, d)
            for size, k, s, d in zip(
                input_shape[1:3], self.kernel_size, self.strides, self.dilation_rate, strict=True
            )
        ]
        return tf.TensorShape([input_shape[0], *spatial, self.filters])

    def compute_cost(self, input_shape) -> LayerCost:
        """Multiply-adds ``H_out·W_out·N·k_h·k_w·M / G`` and trainable parameters."""
        in_channels = int(input_shape[-1])
        out_h, out_w = self.compute_output_shape(input_shape)[1:3]
        macs = conv_macs(
            (int(out_h), int(out_w)), self.kernel_size, in_channels, self.filters, self.groups
        )
        params = self.kernel_size[0] * self.kernel_size[1] * (in_channels // self.groups)
        params = params * self.filters + (self.filters if self.use_bias else 0)
        return LayerCost(int(macs), int(params))

    def get_prunable_weights(self):
        """tfmot: the kernel (the bias is never pruned)."""
        return [self.kernel]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "groups": self.groups,
                "strides": self.strides,
                "padding": self.padding,
                "dilation_rate": self.dilation_rate,
                "use_bias": self.use_bias,
                "activation": keras.activations.serialize(self.activation),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": keras.regularizers.serialize(self.activity_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
                "implementation": self.implementation,
            }
        )
        return config
