"""Pieces every family builder shares: the one classifier assembler, conv units, rounding.

Each family file holds its own blocks, stage table and a builder that describes its backbone;
``classifier`` does the rest for all of them (argument checks, the ``image`` input, the head, the
Model), so that every model takes its input under one name, every classifier is named
``classifier`` (pruning can skip it) and ends in a float32 activation (mixed precision gives
float32 outputs for the loss).
"""

from __future__ import annotations

from collections.abc import Callable

import tf_keras as keras

from layers import AtrousDepthwiseConv2D, HardSigmoid, HardSwish

# The input layer of every model. Models saved before it was shared call it "input" (ResNet,
# ShuffleNet, Xception): their SavedModel signatures and .keras files still load (tested).
INPUT_NAME = "image"
# Layer names of the head, relied on by pruning (skip_classifier) and warm starts (which exclude
# the classifier).
CLASSIFIER_NAME = "classifier"
PREDICTIONS_NAME = "predictions"
POOLING_CHOICES = (None, "avg", "max")
# How a stride-2 conv pads: "symmetric" is ZeroPadding2D(k // 2) + "valid" (the layout XNNPACK's
# sparse inference recognises); "same" is TF's "same", one pixel more at the bottom/right of even
# inputs (the layout keras.applications and slim trained their published weights with).
STRIDE2_PADDINGS = ("symmetric", "same")


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Rounds ``value`` to the nearest multiple of ``divisor``, never below 90 % of ``value``.

    The MobileNet v2 rule: channels stay hardware-friendly without shrinking a layer by more than
    10 %. ``min_value`` defaults to ``divisor``.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def check_builder_args(
    *,
    input_shape,
    num_classes: int,
    include_top: bool,
    pooling,
    dropout: float,
    min_input_size: int,
    model_name: str,
) -> tuple[int, int, int]:
    """Validates the keras.applications-style arguments every builder takes.

    Returns:
      ``input_shape`` as a tuple ``(height, width, channels)``.

    Raises:
      ValueError: naming the bad value and what is accepted.
    """
    shape = tuple(input_shape)
    if len(shape) != 3 or any(d is None or int(d) <= 0 for d in shape):
        raise ValueError(
            f"{model_name}: input_shape must be (height, width, channels) with known "
            f"positive sizes, at least {min_input_size}x{min_input_size} pixels, got "
            f"{input_shape!r}."
        )
    height, width, channels = (int(d) for d in shape)
    if min(height, width) < min_input_size:
        raise ValueError(
            f"{model_name}: input_shape {shape} is too small; this architecture needs "
            f"at least {min_input_size}x{min_input_size} pixels."
        )
    if include_top and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(
            f"{model_name}: num_classes must be a positive integer with "
            f"include_top=True, got {num_classes!r}."
        )
    if pooling not in POOLING_CHOICES:
        raise ValueError(
            f"{model_name}: pooling must be one of {POOLING_CHOICES}, got {pooling!r}."
        )
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"{model_name}: dropout must be in [0, 1), got {dropout!r}.")
    return height, width, channels


def check_stride2_padding(value, *, model_name: str) -> str:
    """Validates a ``stride2_padding`` knob (one of ``STRIDE2_PADDINGS``) and returns it."""
    if value not in STRIDE2_PADDINGS:
        raise ValueError(
            f"{model_name}: stride2_padding must be one of {STRIDE2_PADDINGS}, got {value!r}."
        )
    return value


OUTPUT_STRIDES = (8, 16, 32)


def output_stride_plan(strides, output_stride: int, *, model_name: str) -> list[tuple[int, int]]:
    """``(stride, dilation)`` per layer so the features end at ``output_stride`` (atrous stages).

    DeepLab's rule (slim's ``mobilenet.py`` and ``resnet_utils.py``): once the stride so far has
    reached ``output_stride``, a strided layer runs at stride 1 with the dilation so far, and every
    layer after it is dilated by that stride more. Spatial resolution is kept; the receptive field
    grows as it would have.

    Args:
      strides: the strides of the network's downsampling points, in order (the stem included).
      output_stride: one of ``OUTPUT_STRIDES``; 32 (the product of the strides) changes nothing.
      model_name: for the error message.

    Returns:
      ``[(stride, dilation), ...]``, one per entry of ``strides``.

    Raises:
      ValueError: ``output_stride`` is not one of ``OUTPUT_STRIDES``.
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(
            f"{model_name}: output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}."
        )
    plan, current, dilation = [], 1, 1
    for stride in strides:
        if current >= output_stride and stride > 1:
            plan.append((1, dilation))
            dilation *= stride
        else:
            plan.append((stride, dilation))
            current *= stride
    return plan


def batch_norm(x, *, name: str, momentum: float = 0.99, epsilon: float = 1e-3):
    """BatchNormalization over the channel axis (channels-last everywhere in lightnets)."""
    return keras.layers.BatchNormalization(axis=-1, momentum=momentum, epsilon=epsilon, name=name)(
        x
    )


def activation(x, kind: str | None, *, name: str):
    """An activation layer (``relu``, ``relu6``, ``hard_swish``, ...); ``None``: no layer."""
    if kind is None:
        return x
    if kind == "hard_swish":
        return HardSwish(name=name)(x)
    if kind == "hard_sigmoid":
        return HardSigmoid(name=name)(x)
    if kind == "relu6":
        return keras.layers.ReLU(max_value=6.0, name=name)(x)
    if kind == "relu":
        return keras.layers.ReLU(name=name)(x)
    return keras.layers.Activation(kind, name=name)(x)


def conv_bn_act(
    x,
    filters: int,
    kernel_size: int,
    *,
    strides: int = 1,
    padding: str = "same",
    activation_fn: str | None = "relu",
    name: str,
    bn_momentum: float = 0.99,
    bn_epsilon: float = 1e-3,
):
    """Conv2D (no bias) -> BN -> activation, named ``{name}``, ``{name}_bn``, ``{name}_{act}``."""
    x = keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding, use_bias=False, name=name
    )(x)
    x = batch_norm(x, name=f"{name}_bn", momentum=bn_momentum, epsilon=bn_epsilon)
    return activation(x, activation_fn, name=f"{name}_{activation_fn}")


def pad_for_stride(
    x, kernel_size: int, strides: int, *, name: str, stride2_padding: str = "symmetric"
):
    """Symmetric zero padding ahead of a strided conv; returns ``(x, conv_padding)``.

    A stride-2 conv runs as ``ZeroPadding2D(k // 2)`` + ``"valid"``, the form XNNPACK's sparse
    inference (and tfmot's ``PruneForLatencyOnXNNPack``) recognises; TF's ``"same"`` would pad
    only bottom/right on even inputs. The output size is ``ceil(size / strides)`` either way.
    Stride 1, or ``stride2_padding="same"`` (the layout of published weights, see
    ``STRIDE2_PADDINGS``), keeps ``"same"`` and adds no layer.
    """
    if strides == 1 or stride2_padding == "same":
        return x, "same"
    x = keras.layers.ZeroPadding2D(padding=kernel_size // 2, name=name)(x)
    return x, "valid"


def depthwise_bn_act(
    x,
    *,
    kernel_size: int = 3,
    strides: int = 1,
    activation_fn: str | None = "relu",
    name: str,
    bn_momentum: float = 0.99,
    bn_epsilon: float = 1e-3,
    stride2_padding: str = "symmetric",
    dilation_rate: int = 1,
):
    """[pad] -> DepthwiseConv2D (no bias) -> BN -> activation.

    Named ``{name}_pad`` (stride 2 with symmetric padding only), ``{name}``, ``{name}_bn``,
    ``{name}_{act}``. ``dilation_rate`` > 1 (stride 1 only) is the atrous form DeepLab runs the
    last stages with (``output_stride_plan``). Cost: MACs ``k·k·C·H_out·W_out``; params
    ``k·k·C + 2C``.
    """
    x, padding = pad_for_stride(
        x, kernel_size, strides, name=f"{name}_pad", stride2_padding=stride2_padding
    )
    # Dilated: the subclass whose dilation converts to one TFLite op (same weights and config).
    depthwise = AtrousDepthwiseConv2D if dilation_rate > 1 else keras.layers.DepthwiseConv2D
    x = depthwise(
        kernel_size,
        strides=strides,
        padding=padding,
        dilation_rate=dilation_rate,
        use_bias=False,
        name=name,
    )(x)
    x = batch_norm(x, name=f"{name}_bn", momentum=bn_momentum, epsilon=bn_epsilon)
    return activation(x, activation_fn, name=f"{name}_{activation_fn}")


def classifier_head(
    x,
    *,
    include_top: bool,
    pooling,
    num_classes: int,
    dropout: float,
    classifier_activation: str | None,
    pre_logits=None,
):
    """Global pooling -> [pre_logits] -> dropout -> ``classifier`` Dense -> float32 ``predictions``.

    With ``include_top=False`` only the optional ``pooling`` is applied (keras.applications'
    behaviour). The final activation runs in float32 so that mixed-precision models hand float32
    probabilities (or logits, with ``classifier_activation=None``) to the loss. ``pre_logits``
    (``[B, C] -> [B, D]``) is a part of the top that comes before dropout, such as MobileNet v3's
    wide hard-swish layer.
    """
    if not include_top:
        if pooling == "avg":
            return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if pooling == "max":
            return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
        return x
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pre_logits is not None:
        x = pre_logits(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = keras.layers.Dense(num_classes, name=CLASSIFIER_NAME)(x)
    return keras.layers.Activation(
        classifier_activation or "linear", dtype="float32", name=PREDICTIONS_NAME
    )(x)


def classifier(
    backbone: Callable,
    *,
    name: str,
    min_input_size: int,
    dropout: float,
    input_shape=(224, 224, 3),
    num_classes: int = 1000,
    include_top: bool = True,
    pooling: str | None = None,
    classifier_activation: str | None = "softmax",
    pre_logits: Callable | None = None,
) -> keras.Model:
    """Checks the arguments, then ``image`` input -> ``backbone`` -> head -> ``keras.Model``.

    The tail of every family builder, in the keras.applications signature.

    Args:
      backbone: ``image tensor [B, H, W, 3] -> features [B, h, w, C]``; builds the family's
        layers when called.
      name: the model name.
      min_input_size: smallest square input the backbone supports.
      dropout: dropout rate before the classifier (the family's default).
      input_shape: ``(height, width, channels)``.
      num_classes: classifier outputs (with ``include_top``).
      include_top: add global pooling, dropout and the ``classifier`` Dense layer.
      pooling: ``None``, ``"avg"`` or ``"max"``; the pooling applied when ``include_top=False``.
      classifier_activation: activation of the ``predictions`` layer; None gives logits.
      pre_logits: ``[B, C] -> [B, D]`` layers of the top between pooling and dropout (MobileNet
        v3's wide hard-swish layer); see ``classifier_head``.

    Returns:
      A functional ``keras.Model`` mapping ``[B, H, W, 3]`` images to ``[B, num_classes]``
      (to the features, or their pooling, without the top).

    Raises:
      ValueError: a bad argument, named with its value and what is accepted.
    """
    shape = check_builder_args(
        input_shape=input_shape,
        num_classes=num_classes,
        include_top=include_top,
        pooling=pooling,
        dropout=dropout,
        min_input_size=min_input_size,
        model_name=name,
    )
    inputs = keras.Input(shape=shape, name=INPUT_NAME)
    outputs = classifier_head(
        backbone(inputs),
        include_top=include_top,
        pooling=pooling,
        num_classes=num_classes,
        dropout=dropout,
        classifier_activation=classifier_activation,
        pre_logits=pre_logits,
    )
    return keras.Model(inputs, outputs, name=name)
