"""Xception (Chollet, 2017): depthwise separable convolutions with residual connections.

Entry flow: conv 3×3/2 (32, valid) → conv 3×3 (64, valid) → three blocks of [sepconv → BN →
ReLU → sepconv → BN → max-pool 3×3/2] (128, 256, 728) with 1×1/2 conv + BN shortcuts, every
block but the first starting with a ReLU. Middle flow: 8 × [ReLU → sepconv 728 → BN] × 3 with
identity shortcuts. Exit flow: ReLU → sepconv 728 → BN → ReLU → sepconv 1024 → BN → max-pool
with a 1×1/2 shortcut, then sepconv 1536 → BN → ReLU → sepconv 2048 → BN → ReLU → pool → FC
(``docs/papers.md``, paper Fig. 5). Separable convolutions are ``DepthwiseSeparableConv2D``
with nothing between the depthwise and pointwise steps and no biases.

Layer names follow ``keras.applications.Xception`` (``block2_sepconv1``, ``block2_sepconv1_bn``,
...), whose trainable parameter count this model matches exactly (22,855,952 at 1000 classes).
"""

from __future__ import annotations

import re

import tf_keras as keras

from architectures import common, pretrained
from architectures.registry import INCEPTION_PREPROCESSING, register_model
from layers import DepthwiseSeparableConv2D

# (block number, output channels) of the entry flow's three downsampling blocks.
ENTRY_BLOCKS = ((2, 128), (3, 256), (4, 728))
MIDDLE_BLOCKS = range(5, 13)
MIDDLE_CHANNELS = 728
# Exit flow: the downsampling block 13 and the two separable convs of block 14.
EXIT_BLOCK_CHANNELS = (728, 1024)
EXIT_CONV_CHANNELS = (1536, 2048)
# The two unpadded stem convs need 7 pixels (7 → 3 → 1); everything after keeps "same" sizes.
MIN_INPUT_SIZE = 7


# -- blocks -------------------------------------------------------------------------------------


def _sepconv_bn(x, filters: int, *, name: str, dilation_rate: int = 1):
    """DepthwiseSeparableConv2D 3×3 (no bias, nothing between its two steps) → BN."""
    x = DepthwiseSeparableConv2D(
        filters, 3, padding="same", dilation_rate=dilation_rate, use_bias=False, name=name
    )(x)
    return common.batch_norm(x, name=f"{name}_bn")


def downsampling_block(
    x,
    channels: tuple[int, int],
    *,
    pre_activation: bool,
    block: int,
    strides: int = 2,
    dilation_rate: int = 1,
):
    """[ReLU] → sepconv → BN → ReLU → sepconv → BN → max-pool 3×3/2, + 1×1/2 conv → BN.

    Args:
      x: input tensor ``(B, H, W, C_in)``.
      channels: output channels of the two separable convolutions.
      pre_activation: whether the block opens with a ReLU (all but entry block 2).
      block: block number, the layer-name prefix ``block{n}_``.
      strides: 2, or 1 in an atrous stage (pool and shortcut keep the resolution).
      dilation_rate: dilation of the separable convolutions (atrous stages).

    Returns:
      ``(B, ceil(H / s), ceil(W / s), channels[1])``.

    Cost: MACs ``H·W·(C_in·(9 + c_1) + c_1·(9 + c_2)) + H'·W'·C_in·c_2`` (shortcut).
    """
    prefix = f"block{block}"
    shortcut = keras.layers.Conv2D(
        channels[1], 1, strides=strides, padding="same", use_bias=False, name=f"{prefix}_shortcut"
    )(x)
    shortcut = common.batch_norm(shortcut, name=f"{prefix}_shortcut_bn")
    if pre_activation:
        x = common.activation(x, "relu", name=f"{prefix}_sepconv1_act")
    x = _sepconv_bn(x, channels[0], name=f"{prefix}_sepconv1", dilation_rate=dilation_rate)
    x = common.activation(x, "relu", name=f"{prefix}_sepconv2_act")
    x = _sepconv_bn(x, channels[1], name=f"{prefix}_sepconv2", dilation_rate=dilation_rate)
    x = keras.layers.MaxPooling2D(3, strides=strides, padding="same", name=f"{prefix}_pool")(x)
    return keras.layers.Add(name=f"{prefix}_add")([x, shortcut])


def middle_block(x, *, block: int, dilation_rate: int = 1):
    """Three [ReLU → sepconv 728 → BN] with an identity shortcut; shape unchanged.

    Cost: MACs ``3·H·W·728·(9 + 728)``.
    """
    shortcut = x
    for i in range(1, 4):
        x = common.activation(x, "relu", name=f"block{block}_sepconv{i}_act")
        x = _sepconv_bn(
            x, MIDDLE_CHANNELS, name=f"block{block}_sepconv{i}", dilation_rate=dilation_rate
        )
    return keras.layers.Add(name=f"block{block}_add")([x, shortcut])


# -- keras.applications' published weights: layer names and files ----------------------------

_KERAS_SAME_NAME = re.compile(r"block\d+_(conv|sepconv)\d(_bn)?")
# keras.applications leaves the shortcut convs and their BNs unnamed (conv2d_3, ...); their
# output widths tell them apart.
_SHORTCUT_BLOCKS = {128: 2, 256: 3, 728: 4, 1024: 13}


def keras_layer_name(keras_name: str, shapes) -> str | None:
    """Our name for a layer of keras.applications' Xception: the same for named layers,
    ``block{n}_shortcut[_bn]`` for the auto-named shortcut convs, ``classifier`` for
    ``predictions``."""
    if keras_name == "predictions":
        return common.CLASSIFIER_NAME
    if _KERAS_SAME_NAME.fullmatch(keras_name):
        return keras_name
    kind = re.fullmatch(r"(conv2d|batch_normalization)(_\d+)?", keras_name)
    block = _SHORTCUT_BLOCKS.get(shapes[0][-1]) if kind and shapes else None
    if block is None:
        return None
    return f"block{block}_shortcut{'_bn' if kind.group(1) == 'batch_normalization' else ''}"


PUBLISHED_WEIGHTS = pretrained.PublishedWeights(
    source="keras.applications.Xception()",
    files=pretrained.weight_files(
        base_url=pretrained.KERAS_APPLICATIONS_URL + "xception/",
        file_name=lambda size, top: (
            f"xception_weights_tf_dim_ordering_tf_kernels{'' if top else '_notop'}.h5"
        ),
        input_sizes=(299,),
        hashes={
            True: "0a58e3b7378bc2990ea3b43d5981f1f6",
            False: "b0042744bf5b25fce3cb969f33bebb97",
        },
    ),
    layer_name=keras_layer_name,
)


# -- builder (and the only variant) ------------------------------------------------------------


# The paper publishes parameters, not multiply-adds.
@register_model(
    input_size=299,
    min_input_size=MIN_INPUT_SIZE,
    preprocessing=INCEPTION_PREPROCESSING,
    recipe="xception_imagenet",
    paper_params=22_855_952,
    weights=PUBLISHED_WEIGHTS,
)
def xception(
    *,
    input_shape=(299, 299, 3),
    dropout: float = 0.0,
    output_stride: int = 32,
    name: str = "xception",
    **head,
) -> keras.Model:
    """Builds Xception.

    Args:
      input_shape: ``(H, W, 3)``, at least 7×7 (the stem convs are unpadded).
      dropout: dropout rate before the classifier (the paper's recipe uses 0.5).
      output_stride: 32, or 16 / 8 for dense prediction: the last downsampling blocks run at
        stride 1 and the separable convs after them dilated (``common.output_stride_plan``);
        the layers and weights are the same.
      name: model name.
      **head: ``num_classes``, ``include_top``, ``pooling``, ``classifier_activation`` (see
        ``common.classifier``).

    Returns:
      A functional ``keras.Model``; outputs ``(B, num_classes)`` with ``include_top``.
    """

    # (stride, dilation) of the stem, entry blocks 2-4, middle blocks, exit block 13, block 14.
    plan = common.output_stride_plan(
        [2, 2, 2, 2, *[1] * len(MIDDLE_BLOCKS), 2, 1], output_stride, model_name=name
    )
    entry, middle, (exit_stride, exit_dilation), (_, last_dilation) = (
        plan[1:4],
        plan[4:-2],
        plan[-2],
        plan[-1],
    )

    def backbone(inputs):
        x = common.conv_bn_act(inputs, 32, 3, strides=2, padding="valid", name="block1_conv1")
        x = common.conv_bn_act(x, 64, 3, padding="valid", name="block1_conv2")
        for (block, channels), (strides, dilation) in zip(ENTRY_BLOCKS, entry, strict=True):
            x = downsampling_block(
                x,
                (channels, channels),
                pre_activation=block > 2,
                block=block,
                strides=strides,
                dilation_rate=dilation,
            )
        for block, (_, dilation) in zip(MIDDLE_BLOCKS, middle, strict=True):
            x = middle_block(x, block=block, dilation_rate=dilation)
        x = downsampling_block(
            x,
            EXIT_BLOCK_CHANNELS,
            pre_activation=True,
            block=13,
            strides=exit_stride,
            dilation_rate=exit_dilation,
        )
        for i, channels in enumerate(EXIT_CONV_CHANNELS, start=1):
            x = _sepconv_bn(x, channels, name=f"block14_sepconv{i}", dilation_rate=last_dilation)
            x = common.activation(x, "relu", name=f"block14_sepconv{i}_act")
        return x

    return common.classifier(
        backbone,
        name=name,
        min_input_size=MIN_INPUT_SIZE,
        dropout=dropout,
        input_shape=input_shape,
        **head,
    )
