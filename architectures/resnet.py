"""ResNet-50 and ResNeXt-50 (32×4d), both as the ResNeXt paper (Xie et al., 2017) builds them.

Conv 7×7/2 (64) → max-pool 3×3/2 → stages 2-5 of 3, 4, 6, 3 bottleneck blocks → global pool →
FC (``docs/papers.md``). A block is 1×1 → 3×3 → 1×1 (×4 expansion), BN after every conv,
ReLU after the first two and after the residual add; no conv biases. Following the ResNeXt
paper for both models so that they compare fairly: the stride sits on the 3×3 of each stage's
first block, and only blocks whose output shape differs from their input get a projection
shortcut (1×1 conv, stride, BN); all others add the identity. Strided convolutions pad
symmetrically (``common.pad_for_stride``), as the reference code does.

The inner (3×3) width of stage ``i`` with base width ``w_i`` = 64, 128, 256, 512 is
``cardinality · base_width · w_i / 64``: ResNet-50 is ``cardinality=1, base_width=64`` (inner
``w_i``), ResNeXt-50 32×4d is ``cardinality=32, base_width=4`` (inner ``2·w_i`` in 32 groups of
``w_i / 16``).
"""

from __future__ import annotations

import tf_keras as keras

from architectures import common
from architectures.registry import IMAGENET_PREPROCESSING, family_knobs, register_model
from layers import GroupConv2D

# (base width, blocks) of stages 2-5 for 50 layers (ResNeXt paper Table 1).
STAGES_50 = ((64, 3), (128, 4), (256, 6), (512, 3))
EXPANSION = 4
STEM_CHANNELS = 64
# The reference (PyTorch) batch norm: running averages over ~10 batches, epsilon 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
# Every layer keeps "same"-size arithmetic, so any input of at least 1 pixel builds and runs.
MIN_INPUT_SIZE = 1


# -- blocks -------------------------------------------------------------------------------------


def _bn(x, *, name: str):
    return common.batch_norm(x, name=name, momentum=BN_MOMENTUM, epsilon=BN_EPSILON)


def bottleneck_block(
    x, inner_channels: int, out_channels: int, *, strides: int, cardinality: int, name: str
):
    """One (ResNeXt) bottleneck block: 1×1 → 3×3 (grouped, stride) → 1×1, plus the shortcut.

    Args:
      x: input tensor ``(B, H, W, C_in)``.
      inner_channels: width ``d`` of the 1×1 reduction and the 3×3.
      out_channels: block output channels ``C_out``.
      strides: stride of the 3×3 (and of the projection shortcut).
      cardinality: groups ``G`` of the 3×3 (1: a plain convolution).
      name: prefix of every layer name, e.g. ``stage3_block1``.

    Returns:
      ``(B, ceil(H / s), ceil(W / s), C_out)``.

    Cost (``H', W'`` the output size):
      MACs ``H·W·C_in·d + H'·W'·(9·d·d / G + d·C_out)``, plus ``H'·W'·C_in·C_out`` for the
      projection when the shape changes.
    """
    in_channels = int(x.shape[-1])
    shortcut = x
    if strides != 1 or in_channels != out_channels:
        shortcut = keras.layers.Conv2D(
            out_channels, 1, strides=strides, use_bias=False, name=f"{name}_shortcut"
        )(x)
        shortcut = _bn(shortcut, name=f"{name}_shortcut_bn")
    y = common.conv_bn_act(
        x, inner_channels, 1, name=f"{name}_conv1", bn_momentum=BN_MOMENTUM, bn_epsilon=BN_EPSILON
    )
    y, padding = common.pad_for_stride(y, 3, strides, name=f"{name}_conv2_pad")
    if cardinality == 1:
        y = keras.layers.Conv2D(
            inner_channels,
            3,
            strides=strides,
            padding=padding,
            use_bias=False,
            name=f"{name}_conv2",
        )(y)
    else:
        y = GroupConv2D(
            inner_channels,
            3,
            cardinality,
            strides=strides,
            padding=padding,
            use_bias=False,
            name=f"{name}_conv2",
        )(y)
    y = _bn(y, name=f"{name}_conv2_bn")
    y = common.activation(y, "relu", name=f"{name}_conv2_relu")
    y = keras.layers.Conv2D(out_channels, 1, use_bias=False, name=f"{name}_conv3")(y)
    y = _bn(y, name=f"{name}_conv3_bn")
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return common.activation(y, "relu", name=f"{name}_relu")


# -- builder ------------------------------------------------------------------------------------


def resnet(
    *,
    stages=STAGES_50,
    cardinality: int = 1,
    base_width: int = 64,
    dropout: float = 0.0,
    name: str = "resnet",
    **head,
) -> keras.Model:
    """Builds a bottleneck ResNet / ResNeXt.

    Args:
      stages: ``(base width, number of blocks)`` of stages 2-5.
      cardinality: groups of every 3×3 convolution (32 for ResNeXt-50 32×4d).
      base_width: width of one group in the first stage (4 for 32×4d; 64 for ResNet).
      dropout: dropout rate before the classifier.
      name: model name.
      **head: ``input_shape`` (any size works: every layer keeps "same"-size arithmetic),
        ``num_classes``, ``include_top``, ``pooling``, ``classifier_activation`` (see
        ``common.classifier``).

    Returns:
      A functional ``keras.Model``; outputs ``(B, num_classes)`` with ``include_top``.
    """
    for value, label in ((cardinality, "cardinality"), (base_width, "base_width")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: {label} must be a positive int, got {value!r}.")

    def backbone(inputs):
        x, padding = common.pad_for_stride(inputs, 7, 2, name="conv1_pad")
        x = common.conv_bn_act(
            x,
            STEM_CHANNELS,
            7,
            strides=2,
            padding=padding,
            name="conv1",
            bn_momentum=BN_MOMENTUM,
            bn_epsilon=BN_EPSILON,
        )
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
        for stage, (width, blocks) in enumerate(stages, start=2):
            inner = cardinality * base_width * width // 64
            for block in range(1, blocks + 1):
                x = bottleneck_block(
                    x,
                    inner,
                    EXPANSION * width,
                    strides=2 if block == 1 and stage > 2 else 1,
                    cardinality=cardinality,
                    name=f"stage{stage}_block{block}",
                )
        return x

    return common.classifier(
        backbone, name=name, min_input_size=MIN_INPUT_SIZE, dropout=dropout, **head
    )


# -- variants -----------------------------------------------------------------------------------

_SPEC = dict(
    input_size=224,
    min_input_size=MIN_INPUT_SIZE,
    preprocessing=IMAGENET_PREPROCESSING,
    knobs=family_knobs(resnet),
)


# paper_params: the ResNeXt paper's count, conv/FC weights plus the FC bias (no BN).
@register_model(**_SPEC, recipe="resnet50_imagenet", paper_macs=4.1e9, paper_params=25_500_000)
def resnet50(**kwargs) -> keras.Model:
    return resnet(**{"cardinality": 1, "base_width": 64, **kwargs})


@register_model(**_SPEC, recipe="resnext50_imagenet", paper_macs=4.2e9, paper_params=25_000_000)
def resnext50_32x4d(**kwargs) -> keras.Model:
    return resnet(**{"cardinality": 32, "base_width": 4, **kwargs})
