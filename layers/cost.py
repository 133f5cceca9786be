"""What a layer costs: multiply-adds and trainable parameters, by the papers' convention.

Convention (``docs/papers.md``): only convolution and fully-connected multiply-accumulates
count; batch norm, activations, pooling, adds, bias adds and channel shuffles cost zero MACs.
Parameters are Keras *trainable* parameters (kernels, biases, BN gamma and beta).

A lightnets layer reports its own cost through ``compute_cost(input_shape) -> LayerCost``;
``layer_cost`` covers those and the built-in Keras layers, so cost reports need no special cases.
"""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tf_keras as keras  # noqa: E402

from layers.wrappers import unwrap  # noqa: E402


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """Multiply-accumulates and trainable parameters of one layer (or a sum of layers)."""

    macs: int = 0
    params: int = 0

    def __add__(self, other: LayerCost) -> LayerCost:
        return LayerCost(self.macs + other.macs, self.params + other.params)


def conv_macs(
    output_hw: tuple[int, int],
    kernel_hw: tuple[int, int],
    in_channels: int,
    out_channels: int,
    groups: int = 1,
) -> int:
    """Multiply-adds of a (grouped) convolution: k_h·k_w·(C_in/groups)·C_out·H_out·W_out."""
    out_h, out_w = output_hw
    k_h, k_w = kernel_hw
    return int(k_h * k_w * (in_channels // groups) * out_channels * out_h * out_w)


def trainable_params(layer: keras.layers.Layer) -> int:
    """Number of trainable scalars the layer owns."""
    return int(sum(int(w.shape.num_elements()) for w in layer.trainable_weights))


def _spatial(shape) -> int:
    """Product of the dimensions between batch and channels (1 for a 2-D tensor)."""
    size = 1
    for dim in shape[1:-1]:
        size *= int(dim)
    return size


def layer_cost(layer: keras.layers.Layer, input_shape) -> LayerCost:
    """Cost of ``layer`` applied to an input of ``input_shape`` (with the batch dimension).

    Args:
      layer: a built Keras layer. Keras wrappers (tfmot's pruning and quantization ones) are
        looked through.
      input_shape: the layer's input shape, e.g. ``(None, 56, 56, 24)``; a list of shapes for
        layers with several inputs (those cost no MACs here).

    Returns:
      ``LayerCost(macs, params)``.
    """
    # The wrapper's own trainable weights: tfmot's quantization wrapper holds the inner layer's
    # kernel itself (the inner layer lists none); masks and quantizer ranges are not trainable.
    params = trainable_params(layer)
    layer = unwrap(layer)
    if hasattr(layer, "compute_cost"):
        return layer.compute_cost(input_shape)
    if isinstance(input_shape, list) or not isinstance(
        layer,
        (
            keras.layers.Conv2D,
            keras.layers.DepthwiseConv2D,
            keras.layers.SeparableConv2D,
            keras.layers.Dense,
        ),
    ):
        return LayerCost(0, params)
    output_shape = tuple(layer.compute_output_shape(tuple(input_shape)))
    in_channels = int(input_shape[-1])
    out_hw = tuple(int(d) for d in output_shape[1:3]) if len(output_shape) == 4 else (1, 1)
    if isinstance(layer, keras.layers.SeparableConv2D):
        mid = in_channels * layer.depth_multiplier
        macs = conv_macs(out_hw, layer.kernel_size, in_channels, mid, groups=in_channels)
        macs += conv_macs(out_hw, (1, 1), mid, layer.filters)
    elif isinstance(layer, keras.layers.DepthwiseConv2D):
        mid = in_channels * layer.depth_multiplier
        macs = conv_macs(out_hw, layer.kernel_size, in_channels, mid, groups=in_channels)
    elif isinstance(layer, keras.layers.Conv2D):
        macs = conv_macs(out_hw, layer.kernel_size, in_channels, layer.filters, groups=layer.groups)
    else:  # Dense, applied over any leading dimensions
        macs = in_channels * layer.units * _spatial(output_shape)
    return LayerCost(int(macs), params)
