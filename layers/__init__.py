"""Keras layer plugins for efficient convolutional networks.

Public API::

    from layers import DepthwiseSeparableConv2D, GroupConv2D, ChannelShuffle
    from layers import SpatialSeparableConv2D, LayerCost, layer_cost
    from layers import HardSigmoid, HardSwish, Resize2D

Every layer is registered with ``keras.saving.register_keras_serializable(package="lightnets")``,
so ``import layers`` is all a fresh process needs to load a ``.keras`` file that uses them.
"""

import os

# tfmot prunes tf_keras (Keras 2) models only: make TensorFlow hand out tf_keras, before it loads.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from layers.activations import HardSigmoid, HardSwish  # noqa: E402
from layers.atrous_depthwise import AtrousDepthwiseConv2D  # noqa: E402
from layers.channel_shuffle import ChannelShuffle  # noqa: E402
from layers.channel_split import ChannelSplit  # noqa: E402
from layers.cost import LayerCost, layer_cost  # noqa: E402
from layers.depthwise_separable import DepthwiseSeparableConv2D  # noqa: E402
from layers.grouped import GroupConv2D  # noqa: E402
from layers.resize import Resize2D  # noqa: E402
from layers.spatial_separable import SpatialSeparableConv2D  # noqa: E402

__all__ = [
    "AtrousDepthwiseConv2D",
    "ChannelShuffle",
    "ChannelSplit",
    "DepthwiseSeparableConv2D",
    "GroupConv2D",
    "HardSigmoid",
    "HardSwish",
    "LayerCost",
    "Resize2D",
    "SpatialSeparableConv2D",
    "layer_cost",
]
