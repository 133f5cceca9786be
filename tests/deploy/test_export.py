"""deploy.export: every format written (through trainer.model_data.export_and_check), parity holds (and the check can fail), the exports load
in a fresh process without lightnets code (SavedModel, TFLite) or with only ``import layers``
(Keras), and pruned models are stripped first."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import zipfile  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from deploy import export, tflite  # noqa: E402
from deploy.workdir import EXPORT_FILES  # noqa: E402
from tests import digits_model  # noqa: E402
from tests.model_checks import REPO_ROOT  # noqa: E402


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    return digits_model.trained_digits(tmp_path_factory)


@pytest.fixture(scope="module")
def val_images():
    import architectures
    from trainer import data

    bundle = data.build_datasets(
        digits_model.digits_config().data,
        image_size=digits_model.IMAGE_SIZE,
        preprocessing=architectures.INCEPTION_PREPROCESSING,
        batch_size=400,
    )
    images, labels = next(bundle.val.as_numpy_iterator())
    return images, labels


@pytest.mark.slow
def test_all_formats_written_and_parity_holds(trained):
    assert set(trained.paths) == set(export.FORMATS)
    for name, path in trained.paths.items():
        assert os.path.basename(path) == EXPORT_FILES[name]
        assert os.path.exists(path), name
    rows = {row["format"]: row for row in trained.parity}
    assert [row["format"] for row in trained.parity] == ["reference", *export.FORMATS]
    assert all(row["ok"] for row in trained.parity), export.parity_table(
        [export.ParityRow(**row) for row in trained.parity]
    )
    assert rows["keras"]["max_diff"] <= 1e-5 and rows["saved_model"]["max_diff"] <= 1e-5
    assert rows["tflite"]["max_diff"] <= 1e-4
    assert rows["tflite_int8"]["top1"] >= rows["tflite"]["top1"] - 0.01
    assert rows["reference"]["top1"] == pytest.approx(trained.reference["top1"], abs=1e-6)
    # int8 weights: a quarter of the float32 file, give or take the graph.
    assert rows["tflite_int8"]["size_bytes"] < 0.5 * rows["tflite"]["size_bytes"]


_FRESH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    export_dir, inputs_path, out_path = sys.argv[1:4]
    images = np.load(inputs_path)
    png_dir = os.path.dirname(inputs_path)
    encoded = [open(os.path.join(png_dir, f"{i}.png"), "rb").read() for i in range(4)]
    out = {}
    saved = tf.saved_model.load(os.path.join(export_dir, "saved_model"))
    out["saved_model"] = saved.signatures["serving_default"](
        tf.constant(images))["predictions"].numpy()
    out["image_bytes"] = saved.signatures["serving_image_bytes"](
        tf.constant(encoded))["predictions"].numpy()
    interpreter = Interpreter(model_path=os.path.join(export_dir, "model.tflite"))
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, images)
    interpreter.invoke()
    out["tflite"] = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    lightnets = sorted({"layers", "architectures", "trainer"} & set(sys.modules))
    assert not lightnets, f"SavedModel/TFLite loading imported {lightnets}"

    import tf_keras as keras
    import layers  # noqa: F401  the only lightnets code a .keras file needs
    model = keras.models.load_model(os.path.join(export_dir, "model.keras"), safe_mode=True)
    out["keras"] = model.predict_on_batch(images)
    np.savez(out_path, **out)
    """
)


@pytest.mark.slow
def test_exports_load_in_a_fresh_process_without_custom_code(trained, val_images, tmp_path):
    from architectures import INCEPTION_PREPROCESSING
    from trainer.data import eval_preprocess

    images = val_images[0][:8]
    rng = np.random.default_rng(0)
    # Non-square photos of odd sizes: the signature must resize and centre-crop like evaluation.
    raw = [rng.integers(0, 256, size=(20 + 3 * i, 27 - 2 * i, 3), dtype=np.uint8) for i in range(4)]
    for index, image in enumerate(raw):
        (tmp_path / f"{index}.png").write_bytes(tf.io.encode_png(image).numpy())
    np.save(tmp_path / "inputs.npy", images)
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_SCRIPT, os.path.dirname(trained.paths["keras"]),
         str(tmp_path / "inputs.npy"), str(tmp_path / "out.npz")],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    out = np.load(tmp_path / "out.npz")
    model = keras.models.load_model(trained.keras_path, safe_mode=True)
    expected = model.predict_on_batch(images)
    np.testing.assert_allclose(out["keras"], expected, atol=1e-5)
    np.testing.assert_allclose(out["saved_model"], expected, atol=1e-5)
    np.testing.assert_allclose(out["tflite"], expected, atol=1e-4)
    size = digits_model.IMAGE_SIZE
    preprocessed = np.stack(
        [eval_preprocess(tf.constant(im), size, INCEPTION_PREPROCESSING) for im in raw]
    )
    np.testing.assert_allclose(out["image_bytes"], model.predict_on_batch(preprocessed), atol=1e-5)


@pytest.mark.slow
def test_parity_check_fails_on_a_wrong_export(trained, val_images, tmp_path):
    images, labels = val_images
    model = keras.models.load_model(trained.keras_path, safe_mode=True)
    broken = keras.models.clone_model(model)  # same architecture, fresh random weights
    broken.save(tmp_path / "broken.keras")
    (tmp_path / "broken.tflite").write_bytes(tflite.convert(broken))
    paths = {
        "keras": str(tmp_path / "broken.keras"),
        "tflite_int8": str(tmp_path / "broken.tflite"),
    }

    rows = {row.format: row for row in export.check_parity(model, paths, images, labels)}

    assert not rows["keras"].ok and rows["keras"].max_diff > 1e-5
    assert not rows["tflite_int8"].ok  # an untrained model's top-1 is far below the float one's
    assert "NO" in export.parity_table(list(rows.values()))


@pytest.mark.slow
def test_pruned_model_is_stripped_before_export(val_images, tmp_path):
    from compression import pruning
    from configs.common import get_base_config

    config = get_base_config().pruning
    config.final_sparsity, config.schedule, config.frequency = 0.5, "constant", 1
    pruned = pruning.apply(
        digits_model.build_tiny_model(), config, steps_per_epoch=2, total_steps=2
    )
    pruned.compile("sgd", "sparse_categorical_crossentropy")
    images, labels = val_images
    pruned.fit(images[:64], labels[:64], batch_size=32, epochs=1, verbose=0,
               callbacks=pruning.callbacks(config, None))  # fmt: skip

    paths = export.export_model(pruned, str(tmp_path), formats=("keras", "tflite"))

    with zipfile.ZipFile(paths["keras"]) as archive:
        saved_config = archive.read("config.json").decode()
    assert "PruneLowMagnitude" not in saved_config
    reloaded = keras.models.load_model(paths["keras"], safe_mode=True)  # no tfmot scope needed
    kernel = reloaded.get_layer("classifier").kernel.numpy()
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.02)
    assert os.path.getsize(paths["tflite"]) > 0


def test_a_mixed_precision_model_exports_computing_in_float32(val_images, tmp_path):
    """TFLite refuses float16 Conv2D/Pad: the export rebuilds the model in float32."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = digits_model.build_tiny_model()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed.get_layer("separable").compute_dtype == "float16"
    paths = export.export_model(mixed, str(tmp_path), formats=("keras", "tflite"))

    reloaded = keras.models.load_model(paths["keras"], safe_mode=True)
    assert {layer.compute_dtype for layer in reloaded.layers} == {"float32"}
    images = val_images[0][:8]
    for a, b in zip(reloaded.get_weights(), mixed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    lite = tflite.Runner(paths["tflite"])(images)
    np.testing.assert_allclose(lite, reloaded.predict(images, verbose=0), atol=1e-5)
    # float16 compute agrees with its float32 rebuild to half precision.
    np.testing.assert_allclose(mixed.predict(images, verbose=0), lite, atol=1e-2)


def test_bad_formats_and_missing_calibration_fail_clearly(tmp_path):
    assert export.parse_formats("all") == export.FORMATS
    assert export.parse_formats("tflite, keras,tflite") == ("tflite", "keras")
    with pytest.raises(ValueError, match=r"Unknown export format\(s\) \['onxx'\]; choose from"):
        export.parse_formats("keras,onxx")
    model = digits_model.build_tiny_model()
    with pytest.raises(ValueError, match="'tflite_int8' needs representative_images"):
        export.export_model(model, str(tmp_path), formats="tflite_int8")
    import architectures
    from trainer import data

    preprocess = data.serving_preprocess(24, architectures.INCEPTION_PREPROCESSING)
    with pytest.raises(
        ValueError, match=r"gives images of shape \(24, 24, 3\) but the model takes \(16, 16, 3\)"
    ):
        export.serving_signatures(model, serving_preprocess=preprocess)
    assert not os.listdir(tmp_path)  # nothing half-written
