"""Looking through Keras wrappers: tfmot's pruning and quantization wrappers are ``keras.layers.Wrapper``.

One answer, used wherever a layer's own type, weights or cost matter (cost reports, warm starts
by layer name, pruning and quantization plans).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tf_keras as keras  # noqa: E402


def unwrap(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The layer inside any nesting of ``keras.layers.Wrapper`` (the layer itself if none)."""
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    return layer
