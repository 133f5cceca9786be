"""Quantization-aware training with tfmot's default 8-bit scheme, for every lightnets family.

The trainer calls, in order::

    quantization.validate(config.quantization)              # bad keys fail before any work
    model = quantization.apply(model, config.quantization, sparse=...)   # after warm start
    ... fit ...                                              # checkpoints hold the wrappers
    deploy.tflite.convert(model, "int8", ...)                # ranges from the fake-quant ops

tfmot quantizes Keras' own layers through its registry and refuses any other layer (tfmot
issues #756, #1124). Here each lightnets layer class gets a ``QuantizeConfig`` (``CONFIGS``):
the layers themselves only know TensorFlow, and this module declares how tfmot quantizes them.

What is quantized mirrors what the TFLite converter produces, so the int8 file computes what the
QAT model trained (tfmot issue #368 is the failure when it does not):

* convolution kernels: 8-bit symmetric, per output channel (per tensor for a depthwise kernel
  with one output per channel), as TFLite's int8 CONV_2D / DEPTHWISE_CONV_2D take them;
* batch norm: a convolution followed by ``BatchNormalization`` has no fake-quant on its output
  (the converter folds the BN into the convolution, so that tensor never exists in the file); the
  BN output is quantized, or the ReLU after it when there is one (fused into the conv in TFLite).
  Folding a per-channel BN scale into a per-channel-quantized kernel scales each channel's
  quantization grid with it, so the folded int8 kernel is the QAT kernel's grid, exactly.
  tfmot does this for ``Conv2D``/``DepthwiseConv2D`` + BN by pattern; ``_annotate`` does it for
  the lightnets convolutions;
* element-wise activations (``HardSwish``, ``HardSigmoid``) and ``Multiply`` (MobileNet v3's
  squeeze-and-excite) quantize their output; ``ChannelShuffle`` and ``ChannelSplit`` only move
  values, so they keep their input's quantization (TFLite's RESHAPE/TRANSPOSE/SPLIT keep the
  input scale).

A pruned model (``is_sparse``) is fine-tuned with tfmot's prune-preserving scheme
(``Default8BitPrunePreserveQuantizeScheme``), which covers Keras' own layers; the lightnets
convolutions' kernels are not masked, so their zeros can drift during QAT (not yet solved).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

from configs import validation  # noqa: E402
from layers import (  # noqa: E402
    ChannelShuffle,
    ChannelSplit,
    DepthwiseSeparableConv2D,
    GroupConv2D,
    HardSigmoid,
    HardSwish,
    SpatialSeparableConv2D,
)

_qk = tfmot.quantization.keras
_KEYS = frozenset({"aware", "int8_io"})


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def is_enabled(quantization_config) -> bool:
    """QAT is on when ``config.quantization.aware`` is true."""
    return bool(validation.get(quantization_config, "aware", False))


def validate(quantization_config) -> None:
    """Checks every ``config.quantization`` key.

    Raises:
      ValueError: naming the bad key, its value and what is accepted.
    """
    validation.check_keys(quantization_config, _KEYS, "quantization.")
    for key in sorted(_KEYS):
        validation.check_bool(quantization_config, key, "quantization.")


# ---------------------------------------------------------------------------------------------
# Quantizers and QuantizeConfigs
# ---------------------------------------------------------------------------------------------


def _kernel_quantizer():
    """8-bit symmetric, narrow-range, per-output-channel (last axis) kernel quantizer: the one
    TFLite's int8 convolutions take (a depthwise kernel's last axis is its multiplier, so it is
    per tensor there, as tfmot does for ``DepthwiseConv2D``)."""
    return _qk.quantizers.LastValueQuantizer(
        num_bits=8, per_axis=True, symmetric=True, narrow_range=True
    )


def _output_quantizer():
    """The default scheme's activation quantizer (8-bit asymmetric, moving-average ranges)."""
    return _qk.quantizers.MovingAverageQuantizer(
        num_bits=8, per_axis=False, symmetric=False, narrow_range=False
    )


class ConvQuantizeConfig(_qk.QuantizeConfig):
    """A lightnets convolution: its kernels, and its activation unless a batch norm follows.

    Args:
      kernels: the layer's kernel attribute names (``("kernel",)`` for ``GroupConv2D``).
      quantize_activation: fake-quantize the output after the layer's activation; False when
        BN follows (folded into the conv by the converter; the BN or its ReLU is quantized).
        Tensors between a layer's own convolutions (``SpatialSeparableConv2D``'s intermediate,
        the separable conv's depthwise output) have no fake-quant: tfmot names an activation's
        range variables by the activation alone, so two in one layer collide in checkpoints;
        the converter calibrates them.
    """

    def __init__(self, kernels, quantize_activation=True):
        self.kernels = tuple(kernels)
        self.quantize_activation = bool(quantize_activation)

    def get_weights_and_quantizers(self, layer):
        return [(getattr(layer, name), _kernel_quantizer()) for name in self.kernels]

    def _activations(self):
        return ("activation",) if self.quantize_activation else ()

    def get_activations_and_quantizers(self, layer):
        return [(getattr(layer, name), _output_quantizer()) for name in self._activations()]

    def set_quantize_weights(self, layer, quantize_weights):
        for name, weight in zip(self.kernels, quantize_weights, strict=True):
            setattr(layer, name, weight)

    def set_quantize_activations(self, layer, quantize_activations):
        for name, activation in zip(self._activations(), quantize_activations, strict=True):
            setattr(layer, name, activation)

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {
            "kernels": list(self.kernels),
            "quantize_activation": self.quantize_activation,
        }


class OutputQuantizeConfig(_qk.QuantizeConfig):
    """A layer without weights whose output is fake-quantized (or, ``quantize=False``, not)."""

    def __init__(self, quantize: bool = True):
        self.quantize = bool(quantize)

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [_output_quantizer()] if self.quantize else []

    def get_config(self):
        return {"quantize": self.quantize}


# The kernels of each lightnets convolution, in the order its call uses them.
CONV_KERNELS = {
    DepthwiseSeparableConv2D: ("depthwise_kernel", "pointwise_kernel"),
    GroupConv2D: ("kernel",),
    SpatialSeparableConv2D: ("vertical_kernel", "horizontal_kernel"),
}
# Layers quantized by their output alone; False: the output keeps its input's range.
OUTPUT_ONLY = {
    HardSwish: True,
    HardSigmoid: True,
    keras.layers.Multiply: True,
    ChannelShuffle: False,
    ChannelSplit: False,
}
CUSTOM_OBJECTS = {
    "ConvQuantizeConfig": ConvQuantizeConfig,
    "OutputQuantizeConfig": OutputQuantizeConfig,
}


def quantize_scope():
    """``tfmot``'s ``quantize_scope`` with this module's configs: load QAT ``.keras`` files in it."""
    return _qk.quantize_scope(CUSTOM_OBJECTS)


def conv_quantize_config(layer, *, batch_norm_follows: bool):
    """The ``ConvQuantizeConfig`` of a lightnets convolution ``layer``."""
    linear = keras.activations.serialize(layer.activation) == "linear"
    return ConvQuantizeConfig(
        CONV_KERNELS[type(layer)],
        quantize_activation=not (batch_norm_follows and linear),
    )


# ---------------------------------------------------------------------------------------------
# Annotating and applying
# ---------------------------------------------------------------------------------------------


def _consumers(model: keras.Model) -> dict[str, list[keras.layers.Layer]]:
    """Layer name -> the layers taking its output."""
    consumers: dict[str, list] = {layer.name: [] for layer in model.layers}
    for layer in model.layers:
        for node in layer.inbound_nodes:
            for parent in tf.nest.flatten(node.inbound_layers):
                consumers[parent.name].append(layer)
    return consumers


def _is_relu(layer) -> bool:
    if isinstance(layer, keras.layers.ReLU):
        return True
    return isinstance(layer, keras.layers.Activation) and layer.get_config()["activation"] in (
        "relu",
        "relu6",
    )


def _annotate(model: keras.Model) -> keras.Model:
    """``model`` with every layer annotated, lightnets layers (and the BNs after them) by us."""
    consumers = _consumers(model)
    custom: dict[str, _qk.QuantizeConfig] = {}
    for layer in model.layers:
        if type(layer) in CONV_KERNELS:
            after = consumers[layer.name]
            batch_norm = len(after) == 1 and isinstance(after[0], keras.layers.BatchNormalization)
            custom[layer.name] = conv_quantize_config(layer, batch_norm_follows=batch_norm)
            if batch_norm:
                bn_after = consumers[after[0].name]
                custom[after[0].name] = OutputQuantizeConfig(
                    quantize=not (len(bn_after) == 1 and _is_relu(bn_after[0]))
                )
        elif type(layer) in OUTPUT_ONLY:
            custom[layer.name] = OutputQuantizeConfig(OUTPUT_ONLY[type(layer)])

    def annotate(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return layer.__class__.from_config(layer.get_config())
        return _qk.quantize_annotate_layer(layer, quantize_config=custom.get(layer.name))

    return keras.models.clone_model(model, clone_function=annotate)


def is_sparse(model: keras.Model, *, min_sparsity: float = 0.2) -> bool:
    """Whether ``model``'s convolution/dense kernels are pruned (at least ``min_sparsity`` zeros).

    Dense-trained kernels have essentially no exact zeros; a pruned run's have its sparsity.
    """
    kernels = [w for w in model.weights if w.trainable and "kernel" in w.name.split("/")[-1]]
    size = sum(int(np.prod(w.shape)) for w in kernels)
    zeros = sum(int(np.count_nonzero(w.numpy() == 0)) for w in kernels)
    return size > 0 and zeros / size >= min_sparsity


def has_wrappers(model) -> bool:
    """Whether ``model`` is a QAT model (holds tfmot ``QuantizeWrapper`` layers)."""
    return any(isinstance(layer, _qk.QuantizeWrapper) for layer in model.layers)


def apply(model: keras.Model, quantization_config, *, sparse: bool | None = None) -> keras.Model:
    """Wraps ``model`` for quantization-aware training; ``model`` itself when QAT is off.

    Call it under the strategy scope, after warm-starting ``model`` from a float run and before
    restoring a QAT run's own checkpoint (its object graph has the wrappers).

    Args:
      model: a built functional model of float layers (no pruning wrappers).
      quantization_config: ``config.quantization``.
      sparse: keep the kernels' zeros (tfmot's prune-preserving scheme); None: when the
        model's kernels are pruned (``is_sparse``).

    Returns:
      The QAT model (uncompiled), whose layers are tfmot ``QuantizeWrapper``s.

    Raises:
      ValueError: a layer no scheme knows, named with its class.
    """
    validate(quantization_config)
    if not is_enabled(quantization_config):
        return model
    if has_wrappers(model):
        raise ValueError(f"Model '{model.name}' is already quantization-aware; apply() it once.")
    sparse = is_sparse(model) if sparse is None else sparse
    annotated = _annotate(model)
    scheme = (
        tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
        if sparse
        else _qk.default_8bit.Default8BitQuantizeScheme()
    )
    with quantize_scope():
        try:
            quantized = _qk.quantize_apply(annotated, scheme)
        except (RuntimeError, ValueError) as error:
            raise ValueError(
                f"config.quantization.aware: model '{model.name}' cannot be quantized: {error}"
            ) from None
    return quantized
