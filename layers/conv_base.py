"""The base of the lightnets convolution layers: arguments, build checks, output shape, config.

As tf-keras' ``base_conv.Conv`` does for its convolutions, ``Conv2DBase`` owns everything the
layers share (argument normalisation and checks, the 4-D input spec with a known channel count,
the bias, ``compute_output_shape`` and ``get_config``), so a layer adds its weights, ``call``,
its cost and its own arguments and nothing else. Kernel settings come in *roles*: one role
``kernel`` for layers whose kernels share settings, or one role per kernel (``depthwise`` and
``pointwise``), each with its ``<role>_initializer``, ``<role>_regularizer`` and
``<role>_constraint`` arguments.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from layers import conv_args  # noqa: E402

_SETTINGS = ("initializer", "regularizer", "constraint")
_SERIALIZERS = {
    "initializer": (keras.initializers.get, keras.initializers.serialize),
    "regularizer": (keras.regularizers.get, keras.regularizers.serialize),
    "constraint": (keras.constraints.get, keras.constraints.serialize),
}


def _fresh(initializer):
    """A copy of ``initializer``: one unseeded instance used twice draws the same values twice."""
    if initializer is None:
        return None
    return type(initializer).from_config(initializer.get_config())


class Conv2DBase(keras.layers.Layer):
    """Shared part of a channels-last 2-D convolution layer with ``filters`` outputs.

    Subclasses call ``__init__`` with their kernel roles' settings, implement
    ``build_weights(channels)`` (creating kernels with ``add_kernel``), ``call`` and
    ``compute_cost``, and add their own arguments to ``get_config``.

    Args:
      filters: output channels ``M``.
      kernel_size: int or pair ``(k_h, k_w)``.
      strides: int or pair.
      padding: ``"same"`` or ``"valid"``.
      dilation_rate: int or pair; must be 1 when ``strides > 1``.
      use_bias: whether to add a bias of shape ``(M,)``.
      activation: activation applied to the output.
      bias_initializer, bias_regularizer, bias_constraint: bias settings.
      activity_regularizer: regularizer of the output.
      kernel_settings: role -> ``{"initializer", "regularizer", "constraint"}`` as passed.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        *,
        strides=1,
        padding="same",
        dilation_rate=1,
        use_bias=True,
        activation=None,
        bias_initializer="zeros",
        bias_regularizer=None,
        bias_constraint=None,
        activity_regularizer=None,
        kernel_settings: dict[str, dict],
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.filters = conv_args.positive_int(filters, "filters")
        self.kernel_size = conv_args.pair(kernel_size, "kernel_size")
        self.strides = conv_args.pair(strides, "strides")
        self.padding = conv_args.padding_mode(padding)
        self.dilation_rate = conv_args.pair(dilation_rate, "dilation_rate")
        conv_args.check_strides_dilation(self.strides, self.dilation_rate)
        self.use_bias = bool(use_bias)
        self.activation = keras.activations.get(activation)
        self._roles = (*kernel_settings, "bias")
        for role, settings in {
            **kernel_settings,
            "bias": {
                "initializer": bias_initializer,
                "regularizer": bias_regularizer,
                "constraint": bias_constraint,
            },
        }.items():
            for setting in _SETTINGS:
                getter = _SERIALIZERS[setting][0]
                setattr(self, f"{role}_{setting}", getter(settings.get(setting)))
        self.input_spec = keras.layers.InputSpec(ndim=4)

    # -- weights ---------------------------------------------------------------------------

    def add_kernel(self, name: str, shape, role: str = "kernel"):
        """A trainable weight with the settings of ``role`` (a fresh initializer each time)."""
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=_fresh(getattr(self, f"{role}_initializer")),
            regularizer=getattr(self, f"{role}_regularizer"),
            constraint=getattr(self, f"{role}_constraint"),
            trainable=True,
            dtype=self.dtype,
        )

    def add_bias(self, name: str, size: int):
        """A trainable ``(size,)`` bias with the bias settings."""
        return self.add_kernel(name, (size,), role="bias")

    def build_weights(self, channels: int) -> None:
        """Creates the layer's kernels for ``channels`` input channels (the bias comes after)."""
        raise NotImplementedError

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 4 or input_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} needs a 4-D input (B, H, W, C) with a known channel "
                f"count, got input shape {input_shape}."
            )
        channels = int(input_shape[-1])
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: channels})
        self.build_weights(channels)
        self.bias = self.add_bias("bias", self.filters) if self.use_bias else None
        self.built = True

    # -- call helpers ----------------------------------------------------------------------

    def cast(self, weight):
        """``weight`` in the compute dtype (mixed precision keeps variables in float32)."""
        return tf.cast(weight, self.compute_dtype)

    def finish(self, outputs):
        """Adds the bias (if any) and applies the activation."""
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.cast(self.bias))
        return self.activation(outputs)

    # -- shapes and config -----------------------------------------------------------------

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

    def output_hw(self, input_shape) -> tuple[int, int]:
        """``(H_out, W_out)`` for a ``(B, H, W, C)`` input shape with static H and W."""
        out_h, out_w = self.compute_output_shape(input_shape)[1:3]
        return int(out_h), int(out_w)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            use_bias=self.use_bias,
            activation=keras.activations.serialize(self.activation),
            activity_regularizer=keras.regularizers.serialize(self.activity_regularizer),
        )
        for role in self._roles:
            for setting in _SETTINGS:
                serialize = _SERIALIZERS[setting][1]
                config[f"{role}_{setting}"] = serialize(getattr(self, f"{role}_{setting}"))
        return config
