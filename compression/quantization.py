"""Quantization-aware training with tfmot's default 8-bit scheme, for every lightnets family.

The trainer calls, in order::

    quantization.validate(config.quantization)              # bad keys fail before any work
    model = quantization.apply(model, config.quantization)   # after warm start
    quantization.calibrate(model, images)                    # activation ranges from data
    ... fit ...                                              # checkpoints hold the wrappers
    deploy.tflite.convert(model, "int8", ...)                # ranges from the fake-quant ops

tfmot quantizes Keras' own layers through its registry and refuses any other layer (tfmot
issues #756, #1124). Here each lightnets layer class gets a ``QuantizeConfig``: the layers
themselves only know TensorFlow, and this module declares how tfmot quantizes them.

What is quantized mirrors what the TFLite converter produces, so the int8 file computes what the
QAT model trained (tfmot issue #368 is the failure when it does not). Every tensor the int8 file
holds has a fake-quant in the QAT model: converted with no calibration data, the file has no
float operator (the tests check this for every family). In particular:

* convolution kernels: 8-bit symmetric, per output channel, as TFLite's int8 CONV_2D and
  DEPTHWISE_CONV_2D take them (``KernelQuantizer``; a depthwise kernel per output channel too,
  where tfmot's own ``DepthwiseConv2D`` config is per tensor); ``Dense`` kernels per tensor, as
  tfmot does and as ``deploy.tflite`` then converts them;
* batch norm: a convolution followed by ``BatchNormalization`` has no fake-quant on its output
  (the converter folds the BN into the convolution, so that tensor never exists in the file); the
  BN output is quantized, or the ReLU after it when there is one (fused into the conv in TFLite).
  Folding a per-channel BN scale into a per-channel-quantized kernel scales each channel's
  quantization grid with it, so the folded int8 kernel is the QAT kernel's grid, exactly.
  tfmot does this for ``Conv2D`` + BN by pattern; ``_annotate`` does it for the lightnets
  convolutions and the depthwise ones;
* tensors inside a layer that the file holds get a fake-quant through the layer's identity
  "taps" (``TAPS``): the separable conv's depthwise output, the spatially separable conv's
  intermediate, hard-sigmoid's ``relu6(x + 3)`` and the input of ``ChannelSplit`` (whose
  scale a concatenation downstream would otherwise impose on both halves);
* element-wise activations (``HardSwish``, ``HardSigmoid``) and ``Multiply`` (MobileNet v3's
  squeeze-and-excite) quantize their output; ``ChannelShuffle`` only moves values, so it keeps
  its input's quantization (TFLite's RESHAPE/TRANSPOSE keep the input scale).

A pruned model (``is_sparse``) keeps its zeros: tfmot's prune-preserving scheme
(``Default8BitPrunePreserveQuantizeScheme``) masks Keras' ``Conv2D`` and ``Dense`` kernels and
``KernelQuantizer(preserve_sparsity=True)`` the others, so the zeros stay exact zeros in the
int8 file's weights.
"""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402
from tensorflow_model_optimization.python.core.quantization.keras import (  # noqa: E402
    quant_ops as _quant_ops,  # the range update calibrate() runs once with decay 0
)
from tensorflow_model_optimization.python.core.quantization.keras import (  # noqa: E402
    quantize_layer as _quantize_layer,  # QuantizeLayer is not in tfmot's public API
)

from configs import validation  # noqa: E402
from layers import (  # noqa: E402
    AtrousDepthwiseConv2D,
    ChannelShuffle,
    ChannelSplit,
    DepthwiseSeparableConv2D,
    GroupConv2D,
    HardSigmoid,
    HardSwish,
    Resize2D,
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


class KernelQuantizer(_qk.quantizers.LastValueQuantizer):
    """8-bit symmetric, narrow-range kernel quantizer, per output channel, as TFLite's int8
    convolutions and fully connected layers take their weights.

    The output channel is the kernel's last axis, except for a depthwise kernel
    ``(k_h, k_w, C, dm)``, whose ``C·dm`` outputs each get a scale (``depthwise=True``): TFLite
    quantizes ``DEPTHWISE_CONV_2D`` weights per output channel. tfmot's own ``DepthwiseConv2D``
    and ``Dense`` configs quantize per tensor; the converter then re-quantizes those kernels per
    channel onto a different grid, and the file no longer computes what QAT trained.

    ``preserve_sparsity``: multiply the kernel by its zero mask before quantizing (tfmot's
    prune-preserving idea), the mask being a non-trainable variable taken from the kernel when
    the layer is wrapped, so a pruned kernel's zeros stay exact zeros in the int8 file.
    """

    def __init__(self, depthwise: bool = False, preserve_sparsity: bool = False):
        super().__init__(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)
        self.depthwise = bool(depthwise)
        self.preserve_sparsity = bool(preserve_sparsity)

    def _per_channel(self, kernel):
        """``kernel`` with the output channels on its last axis."""
        if not self.depthwise:
            return kernel
        return tf.reshape(kernel, (*kernel.shape[:2], 1, kernel.shape[2] * kernel.shape[3]))

    def build(self, tensor_shape, name, layer):
        channels = tensor_shape[-1] * (tensor_shape[-2] if self.depthwise else 1)
        weights = self._add_range_weights(layer, name, True, (channels,))
        if self.preserve_sparsity:
            kernel = getattr(layer.layer, name)
            weights["mask"] = layer.add_weight(
                f"{name}_mask",
                shape=tensor_shape,
                initializer=keras.initializers.Constant(
                    (kernel.numpy() != 0).astype(kernel.dtype.as_numpy_dtype)
                ),
                trainable=False,
            )
        return weights

    def __call__(self, inputs, training, weights, **kwargs):
        if self.preserve_sparsity:
            inputs = inputs * weights["mask"]
        quantized = super().__call__(self._per_channel(inputs), training, weights, **kwargs)
        return tf.reshape(quantized, inputs.shape)

    def get_config(self):
        return {"depthwise": self.depthwise, "preserve_sparsity": self.preserve_sparsity}

    def __eq__(self, other):
        return isinstance(other, KernelQuantizer) and self.get_config() == other.get_config()


class TapQuantizer(_qk.quantizers.MovingAverageQuantizer):
    """The default activation quantizer, its range variables prefixed by ``tap``.

    tfmot names an activation's range variables by their role alone (``post_activation_min``),
    so a second fake-quant in one layer (a tensor inside it) would take the first one's name and
    checkpoints would hold only one of them; the prefix keeps them apart.
    """

    def __init__(self, tap: str):
        super().__init__(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)
        self.tap = tap

    def build(self, tensor_shape, name, layer):
        return super().build(tensor_shape, f"{self.tap}_{name}", layer)

    def get_config(self):
        return {"tap": self.tap}

    def __eq__(self, other):
        return isinstance(other, TapQuantizer) and self.tap == other.tap


def _output_quantizer():
    """The default scheme's activation quantizer (8-bit asymmetric, moving-average ranges)."""
    return _qk.quantizers.MovingAverageQuantizer(
        num_bits=8, per_axis=False, symmetric=False, narrow_range=False
    )


class _TapsMixin:
    """Fake-quantizes a layer's taps: identity attributes its ``call`` applies to tensors inside
    the layer that int8 TFLite quantizes (``TAPS``), followed by its ``activation`` when
    ``quantize_activation``."""

    def _activations(self):
        return (*self.taps, *(("activation",) if self.quantize_activation else ()))

    def get_activations_and_quantizers(self, layer):
        return [
            (
                getattr(layer, name),
                _output_quantizer() if name == "activation" else TapQuantizer(name),
            )
            for name in self._activations()
        ]

    def set_quantize_activations(self, layer, quantize_activations):
        for name, activation in zip(self._activations(), quantize_activations, strict=True):
            setattr(layer, name, activation)


class ConvQuantizeConfig(_TapsMixin, _qk.QuantizeConfig):
    """A convolution or dense layer: its kernels, its taps, and its activation unless a BN
    follows.

    Args:
      kernels: the layer's kernel attribute names (``("kernel",)`` for ``GroupConv2D``).
      taps: the layer's tap attribute names (``TAPS``): the separable conv's depthwise output,
        the spatially separable conv's intermediate tensor.
      quantize_activation: fake-quantize the output after the layer's activation; False when
        BN follows (folded into the conv by the converter; the BN or its ReLU is quantized).
      preserve_sparsity: keep the kernels' zeros (``KernelQuantizer``).
    """

    def __init__(self, kernels, taps=(), quantize_activation=True, preserve_sparsity=False):
        self.kernels = tuple(kernels)
        self.taps = tuple(taps)
        self.quantize_activation = bool(quantize_activation)
        self.preserve_sparsity = bool(preserve_sparsity)

    def get_weights_and_quantizers(self, layer):
        return [
            (
                getattr(layer, name),
                KernelQuantizer(name == "depthwise_kernel", self.preserve_sparsity),
            )
            for name in self.kernels
        ]

    def set_quantize_weights(self, layer, quantize_weights):
        for name, weight in zip(self.kernels, quantize_weights, strict=True):
            setattr(layer, name, weight)

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {
            "kernels": list(self.kernels),
            "taps": list(self.taps),
            "quantize_activation": self.quantize_activation,
            "preserve_sparsity": self.preserve_sparsity,
        }


class OutputQuantizeConfig(_TapsMixin, _qk.QuantizeConfig):
    """A layer without weights: its taps (``HardSigmoid``'s ``relu6(x + 3)``) and its output
    are fake-quantized (``quantize=False``: the output keeps its input's range)."""

    quantize_activation = False  # the output quantizer below, not an ``activation`` attribute

    def __init__(self, quantize: bool = True, taps=()):
        self.quantize = bool(quantize)
        self.taps = tuple(taps)

    def get_weights_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def get_output_quantizers(self, layer):
        return [_output_quantizer()] if self.quantize else []

    def get_config(self):
        return {"quantize": self.quantize, "taps": list(self.taps)}


# The kernels of each layer quantized by ``ConvQuantizeConfig``, in the order its call uses
# them: the lightnets convolutions, and Keras' depthwise convolutions, whose tfmot config is per
# tensor where TFLite quantizes per channel (``KernelQuantizer``). Keras' ``Conv2D`` keeps
# tfmot's config (per channel already); ``Dense`` too (per tensor: the converter cannot take a
# per-channel fake-quant through its weight transpose, so ``deploy.tflite`` converts QAT models
# with per-tensor fully connected weights).
CONV_KERNELS = {
    DepthwiseSeparableConv2D: ("depthwise_kernel", "pointwise_kernel"),
    GroupConv2D: ("kernel",),
    SpatialSeparableConv2D: ("vertical_kernel", "horizontal_kernel"),
    keras.layers.DepthwiseConv2D: ("depthwise_kernel",),
    AtrousDepthwiseConv2D: ("depthwise_kernel",),
}
# Identity attributes a layer's call applies to a tensor inside it that int8 TFLite quantizes
# (it is an op's output there); QAT puts a fake-quant on each, so the file computes what the QAT
# model trained. Without them the converter calibrates those tensors on its own.
TAPS = {
    DepthwiseSeparableConv2D: ("depthwise_tap",),
    SpatialSeparableConv2D: ("intermediate_tap",),
    HardSigmoid: ("hidden_tap",),
    ChannelSplit: ("input_tap",),
}
# Layers quantized by their output alone; False: the output keeps its input's range.
OUTPUT_ONLY = {
    HardSwish: True,
    HardSigmoid: True,
    keras.layers.Multiply: True,
    ChannelShuffle: False,
    ChannelSplit: False,
    Resize2D: False,  # int8 RESIZE_BILINEAR keeps its input's scale
}
CUSTOM_OBJECTS = {
    "ConvQuantizeConfig": ConvQuantizeConfig,
    "OutputQuantizeConfig": OutputQuantizeConfig,
    "TapQuantizer": TapQuantizer,
    "KernelQuantizer": KernelQuantizer,
}


class QuantizeLayer(_quantize_layer.QuantizeLayer):
    """tfmot's ``QuantizeLayer`` (the fake-quant on the model's input), marked built by ``build``.

    tfmot's ``build`` does not set ``built``, so loading a ``.keras`` file builds the layer twice
    (Keras' saved build config, then the first call) and finds 5 variables where the file holds
    3. ``quantize_scope`` puts this class in its place, for ``apply`` and for loading.
    """

    def build(self, input_shape):
        super().build(input_shape)
        self.built = True


class QuantizeWrapperV2(_qk.QuantizeWrapperV2):
    """tfmot's ``QuantizeWrapperV2`` with the weight lists ``apply`` gives its models
    (``_keep_quantized_weights_only``), so a loaded ``.keras`` file finds them in the same order
    whether Keras built the inner layer before the wrapper or inside it."""

    def build(self, input_shape):
        super().build(input_shape)
        _keep_quantized_weights_only(self)


@contextlib.contextmanager
def quantize_scope():
    """tfmot's ``quantize_scope`` with this module's configs, ``QuantizeLayer`` and
    ``QuantizeWrapperV2``: QAT models are built and ``.keras`` files holding them load in it
    (``deploy.loading`` does)."""
    with (
        _qk.quantize_scope(CUSTOM_OBJECTS),
        keras.utils.custom_object_scope(
            {"QuantizeLayer": QuantizeLayer, "QuantizeWrapperV2": QuantizeWrapperV2}
        ),
    ):
        yield


def conv_quantize_config(layer, *, batch_norm_follows: bool, preserve_sparsity: bool = False):
    """The ``ConvQuantizeConfig`` of a lightnets convolution ``layer``."""
    linear = keras.activations.serialize(layer.activation) == "linear"
    return ConvQuantizeConfig(
        CONV_KERNELS[type(layer)],
        taps=TAPS.get(type(layer), ()),
        quantize_activation=not (batch_norm_follows and linear),
        preserve_sparsity=preserve_sparsity,
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


def _annotate(model: keras.Model, *, preserve_sparsity: bool) -> keras.Model:
    """``model`` with every layer annotated, lightnets layers (and the BNs after them) by us."""
    consumers = _consumers(model)
    custom: dict[str, _qk.QuantizeConfig] = {}
    for layer in model.layers:
        if type(layer) in CONV_KERNELS:
            after = consumers[layer.name]
            batch_norm = len(after) == 1 and isinstance(after[0], keras.layers.BatchNormalization)
            custom[layer.name] = conv_quantize_config(
                layer, batch_norm_follows=batch_norm, preserve_sparsity=preserve_sparsity
            )
            if batch_norm:
                bn_after = consumers[after[0].name]
                custom[after[0].name] = OutputQuantizeConfig(
                    quantize=not (len(bn_after) == 1 and _is_relu(bn_after[0]))
                )
        elif type(layer) in OUTPUT_ONLY:
            custom[layer.name] = OutputQuantizeConfig(
                OUTPUT_ONLY[type(layer)], taps=TAPS.get(type(layer), ())
            )

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
    annotated = _annotate(model, preserve_sparsity=sparse)
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
    for layer in quantized.layers:
        if isinstance(layer, _qk.QuantizeWrapper):
            _keep_quantized_weights_only(layer)
    return quantized


@contextlib.contextmanager
def _range_from_one_batch():
    """tfmot's moving-average range update with decay 0: a training-mode call sets each range
    to its tensor's range on that batch (tfmot hard-codes the decay, 0.999)."""
    original = _quant_ops.MovingAvgQuantize

    def one_batch(*args, **kwargs):
        return original(*args, **{**kwargs, "ema_decay": 0.0})

    _quant_ops.MovingAvgQuantize = one_batch
    try:
        yield
    finally:
        _quant_ops.MovingAvgQuantize = original


def calibrate(model: keras.Model, images: np.ndarray) -> None:
    """Sets a fresh QAT model's activation ranges to their tensors' ranges on ``images``.

    tfmot starts every activation range at [-6, 6] and moves it with a 0.999 moving average, so
    a QAT run of a few hundred steps keeps ranges far wider than its tensors: coarse int8 grids
    (a few levels for a tensor in [0, 0.5]) that cost accuracy and make the int8 file's integer
    rounding visible in its top-1. Calibrating first (what post-training int8 does) starts QAT
    on the float model's own ranges. Batch norms run on their moving statistics (inference),
    and nothing but the ranges changes.

    Args:
      model: a QAT model (``apply``'s), before training.
      images: float32 ``[N, H, W, C]`` training images (a batch or two).
    """
    batch_norms = [
        layer
        for layer in model.submodules
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]
    for layer in batch_norms:
        layer.trainable = False  # inference mode under training=True: statistics untouched
    try:
        with _range_from_one_batch():
            model(np.asarray(images, np.float32), training=True)
    finally:
        for layer in batch_norms:
            layer.trainable = True


def _keep_quantized_weights_only(wrapper) -> None:
    """Lists only the wrapper's quantized kernels as its own trainable weights.

    tfmot's ``QuantizeWrapperV2`` wrapping a built layer lists the layer's trainable weights as
    its own, then its quantized kernels again; a ``.keras`` file stores each layer's list by
    position, and a loaded model (its layers built inside the wrappers) lists only the quantized
    kernels, so the file would not load. Training is unchanged: the wrapper's
    ``trainable_weights`` still adds the inner layer's (biases, BN parameters).
    """
    wrapper._trainable_weights[:] = [weight for weight, _, _ in wrapper._weight_vars]  # noqa: SLF001
