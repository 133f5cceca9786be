"""A tiny classifier holding every lightnets layer, for the quantization and ONNX tests.

Grouped conv + BN + ReLU, channel shuffle, channel split, a dilated separable conv + BN, a
spatially separable conv with an intermediate activation, hard-swish and MobileNet v3's
squeeze-and-excite (hard-sigmoid gate, ``Multiply``). BN momentum 0.9: a few hundred steps
leave 0.99's moving statistics far behind the weights.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tf_keras as keras  # noqa: E402

import layers  # noqa: E402
from tests.architectures.test_family_training import FAMILY_VARIANTS  # noqa: E402

SIZE = 16
# One small variant per family; the 20M-parameter ResNet, ResNeXt and Xception are left to the
# every-layer model (their GroupConv2D and DepthwiseSeparableConv2D are in it), for CI time.
SMALL_FAMILY_VARIANTS = tuple(
    name for name in FAMILY_VARIANTS if name not in ("resnet50", "resnext50_32x4d", "xception")
)


def every_layer_model(num_classes: int = 10) -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(12, 3, strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = layers.GroupConv2D(24, 1, groups=3, use_bias=False, name="group")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="group_bn")(x)
    x = keras.layers.ReLU(name="group_relu")(x)
    x = layers.ChannelShuffle(3, name="shuffle")(x)
    passed, branch = layers.ChannelSplit(2, name="split")(x)
    branch = layers.DepthwiseSeparableConv2D(
        12, 3, dilation_rate=2, use_bias=False, name="separable"
    )(branch)
    branch = keras.layers.BatchNormalization(momentum=0.9, name="separable_bn")(branch)
    x = keras.layers.Concatenate(name="concat")([passed, branch])
    x = layers.SpatialSeparableConv2D(
        24, 3, strides=2, intermediate_activation="relu", name="spatial"
    )(x)
    x = layers.HardSwish(name="hswish")(x)
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
    gate = keras.layers.Conv2D(8, 1, activation="relu", name="se_reduce")(gate)
    gate = keras.layers.Conv2D(24, 1, name="se_expand")(gate)
    gate = layers.HardSigmoid(name="se_gate")(gate)
    x = keras.layers.Multiply(name="se_scale")([x, gate])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="every_layer")
