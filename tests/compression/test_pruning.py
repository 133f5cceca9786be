"""compression.pruning (and deploy.export.pruning_report): config checks, layer choice by type, schedule, resume, strip/reload, reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import architectures
import layers
from compression import pruning
from configs.common import get_base_config
from deploy import export
from tests.model_checks import REPO_ROOT, predict_in_fresh_process

SIZE, CLASSES = 32, 4


def _config(**overrides):
    cfg = get_base_config().pruning
    cfg.update(overrides)
    return cfg


def _fit(model, cfg, steps: int, *, seed: int = 0, epochs: int = 1):
    """Trains ``steps`` batches of 2 random images per epoch with the pruning callbacks.

    Eagerly: on these tiny models tracing the train function costs more than the steps.
    """
    rng = np.random.default_rng(seed)
    inputs = rng.random((2 * steps, SIZE, SIZE, 3), dtype=np.float32)
    labels = rng.integers(0, CLASSES, 2 * steps)
    if model.optimizer is None:
        model.compile(
            keras.optimizers.SGD(0.01),
            keras.losses.SparseCategoricalCrossentropy(),
            run_eagerly=True,
        )
    model.fit(
        inputs,
        labels,
        batch_size=2,
        epochs=epochs,
        verbose=0,
        shuffle=False,
        callbacks=pruning.callbacks(cfg, None),
    )


def _custom_layers_model() -> keras.Model:
    """Every lightnets conv layer next to the Keras ones, so every kind of weight occurs."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Conv2D(16, 1, name="pw")(x)
    x = layers.GroupConv2D(16, 1, groups=4, name="grouped")(x)
    x = layers.DepthwiseSeparableConv2D(16, 3, name="separable")(x)
    x = layers.SpatialSeparableConv2D(8, 3, name="spatial")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="custom_layers")


# ---------------------------------------------------------------------------------------------
# Config checks: cheap, no training
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"final_sparsity": 1.2}, "final_sparsity"),
        ({"final_sparsity": 0.5, "initial_sparsity": 0.6}, "initial_sparsity"),
        ({"schedule": "cubic"}, "schedule"),
        ({"frequency": 0}, "frequency"),
        ({"begin_step": 10, "end_step": 5}, "end_step"),
        ({"begin_step": 3, "begin_epoch": 1.0}, "begin_epoch"),
        ({"begin_epoch": 2.0, "end_epoch": 1.0}, "end_epoch"),
        ({"m_by_n": "4:2"}, "m_by_n"),
        ({"m_by_n": "2:4", "final_sparsity": 0.75}, "m_by_n"),
        ({"policy": "fast"}, "policy"),
        ({"prune_dense": "yes"}, "prune_dense"),
    ],
)
def test_validate_names_the_bad_key(overrides, key):
    # A plain dict: a ConfigDict would already refuse some wrongly typed values itself.
    with pytest.raises(ValueError, match=key):
        pruning.validate({**_config().to_dict(), **overrides})


def test_validate_rejects_unknown_keys_and_accepts_defaults():
    pruning.validate(_config())
    assert not pruning.is_enabled(_config())
    assert pruning.is_enabled(_config(final_sparsity=0.5))
    assert pruning.is_enabled(_config(m_by_n="2:4"))
    cfg = _config()
    cfg.unlock()
    cfg.final_sparstiy = 0.5
    with pytest.raises(ValueError, match="final_sparstiy"):
        pruning.validate(cfg)


def test_schedule_window_in_epochs_lands_on_the_update_grid():
    cfg = _config(final_sparsity=0.5, begin_epoch=1.0, end_epoch=3.5, frequency=4)
    # begin 10, end 35 pulled back to 34 = 10 + 6 * 4, so the last update hits final_sparsity.
    assert pruning.schedule_steps(cfg, steps_per_epoch=10, total_steps=50) == (10, 34)
    assert pruning.schedule_steps(
        _config(final_sparsity=0.5, frequency=1), steps_per_epoch=10, total_steps=50
    ) == (0, 50)
    with pytest.raises(ValueError, match="after training ends"):
        pruning.schedule_steps(_config(end_step=60), steps_per_epoch=10, total_steps=50)
    with pytest.raises(ValueError, match="frequency"):
        pruning.schedule_steps(_config(frequency=100), steps_per_epoch=10, total_steps=50)


# ---------------------------------------------------------------------------------------------
# Layer choice, training, strip, reload
# ---------------------------------------------------------------------------------------------


# Family knobs that shrink a heavy family to a test size through its registered builder.
_TINY = {
    "resnet": ("resnext50_32x4d", {"stages": ((64, 1), (128, 1))}),
}
# Families with no knob to shrink them (22M+ parameters): one step, no reload (see the slow test).
_HEAVY = {"xception"}


def _family_models(heavy: bool) -> dict[str, tuple[str, dict]]:
    """family -> (variant, create_model overrides): the smallest-named variant by default."""
    chosen: dict[str, tuple[str, dict]] = {}
    for name in architectures.list_models():
        if architectures.get_model_spec(name).task != "classification":
            continue  # pruned in tests/architectures/test_deeplab.py
        family = architectures.get_model_spec(name).family
        if (family in _HEAVY) == heavy:
            chosen.setdefault(family, _TINY.get(family, (name, {})))
    return chosen


def _prune_train_strip(name, overrides, cfg, steps):
    keras.backend.clear_session()
    model = architectures.create_model(
        name, input_shape=(SIZE, SIZE, 3), num_classes=CLASSES, **overrides
    )
    pruned = pruning.apply(model, cfg, steps_per_epoch=steps, total_steps=steps)
    _fit(pruned, cfg, steps=steps)
    steps_seen = {int(w.pruning_step.numpy()) for w in pruned.layers if hasattr(w, "pruning_step")}
    return pruning.strip(pruned), steps_seen


def _check_report(name, stripped, target):
    report = pruning.sparsity_report(stripped)
    assert report["source"] == "apply"
    assert report["overall"]["sparsity"] == pytest.approx(target, abs=0.01), name
    for key, entry in report["layers"].items():
        if entry["pruned"]:
            # Per tensor, tfmot rounds the number of zeros to a whole weight, and weights whose
            # magnitudes tie at the threshold fall on one side together: among ~10^6 float32
            # values (Xception's kernels) a few exact ties are expected.
            tolerance = max(1.01, 1e-5 * entry["size"]) / entry["size"]
            assert entry["sparsity"] == pytest.approx(target, abs=tolerance), key
        elif entry["kind"] == "depthwise":
            assert entry["sparsity"] < 0.05, key  # prune_depthwise is off by default


@pytest.fixture(scope="module")
def pruned_family_models():
    """Each family's tiny variant pruned to 50 % over 2 steps, trained, stripped."""
    cfg = _config(final_sparsity=0.5, frequency=1)
    return {
        name: _prune_train_strip(name, overrides, cfg, steps=2)
        for name, overrides in _family_models(heavy=False).values()
    }


def test_every_family_reaches_the_target_and_reloads(pruned_family_models, tmp_path):
    assert pruned_family_models, "no registered family builds at 32x32"
    images = np.random.default_rng(1).random((2, SIZE, SIZE, 3), dtype=np.float32)
    for name, (stripped, steps) in pruned_family_models.items():
        assert steps == {2}, (name, steps)
        assert not any("prune_low_magnitude" in layer.name for layer in stripped.layers), name
        _check_report(name, stripped, 0.5)
    models = list(pruned_family_models.values())
    expected = [stripped.predict_on_batch(images) for stripped, _ in models]
    reloaded = predict_in_fresh_process(
        [(m, images) for m, _ in models], tmp_path, loader="lightnets"
    )
    for name, want, got in zip(pruned_family_models, expected, reloaded, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_heavy_families_prune_one_step():
    cfg = _config(final_sparsity=0.5, schedule="constant", frequency=1)
    for name, overrides in _family_models(heavy=True).values():
        stripped, steps = _prune_train_strip(name, overrides, cfg, steps=1)
        assert steps == {1}, name
        _check_report(name, stripped, 0.5)


def test_kinds_are_chosen_by_layer_type_including_custom_layers(tmp_path):
    model = _custom_layers_model()
    dense_kernel = model.get_layer("pw").kernel.numpy().copy()
    cfg = _config(
        final_sparsity=0.5,
        frequency=1,
        prune_depthwise=True,
        prune_conv=False,
        skip_classifier=True,
    )
    pruned = pruning.apply(model, cfg, steps_per_epoch=2, total_steps=2)
    # apply() wraps the same layer objects, so warm-started weights survive.
    np.testing.assert_array_equal(
        pruned.get_layer("prune_low_magnitude_pw").layer.kernel.numpy(), dense_kernel
    )
    _fit(pruned, cfg, steps=2)
    report = export.pruning_report(pruning.strip(pruned), None)
    pruned_keys = {k for k, v in report["sparsity"]["layers"].items() if v["pruned"]}
    assert pruned_keys == {
        "dw/depthwise_kernel",
        "pw/kernel",
        "grouped/kernel",
        "separable/depthwise_kernel",
        "separable/pointwise_kernel",
    }
    kinds = {k: v["kind"] for k, v in report["sparsity"]["layers"].items()}
    assert kinds["grouped/kernel"] == "grouped"
    assert kinds["spatial/vertical_kernel"] == "conv"
    assert kinds["classifier/kernel"] == "dense"
    assert report["sparsity"]["by_kind"]["depthwise"]["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert report["gzip_bytes"] > 0 and "gzip_ratio" not in report


def test_pruning_report_compares_gzip_with_the_dense_reference(tmp_path):
    dense = _custom_layers_model()
    dense.save(tmp_path / "model.keras")
    cfg = _config(final_sparsity=0.9, schedule="constant", frequency=1, skip_first_conv=False)
    pruned = pruning.apply(_custom_layers_model(), cfg, steps_per_epoch=1, total_steps=1)
    _fit(pruned, cfg, steps=1)
    stripped = pruning.strip(pruned)
    report = export.pruning_report(stripped, str(tmp_path))
    assert report["dense_gzip_bytes"] > report["gzip_bytes"]
    assert report["gzip_ratio"] == report["gzip_bytes"] / report["dense_gzip_bytes"]
    # The shipped format too: 90 % zeros compress in the TFLite flatbuffer as well.
    assert report["dense_tflite_gzip_bytes"] > report["tflite_gzip_bytes"] > 0
    assert report["tflite_gzip_ratio"] == (
        report["tflite_gzip_bytes"] / report["dense_tflite_gzip_bytes"]
    )
    with pytest.raises(ValueError, match="model.keras"):
        export.pruning_report(stripped, str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="strip"):
        export.pruning_report(pruned, None)
    # A model read back from disk carries no note of what was pruned: the config re-plans it.
    stripped.save(tmp_path / "pruned.keras")
    loaded = keras.models.load_model(tmp_path / "pruned.keras")
    assert pruning.sparsity_report(loaded)["source"] == "all_kernels"
    by_config = pruning.sparsity_report(loaded, cfg)
    assert by_config["source"] == "config"
    assert by_config["overall"] == report["sparsity"]["overall"]


def test_strip_is_a_no_op_without_pruning():
    model = _custom_layers_model()
    assert pruning.strip(model) is model
    assert pruning.apply(model, _config(), steps_per_epoch=1, total_steps=1) is model


def test_m_by_n_pattern_holds():
    cfg = _config(m_by_n="2:4", skip_first_conv=False)
    pruned = pruning.apply(_custom_layers_model(), cfg, steps_per_epoch=2, total_steps=2)
    _fit(pruned, cfg, steps=2)
    stripped = pruning.strip(pruned)
    for layer_name, kernel_attr in (
        ("pw", "kernel"),
        ("grouped", "kernel"),
        ("classifier", "kernel"),
    ):
        kernel = getattr(stripped.get_layer(layer_name), kernel_attr).numpy()
        # TFLite's layout puts input channels last: [out, (h, w,) in], blocks of 4 along "in".
        rows = np.moveaxis(kernel, -1, 0).reshape(kernel.shape[-1], -1)
        blocks = rows.reshape(rows.shape[0], -1, 4)
        assert (np.count_nonzero(blocks, axis=-1) <= 2).all(), layer_name
        assert np.mean(kernel == 0) == pytest.approx(0.5), layer_name


def test_policy_xnnpack_latency_prunes_only_1x1_convs_and_checks_the_stem():
    cfg = _config(final_sparsity=0.5, frequency=1, policy="xnnpack_latency")
    model = architectures.create_model(
        "mobilenet_v2_035", input_shape=(SIZE, SIZE, 3), num_classes=CLASSES
    )
    pruned = pruning.apply(model, cfg, steps_per_epoch=1, total_steps=1)
    wrapped = [layer.layer for layer in pruned.layers if hasattr(layer, "pruning_step")]
    assert wrapped
    assert all(
        type(layer) is keras.layers.Conv2D and layer.kernel_size == (1, 1) for layer in wrapped
    )
    with pytest.raises(ValueError, match="ZeroPadding2D"):
        pruning.apply(_custom_layers_model(), cfg, steps_per_epoch=1, total_steps=1)


# ---------------------------------------------------------------------------------------------
# Resume: the pruning step and masks live in the checkpoint
# ---------------------------------------------------------------------------------------------


def test_resume_from_checkpoint_continues_the_schedule(tmp_path):
    cfg = _config(final_sparsity=0.75, frequency=1, end_step=6)

    def build():
        keras.utils.set_random_seed(0)
        pruned = pruning.apply(_custom_layers_model(), cfg, steps_per_epoch=3, total_steps=6)
        pruned.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy())
        return pruned

    def state(model):
        wrappers = [w for w in model.layers if hasattr(w, "pruning_step")]
        return (
            [int(w.pruning_step.numpy()) for w in wrappers],
            [m.numpy() for w in wrappers for _, m, _ in w.pruning_vars],
        )

    first = build()
    _fit(first, cfg, steps=3)  # "killed" after 3 of 6 steps, mid-schedule
    tf.train.Checkpoint(model=first, optimizer=first.optimizer).write(str(tmp_path / "ckpt"))
    steps, masks = state(first)
    assert set(steps) == {3} and 0.0 < np.mean([1 - m.mean() for m in masks]) < 0.75

    resumed = build()
    _fit(resumed, cfg, steps=1, seed=5)  # creates the optimizer slots before restoring
    tf.train.Checkpoint(model=resumed, optimizer=resumed.optimizer).read(
        str(tmp_path / "ckpt")
    ).assert_consumed()
    resumed_steps, resumed_masks = state(resumed)
    assert resumed_steps == steps
    for want, got in zip(masks, resumed_masks, strict=True):
        np.testing.assert_array_equal(got, want)
    _fit(resumed, cfg, steps=3, seed=1)
    final_steps, _ = state(resumed)
    assert set(final_steps) == {6}
    overall = pruning.sparsity_report(pruning.strip(resumed))["overall"]["sparsity"]
    assert overall == pytest.approx(0.75, abs=0.01)


# ---------------------------------------------------------------------------------------------
# Mixed precision and a distribution strategy: one fresh process (device setup is global)
# ---------------------------------------------------------------------------------------------

_STRATEGY_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np, tensorflow as tf, tf_keras as keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import architectures
    from configs.common import get_base_config
    from compression import pruning

    def run(precision, strategy):
        keras.mixed_precision.set_global_policy(precision)
        cfg = get_base_config().pruning
        cfg.update(final_sparsity=0.5, frequency=1)
        with strategy.scope():
            model = architectures.create_model(
                "mobilenet_v1_025", input_shape=(32, 32, 3), num_classes=4)
            model = pruning.apply(model, cfg, steps_per_epoch=2, total_steps=2)
            model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
        rng = np.random.default_rng(0)
        model.fit(rng.random((8, 32, 32, 3), dtype=np.float32), rng.integers(0, 4, 8),
                  batch_size=4, epochs=1, verbose=0, callbacks=pruning.callbacks(cfg, None))
        stripped = pruning.strip(model)
        out = stripped.predict_on_batch(np.zeros((1, 32, 32, 3), np.float32))
        return {"sparsity": pruning.sparsity_report(stripped)["overall"]["sparsity"],
                "finite": bool(np.isfinite(out).all()), "out_dtype": str(out.dtype),
                "replicas": strategy.num_replicas_in_sync}

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    print("RESULT", json.dumps({
        "mirrored": run("float32", mirrored),
        "mixed_float16": run("mixed_float16", tf.distribute.get_strategy()),
    }))
    """
)


@pytest.mark.slow
def test_mixed_precision_and_mirrored_strategy_prune():
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", _STRATEGY_SCRIPT],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    results = json.loads(line[len("RESULT ") :])
    assert results["mirrored"]["replicas"] == 2
    for case, values in results.items():
        assert values["sparsity"] == pytest.approx(0.5, abs=0.01), case
        assert values["finite"], case
    assert results["mixed_float16"]["out_dtype"] == "float32"
