import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from layers import GroupConv2D, layer_cost
from tests import model_checks

# (input shape, kwargs, implementations besides "auto"): strides, both paddings, dilation, odd and
# non-square sizes, batch 1, one input channel per group (depthwise), groups=1.
CASES = [
    ((2, 9, 7, 12), dict(filters=6, kernel_size=1, groups=3), ("native", "split", "matmul")),
    ((1, 9, 7, 12), dict(filters=6, kernel_size=1, groups=3, strides=2), ("native", "matmul")),
    (
        (1, 9, 7, 12),
        dict(filters=9, kernel_size=3, groups=3, strides=2, padding="valid"),
        ("native", "split"),
    ),
    (
        (2, 11, 10, 16),
        dict(filters=8, kernel_size=(3, 5), groups=4, dilation_rate=(2, 1)),
        ("native", "split"),
    ),
    (
        (2, 8, 8, 8),
        dict(filters=16, kernel_size=3, groups=8, padding="valid", use_bias=False),
        ("native", "split", "depthwise"),
    ),
    (
        (1, 7, 9, 6),
        dict(filters=12, kernel_size=3, groups=6, strides=(2, 1)),
        ("native", "depthwise"),
    ),
    (
        (1, 10, 9, 4),
        dict(filters=8, kernel_size=3, groups=4, dilation_rate=2),
        ("native", "split", "depthwise"),
    ),
    ((2, 6, 6, 4), dict(filters=6, kernel_size=3, groups=1, activation="relu"), ("split",)),
]
CASE_IDS = [f"{kw['kernel_size']}-g{kw['groups']}-{i}" for i, (_, kw, _) in enumerate(CASES)]


def split_conv_concat(x, kernel, bias, layer):
    """Reference 1: each group's channels through tf.nn.convolution, concatenated."""
    groups = layer.groups
    per_in, per_out = x.shape[-1] // groups, layer.filters // groups
    outs = [
        tf.nn.convolution(
            x[..., g * per_in : (g + 1) * per_in],
            kernel[..., g * per_out : (g + 1) * per_out],
            strides=layer.strides,
            padding=layer.padding.upper(),
            dilations=layer.dilation_rate,
        )
        for g in range(groups)
    ]
    out = tf.concat(outs, axis=-1)
    return layer.activation(out + bias if bias is not None else out)


def block_diagonal_dense(x, kernel, bias, layer):
    """Reference 2: a dense conv whose kernel is zero outside the diagonal group blocks."""
    groups = layer.groups
    per_in, per_out = x.shape[-1] // groups, layer.filters // groups
    mask = np.zeros((x.shape[-1], layer.filters), np.float32)
    for g in range(groups):
        mask[g * per_in : (g + 1) * per_in, g * per_out : (g + 1) * per_out] = 1
    dense = tf.tile(kernel, (1, 1, groups, 1)) * mask
    out = tf.nn.convolution(
        x,
        dense,
        strides=layer.strides,
        padding=layer.padding.upper(),
        dilations=layer.dilation_rate,
    )
    return layer.activation(out + bias if bias is not None else out)


def make_layer(shape, kwargs, implementation="auto", seed=0):
    layer = GroupConv2D(**kwargs, implementation=implementation)
    layer.build(shape)
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.standard_normal(w.shape).astype("float32") for w in layer.weights])
    return layer


def forward_and_gradients(fn, x, layer):
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = fn(x)
        loss = tf.reduce_sum(out * out)
    return out, tape.gradient(loss, [x, *layer.trainable_weights])


@pytest.mark.parametrize("shape,kwargs,impls", CASES, ids=CASE_IDS)
def test_every_implementation_matches_both_references(shape, kwargs, impls):
    x = tf.constant(np.random.default_rng(1).standard_normal(shape), tf.float32)
    for implementation in ("auto", *impls):
        layer = make_layer(shape, kwargs, implementation)

        def reference(x, layer=layer, ref=split_conv_concat):
            return ref(x, layer.kernel, layer.bias, layer)

        out, grads = forward_and_gradients(layer, x, layer)
        ref_out, ref_grads = forward_and_gradients(reference, x, layer)
        dense_out = block_diagonal_dense(x, layer.kernel, layer.bias, layer)
        assert out.shape == tuple(layer.compute_output_shape(shape)), implementation
        np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-4, err_msg=implementation)
        np.testing.assert_allclose(out, dense_out, rtol=1e-5, atol=1e-4, err_msg=implementation)
        for got, want in zip(grads, ref_grads, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3, err_msg=implementation)


def test_weights_transfer_from_keras_grouped_conv():
    shape = (2, 8, 8, 12)
    keras_conv = keras.layers.Conv2D(6, 3, groups=3, padding="same", bias_initializer="ones")
    x = np.random.default_rng(2).standard_normal(shape).astype("float32")
    want = keras_conv(x)
    layer = GroupConv2D(6, 3, groups=3)
    layer.build(shape)
    layer.set_weights(keras_conv.get_weights())
    np.testing.assert_allclose(layer(x), want, rtol=1e-5, atol=1e-4)
    assert [w.name.split("/")[-1] for w in layer.weights] == ["kernel:0", "bias:0"]


def test_xla_auto_uses_split_on_cpu_and_matches():
    """XLA's CPU grouped conv is the slow path Keras takes; under jit the layer splits instead."""
    shape, kwargs = CASES[3][0], CASES[3][1]
    layer = make_layer(shape, kwargs)
    x = tf.constant(np.random.default_rng(3).standard_normal(shape), tf.float32)
    chosen = []

    @tf.function(jit_compile=True)
    def compiled(x):
        chosen.append(layer.resolved_implementation())
        return layer(x)

    np.testing.assert_allclose(
        compiled(x), split_conv_concat(x, layer.kernel, layer.bias, layer), rtol=1e-5, atol=1e-4
    )
    expected = "native" if tf.config.list_logical_devices("GPU") else "split"
    assert chosen == [expected]
    assert layer.resolved_implementation() == "native"  # eager: TF's own grouped kernel


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_computes_low_keeps_float32_variables(policy):
    shape = (2, 6, 6, 8)
    x = np.random.default_rng(4).standard_normal(shape).astype("float32")
    reference = make_layer(shape, dict(filters=8, kernel_size=3, groups=4))
    keras.mixed_precision.set_global_policy(policy)
    try:
        layer = GroupConv2D(8, 3, groups=4)
        layer.build(shape)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    layer.set_weights(reference.get_weights())
    out = layer(x)
    assert out.dtype == layer.compute_dtype != "float32"
    assert all(w.dtype == tf.float32 for w in layer.weights)
    tolerance = 0.05 if policy == "mixed_float16" else 0.3
    np.testing.assert_allclose(tf.cast(out, tf.float32), reference(x), atol=tolerance)


def test_trains_with_fit_and_predict_matches_call():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 6, 6, 6)).astype("float32")
    y = rng.standard_normal((8, 6, 6, 6)).astype("float32")
    inputs = keras.Input((6, 6, 6))
    model = keras.Model(inputs, GroupConv2D(6, 3, groups=3, name="gconv")(inputs))
    before = model.get_weights()[0].copy()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.allclose(model.get_weights()[0], before)
    np.testing.assert_allclose(model.predict(x, verbose=0), model(x), rtol=1e-5, atol=1e-5)


def test_cost_and_config():
    shape = (None, 28, 28, 240)
    layer = GroupConv2D(240, 1, groups=3, use_bias=False)
    layer.build(shape)
    keras_conv = keras.layers.Conv2D(240, 1, groups=3, use_bias=False)
    keras_conv.build(shape)
    cost = layer_cost(layer, shape)
    assert cost.macs == 28 * 28 * 240 * 1 * 240 // 3
    assert cost == layer_cost(keras_conv, shape)
    strided = GroupConv2D(64, 3, groups=4, strides=2, padding="valid")
    strided.build((None, 15, 15, 32))
    assert strided.compute_cost((None, 15, 15, 32)).macs == 7 * 7 * 32 * 9 * 64 // 4
    assert strided.compute_cost((None, 15, 15, 32)).params == 9 * 8 * 64 + 64
    assert layer.get_prunable_weights() == [layer.kernel]

    full = GroupConv2D(
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
        name="g",
    )
    config = full.get_config()
    clone = GroupConv2D.from_config(config)
    assert clone.get_config() == config
    assert (clone.kernel_size, clone.strides, clone.implementation) == ((3, 1), (1, 2), "split")
    assert config["activity_regularizer"] is not None


@pytest.fixture(scope="module")
def models():
    """One small functional model per implementation (and a pruned-then-stripped one)."""
    rng = np.random.default_rng(6)
    built = {}
    for implementation, kwargs in [
        ("auto", dict(filters=12, kernel_size=1, groups=3)),
        ("split", dict(filters=12, kernel_size=3, groups=3, strides=2)),
        ("matmul", dict(filters=12, kernel_size=1, groups=4)),
        ("native", dict(filters=12, kernel_size=3, groups=3, dilation_rate=2)),
        ("depthwise", dict(filters=24, kernel_size=3, groups=12, strides=2)),
    ]:
        inputs = keras.Input((9, 9, 12))
        layer = GroupConv2D(
            **kwargs, implementation=implementation, name="gconv", bias_initializer="random_normal"
        )
        x = rng.standard_normal((3, 9, 9, 12)).astype("float32")
        built[implementation] = (keras.Model(inputs, layer(inputs)), x)
    return built


@pytest.fixture(scope="module")
def pruned():
    rng = np.random.default_rng(7)
    inputs = keras.Input((8, 8, 12))
    hidden = GroupConv2D(12, 1, groups=3, activation="relu", name="gconv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(hidden)
    model = keras.Model(inputs, keras.layers.Dense(4, name="logits")(pooled))
    x = rng.standard_normal((8, 8, 8, 12)).astype("float32")
    stripped = model_checks.prune_train_strip(model, x, rng.integers(0, 4, 8), sparsity=0.5)
    return stripped, x


def test_pruning_zeroes_half_the_kernel(pruned):
    stripped, _ = pruned
    layer = stripped.get_layer("gconv")
    assert isinstance(layer, GroupConv2D)
    kernel = layer.kernel.numpy()
    assert kernel.shape == (1, 1, 4, 12)
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["keras", "saved_model"])
def test_reload_in_fresh_process(models, pruned, fmt, tmp_path):
    cases = [*models.values(), pruned]
    outputs = model_checks.predict_in_fresh_process(cases, tmp_path, fmt=fmt)
    for (model, x), out in zip(cases, outputs, strict=True):
        np.testing.assert_allclose(out, model.predict_on_batch(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_tflite_float_and_int8_use_builtin_ops(models):
    expected_ops = {
        "auto": {"CONV_2D"},  # TFLite's grouped CONV_2D, which XNNPack runs grouped
        "native": {"CONV_2D"},
        "split": {"SPLIT", "CONV_2D", "CONCATENATION"},
        "depthwise": {"DEPTHWISE_CONV_2D"},
    }
    for implementation, (model, x) in models.items():
        want = model.predict_on_batch(x)
        flatbuffer = model_checks.tflite_convert(model)
        ops = model_checks.tflite_op_names(flatbuffer)
        assert not any(op.startswith("Flex") for op in ops), (implementation, ops)
        if implementation in expected_ops:
            assert ops == expected_ops[implementation], implementation
        # Converted for batch 1; predicting batch 3 exercises the resize.
        np.testing.assert_allclose(model_checks.tflite_predict(flatbuffer, x), want, atol=1e-5)
    model, x = models["auto"]
    want = model.predict_on_batch(x)
    # Calibrated on the test batch itself, so the error measured is rounding, not clipping.
    int8 = model_checks.tflite_convert(
        model, quantize="int8", representative_dataset=lambda: ([row[None]] for row in x)
    )
    assert "CONV_2D" in model_checks.tflite_op_names(int8)
    got = model_checks.tflite_predict(int8, x)
    assert np.max(np.abs(got - want)) <= 0.05 * np.max(np.abs(want))


@pytest.mark.parametrize(
    "kwargs,build_shape,message",
    [
        (dict(filters=10, kernel_size=1, groups=3), None, "groups=3 must divide filters=10"),
        (dict(filters=12, kernel_size=1, groups=3), (None, 8, 8, 10), "input channels (10)"),
        (dict(filters=0, kernel_size=1, groups=1), None, "filters must be a positive int, got 0"),
        (
            dict(filters=4, kernel_size=3, groups=2, strides=2, dilation_rate=2),
            None,
            "strides=(2, 2) and dilation_rate=(2, 2)",
        ),
        (dict(filters=4, kernel_size=3, groups=2, implementation="matmul"), None, "1x1 kernel"),
        (dict(filters=4, kernel_size=3, groups=2, implementation="fast"), None, "'fast'"),
        (dict(filters=4, kernel_size=3, groups=2, padding="full"), None, "'full'"),
        (
            dict(filters=4, kernel_size=3, groups=2, implementation="depthwise"),
            (None, 8, 8, 4),
            "input channels == groups",
        ),
        (dict(filters=4, kernel_size=3, groups=2), (None, 8, 8, None), "known channel"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, build_shape, message):
    with pytest.raises(ValueError) as error:
        GroupConv2D(**kwargs).build(build_shape or (None, 8, 8, 12))
    assert message in str(error.value)
