"""ShuffleNet v2 (Ma et al., 2018): channel split, equal-width branches, shuffle after concat.

Conv 3×3/2 (24) → max-pool 3×3/2 → stages 2, 3, 4 of 4, 8, 4 units → conv5 1×1 → global pool →
FC (``docs/papers.md``). A stride-1 unit splits its channels in halves: one half passes
through, the other goes 1×1 → BN → ReLU → dw 3×3 → BN → 1×1 → BN → ReLU; the halves are
concatenated and shuffled with 2 groups. A stride-2 unit has no split: a shortcut branch
(dw 3×3/2 → BN → 1×1 → BN → ReLU, keeping the ``C_in`` channels) and a main branch (as above,
stride 2, ending in ``C_out − C_in`` channels) are concatenated and shuffled. The main branch's
inner width is ``C_out / 2`` in every unit, as in the authors' reference code. Counting the
FC as the authors do, 1×/1.5×/2× land within 0.15 % of the published 146M/299M/591M
multiply-adds; 0.5× counts 40.5M against the printed 41M.
"""

from __future__ import annotations

import tf_keras as keras

from architectures import common
from architectures.registry import IMAGENET_PREPROCESSING, family_knobs, register_model
from layers import ChannelShuffle, ChannelSplit

# Stage 2, 3, 4 output channels and the conv5 width, per width multiplier (paper Table 5).
STAGE_CHANNELS = {
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}
STAGE_UNITS = (4, 8, 4)
STEM_CHANNELS = 24
# Every layer keeps "same"-size arithmetic, so any input of at least 1 pixel builds and runs.
MIN_INPUT_SIZE = 1


# -- blocks -------------------------------------------------------------------------------------


def _main_branch(x, out_channels: int, mid_channels: int, *, strides: int, name: str):
    """1×1 → BN → ReLU → dw 3×3 (stride) → BN → 1×1 → BN → ReLU."""
    x = common.conv_bn_act(x, mid_channels, 1, name=f"{name}_conv1")
    x = common.depthwise_bn_act(x, strides=strides, activation_fn=None, name=f"{name}_dwconv")
    return common.conv_bn_act(x, out_channels, 1, name=f"{name}_conv2")


def shuffle_v2_unit(x, out_channels: int, *, strides: int, name: str):
    """One ShuffleNet v2 unit (paper Fig. 3 c/d).

    Args:
      x: input tensor ``(B, H, W, C_in)``.
      out_channels: unit output channels ``C_out`` (the stage width); with stride 1 it must
        equal ``C_in``.
      strides: 1 (channel split) or 2 (both branches downsample).
      name: prefix of every layer name, e.g. ``stage2_unit1``.

    Returns:
      ``(B, ceil(H / s), ceil(W / s), C_out)``.

    Cost (``m = C_out / 2``; ``H', W'`` the output size):
      stride 1: MACs ``H·W·m·(C_in/2 + 9 + C_in/2)``;
      stride 2: shortcut ``H'·W'·C_in·(9 + C_in)``, main
      ``H·W·C_in·m + H'·W'·m·(9 + C_out − C_in)``.
    """
    in_channels = int(x.shape[-1])
    mid_channels = out_channels // 2
    if strides == 1:
        passed, branch = ChannelSplit(2, name=f"{name}_split")(x)
        branch = _main_branch(
            branch, out_channels - in_channels // 2, mid_channels, strides=1, name=f"{name}_main"
        )
    else:
        passed = common.depthwise_bn_act(
            x, strides=strides, activation_fn=None, name=f"{name}_shortcut_dwconv"
        )
        passed = common.conv_bn_act(passed, in_channels, 1, name=f"{name}_shortcut_conv")
        branch = _main_branch(
            x, out_channels - in_channels, mid_channels, strides=strides, name=f"{name}_main"
        )
    x = keras.layers.Concatenate(name=f"{name}_concat")([passed, branch])
    return ChannelShuffle(2, name=f"{name}_shuffle")(x)


# -- builder ------------------------------------------------------------------------------------


def shufflenet_v2(
    *, width: float = 1.0, dropout: float = 0.0, name: str = "shufflenet_v2", **head
) -> keras.Model:
    """Builds ShuffleNet v2 ``width``×.

    Args:
      width: width multiplier: 0.5, 1.0, 1.5 or 2.0 (the paper's stage tables).
      dropout: dropout rate before the classifier.
      name: model name.
      **head: ``input_shape`` (any size works: every layer keeps "same"-size arithmetic),
        ``num_classes``, ``include_top``, ``pooling``, ``classifier_activation`` (see
        ``common.classifier``).

    Returns:
      A functional ``keras.Model``; outputs ``(B, num_classes)`` with ``include_top``.
    """
    if width not in STAGE_CHANNELS:
        raise ValueError(
            f"shufflenet_v2: width must be one of {sorted(STAGE_CHANNELS)} (paper Table 5), "
            f"got {width!r}."
        )
    *widths, last_channels = STAGE_CHANNELS[width]

    def backbone(inputs):
        x, padding = common.pad_for_stride(inputs, 3, 2, name="conv1_pad")
        x = common.conv_bn_act(x, STEM_CHANNELS, 3, strides=2, padding=padding, name="conv1")
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
        for stage, (channels, units) in enumerate(zip(widths, STAGE_UNITS, strict=True), start=2):
            for unit in range(1, units + 1):
                x = shuffle_v2_unit(
                    x, channels, strides=2 if unit == 1 else 1, name=f"stage{stage}_unit{unit}"
                )
        return common.conv_bn_act(x, last_channels, 1, name="conv5")

    return common.classifier(
        backbone, name=name, min_input_size=MIN_INPUT_SIZE, dropout=dropout, **head
    )


# -- variants -----------------------------------------------------------------------------------

_SPEC = dict(
    input_size=224,
    min_input_size=MIN_INPUT_SIZE,
    preprocessing=IMAGENET_PREPROCESSING,
    recipe="shufflenet_v2_imagenet",
    knobs=family_knobs(shufflenet_v2),
)


# Published MACs include the final FC (the paper's Table 5 and the authors' code).
@register_model(**_SPEC, paper_macs=41e6)
def shufflenet_v2_050(**kwargs) -> keras.Model:
    return shufflenet_v2(**{"width": 0.5, **kwargs})


@register_model(**_SPEC, paper_macs=146e6)
def shufflenet_v2_100(**kwargs) -> keras.Model:
    return shufflenet_v2(**{"width": 1.0, **kwargs})


@register_model(**_SPEC, paper_macs=299e6)
def shufflenet_v2_150(**kwargs) -> keras.Model:
    return shufflenet_v2(**{"width": 1.5, **kwargs})


@register_model(**_SPEC, paper_macs=591e6)
def shufflenet_v2_200(**kwargs) -> keras.Model:
    return shufflenet_v2(**{"width": 2.0, **kwargs})
