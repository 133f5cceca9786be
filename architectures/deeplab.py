"""DeepLab v3 / v3+ (Chen et al., 2017, 2018): atrous separable convolution for segmentation.

A classification backbone, run at output stride 16 or 8 by dilating its last stages
(``common.output_stride_plan``), feeds ASPP: a 1×1 conv, three 3×3 atrous separable convs
(rates 6/12/18 at output stride 16, 12/24/36 at 8) and image-level pooling (global average ->
1×1 conv -> bilinear back to the feature size), concatenated and projected to 256 channels.
DeepLab v3+ adds a decoder: the ASPP output is upsampled bilinearly to the stride-4 features of
the backbone, which are projected to 48 channels, and two 3×3 separable convs refine their
concatenation. A 1×1 ``classifier`` gives per-class logits, resized bilinearly to the input
(``docs/papers.md``).

The backbones are the classification builders themselves (``mobilenet_v2``, ``xception``)
with ``include_top=False`` and an ``output_stride``; the segmentation head is added on their
tensors, so the model is flat (every layer at the top level, as pruning and quantization want)
and backbone layer names, hence classification weights, carry over. Every separable conv is
``layers.DepthwiseSeparableConv2D`` (nothing between the depthwise and pointwise steps, as in
``xception``; the paper's code puts a BN and ReLU there) followed by BN and ReLU. Resizing is
``layers.Resize2D``, to sizes fixed when the model is built: exported graphs are static and
convert to clean TFLite (one dilated ``DEPTHWISE_CONV_2D`` per atrous conv, ``RESIZE_BILINEAR``).

Output: float32 logits ``[B, H, W, num_classes]`` (``classifier_activation`` may add softmax).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import tf_keras as keras

from architectures import common, mobilenet_v2, xception
from architectures.registry import INCEPTION_PREPROCESSING, family_knobs, register_model
from layers import DepthwiseSeparableConv2D, Resize2D

ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
ASPP_FILTERS = 256
LOW_LEVEL_FILTERS = 48
DECODER_FILTERS = 256
MIN_INPUT_SIZE = 32
# PASCAL VOC 2012: 20 classes and background, the DeepLab model zoo's setting.
NUM_CLASSES = 21
INPUT_SIZE = 513


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A classification builder and the layers DeepLab takes its features from.

    Attributes:
      builder: the family builder (keyword arguments of ``common.classifier`` plus
        ``output_stride``).
      features: the last feature layer the ASPP reads (before the family's classification-only
        head conv, as DeepLab's MobileNet v2 reads the last bottleneck).
      low_level: the stride-4 layer the decoder reads.
    """

    builder: Callable[..., keras.Model]
    features: str
    low_level: str


BACKBONES = {
    # DeepLab's MobileNet v2 reads layer_4/depthwise_output: block 2's depthwise output.
    "mobilenet_v2": Backbone(
        mobilenet_v2.mobilenet_v2, "block_16_project_bn", "block_2_depthwise_relu6"
    ),
    # Block 3's last separable conv, before its pool: stride 4 (DeepLab's Xception-65 reads the
    # last pointwise conv of entry block 2, also at stride 4, also 256 channels).
    "xception": Backbone(xception.xception, "block14_sepconv2_act", "block3_sepconv2_bn"),
}


# -- blocks -------------------------------------------------------------------------------------


def separable_bn_relu(x, filters: int, *, dilation_rate: int = 1, name: str):
    """Atrous separable conv 3×3 (no bias) -> BN -> ReLU; named ``{name}``, ``_bn``, ``_relu``.

    Cost: MACs ``H·W·C·(9 + filters)``.
    """
    x = DepthwiseSeparableConv2D(
        filters, 3, padding="same", dilation_rate=dilation_rate, use_bias=False, name=name
    )(x)
    x = common.batch_norm(x, name=f"{name}_bn")
    return common.activation(x, "relu", name=f"{name}_relu")


def aspp(x, *, rates: tuple[int, ...], filters: int = ASPP_FILTERS, dropout: float = 0.0):
    """Atrous spatial pyramid pooling: 1×1, atrous separable 3×3 at ``rates``, image pooling.

    Layers ``aspp_conv1x1``, ``aspp_sepconv_r{rate}``, ``aspp_pool`` / ``aspp_pool_conv`` /
    ``aspp_pool_resize``, ``aspp_concat``, ``aspp_project`` (each conv with BN and ReLU) and
    ``aspp_dropout``.

    Shapes: ``[B, h, w, C] -> [B, h, w, filters]``.
    Cost: MACs ``h·w·(C·F + Σ_rates C·(9 + F) + (2 + len(rates))·F·F) + C·F``.
    """
    height, width = (int(d) for d in x.shape[1:3])
    branches = [common.conv_bn_act(x, filters, 1, name="aspp_conv1x1")]
    for rate in rates:
        branches.append(
            separable_bn_relu(x, filters, dilation_rate=rate, name=f"aspp_sepconv_r{rate}")
        )
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(x)
    pooled = common.conv_bn_act(pooled, filters, 1, name="aspp_pool_conv")
    branches.append(Resize2D((height, width), name="aspp_pool_resize")(pooled))
    y = keras.layers.Concatenate(name="aspp_concat")(branches)
    y = common.conv_bn_act(y, filters, 1, name="aspp_project")
    if dropout:
        y = keras.layers.Dropout(dropout, name="aspp_dropout")(y)
    return y


def decoder(x, low_level, *, low_level_filters: int = LOW_LEVEL_FILTERS):
    """DeepLab v3+'s decoder: upsample ``x`` to ``low_level``'s size, concatenate with its 48-channel
    projection, two separable 3×3 convs.

    Layers ``decoder_upsample``, ``decoder_low_level``, ``decoder_concat``,
    ``decoder_sepconv1``, ``decoder_sepconv2``.

    Shapes: ``[B, h, w, C]``, ``[B, H4, W4, L] -> [B, H4, W4, 256]``.
    """
    size = tuple(int(d) for d in low_level.shape[1:3])
    x = Resize2D(size, name="decoder_upsample")(x)
    low_level = common.conv_bn_act(low_level, low_level_filters, 1, name="decoder_low_level")
    x = keras.layers.Concatenate(name="decoder_concat")([x, low_level])
    x = separable_bn_relu(x, DECODER_FILTERS, name="decoder_sepconv1")
    return separable_bn_relu(x, DECODER_FILTERS, name="decoder_sepconv2")


# -- builder ------------------------------------------------------------------------------------


def deeplab(
    *,
    backbone: str = "mobilenet_v2",
    output_stride: int = 16,
    use_decoder: bool = True,
    atrous_rates: tuple[int, ...] | None = None,
    alpha: float = 1.0,
    input_shape=(INPUT_SIZE, INPUT_SIZE, 3),
    num_classes: int = NUM_CLASSES,
    dropout: float = 0.1,
    classifier_activation: str | None = None,
    name: str = "deeplab",
) -> keras.Model:
    """DeepLab v3 (``use_decoder=False``) or v3+ on a registered classification backbone.

    Args:
      backbone: a key of ``BACKBONES``.
      output_stride: 16 or 8: the stride of the features ASPP sees.
      use_decoder: add DeepLab v3+'s decoder (stride-4 features, output at stride 4 before the
        final resize); without it the logits are computed at ``output_stride``.
      atrous_rates: the ASPP's atrous separable branches; None: the paper's for
        ``output_stride`` (``ASPP_RATES``); ``()``: none (image pooling and 1×1 only, the DeepLab
        model zoo's MobileNet v2 model).
      alpha: MobileNet v2's width multiplier (ignored by Xception, which has none).
      input_shape: ``(H, W, 3)``; at least 32×32.
      num_classes: classes per pixel.
      dropout: dropout after the ASPP projection (DeepLab's 0.1).
      classifier_activation: activation of the ``predictions`` layer; None: logits.
      name: the model name.

    Returns:
      A ``keras.Model`` mapping ``[B, H, W, 3]`` images to float32 ``[B, H, W, num_classes]``.

    Raises:
      ValueError: a bad argument, named with its value.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"{name}: backbone must be one of {sorted(BACKBONES)}, got {backbone!r}.")
    if output_stride not in ASPP_RATES:
        raise ValueError(
            f"{name}: output_stride must be one of {sorted(ASPP_RATES)}, got {output_stride!r}."
        )
    shape = common.check_builder_args(
        input_shape=input_shape,
        num_classes=num_classes,
        include_top=True,
        pooling=None,
        dropout=dropout,
        min_input_size=MIN_INPUT_SIZE,
        model_name=name,
    )
    rates = ASPP_RATES[output_stride] if atrous_rates is None else tuple(atrous_rates)
    spec = BACKBONES[backbone]
    extra = {"alpha": alpha} if backbone == "mobilenet_v2" else {}
    features = spec.builder(
        input_shape=shape,
        include_top=False,
        output_stride=output_stride,
        name=f"{name}_backbone",
        **extra,
    )
    x = aspp(features.get_layer(spec.features).output, rates=rates, dropout=dropout)
    if use_decoder:
        x = decoder(x, features.get_layer(spec.low_level).output)
    x = keras.layers.Conv2D(num_classes, 1, name=common.CLASSIFIER_NAME)(x)
    x = Resize2D(shape[:2], name="upsample")(x)
    outputs = keras.layers.Activation(
        classifier_activation or "linear", dtype="float32", name=common.PREDICTIONS_NAME
    )(x)
    return keras.Model(features.input, outputs, name=name)


# -- variants -------------------------------------------------------------------------------------
# The DeepLab model zoo (tensorflow/models research/deeplab/g3doc/model_zoo.md) publishes 2.75B
# multiply-adds at 513×513 for its MobileNet v2 model (output stride 16, no ASPP atrous branches,
# no decoder) and no parameter counts; its Xception is the deeper, aligned Xception-65, not this
# one, so no figure is registered for it (docs/architectures.md compares them).

_SPEC = dict(
    input_size=INPUT_SIZE,
    min_input_size=MIN_INPUT_SIZE,
    num_classes=NUM_CLASSES,
    preprocessing=INCEPTION_PREPROCESSING,
    task="segmentation",
    knobs=tuple(k for k in family_knobs(deeplab) if k != "backbone"),
)


@register_model(**_SPEC, recipe="deeplabv3plus_shapes")
def deeplabv3plus_mobilenet_v2_100(**kwargs) -> keras.Model:
    return deeplab(**{"backbone": "mobilenet_v2", "alpha": 1.0, **kwargs})


@register_model(**_SPEC, recipe="deeplabv3plus_shapes")
def deeplabv3plus_xception(**kwargs) -> keras.Model:
    return deeplab(**{"backbone": "xception", **kwargs})


@register_model(**_SPEC, recipe="deeplabv3_shapes", paper_macs=2.75e9)
def deeplabv3_mobilenet_v2_100(**kwargs) -> keras.Model:
    return deeplab(
        **{
            "backbone": "mobilenet_v2",
            "alpha": 1.0,
            "use_decoder": False,
            "atrous_rates": (),
            **kwargs,
        }
    )
