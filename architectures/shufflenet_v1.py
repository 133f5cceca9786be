"""ShuffleNet v1 (Zhang et al., 2017): pointwise group convolutions plus channel shuffle.

The architecture follows ``docs/papers.md``: conv 3×3/2 (24) → max-pool 3×3/2 → stages 2, 3,
4 of 4, 8, 4 units → global pool → FC. A unit is 1×1 group conv → BN → ReLU → channel shuffle →
depthwise 3×3 → BN → 1×1 group conv → BN, joined to its shortcut by addition (stride 1) or by
concatenation with a 3×3/2 average pool (stride 2, the branch then outputs ``out − in``
channels), then ReLU. Only the first unit of stage 2 has an ungrouped first 1×1: its 24 input
channels are too few to split.

Channel rounding for the scale factor ``s``: stage widths become the multiple of ``4·g`` nearest
to ``s·c`` (so the bottleneck, a quarter of the stage width, splits into ``g`` groups) and the stem
the multiple of ``g`` nearest to ``24·s`` (so the first unit's branch, ``out − stem``, does too).
At 1× every published width already satisfies this; the only variant it changes is
``shufflenet_v1_g8_050``, whose stem becomes 16 instead of 12. ``stem_channels`` overrides the
stem: the official code keeps it at 24 for 1.5×, and only that reproduces Table 5's 292M MACs
(36 channels would give 298M).
"""

from __future__ import annotations

import tf_keras as keras

from architectures import common
from architectures.registry import IMAGENET_PREPROCESSING, family_knobs, register_model
from layers import ChannelShuffle, GroupConv2D

# Output channels of stages 2, 3, 4 at 1× (paper Table 1), per number of groups.
STAGE_CHANNELS = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
STAGE_UNITS = (4, 8, 4)
STEM_CHANNELS = 24
BOTTLENECK_RATIO = 4
# Every layer keeps "same"-size arithmetic, so any input of at least 1 pixel builds and runs.
MIN_INPUT_SIZE = 1


# -- blocks -------------------------------------------------------------------------------------


def _pointwise(x, filters: int, groups: int, *, name: str):
    """1×1 conv, grouped when ``groups > 1`` (a plain Conv2D otherwise), without bias."""
    if groups == 1:
        return keras.layers.Conv2D(filters, 1, use_bias=False, name=name)(x)
    return GroupConv2D(filters, 1, groups, use_bias=False, name=name)(x)


def shuffle_unit(x, out_channels: int, *, groups: int, strides: int, group_first: bool, name: str):
    """One ShuffleNet unit (paper Fig. 2 b/c).

    Args:
      x: input tensor ``(B, H, W, C_in)``.
      out_channels: unit output channels ``C_out`` (the stage width).
      groups: groups ``g`` of the 1×1 convolutions and of the shuffle.
      strides: 1 (residual add; needs ``C_in == C_out``) or 2 (concat with an avg-pool shortcut).
      group_first: whether the first 1×1 is grouped (False only for the first unit of stage 2).
      name: prefix of every layer name, e.g. ``stage2_unit1``.

    Returns:
      ``(B, ceil(H / s), ceil(W / s), C_out)``.

    Cost (``m = C_out / 4``, ``H', W'`` the output size, ``G1 = g`` if ``group_first`` else 1):
      MACs ``H·W·C_in·m / G1 + H'·W'·9·m + H'·W'·m·(C_out − [s = 2]·C_in) / g``.
    """
    in_channels = int(x.shape[-1])
    bottleneck = out_channels // BOTTLENECK_RATIO
    branch_channels = out_channels - in_channels if strides == 2 else out_channels
    y = _pointwise(x, bottleneck, groups if group_first else 1, name=f"{name}_gconv1")
    y = common.batch_norm(y, name=f"{name}_gconv1_bn")
    y = common.activation(y, "relu", name=f"{name}_gconv1_relu")
    if groups > 1:
        y = ChannelShuffle(groups, name=f"{name}_shuffle")(y)
    y = common.depthwise_bn_act(y, strides=strides, activation_fn=None, name=f"{name}_dwconv")
    y = _pointwise(y, branch_channels, groups, name=f"{name}_gconv2")
    y = common.batch_norm(y, name=f"{name}_gconv2_bn")
    if strides == 1:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    else:
        shortcut = keras.layers.AveragePooling2D(
            3, strides=2, padding="same", name=f"{name}_shortcut_pool"
        )(x)
        y = keras.layers.Concatenate(name=f"{name}_concat")([shortcut, y])
    return common.activation(y, "relu", name=f"{name}_relu")


# -- builder ------------------------------------------------------------------------------------


def stage_widths(
    groups: int, scale: float, stem_channels: int | None = None
) -> tuple[int, tuple[int, ...]]:
    """Stem and stage output channels for ``groups`` and ``scale`` (rounding in the module doc)."""
    if groups not in STAGE_CHANNELS:
        raise ValueError(
            f"shufflenet_v1: groups must be one of {sorted(STAGE_CHANNELS)} (paper Table 1), "
            f"got {groups!r}."
        )
    if isinstance(scale, bool) or not isinstance(scale, int | float) or scale <= 0:
        raise ValueError(f"shufflenet_v1: scale must be a positive number, got {scale!r}.")
    if stem_channels is None:
        stem = common.make_divisible(STEM_CHANNELS * scale, groups)
    elif isinstance(stem_channels, bool) or not isinstance(stem_channels, int) or stem_channels < 1:
        raise ValueError(
            f"shufflenet_v1: stem_channels must be a positive int or None, got {stem_channels!r}."
        )
    elif stem_channels % groups:
        raise ValueError(
            f"shufflenet_v1: stem_channels={stem_channels} must be a multiple of groups={groups} "
            f"(the first unit's grouped 1x1 outputs stage width - stem channels)."
        )
    else:
        stem = stem_channels
    stages = tuple(
        common.make_divisible(c * scale, BOTTLENECK_RATIO * groups) for c in STAGE_CHANNELS[groups]
    )
    return stem, stages


def shufflenet_v1(
    *,
    groups: int = 3,
    scale: float = 1.0,
    stem_channels: int | None = None,
    dropout: float = 0.0,
    name: str = "shufflenet_v1",
    **head,
) -> keras.Model:
    """Builds ShuffleNet v1 ``scale``× with ``groups`` groups.

    Args:
      groups: groups of the 1×1 convolutions: 1, 2, 3, 4 or 8.
      scale: channel multiplier ``s`` (0.5, 1, 1.5, 2 in the paper).
      stem_channels: conv1 width; ``None`` rounds ``24·s`` to a multiple of ``groups``.
      dropout: dropout rate before the classifier.
      name: model name.
      **head: ``input_shape`` (any size works: every layer keeps "same"-size arithmetic),
        ``num_classes``, ``include_top``, ``pooling``, ``classifier_activation`` (see
        ``common.classifier``).

    Returns:
      A functional ``keras.Model``; outputs ``(B, num_classes)`` with ``include_top``.
    """
    stem, widths = stage_widths(groups, scale, stem_channels)

    def backbone(inputs):
        x, padding = common.pad_for_stride(inputs, 3, 2, name="conv1_pad")
        x = common.conv_bn_act(x, stem, 3, strides=2, padding=padding, name="conv1")
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
        for stage, (width, units) in enumerate(zip(widths, STAGE_UNITS, strict=True), start=2):
            for unit in range(1, units + 1):
                x = shuffle_unit(
                    x,
                    width,
                    groups=groups,
                    strides=2 if unit == 1 else 1,
                    group_first=not (stage == 2 and unit == 1),
                    name=f"stage{stage}_unit{unit}",
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
    recipe="shufflenet_v1_imagenet",
    paper_macs_exclude_classifier=True,  # Table 1 and 2 count no FC
    knobs=family_knobs(shufflenet_v1),
)


# MACs exclude the final FC (paper Tables 1, 2 and 5); 0.5× g=8 has no number in papers.md.
@register_model(**_SPEC, paper_macs=143e6)
def shufflenet_v1_g1_100(**kwargs) -> keras.Model:
    return shufflenet_v1(**{"groups": 1, "scale": 1.0, **kwargs})


@register_model(**_SPEC, paper_macs=140e6)
def shufflenet_v1_g2_100(**kwargs) -> keras.Model:
    return shufflenet_v1(**{"groups": 2, "scale": 1.0, **kwargs})


@register_model(**_SPEC, paper_macs=137e6)
def shufflenet_v1_g3_100(**kwargs) -> keras.Model:
    return shufflenet_v1(**{"groups": 3, "scale": 1.0, **kwargs})


@register_model(**_SPEC, paper_macs=133e6)
def shufflenet_v1_g4_100(**kwargs) -> keras.Model:
    return shufflenet_v1(**{"groups": 4, "scale": 1.0, **kwargs})


@register_model(**_SPEC, paper_macs=137e6)
def shufflenet_v1_g8_100(**kwargs) -> keras.Model:
    return shufflenet_v1(**{"groups": 8, "scale": 1.0, **kwargs})


@register_model(**_SPEC, paper_macs=38e6)
def shufflenet_v1_g3_050(**kwargs) -> keras.Model:
    return shufflenet_v1(**{"groups": 3, "scale": 0.5, **kwargs})


@register_model(**_SPEC, paper_macs=292e6)
def shufflenet_v1_g3_150(**kwargs) -> keras.Model:
    return shufflenet_v1(**{"groups": 3, "scale": 1.5, "stem_channels": 24, **kwargs})


@register_model(**_SPEC, paper_macs=524e6)
def shufflenet_v1_g3_200(**kwargs) -> keras.Model:
    return shufflenet_v1(**{"groups": 3, "scale": 2.0, **kwargs})


@register_model(**_SPEC)
def shufflenet_v1_g8_050(**kwargs) -> keras.Model:
    return shufflenet_v1(**{"groups": 8, "scale": 0.5, **kwargs})
