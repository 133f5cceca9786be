"""MobileNet v3 (Howard et al., 2019): searched inverted residuals with squeeze-and-excite.

A bottleneck ("bneck") is MobileNet v2's inverted residual with three changes found by
platform-aware search and NetAdapt: per-block kernels (3×3 or 5×5), squeeze-and-excite on some
blocks (global pool -> 1×1 down to a quarter -> ReLU -> 1×1 back -> hard-sigmoid, scaling the
expanded channels) and hard-swish ``x·relu6(x + 3)/6`` instead of ReLU in the deeper half, where
the feature maps are small enough for its cost not to matter. The head pools before its last
wide layer (960 -> pool -> 1280 for Large), which saves 7×7 times that layer's cost.

The minimalistic variants keep the channel table but drop the three additions (3×3 kernels
only, ReLU only, no squeeze-and-excite): slower on CPUs, faster on accelerators that lack them.

Layers compute exactly what ``keras.applications.MobileNetV3Large/Small`` compute (with
``include_preprocessing=False``: inputs in [-1, 1]), including TF's ``same`` padding of stride-2
layers, so its published weights load by name (``keras_layer_name``).
"""

from __future__ import annotations

import re
from typing import NamedTuple

import tf_keras as keras

from architectures import pretrained
from architectures.common import (
    activation,
    classifier,
    conv_bn_act,
    depthwise_bn_act,
    make_divisible,
)
from architectures.registry import INCEPTION_PREPROCESSING, family_knobs, register_model
from layers import HardSigmoid


class BlockSpec(NamedTuple):
    """One bneck row of the paper's Tables 1 (Large) and 2 (Small), at α = 1.

    Attributes:
      kernel: depthwise kernel size.
      expanded: "exp size", the channels of the expanded (depthwise) layer.
      filters: "#out", the block's output channels.
      squeeze_excite: whether the block has squeeze-and-excite ("SE").
      activation: "NL": ``"relu"`` (RE) or ``"hard_swish"`` (HS).
      strides: depthwise stride.
    """

    kernel: int
    expanded: int
    filters: int
    squeeze_excite: bool
    activation: str
    strides: int


RE, HS = "relu", "hard_swish"
LARGE_BLOCKS = (
    BlockSpec(3, 16, 16, False, RE, 1),
    BlockSpec(3, 64, 24, False, RE, 2),
    BlockSpec(3, 72, 24, False, RE, 1),
    BlockSpec(5, 72, 40, True, RE, 2),
    BlockSpec(5, 120, 40, True, RE, 1),
    BlockSpec(5, 120, 40, True, RE, 1),
    BlockSpec(3, 240, 80, False, HS, 2),
    BlockSpec(3, 200, 80, False, HS, 1),
    BlockSpec(3, 184, 80, False, HS, 1),
    BlockSpec(3, 184, 80, False, HS, 1),
    BlockSpec(3, 480, 112, True, HS, 1),
    BlockSpec(3, 672, 112, True, HS, 1),
    BlockSpec(5, 672, 160, True, HS, 2),
    BlockSpec(5, 960, 160, True, HS, 1),
    BlockSpec(5, 960, 160, True, HS, 1),
)
SMALL_BLOCKS = (
    BlockSpec(3, 16, 16, True, RE, 2),
    BlockSpec(3, 72, 24, False, RE, 2),
    BlockSpec(3, 88, 24, False, RE, 1),
    BlockSpec(5, 96, 40, True, HS, 2),
    BlockSpec(5, 240, 40, True, HS, 1),
    BlockSpec(5, 240, 40, True, HS, 1),
    BlockSpec(5, 120, 48, True, HS, 1),
    BlockSpec(5, 144, 48, True, HS, 1),
    BlockSpec(5, 288, 96, True, HS, 2),
    BlockSpec(5, 576, 96, True, HS, 1),
    BlockSpec(5, 576, 96, True, HS, 1),
)
MODEL_TYPES = {"large": LARGE_BLOCKS, "small": SMALL_BLOCKS}
# The wide layer after pooling, before the classifier (not thinned for α < 1).
PRE_LOGITS_UNITS = {"large": 1280, "small": 1024}
STEM_FILTERS = 16  # not thinned by α either, as in keras.applications
HEAD_EXPANSION = 6  # the last 1×1 conv widens the last block's output 6× (960 Large, 576 Small)
SE_RATIO = 0.25
BN_MOMENTUM = 0.999
BN_EPSILON = 1e-3
MIN_INPUT_SIZE = 32  # five stride-2 layers: 32×32 inputs end on a 1×1 map

_BN = dict(bn_momentum=BN_MOMENTUM, bn_epsilon=BN_EPSILON)


def minimalistic_block(block: BlockSpec) -> BlockSpec:
    """The minimalistic form of a row: 3×3, ReLU, no squeeze-and-excite."""
    return block._replace(kernel=3, squeeze_excite=False, activation=RE)


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


def squeeze_excite(x, *, name: str):
    """Global pool -> 1×1 conv to ``make_divisible(C/4)`` -> ReLU -> 1×1 conv to C -> hard-sigmoid,
    which scales the input's channels.

    Plain ``GlobalAveragePooling2D``, ``Conv2D`` and ``Multiply`` layers, so tools that follow
    the graph (pruning) see that the multiply ties the scale to the input's channels. Layers:
    ``{name}_pool``, ``{name}_reduce``, ``{name}_relu``, ``{name}_expand``, ``{name}_gate``,
    ``{name}_scale``.

    Shapes: ``[B, H, W, C] -> [B, H, W, C]``.
    Cost (``R = make_divisible(C/4, 8)``): MACs ``2·C·R``; params ``2·C·R + C + R``.
    """
    channels = int(x.shape[-1])
    scale = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    scale = keras.layers.Conv2D(make_divisible(channels * SE_RATIO, 8), 1, name=f"{name}_reduce")(
        scale
    )
    scale = keras.layers.ReLU(name=f"{name}_relu")(scale)
    scale = keras.layers.Conv2D(channels, 1, name=f"{name}_expand")(scale)
    scale = HardSigmoid(name=f"{name}_gate")(scale)
    return keras.layers.Multiply(name=f"{name}_scale")([x, scale])


def bneck(x, block: BlockSpec, *, expansion: float, filters: int, block_id: int):
    """[1×1 expand -> BN -> NL] -> dw k×k -> BN -> NL -> [SE] -> 1×1 project -> BN [-> add].

    The expand conv is skipped when ``expansion == 1``. Expanded channels are
    ``make_divisible(C_in·expansion, 8)``, the rule that reproduces keras.applications' (and
    slim's) widths at every α. Layers: ``block_{id}_expand``, ``block_{id}_depthwise``,
    ``block_{id}_se_*``, ``block_{id}_project`` (each with ``_bn`` and activation) and
    ``block_{id}_add``.

    Shapes: ``[B, H, W, M] -> [B, ceil(H/s), ceil(W/s), filters]``.
    Cost (``E`` expanded channels): MACs ``M·E·H·W + k²·E·H'·W' + E·filters·H'·W'`` (+ SE).
    """
    in_channels = int(x.shape[-1])
    prefix = f"block_{block_id}"
    y = x
    if expansion != 1:
        y = conv_bn_act(
            y,
            make_divisible(in_channels * expansion, 8),
            1,
            activation_fn=block.activation,
            name=f"{prefix}_expand",
            **_BN,
        )
    y = depthwise_bn_act(
        y,
        kernel_size=block.kernel,
        strides=block.strides,
        activation_fn=block.activation,
        name=f"{prefix}_depthwise",
        stride2_padding="same",
        **_BN,
    )
    if block.squeeze_excite:
        y = squeeze_excite(y, name=f"{prefix}_se")
    y = conv_bn_act(y, filters, 1, activation_fn=None, name=f"{prefix}_project", **_BN)
    if block.strides == 1 and in_channels == filters:
        y = keras.layers.Add(name=f"{prefix}_add")([x, y])
    return y


# ---------------------------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------------------------


def mobilenet_v3(
    *,
    model_type: str = "large",
    alpha: float = 1.0,
    minimalistic: bool = False,
    dropout: float = 0.2,
    name: str = "mobilenet_v3",
    **head,
) -> keras.Model:
    """MobileNet v3 Large or Small as a functional model (keras.applications signature).

    Args:
      model_type: ``"large"`` (Table 1) or ``"small"`` (Table 2).
      alpha: width multiplier α; block channels ``make_divisible(α·c, 8)``; the stem keeps 16
        channels and the pre-logits layer 1280/1024 for α ≤ 1.
      minimalistic: 3×3 kernels, ReLU and no squeeze-and-excite everywhere.
      dropout: dropout rate before the classifier (0.2, as the paper and keras.applications).
      name: the model name.
      **head: ``input_shape`` (at least 32×32), ``num_classes``, ``include_top`` (pooling, the
        pre-logits layer (1×1 conv as Dense, with bias, no BN, then the stem's nonlinearity),
        dropout and the ``classifier``), ``pooling``, ``classifier_activation`` (see
        ``common.classifier``).

    Returns:
      A ``keras.Model`` mapping ``[B, H, W, 3]`` images in [-1, 1] to ``[B, num_classes]``. At
      224×224 and α = 1, Large costs 217M multiply-adds with 5.48M trainable parameters, Small
      57M with 2.54M.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(
            f"{name}: model_type must be one of {sorted(MODEL_TYPES)}, got {model_type!r}."
        )
    if not alpha > 0:
        raise ValueError(f"{name}: alpha must be > 0, got {alpha!r}.")
    blocks = MODEL_TYPES[model_type]
    if minimalistic:
        blocks = tuple(minimalistic_block(block) for block in blocks)
    nonlinearity = RE if minimalistic else HS

    def backbone(inputs):
        x = conv_bn_act(
            inputs, STEM_FILTERS, 3, strides=2, activation_fn=nonlinearity, name="stem", **_BN
        )
        in_channels = STEM_FILTERS  # at α = 1, for the expansion ratios of the table
        for block_id, block in enumerate(blocks):
            x = bneck(
                x,
                block,
                expansion=block.expanded / in_channels,
                filters=make_divisible(block.filters * alpha, 8),
                block_id=block_id,
            )
            in_channels = block.filters
        return conv_bn_act(
            x,
            make_divisible(int(x.shape[-1]) * HEAD_EXPANSION, 8),
            1,
            activation_fn=nonlinearity,
            name="head_conv",
            **_BN,
        )

    units = PRE_LOGITS_UNITS[model_type]
    units = make_divisible(units * alpha, 8) if alpha > 1.0 else units

    def pre_logits(features):
        features = keras.layers.Dense(units, name="pre_logits")(features)
        return activation(features, nonlinearity, name=f"pre_logits_{nonlinearity}")

    return classifier(
        backbone,
        name=name,
        min_input_size=MIN_INPUT_SIZE,
        dropout=dropout,
        pre_logits=pre_logits,
        **head,
    )


# ---------------------------------------------------------------------------------------------
# keras.applications' published weights: layer names and files
# ---------------------------------------------------------------------------------------------

_KERAS_TOP = {"Conv": "stem", "Conv_1": "head_conv", "Conv_2": "pre_logits", "Logits": "classifier"}
_KERAS_PARTS = {
    "expand": "expand",
    "depthwise": "depthwise",
    "project": "project",
    "squeeze_excite/Conv": "se_reduce",
    "squeeze_excite/Conv_1": "se_expand",
}
_KERAS_BLOCK = re.compile(r"expanded_conv(?:_(\d+))?/(.+)")


def keras_layer_name(keras_name: str, shapes=None) -> str | None:
    """Our name for a layer of keras.applications' MobileNetV3 (``expanded_conv_3/expand``
    -> ``block_3_expand``, ``.../BatchNorm`` -> ``..._bn``, ``Conv_2`` -> ``pre_logits``).
    """
    del shapes  # names are unique
    base, batch_norm = keras_name, False
    if keras_name.endswith("/BatchNorm"):
        base, batch_norm = keras_name[: -len("/BatchNorm")], True
    ours = _KERAS_TOP.get(base)
    match = _KERAS_BLOCK.fullmatch(base)
    if match and match.group(2) in _KERAS_PARTS:
        ours = f"block_{match.group(1) or 0}_{_KERAS_PARTS[match.group(2)]}"
    if ours is None:
        return None
    return f"{ours}_bn" if batch_norm else ours


# keras.applications' (md5) hashes of the files with and without the top.
_HASHES = {
    "large_224_0.75_float": (
        "765b44a33ad4005b3ac83185abf1d0eb",
        "40af19a13ebea4e2ee0c676887f69a2e",
    ),
    "large_224_1.0_float": ("59e551e166be033d707958cf9e29a6a7", "07fb09a5933dd0c8eaafa16978110389"),
    "large_minimalistic_224_1.0_float": (
        "675e7b876c45c57e9e63e6d90a36599c",
        "ec5221f64a2f6d1ef965a614bdae7973",
    ),
    "small_224_0.75_float": (
        "cb65d4e5be93758266aa0a7f2c6708b7",
        "ebdb5cc8e0b497cd13a7c275d475c819",
    ),
    "small_224_1.0_float": ("8768d4c2e7dee89b9d02b2d03d65d862", "d3e8ec802a04aa4fc771ee12a9a9b836"),
    "small_minimalistic_224_1.0_float": (
        "99cd97fb2fcdad2bf028eb838de69e37",
        "cde8136e733e811080d9fcd8a252f7e4",
    ),
}


def published_weights(model_type: str, alpha: float, minimal: bool) -> pretrained.PublishedWeights:
    """keras.applications' MobileNetV3 weight files for one variant (224 pixels only)."""
    key = f"{model_type}{'_minimalistic' if minimal else ''}_224_{alpha}_float"
    with_top, without_top = _HASHES[key]
    call = "MobileNetV3Large" if model_type == "large" else "MobileNetV3Small"
    return pretrained.PublishedWeights(
        source=f"keras.applications.{call}(alpha={alpha}, minimalistic={minimal})",
        files=pretrained.weight_files(
            base_url=pretrained.KERAS_APPLICATIONS_URL + "mobilenet_v3/",
            file_name=lambda size, top: (
                f"weights_mobilenet_v3_{key}.h5"
                if top
                else f"weights_mobilenet_v3_{key}_no_top_v2.h5"
            ),
            input_sizes=(224,),
            hashes={True: with_top, False: without_top},
        ),
        layer_name=keras_layer_name,
    )


# ---------------------------------------------------------------------------------------------
# Variants. Multiply-adds and parameters at 224×224 from the paper's Table 3 (Large, Small) and,
# for the minimalistic ones, the released-checkpoint table (tensorflow/models
# research/slim/nets/mobilenet/README.md, whose MACs for Small, 66M at α = 1 and 65M minimalistic,
# disagree with the paper's 56M and with a count of the same network, so only its parameters are
# registered for Small minimalistic). See docs/architectures.md.
# ---------------------------------------------------------------------------------------------

_SPEC = dict(
    input_size=224,
    min_input_size=MIN_INPUT_SIZE,
    preprocessing=INCEPTION_PREPROCESSING,
    recipe="mobilenet_v3_imagenet",
    knobs=family_knobs(mobilenet_v3),
)


@register_model(
    **_SPEC,
    paper_macs=219e6,
    paper_params=5_400_000,
    weights=published_weights("large", 1.0, False),
)
def mobilenet_v3_large_100(**kwargs) -> keras.Model:
    return mobilenet_v3(**{"model_type": "large", "alpha": 1.0, **kwargs})


@register_model(
    **_SPEC,
    paper_macs=155e6,
    paper_params=4_000_000,
    weights=published_weights("large", 0.75, False),
)
def mobilenet_v3_large_075(**kwargs) -> keras.Model:
    return mobilenet_v3(**{"model_type": "large", "alpha": 0.75, **kwargs})


@register_model(
    **_SPEC,
    paper_macs=209e6,
    paper_params=3_900_000,
    weights=published_weights("large", 1.0, True),
)
def mobilenet_v3_large_minimalistic_100(**kwargs) -> keras.Model:
    return mobilenet_v3(**{"model_type": "large", "alpha": 1.0, "minimalistic": True, **kwargs})


@register_model(
    **_SPEC,
    paper_macs=56e6,
    paper_params=2_500_000,
    weights=published_weights("small", 1.0, False),
)
def mobilenet_v3_small_100(**kwargs) -> keras.Model:
    return mobilenet_v3(**{"model_type": "small", "alpha": 1.0, **kwargs})


@register_model(
    **_SPEC,
    paper_macs=44e6,
    paper_params=2_000_000,
    weights=published_weights("small", 0.75, False),
)
def mobilenet_v3_small_075(**kwargs) -> keras.Model:
    return mobilenet_v3(**{"model_type": "small", "alpha": 0.75, **kwargs})


@register_model(**_SPEC, paper_params=2_000_000, weights=published_weights("small", 1.0, True))
def mobilenet_v3_small_minimalistic_100(**kwargs) -> keras.Model:
    return mobilenet_v3(**{"model_type": "small", "alpha": 1.0, "minimalistic": True, **kwargs})
