"""Grouped 2-D convolution that actually runs faster than the dense convolution it replaces."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from tf_keras.src.utils import control_flow_util  # noqa: E402

from layers import conv_args, conv_ops  # noqa: E402
from layers.conv_base import Conv2DBase  # noqa: E402
from layers.cost import LayerCost, conv_macs  # noqa: E402

IMPLEMENTATIONS = ("auto", "native", "split", "matmul", "depthwise")


def _in_xla_context() -> bool:
    """Whether the op being built will be compiled by XLA (``jit_compile=True``)."""
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def native_grouped_conv_ok(dtype, dilated: bool) -> bool:
    """Whether one grouped ``tf.nn.conv2d`` may be traced now (see ``conv_ops.supports``)."""
    return conv_ops.supports("grouped_conv", dtype) and (
        not dilated or conv_ops.supports("dilated_conv", dtype)
    )


@keras.saving.register_keras_serializable(package="lightnets")
class GroupConv2D(Conv2DBase):
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
    * ``"split"`` inside an XLA-compiled function on a machine without a GPU, and where the CPU
      kernels cannot train a grouped conv (TensorFlow without oneDNN: most AVX2 CPUs, or
      ``TF_ENABLE_ONEDNN_OPTS=0``; there the split form is also the faster one, 1.0-1.8× the
      grouped kernel's forward speed at ShuffleNet and ResNeXt shapes);
    * ``"native"`` otherwise: one ``tf.nn.conv2d`` with the grouped kernel (one TFLite CONV_2D).

    Exports trace ``"auto"`` for where they will run, not for the converting machine
    (``conv_ops.tracing_for``): TFLite files get the one grouped CONV_2D, SavedModels the split
    form that every TensorFlow kernel set serves.

    ``"split"`` (split the channels, convolve each slice, concatenate) and ``"matmul"`` (1×1
    only: split, one matrix product per group, concatenate) stay available as overrides.
    ``"native"`` asked for explicitly where the kernels cannot train it raises an error that
    says to use ``"auto"``.

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
        self.groups = conv_args.positive_int(groups, "groups")
        if self.filters % self.groups:
            raise ValueError(
                f"groups={groups} must divide filters={filters}; choose filters as a multiple "
                f"of {groups} or a groups value that divides {filters}."
            )
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

    def build_weights(self, channels: int) -> None:
        if channels % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide the input channels ({channels}) and "
                f"filters ({self.filters}); choose a groups value that divides both."
            )
        if self.implementation == "depthwise" and channels != self.groups:
            raise ValueError(
                f"implementation='depthwise' needs input channels == groups, got {channels} "
                f"channels and groups={self.groups}; use 'auto' or 'native'."
            )
        self.kernel = self.add_kernel(
            "kernel", (*self.kernel_size, channels // self.groups, self.filters)
        )

    def resolved_implementation(self) -> str:
        """The formulation ``call`` uses now (``"auto"`` resolved for this input and context)."""
        dilated = self.dilation_rate != (1, 1)
        runtime = conv_ops.target() is None
        native_ok = native_grouped_conv_ok(self.compute_dtype, dilated)
        if self.implementation == "native" and self.groups > 1 and runtime and not native_ok:
            raise ValueError(
                f"GroupConv2D '{self.name}': implementation='native' needs a grouped "
                f"convolution kernel with gradients, which this TensorFlow's CPU kernels "
                f"lack (no oneDNN: an AVX2 CPU or TF_ENABLE_ONEDNN_OPTS=0); use "
                f"implementation='auto'."
            )
        if self.implementation != "auto":
            return self.implementation
        if self.groups == 1:
            return "native"
        if self.kernel.shape[2] == 1 and not dilated:
            return "depthwise"
        if runtime and _in_xla_context() and not conv_ops.gpu_available():
            return "split"
        return "native" if native_ok else "split"

    def call(self, inputs):
        kernel = self.cast(self.kernel)
        bias = self.cast(self.bias) if self.use_bias else None
        formulation = {
            "native": self._native,
            "split": self._split,
            "matmul": self._matmul,
            "depthwise": self._depthwise,
        }[self.resolved_implementation()]
        return self.activation(formulation(inputs, kernel, bias))

    # Each formulation adds the bias itself, per group where it splits, so TFLite fuses it into
    # the CONV_2D / FULLY_CONNECTED ops instead of leaving an ADD after the concatenation.

    def _native(self, inputs, kernel, bias):
        outputs = conv_ops.conv2d(inputs, kernel, self.strides, self.padding, self.dilation_rate)
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
        outputs = conv_ops.depthwise_conv2d(
            inputs, kernel, self.strides, self.padding, self.dilation_rate
        )
        return outputs if bias is None else tf.nn.bias_add(outputs, bias)

    def compute_cost(self, input_shape) -> LayerCost:
        """Multiply-adds ``H_out·W_out·N·k_h·k_w·M / G`` and trainable parameters."""
        in_channels = int(input_shape[-1])
        macs = conv_macs(
            self.output_hw(input_shape), self.kernel_size, in_channels, self.filters, self.groups
        )
        params = self.kernel_size[0] * self.kernel_size[1] * (in_channels // self.groups)
        params = params * self.filters + (self.filters if self.use_bias else 0)
        return LayerCost(int(macs), int(params))

    def get_prunable_weights(self):
        """tfmot: the kernel (the bias is never pruned)."""
        return [self.kernel]

    def get_config(self):
        config = super().get_config()
        config.update(groups=self.groups, implementation=self.implementation)
        return config
