"""Grouped 2-D convolution that actually runs faster than the dense convolution it replaces."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from layers.cost import LayerCost, conv_macs  # noqa: E402

IMPLEMENTATIONS = ("auto", "matmul", "split", "native", "depthwise")


def _pair(value, name: str) -> tuple[int, int]:
    """Normalises an int or a pair of ints to a tuple of two positive ints."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(
            f"{name} must be a positive int or a pair of positive ints, got {value!r}."
        )
    return tuple(int(v) for v in pair)


@keras.saving.register_keras_serializable(package="lightnets")
class GroupConv2D(keras.layers.Layer):
    """Grouped 2-D convolution (ResNeXt, ShuffleNet), channels last.

    The ``C_in`` input channels are cut into ``groups`` equal slices; slice ``g`` is convolved with
    its own ``filters / groups`` filters, and the results are concatenated in group order. It is
    numerically the same as Keras ``Conv2D(groups=...)`` with the same kernel, which is stored in
    the same layout, so weights transfer in both directions and tfmot prunes ``kernel``.

    Keras' own grouped conv is no faster than the dense conv on CPU, so this layer picks the
    fastest correct formulation for the case at hand (``implementation="auto"``):

    * ``"matmul"``: 1×1 kernels as one batched matrix product over groups.
    * ``"split"``: split the channels, convolve each slice, concatenate.
    * ``"native"``: one ``tf.nn.conv2d`` with a grouped kernel (cuDNN grouped conv on GPU).
    * ``"depthwise"``: when each group has one input channel (``C_in == groups``), a depthwise
      convolution with ``depth_multiplier = filters / groups``.

    Args:
      filters: number of output channels ``M``; a multiple of ``groups``.
      kernel_size: int or pair ``(k_h, k_w)``.
      groups: number of groups ``G``; divides both ``C_in`` and ``filters``.
      strides: int or pair.
      padding: ``"same"`` or ``"valid"``.
      dilation_rate: int or pair; must be 1 when ``strides > 1``.
      use_bias: whether to add a bias of shape ``(filters,)``.
      activation: activation applied to the output.
      kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
      activity_regularizer, kernel_constraint, bias_constraint: as for ``Conv2D``.
      implementation: one of ``"auto"``, ``"matmul"`` (1×1 only), ``"split"``, ``"native"``,
        ``"depthwise"`` (``C_in == groups`` only).

    Input shape:
      ``(N, H, W, C_in)``.

    Output shape:
      ``(N, H_out, W_out, filters)``; ``H_out = ceil(H / s)`` for ``"same"``,
      ``ceil((H - d·(k - 1)) / s)`` for ``"valid"``.

    Cost:
      multiply-adds ``H_out·W_out·N·K²·M/G`` with ``N = C_in`` (the papers' per-image count);
      parameters ``K²·N·M/G`` (+ ``M`` bias).
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
        if not isinstance(filters, int) or filters <= 0:
            raise ValueError(f"filters must be a positive int, got {filters!r}.")
        if not isinstance(groups, int) or groups <= 0:
            raise ValueError(f"groups must be a positive int, got {groups!r}.")
        if filters % groups:
            raise ValueError(
                f"groups={groups} must divide filters={filters}; choose filters as a "
                f"multiple of {groups} or a groups value that divides {filters}."
            )
        self.filters = filters
        self.groups = groups
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                f"strides={strides} and dilation_rate={dilation_rate} cannot both "
                "exceed 1; use strides=1 with dilation, or dilation_rate=1."
            )
        if not isinstance(padding, str) or padding.lower() not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}.")
        self.padding = padding.lower()
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}."
            )
        if implementation == "matmul" and self.kernel_size != (1, 1):
            raise ValueError(
                f"implementation='matmul' needs a 1x1 kernel, got kernel_size="
                f"{kernel_size!r}; use 'split' or 'auto' for larger kernels."
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

    # -- weights --------------------------------------------------------------------------------

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
                f"groups={self.groups} must divide the input channels "
                f"({in_channels}) and filters ({self.filters}); choose a groups "
                f"value that divides both."
            )
        if self.implementation == "depthwise" and in_channels != self.groups:
            raise ValueError(
                f"implementation='depthwise' needs input channels == groups, got "
                f"{in_channels} channels and groups={self.groups}; use 'auto'."
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
        self._resolved = self._resolve_implementation(in_channels)
        self.built = True

    def _resolve_implementation(self, in_channels: int) -> str:
        if self.implementation != "auto":
            return self.implementation
        if self.groups == 1:
            return "native"
        if in_channels == self.groups:
            return "depthwise"
        if self.kernel_size == (1, 1):
            return "matmul"
        return "split"

    # -- forward --------------------------------------------------------------------------------

    def call(self, inputs):
        kernel = tf.cast(self.kernel, self.compute_dtype)
        impl = self._resolved
        if impl == "matmul":
            outputs = self._matmul(inputs, kernel)
        elif impl == "split":
            outputs = self._split(inputs, kernel)
        elif impl == "depthwise":
            outputs = self._depthwise(inputs, kernel)
        else:
            outputs = self._conv(inputs, kernel)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, self.compute_dtype))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _conv(self, inputs, kernel):
        return tf.nn.conv2d(
            inputs,
            kernel,
            strides=(1, *self.strides, 1),
            padding=self.padding.upper(),
            dilations=(1, *self.dilation_rate, 1),
        )

    def _split(self, inputs, kernel):
        xs = tf.split(inputs, self.groups, axis=-1)
        ks = tf.split(kernel, self.groups, axis=-1)
        return tf.concat([self._conv(x, k) for x, k in zip(xs, ks, strict=True)], axis=-1)

    def _depthwise(self, inputs, kernel):
        k_h, k_w = self.kernel_size
        # (kh, kw, 1, G*mult) -> (kh, kw, G, mult): group g's filters are output channels
        # g*mult .. g*mult+mult-1, exactly the order depthwise_conv2d writes them in.
        kernel = tf.reshape(kernel, (k_h, k_w, self.groups, self.filters // self.groups))
        return tf.nn.depthwise_conv2d(
            inputs,
            kernel,
            strides=(1, *self.strides, 1),
            padding=self.padding.upper(),
            dilations=self.dilation_rate,
        )

    def _matmul(self, inputs, kernel):
        if self.strides != (1, 1):
            # A 1x1 kernel with stride s (either padding) reads pixels 0, s, 2s, ...
            inputs = inputs[:, :: self.strides[0], :: self.strides[1], :]
        shape = tf.shape(inputs)
        in_channels = kernel.shape[2] * self.groups
        per_group_in = in_channels // self.groups
        per_group_out = self.filters // self.groups
        x = tf.reshape(inputs, (-1, self.groups, per_group_in))
        w = tf.reshape(kernel, (per_group_in, self.groups, per_group_out))
        y = tf.einsum("pgc,cgf->pgf", x, w)
        return tf.reshape(y, tf.concat([shape[:3], [self.filters]], axis=0))

    # -- shapes, cost, config -------------------------------------------------------------------

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape).as_list()
        spatial = []
        for size, k, s, d in zip(
            input_shape[1:3], self.kernel_size, self.strides, self.dilation_rate, strict=True
        ):
            if size is None:
                spatial.append(None)
                continue
            if self.padding == "valid":
                size = size - d * (k - 1)
            spatial.append(max(0, -(-size // s)))
        return tf.TensorShape([input_shape[0], *spatial, self.filters])

    def compute_cost(self, input_shape) -> LayerCost:
        """Multiply-adds ``H_out·W_out·C_in·K²·M/G`` and trainable parameters."""
        in_channels = int(input_shape[-1])
        out_h, out_w = self.compute_output_shape(input_shape)[1:3]
        macs = conv_macs(
            (int(out_h), int(out_w)),
            self.kernel_size,
            in_channels,
            self.filters,
            groups=self.groups,
        )
        params = self.kernel_size[0] * self.kernel_size[1] * (in_channels // self.groups)
        params = params * self.filters + (self.filters if self.use_bias else 0)
        return LayerCost(int(macs), int(params))

    def get_prunable_weights(self):
        """tfmot's PrunableLayer protocol: only the kernel is pruned."""
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


def _register_with_tfmot() -> None:
    """Makes ``prune_low_magnitude`` accept the layer without importing tfmot eagerly elsewhere."""
    try:
        from tensorflow_model_optimization.python.core.sparsity.keras import prunable_layer
    except ImportError:  # pruning is optional for users who only run the layers
        return
    prunable_layer.PrunableLayer.register(GroupConv2D)


_register_with_tfmot()
