"""Structured channel pruning: exact equivalence, the budget, and the pruned model's life after.

The equivalence check: take a model with random weights (random batch-norm statistics too, so a
wrong slice shows), pick units to remove, zero every weight that *reads* their channels (the
input slices of the convolutions and dense layers that consume them: their outgoing
contribution), then remove them. The zeroed wide model and the thin model must agree to 1e-5:
the thin one is rebuilt from real layers, so a wrong tie, permutation or slice changes outputs.
"""

import fnmatch
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tf_keras as keras

import compression
from architectures import create_model
from architectures.cost import model_cost
from compression import channel_graph as cg
from compression import channel_pruning as cp
from deploy import tflite
from layers import (
    ChannelShuffle,
    ChannelSplit,
    DepthwiseSeparableConv2D,
    GroupConv2D,
    HardSwish,
    SpatialSeparableConv2D,
)

SIZE, CLASSES = 32, 5
# One small variant per registered family. ShuffleNet v1 g3: its shuffles lay a block's middle
# units out unevenly over the next grouped conv's groups (ChannelGraph ties them by rank).
FAMILIES = (
    "mobilenet_v1_025",
    "mobilenet_v2_035",
    "mobilenet_v3_small_075",
    "fd_mobilenet_025",
    "shufflenet_v1_g3_050",
    "shufflenet_v2_050",
    "resnet50",
    "resnext50_32x4d",
    "xception",
)
LIGHT = FAMILIES[:6]


def _images(count=2, seed=0):
    return np.random.default_rng(seed).standard_normal((count, SIZE, SIZE, 3)).astype("float32")


def _randomise(model, seed=0):
    """Random weights everywhere, batch-norm moving statistics and biases included."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for w in layer.weights:
            name = cp.weight_name(w)
            shape = tuple(w.shape)
            if name in ("moving_variance", "gamma"):
                values.append(rng.uniform(0.5, 1.5, shape))
            elif name in ("moving_mean", "beta", "bias", "intermediate_bias"):
                values.append(0.1 * rng.standard_normal(shape))
            else:
                fan_in = max(1, int(np.prod(shape[:-1])))
                values.append(rng.standard_normal(shape) / np.sqrt(fan_in))
        if values:
            layer.set_weights([v.astype("float32") for v in values])


def _zero_readers(graph, removed):
    """Zeroes every kernel slice that reads a channel of a unit in ``removed``."""
    for info in graph.layers.values():
        reads = {
            cg.CONV: [("kernel", 2, "in")],
            cg.DENSE: [("kernel", 0, "in")],
            cg.SEPARABLE: [("pointwise_kernel", 2, "inner")],
            cg.SPATIAL: [("vertical_kernel", 2, "in"), ("horizontal_kernel", 2, "inner")],
        }.get(info.kind, [])
        for weight_name, axis, role in reads:
            weight = cp._weight(info.layer, weight_name)
            value = weight.numpy()
            ids = cp._ids(info, role)
            gone = np.flatnonzero(np.isin(ids, list(removed)))
            if info.kind == cg.CONV:  # a grouped kernel holds the channels of one group
                per_group = len(ids) // info.groups
                for position in gone:
                    group, local = divmod(position, per_group)
                    width = value.shape[3] // info.groups
                    value[:, :, local, group * width : (group + 1) * width] = 0.0
            else:
                index = [slice(None)] * value.ndim
                index[axis] = gone
                value[tuple(index)] = 0.0
            weight.assign(value)


def _some_units(graph, seed=0):
    """About a third of every group's units (never all of them)."""
    rng = np.random.default_rng(seed)
    removed = set()
    for group in graph.groups:
        count = min(len(group.units) - 1, max(1, len(group.units) // 3))
        removed.update(rng.choice(group.units, size=count, replace=False).tolist())
    return removed


def _check_balanced(graph):
    """Every prunable unit covers each group of every grouped conv's input equally (after a
    shuffle, e.g. ShuffleNet v1 g3's, not necessarily at the same positions)."""
    prunable = {u for g in graph.groups for u in g.units}
    for info in graph.layers.values():
        if info.kind == cg.CONV and info.groups > 1:
            parts = info.inputs[0].reshape(info.groups, -1)
            for unit in prunable & set(parts.ravel().tolist()):
                assert len({int(np.count_nonzero(part == unit)) for part in parts}) == 1


def _check_equivalence(model):
    _randomise(model)
    graph = cg.ChannelGraph(model)
    _check_balanced(graph)
    removed = _some_units(graph)
    assert removed, "nothing prunable"
    _zero_readers(graph, removed)
    thin = cp.apply_plan(graph, removed)
    images = _images()
    wide_out = model(images, training=False).numpy()
    thin_out = thin(images, training=False).numpy()
    np.testing.assert_allclose(thin_out, wide_out, atol=1e-5, rtol=0)
    assert model_cost(thin).total_params < model_cost(model).total_params
    return thin


def _user_model():
    """Plain Keras layers (plus the lightnets ones): every kind the graph knows, and a barrier."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU()(x)
    shared = keras.layers.Conv2D(16, 1, name="shared")  # called twice: pruned alike
    a = shared(x)
    b = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    b = keras.layers.Conv2D(16, 1, name="dw_project")(b)
    x = keras.layers.Add()([a, b, x])
    x = keras.layers.Activation("relu")(x)
    se = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    se = keras.layers.Conv2D(8, 1, activation="relu", name="se_reduce")(se)
    se = keras.layers.Reshape((1, 1, 8))(se)  # unknown to the graph: a barrier
    se = keras.layers.Conv2D(16, 1, activation="sigmoid", name="se_expand")(se)
    x = keras.layers.Multiply()([x, se])
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.MaxPooling2D(2)(x)
    y = keras.layers.SeparableConv2D(24, 3, padding="same", depth_multiplier=2, name="sep")(x)
    z = GroupConv2D(24, 1, groups=4, name="gconv")(x)
    z = ChannelShuffle(4)(z)
    z = keras.layers.Conv2D(24, 3, padding="same", groups=2, name="conv_groups")(z)
    spatial = SpatialSeparableConv2D(
        16, 3, intermediate_filters=12, intermediate_activation="relu", name="spatial"
    )(x)
    separable = DepthwiseSeparableConv2D(16, 3, depth_multiplier=2, name="separable")(x)
    x = keras.layers.Concatenate()([y, z, shared(x), spatial, separable])
    x = HardSwish()(x)
    left, right = ChannelSplit(2)(x)
    right = keras.layers.Conv2D(32, 1, name="right")(right)
    x = keras.layers.Concatenate()([left, right])
    x = keras.layers.Dropout(0.1)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(12, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="user_model")


def test_user_model_equivalence_and_barrier(caplog):
    model = _user_model()
    with caplog.at_level("INFO", logger=cg.__name__):
        graph = cg.ChannelGraph(model)
    assert any("reshape" in name for name in graph.barriers)
    assert "is a barrier" in caplog.text
    groups = {g.name: g for g in graph.groups}
    # the residual Add and the squeeze-excite Multiply tie these producers' channels
    assert {"stem", "shared", "dw_project", "se_expand"} <= set(groups["stem"].layers)
    assert "se_reduce" not in groups  # read by the barrier
    # tied across its 4 groups (and the 2 groups of the conv after the shuffle)
    assert groups["gconv"].channels_per_unit % 4 == 0
    producers = {name for g in graph.groups for name in g.layers}
    assert {"hidden", "spatial", "separable", "right", "sep", "conv_groups"} <= producers
    head = graph.layers["head"]
    assert set(head.outputs[0].tolist()) <= graph.fixed  # the classifier's output stays whole
    thin = _check_equivalence(model)
    # the shared layer is still one layer, called twice
    assert len(thin.get_layer("shared").inbound_nodes) == 2


@pytest.mark.parametrize(
    "name", [*LIGHT, *(pytest.param(n, marks=pytest.mark.slow) for n in FAMILIES[6:])]
)
def test_family_equivalence(name):
    model = create_model(name, input_shape=(SIZE, SIZE, 3), num_classes=CLASSES, dropout=0.0)
    _check_equivalence(model)


@pytest.fixture(scope="module")
def mobilenet_v2():
    model = create_model("mobilenet_v2_035", input_shape=(SIZE, SIZE, 3), num_classes=CLASSES)
    _randomise(model, seed=1)
    graph = cg.ChannelGraph(model)
    costs = cp.CostModel(graph)  # probes layers in a v1 graph: the model must still run after
    assert model(_images(), training=False).shape == (2, CLASSES)
    return model, graph, costs


def test_pruning_nothing_is_identity(mobilenet_v2):
    model, graph, costs = mobilenet_v2
    decided = cp.plan(graph, cp.unit_scores(graph), target_macs=1.0, costs=costs)
    assert not decided.removed
    same = cp.apply_plan(graph, decided.removed)
    assert same.get_config() == model.get_config()
    for a, b in zip(model.weights, same.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_budget_cost_and_importances(mobilenet_v2):
    model, graph, costs = mobilenet_v2
    dense = model_cost(model).total
    batches = [(_images(4, seed=s), np.eye(CLASSES)[[0, 1, 2, 3]]) for s in range(2)]
    l1 = cp.unit_scores(graph, "l1")
    taylor = cp.unit_scores(graph, "taylor", batches=batches)
    assert l1.keys() == taylor.keys() == cp.unit_scores(graph, "bn_gamma").keys()
    assert sorted(l1, key=l1.get) != sorted(taylor, key=taylor.get)
    for scores, target in ((l1, 0.5), (taylor, 0.7)):
        decided = cp.plan(graph, scores, target_macs=target, costs=costs)
        thin = cp.apply_plan(graph, decided.removed)
        report = model_cost(thin).total
        assert decided.dense == (dense.macs, dense.params)
        assert decided.estimated == (report.macs, report.params)  # the cost report's count
        assert report.macs <= target * dense.macs
        for kept, full in decided.kept.values():
            assert kept == full or kept % 8 == 0
    decided = cp.plan(graph, l1, target_params=0.6, costs=costs)
    assert decided.estimated[1] <= 0.6 * dense.params < decided.estimated[1] * 1.2


def test_pruned_model_is_the_dense_graph_thinner(mobilenet_v2):
    """Same layers, same settings and dtypes: only the widths differ, so a runtime runs the
    pruned model with the dense model's kernels (docs/compression.md, TF latency)."""
    model, graph, costs = mobilenet_v2
    decided = cp.plan(graph, cp.unit_scores(graph), target_macs=0.5, costs=costs)
    thin = cp.apply_plan(graph, decided.removed)
    widths = ("filters", "units", "intermediate_filters")
    assert [layer.name for layer in thin.layers] == [layer.name for layer in model.layers]
    narrower = 0
    for wide, narrow in zip(model.layers, thin.layers, strict=True):
        assert type(narrow) is type(wide)
        a, b = wide.get_config(), narrow.get_config()
        narrower += any(a.get(key) != b.get(key) for key in widths)
        for key in widths:
            a.pop(key, None), b.pop(key, None)
        assert a == b, wide.name
        assert [w.dtype for w in narrow.weights] == [w.dtype for w in wide.weights]
    assert narrower > 0


def test_gradual_pruning_measures_importance_after_fine_tuning(mobilenet_v2):
    model, _, _ = mobilenet_v2
    dense = model_cost(model).total_macs
    seen = {}

    def fine_tune(step_model):
        """Stands in for training: zeroes 8 filters of one conv, so the next step's l1
        importance (measured on this model) must remove them first."""
        group = next(
            g for g in cg.ChannelGraph(step_model).groups if len(g.layers) == 1 and g.channels > 8
        )
        layer = step_model.get_layer(group.name)
        kernel, *rest = layer.get_weights()
        kernel[..., :8] = 0.0
        layer.set_weights([kernel, *rest])
        seen.update(name=group.name, filters=layer.filters, macs=model_cost(step_model).total_macs)

    thin = compression.prune_channels(model, target_macs=0.5, steps=2, fine_tune=fine_tune)
    assert 0.5 * dense < seen["macs"] <= 0.5**0.5 * dense  # step 1 of the geometric schedule
    assert model_cost(thin).total_macs <= 0.5 * dense
    kernel = thin.get_layer(seen["name"]).get_weights()[0]
    assert kernel.shape[-1] <= seen["filters"] - 8
    assert np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0).min() > 0  # zeroed: gone


def test_bad_arguments():
    model = create_model("mobilenet_v1_025", input_shape=(SIZE, SIZE, 3), num_classes=CLASSES)
    with pytest.raises(ValueError, match="importance='nope'"):
        compression.prune_channels(model, importance="nope")
    with pytest.raises(ValueError, match="needs training batches"):
        compression.prune_channels(model, importance="taylor")
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        compression.prune_channels(model, target_macs=1.5, steps=2)
    with pytest.raises(ValueError, match="steps=0"):
        compression.prune_channels(model, steps=0)
    with pytest.raises(ValueError, match="return_plan needs steps=1"):
        compression.prune_channels(model, steps=3, return_plan=True)


@pytest.mark.slow
@pytest.mark.parametrize("families", [LIGHT, FAMILIES[len(LIGHT) :]], ids=["light", "heavy"])
def test_families_prune_train_reload_convert(tmp_path, families):
    """Each family: 0.5x MACs, one training step, TFLite with builtin ops, then a fresh process
    reloads every saved model with safe_mode=True and reproduces its outputs. Two halves, so
    pytest-xdist's two workers share them."""
    images = _images(4, seed=3)
    labels = np.arange(4) % CLASSES
    saved = []
    for name in families:
        model = create_model(name, input_shape=(SIZE, SIZE, 3), num_classes=CLASSES, dropout=0.0)
        thin = compression.prune_channels(model, target_macs=0.5)
        ratio = model_cost(thin).total_macs / model_cost(model).total_macs
        assert 0.45 <= ratio <= 0.5, (name, ratio)  # the budget, not far past it
        thin.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
        loss = thin.fit(images, labels, batch_size=4, epochs=1, verbose=0).history["loss"]
        assert np.isfinite(loss).all(), name
        flatbuffer = tflite.convert(thin)
        runner = tflite.Runner(flatbuffer)
        np.testing.assert_allclose(runner(images[:1]), thin(images[:1]), atol=1e-4)
        path = str(tmp_path / f"{name}.keras")
        thin.save(path)
        np.save(str(tmp_path / f"{name}.npy"), thin(images, training=False).numpy())
        saved.append(name)
    np.save(str(tmp_path / "images.npy"), images)
    script = textwrap.dedent(
        f"""
        import os, sys
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import numpy as np
        from deploy.loading import load_keras_file  # safe_mode=True, fast for large files
        images = np.load({str(tmp_path / "images.npy")!r})
        for name in {saved!r}:
            model = load_keras_file(os.path.join({str(tmp_path)!r}, name + ".keras"))
            expected = np.load(os.path.join({str(tmp_path)!r}, name + ".npy"))
            np.testing.assert_allclose(model(images, training=False), expected, atol=1e-5)
        print("reloaded", len({saved!r}))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"reloaded {len(families)}" in result.stdout


@pytest.mark.slow
def test_pruned_model_takes_tfmot_pruning_and_int8():
    from compression import pruning
    from configs.common import get_base_config

    model = create_model("mobilenet_v2_035", input_shape=(SIZE, SIZE, 3), num_classes=CLASSES)
    thin = compression.prune_channels(model, target_macs=0.5)
    config = get_base_config().pruning
    config.final_sparsity, config.frequency = 0.5, 1
    wrapped = pruning.apply(thin, config, steps_per_epoch=1, total_steps=2)
    assert pruning.has_wrappers(wrapped)
    flatbuffer = tflite.convert(thin, "int8", representative_images=_images(8))
    assert "CONV_2D" in tflite.op_names(flatbuffer)


def test_skip_keeps_the_groups_its_patterns_match_whole(mobilenet_v2):
    model, _, _ = mobilenet_v2
    skip = ("stem", "*_project")  # MobileNet v2's residual trunks (docs/compression.md)
    thin, plan = compression.prune_channels(model, target_macs=0.6, skip=skip, return_plan=True)
    kept_whole = [name for name in plan.kept if any(fnmatch.fnmatchcase(name, p) for p in skip)]
    assert "stem" in kept_whole and len(kept_whole) > 2
    assert all(plan.kept[name][0] == plan.kept[name][1] for name in kept_whole)
    assert any(kept < full for kept, full in plan.kept.values())  # the others paid for it
    assert model_cost(thin).total_macs <= 0.6 * model_cost(model).total_macs
    with pytest.raises(ValueError, match=r"skip='\*_projekt' matches no channel group"):
        compression.prune_channels(model, skip=("*_projekt",))


def test_min_fraction_is_a_floor_on_every_group(mobilenet_v2):
    model, _, _ = mobilenet_v2
    free = compression.prune_channels(model, target_macs=0.5, return_plan=True)[1]
    _, plan = compression.prune_channels(model, target_macs=0.5, min_fraction=0.5, return_plan=True)
    assert any(kept < 0.5 * full for kept, full in free.kept.values())  # the floor binds
    assert all(kept >= 0.5 * full for kept, full in plan.kept.values())
    assert plan.estimated[0] <= 0.5 * plan.dense[0]  # still met, spread over more groups
    with pytest.raises(ValueError, match=r"min_fraction=1.0 must be in \[0, 1\)"):
        compression.prune_channels(model, min_fraction=1.0)
