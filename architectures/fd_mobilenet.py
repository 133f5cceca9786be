"""FD-MobileNet (Qin et al., 2018): MobileNet with fast downsampling.

The same separable blocks as MobileNet v1, but the 32× downsampling happens within the first 12
layers, so the expensive wide layers run on 7×7 maps; the network is about 4× cheaper than
MobileNet v1 at equal width. BN + ReLU after every conv; width α: ``int(α·c)``.
"""

from __future__ import annotations

import tf_keras as keras

from architectures.mobilenet_v1 import MIN_INPUT_SIZE, separable_classifier
from architectures.registry import INCEPTION_PREPROCESSING, family_knobs, register_model

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
    *, alpha: float = 1.0, dropout: float = 0.0, name: str = "fd_mobilenet", **head
) -> keras.Model:
    """FD-MobileNet as a functional model (keras.applications signature).

    Args:
      alpha: width multiplier α (1.0, 0.5, 0.25 in the paper).
      dropout: dropout rate before the classifier.
      name: the model name.
      **head: ``input_shape`` (at least 32×32), ``num_classes``, ``include_top``, ``pooling``,
        ``classifier_activation`` (see ``common.classifier``).

    Returns:
      A ``keras.Model`` mapping ``[B, H, W, 3]`` images to ``[B, num_classes]``. At 224×224 and
      α = 1 it costs about 144M multiply-adds.
    """

    return separable_classifier(
        blocks=BLOCKS, activation_fn="relu", alpha=alpha, dropout=dropout, name=name, **head
    )


# ---------------------------------------------------------------------------------------------
# Variants (multiply-adds from the official results table at 224×224)
# ---------------------------------------------------------------------------------------------

_SPEC = dict(
    input_size=224,
    min_input_size=MIN_INPUT_SIZE,
    preprocessing=INCEPTION_PREPROCESSING,
    recipe="fd_mobilenet_imagenet",
    knobs=family_knobs(fd_mobilenet),
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
