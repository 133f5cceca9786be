"""ResNet-50, ResNeXt-50 (32×4d) and Xception against their papers (``docs/papers.md``).

ResNets: MACs at 224 (FC included) within 0.5 % of the ResNeXt paper's 4.1G / 4.2G, parameters
counted as that paper does (conv/FC weights + FC bias, no BN) within 0.5 % of 25.5M / 25.0M, and
the paper's block layout. Xception: trainable parameters equal to the paper's 22,855,952 and to
keras.applications.Xception, and the same function as keras.applications.Xception once both hold
the same weights (an independent implementation).
"""

import numpy as np
import pytest
import tf_keras as keras

from architectures import create_model, get_model_spec, resnet
from architectures.common import CLASSIFIER_NAME
from architectures.cost import model_cost
from layers import DepthwiseSeparableConv2D, GroupConv2D

pytestmark = pytest.mark.slow

# ResNeXt-50 counts 4.230G multiply-adds against the printed 4.2G (two significant digits;
# torchvision reports the same 4.23G for its identical model).
KNOWN_MAC_GAPS = {"resnext50_32x4d": 0.008}


def _trainable(model) -> int:
    return sum(int(w.shape.num_elements()) for w in model.trainable_weights)


def _paper_params(model) -> int:
    """Conv and FC weights plus the FC bias: the ResNeXt paper's parameter count."""
    count = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            continue
        count += sum(int(w.shape.num_elements()) for w in layer.trainable_weights)
    return count


@pytest.fixture(scope="module", params=["resnet50", "resnext50_32x4d"])
def resnet_model(request):
    model = create_model(request.param)
    yield request.param, model
    keras.backend.clear_session()


def test_resnet_published_macs_and_params(resnet_model):
    name, model = resnet_model
    spec = get_model_spec(name)
    assert spec.input_size == 224 and spec.recipe in ("resnet50_imagenet", "resnext50_imagenet")
    report = model_cost(model)
    assert report.total_params == _trainable(model)
    gap = abs(report.total_macs / spec.paper_macs - 1)
    assert gap <= KNOWN_MAC_GAPS.get(name, 5e-3), (name, report.total_macs)
    if name in KNOWN_MAC_GAPS:
        assert gap > 5e-3, f"{name} now meets 0.5 %: drop it from KNOWN_MAC_GAPS"
    assert _paper_params(model) == pytest.approx(spec.paper_params, rel=5e-3)
    assert model.get_layer(CLASSIFIER_NAME).use_bias


def test_resnet_block_layout_follows_the_resnext_paper(resnet_model):
    name, model = resnet_model
    cardinality = 32 if name.startswith("resnext") else 1
    blocks = {2: 3, 3: 4, 4: 6, 5: 3}
    projections = {layer.name for layer in model.layers if layer.name.endswith("_shortcut")}
    assert projections == {f"stage{s}_block1_shortcut" for s in blocks}  # shape changes only
    for stage, count in blocks.items():
        width = 64 * 2 ** (stage - 2)
        for block in range(1, count + 1):
            prefix = f"stage{stage}_block{block}"
            conv1, conv2, conv3 = (model.get_layer(f"{prefix}_conv{i}") for i in (1, 2, 3))
            stride = 2 if block == 1 and stage > 2 else 1
            assert tuple(conv1.strides) == (1, 1) and tuple(conv2.strides) == (stride, stride)
            assert conv2.filters == width * (2 if cardinality > 1 else 1)
            assert conv3.filters == 4 * width
            if cardinality > 1:
                assert isinstance(conv2, GroupConv2D) and conv2.groups == cardinality
            else:
                assert type(conv2) is keras.layers.Conv2D
    convs = [
        layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D | GroupConv2D)
    ]
    assert not any(layer.use_bias for layer in convs)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == len(convs)  # BN after every conv


def test_bottleneck_adds_then_activates():
    inputs = keras.Input((6, 6, 64))
    model = keras.Model(
        inputs, resnet.bottleneck_block(inputs, 32, 64, strides=1, cardinality=32, name="b")
    )
    bn = model.get_layer("b_conv3_bn")
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([0 * gamma, 0 * beta, mean, var])
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 64)).astype("float32")
    np.testing.assert_allclose(model(x, training=False).numpy(), np.maximum(x, 0), atol=1e-6)


def test_resnet_bad_knobs_name_the_value():
    with pytest.raises(ValueError, match="cardinality must be a positive int, got 0"):
        resnet.resnet(cardinality=0)


def test_xception_params_equal_the_paper_and_keras_applications():
    model = create_model("xception")
    assert tuple(model.input_shape) == (None, 299, 299, 3)
    reference = keras.applications.Xception(weights=None)
    assert _trainable(model) == 22_855_952 == _trainable(reference)
    assert _trainable(model) == get_model_spec("xception").paper_params
    assert model.count_params() == reference.count_params()
    separable = [layer for layer in model.layers if isinstance(layer, DepthwiseSeparableConv2D)]
    assert len(separable) == 34 and not any(layer.use_bias for layer in separable)
    assert all(layer.activation is keras.activations.linear for layer in separable)
    assert "dropout" not in [layer.name for layer in model.layers]  # default 0; recipe sets 0.5
    keras.backend.clear_session()


def test_xception_computes_what_keras_applications_computes():
    size, classes = 71, 7  # keras.applications' minimum size
    model = create_model(
        "xception", input_shape=(size, size, 3), num_classes=classes, classifier_activation="linear"
    )
    reference = keras.applications.Xception(
        weights=None, input_shape=(size, size, 3), classes=classes, classifier_activation=None
    )
    ours = [layer for layer in model.layers if layer.weights]
    theirs = [layer for layer in reference.layers if layer.weights]
    assert len(ours) == len(theirs)
    rng = np.random.default_rng(0)
    for mine, ref in zip(ours, theirs, strict=True):
        values = [
            rng.uniform(0.5, 1.5, w.shape)
            if "variance" in w.name
            else 0.1 * rng.normal(size=w.shape)
            for w in ref.weights
        ]
        ref.set_weights(values)
        mine.set_weights(values)
    x = rng.normal(size=(2, size, size, 3)).astype("float32")
    np.testing.assert_allclose(
        model(x, training=False).numpy(), reference(x, training=False).numpy(), atol=1e-4
    )
    keras.backend.clear_session()
