"""FD-MobileNet (Qin et al., 2018): MobileNet with fast downsampling.

The same separable blocks as MobileNet v1, but the 32× downsampling happens within the first 12
layers, so the expensive wide layers run on 7×7 maps; the network is about 4× cheaper than
MobileNet v1 at equal width. BN + ReLU after every conv; width α: ``int(α·c)``.
"""

from __future__ import annotations

import tf_keras as keras

from architectures.common import check_builder_args, classifier_head
from architectures.mobilenet_v1 import MIN_INPUT_SIZE, separable_backbone
from architectures.registry import INCEPTION_PREPROCESSING, register_model

STEM_FILTERS = 32
# (pointwise output channels, depthwise stride): 64/2, 128/2, 128, 256/2, 256, 512/2, 512 ×4, 1024.
BLOCKS = (
    (64, 2),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 1),
)


# ---------------------------------------------------------------------------------------------
# Builder (blocks: architectures.mobilenet_v1.separable_block)
# ---------------------------------------------------------------------------------------------


def fd_mobilenet(
    *,
    input_shape=(224, 224, 3),
    alpha: float = 1.0,
    num_classes: int = 1000,
    include_top: bool = True,
    pooling: str | None = None,
    dropout: float = 0.0,
    classifier_activation: str | None = "softmax",
    name: str = "fd_mobilenet",
) -> keras.Model:
    """FD-MobileNet as a functional model (keras.applications signature).

    Args:
      input_shape: ``(height, width, channels)``, at least 32×32.
      alpha: width multiplier α (1.0, 0.5, 0.25 in the paper).
      num_classes: classifier outputs (with ``include_top``).
      include_top: add global pooling, dropout and the ``classifier`` Dense layer.
      pooling: ``None``, ``"avg"`` or ``"max"``; the pooling applied when ``include_top=False``.
      dropout: dropout rate before the classifier.
      classifier_activation: activation of the ``predictions`` layer; None gives logits.
      name: the model name.

    Returns:
      A ``keras.Model`` mapping ``[B, H, W, 3]`` images to ``[B, num_classes]``. At 224×224 and
      α = 1 it costs about 144M multiply-adds.
    """
    shape = check_builder_args(
        input_shape=input_shape,
        num_classes=num_classes,
        include_top=include_top,
        pooling=pooling,
        dropout=dropout,
        min_input_size=MIN_INPUT_SIZE,
        model_name=name,
    )
    inputs = keras.Input(shape=shape, name="image")
    x = separable_backbone(
        inputs,
        stem_filters=STEM_FILTERS,
        blocks=BLOCKS,
        alpha=alpha,
        activation_fn="relu",
        model_name=name,
    )
    outputs = classifier_head(
        x,
        include_top=include_top,
        pooling=pooling,
        num_classes=num_classes,
        dropout=dropout,
        classifier_activation=classifier_activation,
    )
    return keras.Model(inputs, outputs, name=name)


# ---------------------------------------------------------------------------------------------
# Variants (multiply-adds from the official results table at 224×224)
# ---------------------------------------------------------------------------------------------

_SPEC = dict(
    input_size=224,
    min_input_size=MIN_INPUT_SIZE,
    preprocessing=INCEPTION_PREPROCESSING,
    recipe="fd_mobilenet_imagenet",
)


@register_model(**_SPEC, paper_macs=144e6)
def fd_mobilenet_100(**kwargs) -> keras.Model:
    return fd_mobilenet(**{"alpha": 1.0, **kwargs})


@register_model(**_SPEC)
def fd_mobilenet_075(**kwargs) -> keras.Model:
    return fd_mobilenet(**{"alpha": 0.75, **kwargs})


@register_model(**_SPEC, paper_macs=40e6)
def fd_mobilenet_050(**kwargs) -> keras.Model:
    return fd_mobilenet(**{"alpha": 0.5, **kwargs})


@register_model(**_SPEC, paper_macs=12e6)
def fd_mobilenet_025(**kwargs) -> keras.Model:
    return fd_mobilenet(**{"alpha": 0.25, **kwargs})
