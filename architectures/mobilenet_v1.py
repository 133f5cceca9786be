"""MobileNet v1 (Howard et al., 2017): a 3×3 stem and thirteen depthwise-separable blocks.

Each block is a depthwise 3×3 conv -> BN -> ReLU6 -> pointwise 1×1 conv -> BN -> ReLU6, so a
standard K×K conv's ``K²·M·N·H·W`` multiply-adds become ``K²·M·H·W + M·N·H·W``, i.e. a fraction
``1/N + 1/K²`` of it. The width multiplier α thins every layer to ``int(α·c)`` channels (floored
at 8, as slim does); the resolution multiplier is just the input size.

The decoder here (``separable_backbone``) also builds FD-MobileNet, which differs only in its
block table and activation.
"""

from __future__ import annotations

import re

import tf_keras as keras

from architectures import pretrained
from architectures.common import (
    CLASSIFIER_NAME,
    check_stride2_padding,
    classifier,
    conv_bn_act,
    depthwise_bn_act,
    pad_for_stride,
)
from architectures.registry import INCEPTION_PREPROCESSING, family_knobs, register_model

STEM_FILTERS = 32
# (pointwise output channels, depthwise stride) per block. The paper's Table 1 prints s2 for the
# last depthwise conv; the reference code (and the 7×7 final map) use stride 1.
BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
MIN_DEPTH = 8
MIN_INPUT_SIZE = 32  # five stride-2 layers: 32×32 inputs end on a 1×1 map


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


def scaled_channels(channels: int, alpha: float, min_depth: int = MIN_DEPTH) -> int:
    """``int(α·c)``, never below ``min_depth`` (slim's ``depth`` rule)."""
    return max(int(channels * alpha), min_depth)


def separable_block(
    x,
    filters: int,
    strides: int,
    *,
    activation_fn: str,
    block_id: int,
    stride2_padding: str = "symmetric",
):
    """Depthwise 3×3 -> BN -> act -> pointwise 1×1 -> BN -> act (MobileNet's separable unit).

    Layers are named ``conv_dw_{id}[_pad|_bn|_act]`` and ``conv_pw_{id}[_bn|_act]``.

    Shapes: ``[B, H, W, M] -> [B, ceil(H/s), ceil(W/s), filters]``.
    Cost: MACs ``9·M·H'·W' + M·filters·H'·W'``; params ``9·M + M·filters + 2·M + 2·filters``.
    """
    x = depthwise_bn_act(
        x,
        strides=strides,
        activation_fn=activation_fn,
        name=f"conv_dw_{block_id}",
        stride2_padding=stride2_padding,
    )
    return conv_bn_act(x, filters, 1, activation_fn=activation_fn, name=f"conv_pw_{block_id}")


def separable_backbone(
    inputs,
    *,
    stem_filters: int,
    blocks,
    alpha: float,
    activation_fn: str,
    model_name: str,
    stride2_padding: str = "symmetric",
):
    """Decodes a block table: stem 3×3/2 conv, then one ``separable_block`` per row.

    Args:
      inputs: the image tensor ``[B, H, W, C]``.
      stem_filters: channels of the stem before the width multiplier.
      blocks: rows of ``(filters, stride)`` before the width multiplier.
      alpha: width multiplier; every layer gets ``scaled_channels(c, alpha)``.
      activation_fn: ``"relu6"`` (MobileNet v1) or ``"relu"`` (FD-MobileNet).
      model_name: for error messages.
      stride2_padding: how stride-2 layers pad (``common.STRIDE2_PADDINGS``).

    Returns:
      The last feature map ``[B, H/32, W/32, int(α·blocks[-1].filters)]``.
    """
    if not alpha > 0:
        raise ValueError(f"{model_name}: alpha must be > 0, got {alpha!r}.")
    x, padding = pad_for_stride(inputs, 3, 2, name="conv1_pad", stride2_padding=stride2_padding)
    x = conv_bn_act(
        x,
        scaled_channels(stem_filters, alpha),
        3,
        strides=2,
        padding=padding,
        activation_fn=activation_fn,
        name="conv1",
    )
    for block_id, (filters, strides) in enumerate(blocks, start=1):
        x = separable_block(
            x,
            scaled_channels(filters, alpha),
            strides,
            activation_fn=activation_fn,
            block_id=block_id,
            stride2_padding=stride2_padding,
        )
    return x


# ---------------------------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------------------------


def mobilenet_v1(
    *,
    alpha: float = 1.0,
    dropout: float = 1e-3,
    stride2_padding: str = "symmetric",
    name: str = "mobilenet_v1",
    **head,
) -> keras.Model:
    """MobileNet v1 as a functional model (keras.applications signature).

    Args:
      alpha: width multiplier α (1.0, 0.75, 0.5, 0.25 in the paper).
      dropout: dropout rate before the classifier (keras.applications' default 1e-3).
      stride2_padding: ``"symmetric"`` (XNNPACK's sparse-inference layout) or ``"same"``
        (keras.applications' layout, which its published weights need; ``create_model`` picks it
        when loading them).
      name: the model name.
      **head: ``input_shape`` (at least 32×32), ``num_classes``, ``include_top``, ``pooling``,
        ``classifier_activation`` (see ``common.classifier``).

    Returns:
      A ``keras.Model`` mapping ``[B, H, W, 3]`` images to ``[B, num_classes]``. At 224×224 and
      α = 1 it costs about 569M multiply-adds and has 4.23M trainable parameters.
    """

    return separable_classifier(
        blocks=BLOCKS,
        activation_fn="relu6",
        alpha=alpha,
        dropout=dropout,
        name=name,
        stride2_padding=check_stride2_padding(stride2_padding, model_name=name),
        **head,
    )


def separable_classifier(
    *,
    blocks,
    activation_fn: str,
    alpha: float,
    dropout: float,
    name: str,
    stride2_padding: str = "symmetric",
    **head,
):
    """``separable_backbone`` (32-channel stem) as a classifier: MobileNet v1 and FD-MobileNet."""

    def backbone(inputs):
        return separable_backbone(
            inputs,
            stem_filters=STEM_FILTERS,
            blocks=blocks,
            alpha=alpha,
            activation_fn=activation_fn,
            model_name=name,
            stride2_padding=stride2_padding,
        )

    return classifier(backbone, name=name, min_input_size=MIN_INPUT_SIZE, dropout=dropout, **head)


# ---------------------------------------------------------------------------------------------
# keras.applications' published weights: layer names and files
# ---------------------------------------------------------------------------------------------

_KERAS_SAME_NAME = re.compile(r"conv1(_bn)?|conv_[dp]w_\d+(_bn)?")


def keras_layer_name(keras_name: str, shapes=None) -> str | None:
    """Our name for a layer of keras.applications' MobileNet: the same, but ``conv_preds``."""
    del shapes  # names are unique
    if keras_name == "conv_preds":
        return CLASSIFIER_NAME
    return keras_name if _KERAS_SAME_NAME.fullmatch(keras_name) else None


def published_weights(alpha: float) -> pretrained.PublishedWeights:
    """keras.applications' MobileNet weight files for one width, at 128, 160, 192 and 224."""
    width = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[alpha]
    return pretrained.PublishedWeights(
        source=f"keras.applications.MobileNet(alpha={alpha})",
        files=pretrained.weight_files(
            base_url=pretrained.KERAS_APPLICATIONS_URL + "mobilenet/",
            file_name=lambda size, top: f"mobilenet_{width}_{size}_tf{'' if top else '_no_top'}.h5",
            input_sizes=(128, 160, 192, 224),
        ),
        layer_name=keras_layer_name,
        builder_kwargs={"stride2_padding": "same"},
    )


# ---------------------------------------------------------------------------------------------
# Variants (paper Table 6 multiply-adds at 224×224)
# ---------------------------------------------------------------------------------------------

_SPEC = dict(
    input_size=224,
    min_input_size=MIN_INPUT_SIZE,
    preprocessing=INCEPTION_PREPROCESSING,
    recipe="mobilenet_v1_imagenet",
    knobs=family_knobs(mobilenet_v1),
)


@register_model(**_SPEC, paper_macs=569e6, weights=published_weights(1.0))
def mobilenet_v1_100(**kwargs) -> keras.Model:
    return mobilenet_v1(**{"alpha": 1.0, **kwargs})


@register_model(**_SPEC, paper_macs=325e6, weights=published_weights(0.75))
def mobilenet_v1_075(**kwargs) -> keras.Model:
    return mobilenet_v1(**{"alpha": 0.75, **kwargs})


@register_model(**_SPEC, paper_macs=149e6, weights=published_weights(0.5))
def mobilenet_v1_050(**kwargs) -> keras.Model:
    return mobilenet_v1(**{"alpha": 0.5, **kwargs})


@register_model(**_SPEC, paper_macs=41e6, weights=published_weights(0.25))
def mobilenet_v1_025(**kwargs) -> keras.Model:
    return mobilenet_v1(**{"alpha": 0.25, **kwargs})
