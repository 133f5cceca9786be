"""What every lightnets layer must do, checked on every layer in one parametrised suite.

Each ``CASES`` entry is a small model around one layer configuration (strides, dilation, groups,
every ``GroupConv2D`` formulation, ...), followed by batch norm, so that ``fit``, ``predict`` and
``evaluate`` run the graph-mode kernels and fusions of the running TensorFlow (oneDNN or not:
``tests/test_kernel_sets.py`` runs this file under the other kernel set too). The suite checks:
training, mixed precision, every constructor argument in ``get_config``, bad arguments naming
the value, tfmot pruning, a fresh-process reload (``.keras`` and SavedModel) and TFLite (float
and int8, builtin ops only).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import layers
from tests import model_checks


@dataclasses.dataclass(frozen=True)
class Case:
    """A layer configuration inside a small model.

    Attributes:
      id: test id.
      make: ``name -> layer``.
      input_shape: ``(H, W, C)`` of the model input.
      wrap: ``(inputs, layer) -> outputs`` placing the layer in the model (default: call it).
    """

    id: str
    make: Callable[[str], keras.layers.Layer]
    input_shape: tuple[int, int, int]
    wrap: Callable | None = None


def _split_rejoin(inputs, layer):
    """Parts re-joined in reverse order behind a conv, so order and wiring both show."""
    parts = layer(inputs)
    return keras.layers.Conv2D(6, 1, name="after_split")(keras.layers.Concatenate()(parts[::-1]))


def _after_conv(inputs, layer):
    """Behind a conv with a bias, so that its input spans the kinks at -3 and 3."""
    return layer(keras.layers.Conv2D(6, 3, name="before_activation")(inputs))


def _shuffle_between_convs(inputs, layer):
    x = keras.layers.Conv2D(12, 1, name="before_shuffle")(inputs)
    return keras.layers.Conv2D(6, 1, name="after_shuffle")(layer(x))


CASES = [
    Case("separable", lambda n: layers.DepthwiseSeparableConv2D(6, 3, name=n), (9, 9, 4)),
    Case(
        "separable-strides21",
        lambda n: layers.DepthwiseSeparableConv2D(8, (3, 5), strides=(2, 1), name=n),
        (10, 9, 4),
    ),
    Case(
        "separable-dilated-dm2",
        lambda n: layers.DepthwiseSeparableConv2D(
            4, 3, dilation_rate=(3, 2), depth_multiplier=2, prune_depthwise=True, name=n
        ),
        (12, 12, 2),
    ),
    Case("grouped-auto-1x1", lambda n: layers.GroupConv2D(12, 1, 3, name=n), (8, 8, 12)),
    Case(
        "grouped-auto-3x3-stride2",
        lambda n: layers.GroupConv2D(12, 3, 4, strides=2, use_bias=False, name=n),
        (9, 9, 8),
    ),
    Case(
        "grouped-dilated",
        lambda n: layers.GroupConv2D(8, (3, 5), 4, dilation_rate=(2, 1), name=n),
        (11, 10, 16),
    ),
    Case(
        "grouped-split",
        lambda n: layers.GroupConv2D(9, 3, 3, padding="valid", implementation="split", name=n),
        (9, 7, 12),
    ),
    Case(
        "grouped-matmul",
        lambda n: layers.GroupConv2D(12, 1, 4, strides=2, implementation="matmul", name=n),
        (9, 9, 12),
    ),
    Case(
        "grouped-depthwise-strides21",
        lambda n: layers.GroupConv2D(12, 3, 6, strides=(2, 1), name=n),
        (7, 9, 6),
    ),
    Case("spatial", lambda n: layers.SpatialSeparableConv2D(6, 3, name=n), (9, 9, 4)),
    Case(
        "spatial-strided-intermediate",
        lambda n: layers.SpatialSeparableConv2D(
            5,
            (5, 3),
            strides=(1, 2),
            intermediate_filters=3,
            intermediate_activation="relu",
            name=n,
        ),
        (11, 8, 3),
    ),
    Case(
        "spatial-dilated",
        lambda n: layers.SpatialSeparableConv2D(
            4, 3, dilation_rate=(2, 3), padding="valid", name=n
        ),
        (13, 12, 3),
    ),
    Case("shuffle", lambda n: layers.ChannelShuffle(3, name=n), (6, 6, 4), _shuffle_between_convs),
    Case("split", lambda n: layers.ChannelSplit(3, name=n), (5, 5, 6), _split_rejoin),
    Case("hard-swish", lambda n: layers.HardSwish(name=n), (5, 5, 3), _after_conv),
    Case("hard-sigmoid", lambda n: layers.HardSigmoid(name=n), (5, 5, 3), _after_conv),
]
IDS = [case.id for case in CASES]
LAYER = "layer"
NUM_CLASSES = 3


def build_model(case: Case, seed: int = 0) -> keras.Model:
    """Input -> the layer (wrapped) -> BN -> ReLU -> pooling -> Dense logits."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(case.input_shape)
    layer = case.make(LAYER)
    x = case.wrap(inputs, layer) if case.wrap else layer(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, name="logits", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"model_{case.id}".replace("-", "_"))


def batch(case: Case, size: int = 8, seed: int = 1):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((size, *case.input_shape)).astype("float32")
    return images, rng.integers(0, NUM_CLASSES, size).astype("int32")


def compile_model(model):
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fit_predict_and_evaluate_run_in_graph_mode(case):
    model = compile_model(build_model(case))
    x, y = batch(case)
    # Kernels, not biases: a bias right before batch norm gets a zero gradient.
    kernels = [w for w in model.trainable_weights if "kernel" in w.name]
    before = [w.numpy().copy() for w in kernels]
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    for old, new in zip(before, kernels, strict=True):
        assert not np.allclose(old, new.numpy()), new.name
    # predict and evaluate trace graphs (batch norm in inference mode after the layer).
    predicted = model.predict(x, batch_size=4, verbose=0)
    np.testing.assert_allclose(predicted, model(x, training=False), rtol=1e-5, atol=1e-5)
    assert np.isfinite(model.evaluate(x, y, batch_size=4, verbose=0))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_mixed_precision_trains_in_low_precision_with_float32_variables(case, policy):
    x, y = batch(case)
    exact = build_model(case)
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_model(case)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.set_weights(exact.get_weights())
    layer = model.get_layer(LAYER)
    outputs = keras.Model(model.inputs, layer.output)(x)
    assert all(t.dtype == layer.compute_dtype != "float32" for t in tf.nest.flatten(outputs))
    assert all(w.dtype == tf.float32 for w in model.weights)
    tolerance = 0.05 if policy == "mixed_float16" else 0.3
    np.testing.assert_allclose(
        model(x, training=False), exact(x, training=False), rtol=tolerance, atol=tolerance
    )
    model.compile(
        optimizer=keras.mixed_precision.LossScaleOptimizer(keras.optimizers.SGD(0.05))
        if policy == "mixed_float16"
        else keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    assert np.isfinite(model.fit(x, y, batch_size=4, epochs=1, verbose=0).history["loss"]).all()


def _constructor_arguments(cls) -> set[str]:
    parameters = inspect.signature(cls.__init__).parameters
    return {name for name, p in parameters.items() if name != "self" and p.kind != p.VAR_KEYWORD}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_config_holds_every_constructor_argument_and_round_trips(case):
    layer = case.make("configured")
    config = layer.get_config()
    missing = _constructor_arguments(type(layer)) - set(config)
    assert not missing, f"get_config lacks {sorted(missing)}"
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    serialized = keras.layers.serialize(layer)
    assert serialized["config"]["name"] == "configured"
    assert type(keras.layers.deserialize(serialized)) is type(layer)


FULL_CONFIGS = [
    layers.DepthwiseSeparableConv2D(
        8,
        (3, 5),
        padding="valid",
        dilation_rate=2,
        depth_multiplier=2,
        use_bias=False,
        activation="relu6",
        prune_depthwise=True,
        depthwise_initializer="he_normal",
        pointwise_regularizer=keras.regularizers.L2(1e-4),
        activity_regularizer="l1",
        bias_constraint="non_neg",
    ),
    layers.GroupConv2D(
        8,
        (3, 1),
        groups=2,
        strides=(1, 2),
        padding="valid",
        use_bias=False,
        activation="relu",
        kernel_regularizer="l2",
        activity_regularizer="l1",
        implementation="split",
    ),
    layers.SpatialSeparableConv2D(
        8,
        (7, 5),
        padding="valid",
        dilation_rate=2,
        intermediate_filters=4,
        intermediate_activation="relu",
        activation="swish",
        kernel_initializer="he_normal",
        kernel_regularizer=keras.regularizers.L2(1e-4),
        activity_regularizer="l1",
        bias_constraint="non_neg",
    ),
]


@pytest.mark.parametrize("layer", FULL_CONFIGS, ids=lambda layer: type(layer).__name__)
def test_non_default_arguments_survive_the_config(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    for key, value in config.items():
        attribute = getattr(clone, key, None)
        if isinstance(attribute, tuple | int | str | bool) and key != "name":
            assert attribute == value, key
    assert config["activity_regularizer"] is not None


BAD_ARGUMENTS = [
    (layers.DepthwiseSeparableConv2D, dict(filters=0, kernel_size=3), None, "filters"),
    (layers.DepthwiseSeparableConv2D, dict(filters=2.5, kernel_size=3), None, "2.5"),
    (layers.DepthwiseSeparableConv2D, dict(filters=4, kernel_size=0), None, "kernel_size"),
    (layers.DepthwiseSeparableConv2D, dict(filters=4, kernel_size=3, padding="full"), None, "full"),
    (
        layers.DepthwiseSeparableConv2D,
        dict(filters=4, kernel_size=3, depth_multiplier=0),
        None,
        "depth_multiplier",
    ),
    (
        layers.DepthwiseSeparableConv2D,
        dict(filters=4, kernel_size=3, strides=2, dilation_rate=3),
        None,
        r"strides=\(2, 2\).*dilation_rate=\(3, 3\)",
    ),
    (layers.DepthwiseSeparableConv2D, dict(filters=4, kernel_size=3), (8, 8, None), "channel"),
    (layers.GroupConv2D, dict(filters=10, kernel_size=1, groups=3), None, "groups=3 must divide"),
    (layers.GroupConv2D, dict(filters=12, kernel_size=1, groups=3), (8, 8, 10), r"channels \(10\)"),
    (layers.GroupConv2D, dict(filters=0, kernel_size=1, groups=1), None, "got 0"),
    (
        layers.GroupConv2D,
        dict(filters=4, kernel_size=3, groups=2, implementation="matmul"),
        None,
        "1x1 kernel",
    ),
    (
        layers.GroupConv2D,
        dict(filters=4, kernel_size=3, groups=2, implementation="fast"),
        None,
        "'fast'",
    ),
    (
        layers.GroupConv2D,
        dict(filters=4, kernel_size=3, groups=2, implementation="depthwise"),
        (8, 8, 4),
        "input channels == groups",
    ),
    (layers.GroupConv2D, dict(filters=4, kernel_size=3, groups=2), (8, 8, None), "known channel"),
    (layers.SpatialSeparableConv2D, dict(filters=4, kernel_size=(3, 0)), None, "kernel_size"),
    (
        layers.SpatialSeparableConv2D,
        dict(filters=4, kernel_size=3, padding="causal"),
        None,
        "causal",
    ),
    (
        layers.SpatialSeparableConv2D,
        dict(filters=4, kernel_size=3, intermediate_filters=-1),
        None,
        "intermediate_filters",
    ),
    (layers.ChannelShuffle, dict(groups=0), None, "groups"),
    (layers.ChannelShuffle, dict(groups=True), None, "True"),
    (layers.ChannelShuffle, dict(groups=5), (4, 4, 12), r"groups=5.*\(12\)"),
    (layers.ChannelShuffle, dict(groups=2), (4, 4, None), "static channel"),
    (layers.ChannelSplit, dict(num_splits=1.5), None, "num_splits"),
    (layers.ChannelSplit, dict(num_splits=2), (3, 3, 5), r"num_splits=2 must divide.*\(5\)"),
]


@pytest.mark.parametrize(
    "cls,kwargs,build_shape,message",
    BAD_ARGUMENTS,
    ids=[f"{cls.__name__}-{i}" for i, (cls, *_) in enumerate(BAD_ARGUMENTS)],
)
def test_bad_arguments_fail_naming_the_value(cls, kwargs, build_shape, message):
    with pytest.raises(ValueError, match=message):
        layer = cls(**kwargs)
        layer.build((None, *(build_shape or (8, 8, 12))))


@pytest.fixture(scope="module")
def pruned_models():
    """Each case pruned to 50 % with tfmot (a training step inside the wrappers), stripped."""
    results = {}
    for case in CASES:
        x, y = batch(case)
        results[case.id] = (model_checks.prune_train_strip(build_model(case), x, y), x)
    return results


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_tfmot_prunes_the_offered_kernels_and_strips_to_the_plain_layer(case, pruned_models):
    stripped, _ = pruned_models[case.id]
    layer = stripped.get_layer(LAYER)
    assert type(layer) is type(case.make("x"))
    for kernel in layer.get_prunable_weights():
        assert np.mean(kernel.numpy() == 0) == pytest.approx(0.5, abs=0.06), kernel.name


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["keras", "saved_model"])
def test_every_case_reloads_in_a_fresh_process(fmt, pruned_models, tmp_path):
    models = [(build_model(case), batch(case)[0]) for case in CASES]
    models += [pruned_models[case.id] for case in CASES[:2]]
    outputs = model_checks.predict_in_fresh_process(models, tmp_path, fmt=fmt)
    for (model, x), out in zip(models, outputs, strict=True):
        np.testing.assert_allclose(out, model(x, training=False), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_tflite_float_and_int8_with_builtin_ops(case):
    model = build_model(case)
    x, _ = batch(case, size=3)
    want = model(x, training=False).numpy()
    flatbuffer = model_checks.tflite_convert(model)
    ops = model_checks.tflite_op_names(flatbuffer)
    assert not any(op.startswith("Flex") for op in ops), ops
    assert not ops & {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"}, ops
    # Converted for batch 1; predicting batch 3 exercises the resize.
    np.testing.assert_allclose(model_checks.tflite_predict(flatbuffer, x), want, atol=1e-5)
    # Calibrated on the test batch itself, so the error measured is rounding, not clipping.
    int8 = model_checks.tflite_convert(
        model, quantize="int8", representative_dataset=lambda: ([row[None]] for row in x)
    )
    got = model_checks.tflite_predict(int8, x)
    assert np.max(np.abs(got - want)) <= 0.1 * np.max(np.abs(want)) + 1e-3
