"""MobileNet v2 (Sandler et al., 2018): inverted residuals with linear bottlenecks.

A bottleneck expands ``C_in`` to ``t·C_in`` with a 1×1 conv, filters it with a depthwise 3×3 and
projects it back with a linear 1×1 (no activation: a ReLU on the thin bottleneck would destroy
information). With ``t = 6`` the pair of 1×1s costs ``2·6·C²`` per pixel, a third of one wide
``6C -> 6C`` 1×1. The residual joins only blocks with stride 1 and ``C_in == C_out``.

The layout is XNNPACK-friendly (stride-2 convs are ``ZeroPadding2D(1)`` + ``valid``, pooling
ends the feature extractor), so tfmot's ``PruneForLatencyOnXNNPack`` policy accepts the model.
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
    make_divisible,
    output_stride_plan,
    pad_for_stride,
)
from architectures.registry import INCEPTION_PREPROCESSING, family_knobs, register_model

STEM_FILTERS = 32
HEAD_FILTERS = 1280
# Bottleneck table (expansion t, output channels c, repeats n, first stride s), paper Table 2.
BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
BN_MOMENTUM = 0.999
BN_EPSILON = 1e-3
MIN_INPUT_SIZE = 32  # five stride-2 layers: 32×32 inputs end on a 1×1 map

_BN = dict(bn_momentum=BN_MOMENTUM, bn_epsilon=BN_EPSILON)


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


def bottleneck_channels(channels: int, alpha: float) -> int:
    """Block output width: ``make_divisible(int(α·c), 8)``, exactly as keras.applications."""
    return make_divisible(int(channels * alpha), 8)


def inverted_residual(
    x,
    filters: int,
    *,
    expansion: int,
    strides: int,
    block_id: int,
    stride2_padding: str = "symmetric",
    dilation_rate: int = 1,
):
    """1×1 expand -> BN -> ReLU6 -> dw 3×3 -> BN -> ReLU6 -> 1×1 project -> BN [-> add].

    With ``expansion == 1`` there is no expand conv. Layers are named ``block_{id}_expand``,
    ``block_{id}_depthwise``, ``block_{id}_project`` (each with ``_bn`` and activation) and
    ``block_{id}_add``. ``dilation_rate`` dilates the depthwise conv (atrous stages, stride 1).

    Shapes: ``[B, H, W, M] -> [B, ceil(H/s), ceil(W/s), filters]``.
    Cost (``E = t·M``): MACs ``M·E·H·W + 9·E·H'·W' + E·filters·H'·W'`` (no first term when
    ``t = 1``); params ``M·E + 9·E + E·filters`` plus 2 per BN channel.
    """
    in_channels = int(x.shape[-1])
    prefix = f"block_{block_id}"
    y = x
    if expansion != 1:
        y = conv_bn_act(
            y, expansion * in_channels, 1, activation_fn="relu6", name=f"{prefix}_expand", **_BN
        )
    y = depthwise_bn_act(
        y,
        strides=strides,
        activation_fn="relu6",
        name=f"{prefix}_depthwise",
        stride2_padding=stride2_padding,
        dilation_rate=dilation_rate,
        **_BN,
    )
    y = conv_bn_act(y, filters, 1, activation_fn=None, name=f"{prefix}_project", **_BN)
    if strides == 1 and in_channels == filters:
        y = keras.layers.Add(name=f"{prefix}_add")([x, y])
    return y


# ---------------------------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------------------------


def mobilenet_v2(
    *,
    alpha: float = 1.0,
    dropout: float = 0.2,
    stride2_padding: str = "symmetric",
    output_stride: int = 32,
    name: str = "mobilenet_v2",
    **head,
) -> keras.Model:
    """MobileNet v2 as a functional model (keras.applications signature).

    Args:
      alpha: width multiplier α; channels ``make_divisible(α·c, 8)``; the last 1×1 conv keeps
        1280 channels for α ≤ 1 and scales above.
      dropout: dropout rate before the classifier (0.2, as the TF Model Garden trains it).
      stride2_padding: ``"symmetric"`` (XNNPACK's sparse-inference layout) or ``"same"``
        (keras.applications' layout, which its published weights need; ``create_model`` picks it
        when loading them).
      output_stride: 32, or 16 / 8 for dense prediction: the last stride-2 stages run at stride
        1 with dilated depthwise convs (``common.output_stride_plan``, DeepLab's rule); the
        layers and weights are the same.
      name: the model name.
      **head: ``input_shape`` (at least 32×32), ``num_classes``, ``include_top``, ``pooling``,
        ``classifier_activation`` (see ``common.classifier``).

    Returns:
      A ``keras.Model`` mapping ``[B, H, W, 3]`` images to ``[B, num_classes]``. At 224×224 and
      α = 1 it costs about 300M multiply-adds and has 3.50M trainable parameters.
    """
    if not alpha > 0:
        raise ValueError(f"{name}: alpha must be > 0, got {alpha!r}.")

    check_stride2_padding(stride2_padding, model_name=name)
    block_strides = [
        first_stride if repeat == 0 else 1
        for _, _, repeats, first_stride in BLOCKS
        for repeat in range(repeats)
    ]
    # The stem's stride comes first; it is never dilated (the stride so far is 1).
    plan = output_stride_plan([2, *block_strides], output_stride, model_name=name)[1:]

    def backbone(inputs):
        x, padding = pad_for_stride(inputs, 3, 2, name="stem_pad", stride2_padding=stride2_padding)
        x = conv_bn_act(
            x,
            make_divisible(STEM_FILTERS * alpha, 8),
            3,
            strides=2,
            padding=padding,
            activation_fn="relu6",
            name="stem",
            **_BN,
        )
        block_id = 0
        for expansion, channels, repeats, _ in BLOCKS:
            for _ in range(repeats):
                strides, dilation = plan[block_id]
                x = inverted_residual(
                    x,
                    bottleneck_channels(channels, alpha),
                    expansion=expansion,
                    strides=strides,
                    block_id=block_id,
                    stride2_padding=stride2_padding,
                    dilation_rate=dilation,
                )
                block_id += 1
        head_filters = make_divisible(HEAD_FILTERS * alpha, 8) if alpha > 1.0 else HEAD_FILTERS
        return conv_bn_act(x, head_filters, 1, activation_fn="relu6", name="head_conv", **_BN)

    return classifier(backbone, name=name, min_input_size=MIN_INPUT_SIZE, dropout=dropout, **head)


# ---------------------------------------------------------------------------------------------
# keras.applications' published weights: layer names and files
# ---------------------------------------------------------------------------------------------

_KERAS_RENAMED = {
    "Conv1": "stem",
    "bn_Conv1": "stem_bn",
    "Conv_1": "head_conv",
    "Conv_1_bn": "head_conv_bn",
    "predictions": CLASSIFIER_NAME,
    "Logits": CLASSIFIER_NAME,  # the classifier's name in the files keras-applications wrote
}
_KERAS_BLOCK = re.compile(r"(expanded_conv|block_\d+)_(expand|depthwise|project)(_BN)?")


def keras_layer_name(keras_name: str, shapes=None) -> str | None:
    """Our name for a layer of keras.applications' MobileNetV2 (``expanded_conv_depthwise_BN``
    -> ``block_0_depthwise_bn``, ``Conv1`` -> ``stem``, ``Conv_1`` -> ``head_conv``, ...)."""
    del shapes  # names are unique
    match = _KERAS_BLOCK.fullmatch(keras_name)
    if match is None:
        return _KERAS_RENAMED.get(keras_name)
    block = "block_0" if match.group(1) == "expanded_conv" else match.group(1)
    return f"{block}_{match.group(2)}{'_bn' if match.group(3) else ''}"


def published_weights(alpha: float) -> pretrained.PublishedWeights:
    """keras.applications' MobileNetV2 weight files for one width, at 96 to 224 pixels."""
    stem = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}"
    return pretrained.PublishedWeights(
        source=f"keras.applications.MobileNetV2(alpha={alpha})",
        files=pretrained.weight_files(
            base_url=pretrained.KERAS_APPLICATIONS_URL + "mobilenet_v2/",
            file_name=lambda size, top: f"{stem}_{size}{'' if top else '_no_top'}.h5",
            input_sizes=(96, 128, 160, 192, 224),
        ),
        layer_name=keras_layer_name,
        builder_kwargs={"stride2_padding": "same"},
    )


# ---------------------------------------------------------------------------------------------
# Variants. Multiply-adds at 224×224 from the released-checkpoint table (tensorflow/models
# research/slim/nets/mobilenet/README.md). Its parameter counts leave out BN's gamma/beta (3.47M
# vs 3.50M trainable at α = 1), so none are registered: tests match keras.applications instead.
# ---------------------------------------------------------------------------------------------

_SPEC = dict(
    input_size=224,
    min_input_size=MIN_INPUT_SIZE,
    preprocessing=INCEPTION_PREPROCESSING,
    recipe="mobilenet_v2_imagenet",
    knobs=family_knobs(mobilenet_v2),
)


@register_model(**_SPEC, paper_macs=59e6, weights=published_weights(0.35))
def mobilenet_v2_035(**kwargs) -> keras.Model:
    return mobilenet_v2(**{"alpha": 0.35, **kwargs})


@register_model(**_SPEC, paper_macs=97e6, weights=published_weights(0.5))
def mobilenet_v2_050(**kwargs) -> keras.Model:
    return mobilenet_v2(**{"alpha": 0.5, **kwargs})


@register_model(**_SPEC, paper_macs=209e6, weights=published_weights(0.75))
def mobilenet_v2_075(**kwargs) -> keras.Model:
    return mobilenet_v2(**{"alpha": 0.75, **kwargs})


@register_model(**_SPEC, paper_macs=300e6, weights=published_weights(1.0))
def mobilenet_v2_100(**kwargs) -> keras.Model:
    return mobilenet_v2(**{"alpha": 1.0, **kwargs})


@register_model(**_SPEC, paper_macs=509e6, weights=published_weights(1.3))
def mobilenet_v2_130(**kwargs) -> keras.Model:
    return mobilenet_v2(**{"alpha": 1.3, **kwargs})


@register_model(**_SPEC, paper_macs=582e6, weights=published_weights(1.4))
def mobilenet_v2_140(**kwargs) -> keras.Model:
    return mobilenet_v2(**{"alpha": 1.4, **kwargs})
