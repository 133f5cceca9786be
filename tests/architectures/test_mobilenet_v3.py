"""MobileNet v3 against keras.applications' MobileNetV3 and the paper (docs/architectures.md).

keras.applications' model with random weights, saved as its published weight file into an
offline Keras cache, is loaded with ``pretrained="imagenet"``: the same outputs (≤ 1e-5) check
the architecture and the layer-name mapping at once. Parameters equal keras.applications';
multiply-adds are within 0.5 % of the paper's Table 3 except the pinned known gaps.
"""

import numpy as np
import pytest
import tf_keras as keras

from architectures import create_model, get_model_spec, list_models
from architectures.common import conv_bn_act, make_divisible
from architectures.cost import model_cost
from architectures.mobilenet_v3 import LARGE_BLOCKS, SMALL_BLOCKS, bneck, mobilenet_v3
from layers import HardSigmoid, HardSwish
from tests import model_checks
from tests.architectures.keras_reference import keras_application, publish_stand_in, randomize

VARIANTS = list_models("mobilenet_v3_*")
# Our count against the printed figure. Large 1.0: the paper prints 219M, the released-checkpoint
# table (and keras.applications' docs) 217M for the same network; Small 1.0 and 0.75 miss the
# paper's two-digit 56M and 44M by about a unit in the last digit.
KNOWN_MAC_GAPS = {
    "mobilenet_v3_large_100": 0.012,
    "mobilenet_v3_small_100": 0.01,
    "mobilenet_v3_small_075": 0.015,
}


def _trainable(model) -> int:
    return sum(int(w.shape.num_elements()) for w in model.trainable_weights)


def test_the_variants_and_their_published_figures_are_registered():
    assert VARIANTS == [
        "mobilenet_v3_large_075",
        "mobilenet_v3_large_100",
        "mobilenet_v3_large_minimalistic_100",
        "mobilenet_v3_small_075",
        "mobilenet_v3_small_100",
        "mobilenet_v3_small_minimalistic_100",
    ]
    published = {  # paper Table 3; minimalistic: the released-checkpoint table
        "mobilenet_v3_large_100": (219e6, 5_400_000),
        "mobilenet_v3_large_075": (155e6, 4_000_000),
        "mobilenet_v3_small_100": (56e6, 2_500_000),
        "mobilenet_v3_small_075": (44e6, 2_000_000),
        "mobilenet_v3_large_minimalistic_100": (209e6, 3_900_000),
        "mobilenet_v3_small_minimalistic_100": (None, 2_000_000),
    }
    for name, (macs, params) in published.items():
        spec = get_model_spec(name)
        assert (spec.paper_macs, spec.paper_params) == (macs, params), name
        assert spec.recipe == "mobilenet_v3_imagenet" and spec.input_size == 224
        assert spec.weights.input_sizes == (224,)


@pytest.mark.slow
@pytest.mark.parametrize("name", VARIANTS)
def test_same_function_as_keras_applications_and_the_papers_cost(
    name, offline_keras_cache, monkeypatch
):
    images = np.random.default_rng(0).uniform(-1, 1, (4, 224, 224, 3)).astype("float32")
    reference = keras_application(name, input_size=224)
    randomize(reference, images)
    publish_stand_in(name, reference, input_size=224, include_top=True, monkeypatch=monkeypatch)
    model = create_model(name, classifier_activation="linear", pretrained="imagenet")
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)
    assert not any(type(layer).__name__ == "TFOpLambda" for layer in model.layers)
    want = reference(images, training=False).numpy().reshape(4, -1)
    assert np.abs(want[0] - want[1]).max() > 0.1  # the logits depend on the image
    np.testing.assert_allclose(model(images, training=False).numpy(), want, rtol=0, atol=1e-5)

    assert _trainable(model) == _trainable(reference)
    assert model.count_params() == reference.count_params()
    spec = get_model_spec(name)
    report = model_cost(model)
    assert report.total_params == _trainable(model)
    assert report.total_params == pytest.approx(spec.paper_params, rel=0.025)
    if spec.paper_macs is not None:
        gap = abs(report.total_macs / spec.paper_macs - 1)
        assert gap <= KNOWN_MAC_GAPS.get(name, 5e-3), (name, report.total_macs)
        if name in KNOWN_MAC_GAPS:
            assert gap > 5e-3, f"{name} now meets 0.5 %: drop it from KNOWN_MAC_GAPS"
    keras.backend.clear_session()


@pytest.mark.parametrize("model_type,table", [("large", LARGE_BLOCKS), ("small", SMALL_BLOCKS)])
def test_blocks_follow_the_papers_tables(model_type, table):
    model = mobilenet_v3(input_shape=(32, 32, 3), model_type=model_type, num_classes=10)
    names = {layer.name for layer in model.layers}
    assert "block_0_expand" not in names  # exp size == input size: no expansion conv
    for block_id, row in enumerate(table):
        prefix = f"block_{block_id}"
        depthwise = model.get_layer(f"{prefix}_depthwise")
        assert depthwise.kernel_size == (row.kernel, row.kernel)
        assert depthwise.strides == (row.strides, row.strides)
        assert int(depthwise.output.shape[-1]) == row.expanded
        assert model.get_layer(f"{prefix}_project").filters == row.filters
        assert (f"{prefix}_se_scale" in names) == row.squeeze_excite
        act = model.get_layer(f"{prefix}_depthwise_{row.activation}")
        assert isinstance(act, HardSwish if row.activation == "hard_swish" else keras.layers.ReLU)
        if row.squeeze_excite:
            reduced = make_divisible(row.expanded / 4, 8)
            assert model.get_layer(f"{prefix}_se_reduce").filters == reduced
            assert isinstance(model.get_layer(f"{prefix}_se_gate"), HardSigmoid)
    head = model.get_layer("head_conv").filters
    assert head == {"large": 960, "small": 576}[model_type]
    assert model.get_layer("pre_logits").units == {"large": 1280, "small": 1024}[model_type]


def test_minimalistic_drops_squeeze_excite_hard_swish_and_5x5():
    model = create_model("mobilenet_v3_large_minimalistic_100", input_shape=(32, 32, 3))
    kinds = {type(layer) for layer in model.layers}
    assert not kinds & {HardSwish, HardSigmoid, keras.layers.Multiply}
    kernels = {
        layer.kernel_size
        for layer in model.layers
        if isinstance(layer, keras.layers.DepthwiseConv2D)
    }
    assert kernels == {(3, 3)}


def test_headless_model_ends_where_keras_applications_ends():
    pooled = create_model(
        "mobilenet_v3_large_075", input_shape=(64, 64, 3), include_top=False, pooling="max"
    )
    features = pooled.get_layer("max_pool").input
    assert tuple(features.shape) == (None, 2, 2, 720)  # 6 × make_divisible(0.75 · 160)
    assert features.node.layer.name == "head_conv_hard_swish"
    assert "pre_logits" not in [layer.name for layer in pooled.layers]
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    assert pooled(x).shape == (2, 720)


def test_bad_knobs_are_refused_by_name():
    with pytest.raises(ValueError, match="model_type must be one of.*'medium'"):
        mobilenet_v3(model_type="medium")
    with pytest.raises(ValueError, match="alpha must be > 0, got -1"):
        mobilenet_v3(alpha=-1)
    with pytest.raises(ValueError, match="at least 32x32"):
        mobilenet_v3(input_shape=(31, 31, 3))


def _block_model() -> keras.Model:
    """The v3 pieces that reach TFLite: hard-swish stem, a bneck with SE and hard-swish, the
    hard-swish head conv and pre-logits layer (a whole network converts in ~20 s, this in ~4)."""
    inputs = keras.Input((16, 16, 3))
    x = conv_bn_act(inputs, 16, 3, strides=2, activation_fn="hard_swish", name="stem")
    x = bneck(x, SMALL_BLOCKS[4], expansion=6, filters=24, block_id=4)
    x = conv_bn_act(x, 96, 1, activation_fn="hard_swish", name="head_conv")
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(32, name="pre_logits")(x)
    return keras.Model(inputs, HardSwish(name="pre_logits_hard_swish")(x))


@pytest.mark.slow
def test_tflite_fuses_hard_swish_in_float_and_int8():
    keras.utils.set_random_seed(0)
    model = _block_model()
    images = np.random.default_rng(1).uniform(-1, 1, (4, 16, 16, 3)).astype("float32")
    want = model(images, training=False).numpy()
    float_model = model_checks.tflite_convert(model)
    ops = model_checks.tflite_op_names(float_model)
    assert "HARD_SWISH" in ops, ops
    assert not any(op.startswith("Flex") for op in ops), ops
    np.testing.assert_allclose(model_checks.tflite_predict(float_model, images), want, atol=1e-5)
    int8 = model_checks.tflite_convert(
        model, quantize="int8", representative_dataset=lambda: ([x[None]] for x in images)
    )
    assert "HARD_SWISH" in model_checks.tflite_op_names(int8)
    got = model_checks.tflite_predict(int8, images)
    assert np.max(np.abs(got - want)) <= 0.1 * np.max(np.abs(want)) + 1e-3


def test_tfmot_prunes_trains_a_step_and_strips():
    model = create_model(
        "mobilenet_v3_small_075",
        input_shape=(32, 32, 3),
        num_classes=10,
        classifier_activation="linear",
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 4).astype("int32")
    stripped = model_checks.prune_train_strip(model, x, y, sparsity=0.5, run_eagerly=True)
    assert [type(layer) for layer in stripped.layers] == [type(layer) for layer in model.layers]
    kernel = stripped.get_layer("block_9_expand").kernel.numpy()
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.02)
    assert np.isfinite(stripped(x, training=False).numpy()).all()


def test_the_recipe_is_the_papers():
    from configs import mobilenet_v3_imagenet

    config = mobilenet_v3_imagenet.get_config()
    optim = config.optim
    assert get_model_spec(config.model.name).recipe == "mobilenet_v3_imagenet"
    assert (optim.name, optim.rho, optim.momentum) == ("rmsprop", 0.9, 0.9)
    assert (optim.learning_rate, optim.base_batch_size) == (0.1, 4096)
    assert (optim.schedule, optim.decay_rate, optim.decay_epochs) == ("step", 0.99, 3.0)
    assert (optim.weight_decay, config.model.dropout, config.model.bn_momentum) == (
        1e-5,
        0.2,
        0.99,
    )
