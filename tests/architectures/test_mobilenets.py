"""Family-specific behaviour of MobileNet v1/v2 and FD-MobileNet (small inputs, no training)."""

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from architectures import create_model
from architectures.fd_mobilenet import fd_mobilenet
from architectures.mobilenet_v1 import mobilenet_v1
from architectures.mobilenet_v2 import mobilenet_v2


def test_mobilenet_v2_is_accepted_by_the_xnnpack_latency_policy():
    model = create_model("mobilenet_v2_035", input_shape=(32, 32, 3), num_classes=10)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        model,
        pruning_policy=tfmot.sparsity.keras.PruneForLatencyOnXNNPack(),
        pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0),
    )
    wrapped = {layer.layer.name for layer in pruned.layers if hasattr(layer, "pruning_vars")}
    pointwise = {
        layer.name
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
        and not isinstance(layer, keras.layers.DepthwiseConv2D)
        and layer.kernel_size == (1, 1)
    }
    assert wrapped == pointwise  # the policy prunes exactly the 1x1 convs


def test_keras_same_padding_stem_is_what_the_policy_rejects():
    """The reason for our ZeroPadding2D stems: keras.applications' layout is refused."""
    reference = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10
    )
    with pytest.raises(ValueError, match="ZeroPadding2D"):
        tfmot.sparsity.keras.prune_low_magnitude(
            reference, pruning_policy=tfmot.sparsity.keras.PruneForLatencyOnXNNPack()
        )


def test_mobilenet_v2_residuals_and_expansions_follow_the_paper():
    model = mobilenet_v2(input_shape=(32, 32, 3), alpha=1.0, num_classes=10)
    names = {layer.name for layer in model.layers}
    assert "block_0_expand" not in names  # t = 1: no expansion conv
    assert model.get_layer("block_1_expand").filters == 6 * 16
    adds = sorted(int(n.split("_")[1]) for n in names if n.endswith("_add"))
    # stride 1 and C_in == C_out: the repeats of each stage after its first block
    assert adds == [2, 4, 5, 7, 8, 9, 11, 12, 14, 15]
    assert model.get_layer("block_16_project").filters == 320
    assert model.get_layer("head_conv").filters == 1280
    assert mobilenet_v2(input_shape=(32, 32, 3), alpha=1.4).get_layer("head_conv").filters == 1792


def test_fd_mobilenet_downsamples_32x_within_its_first_blocks():
    model = fd_mobilenet(input_shape=(224, 224, 3), alpha=0.25, num_classes=10)
    assert tuple(model.get_layer("conv_pw_6").output_shape) == (None, 7, 7, 128)
    assert model.get_layer("conv_pw_11").filters == 256
    assert isinstance(model.get_layer("conv_pw_11_relu"), keras.layers.ReLU)


def test_headless_models_pool_as_keras_applications():
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    for builder, channels in ((mobilenet_v1, 256), (mobilenet_v2, 1280), (fd_mobilenet, 256)):
        features = builder(input_shape=(64, 64, 3), alpha=0.25, include_top=False)
        assert tuple(features.output_shape) == (None, 2, 2, channels)
        pooled = builder(input_shape=(64, 64, 3), alpha=0.25, include_top=False, pooling="max")
        assert pooled(x).shape == (2, channels)


@pytest.mark.parametrize("builder", [mobilenet_v1, mobilenet_v2, fd_mobilenet])
def test_bad_width_and_size_are_refused_by_name(builder):
    with pytest.raises(ValueError, match="alpha must be > 0, got 0"):
        builder(input_shape=(32, 32, 3), alpha=0)
    with pytest.raises(ValueError, match=r"at least 32x32"):
        builder(input_shape=(31, 64, 3))


@pytest.mark.parametrize("builder", [mobilenet_v1, mobilenet_v2])
def test_same_stride2_padding_is_keras_applications_layout(builder):
    """``stride2_padding="same"``: no padding layers, as keras.applications pads at even sizes
    (the published weights need it; ``test_pretrained.py`` checks the outputs)."""
    symmetric = builder(input_shape=(32, 32, 3), alpha=0.25)
    same = builder(input_shape=(32, 32, 3), alpha=0.25, stride2_padding="same")
    pads = [layer for layer in symmetric.layers if isinstance(layer, keras.layers.ZeroPadding2D)]
    assert len(pads) == 5  # one per stride-2 layer
    assert not any(isinstance(layer, keras.layers.ZeroPadding2D) for layer in same.layers)
    assert same.count_params() == symmetric.count_params()
    with pytest.raises(ValueError, match="stride2_padding must be one of.*'valid'"):
        builder(input_shape=(32, 32, 3), stride2_padding="valid")
