"""deploy.metrics, deploy.loading and trainer.model_data: metrics against independent references, every
model kind giving the model's own Keras answer, and clear errors."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import json  # noqa: E402
import shutil  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from deploy import loading, metrics  # noqa: E402
from deploy import paths as model_paths  # noqa: E402
from tests import digits_model  # noqa: E402
from trainer import model_data  # noqa: E402


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    return digits_model.trained_digits(tmp_path_factory)


def _digits_data_config(**overrides):
    config = digits_model.digits_config().data
    for key, value in overrides.items():
        config[key] = value
    return config


@pytest.mark.parametrize("from_logits", [False, True])
def test_metrics_match_keras_metrics(from_logits):
    rng = np.random.default_rng(1)
    num_classes, sizes = 12, (40, 33, 1)  # uneven batches, one of size 1
    logits = [rng.normal(size=(n, num_classes)).astype(np.float32) * 3 for n in sizes]
    scores = logits if from_logits else [metrics.softmax(x) for x in logits]
    labels = [rng.integers(0, num_classes, size=n) for n in sizes]

    result, confusion = metrics.evaluate(
        lambda x: x,
        zip(scores, labels, strict=True),
        num_classes,
        [f"c{i}" for i in range(num_classes)],
    )

    all_scores, all_labels = np.concatenate(scores), np.concatenate(labels)
    top1 = keras.metrics.SparseCategoricalAccuracy()
    top5 = keras.metrics.SparseTopKCategoricalAccuracy(5)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    top1.update_state(all_labels, all_scores)
    top5.update_state(all_labels, all_scores)
    assert result["from_logits"] is from_logits
    assert result["examples"] == sum(sizes)
    assert result["top1"] == pytest.approx(float(top1.result()), abs=1e-6)
    assert result["top5"] == pytest.approx(float(top5.result()), abs=1e-6)
    assert result["loss"] == pytest.approx(float(loss(all_labels, all_scores)), rel=1e-5)
    expected = np.zeros((num_classes, num_classes), int)
    for label, predicted in zip(all_labels, all_scores.argmax(1), strict=True):
        expected[label, predicted] += 1
    np.testing.assert_array_equal(confusion, expected)
    for index in range(num_classes):
        mask = all_labels == index
        want = (all_scores[mask].argmax(1) == index).mean() if mask.any() else None
        assert result["per_class"][f"c{index}"] == pytest.approx(want)


def test_metrics_reject_bad_input():
    accumulator = metrics.MetricsAccumulator(3)
    with pytest.raises(ValueError, match="do not fit 2 labels and 3 classes"):
        accumulator.update(np.zeros((2, 4)), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 3\] but the model has 3 classes"):
        accumulator.update(np.full((2, 3), 1 / 3), np.array([0, 3]))
    with pytest.raises(ValueError, match="No examples"):
        accumulator.result()
    with pytest.raises(ValueError, match="batch_size and iterations must be >= 1"):
        metrics.measure_latency_ms(lambda x: x, (2, 2, 3), 0)


@pytest.mark.slow
def test_every_kind_gives_the_keras_models_own_metrics(trained):
    names = ("keras", "saved_model", "tflite")
    paths = [trained.keras_path, trained.workdir] + [trained.paths[name] for name in names[1:]]
    for path in paths:
        model_and_data = model_data.load_with_data(path, _digits_data_config(), batch_size=64)
        result, _ = metrics.evaluate(
            model_and_data.model.predict,
            model_and_data.data.val.as_numpy_iterator(),
            model_and_data.model.num_classes,
        )
        assert result["examples"] == 360, path
        assert result["top1"] == pytest.approx(trained.reference["top1"], abs=1e-6), path
        assert result["top5"] == pytest.approx(trained.reference["top5"], abs=1e-6), path
        assert result["loss"] == pytest.approx(trained.reference["loss"], rel=1e-4), path
    workdir_model = model_data.load_with_data(trained.workdir, _digits_data_config(image_size=None))
    assert workdir_model.model.kind == "workdir"
    assert workdir_model.image_size == digits_model.IMAGE_SIZE  # from the workdir's config.json


def test_saved_model_without_keras_metadata_is_evaluated(tmp_path):
    rng = np.random.default_rng(0)
    size, num_classes = 4, 5
    kernel = rng.normal(size=(size * size * 3, num_classes)).astype(np.float32)

    class Linear(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(kernel)

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
        def logits(self, images):
            return {"logits": tf.matmul(tf.reshape(images, [-1, size * size * 3]), self.kernel)}

    module = Linear()
    tf.saved_model.save(module, str(tmp_path / "plain"), signatures={"classify": module.logits})
    assert not (tmp_path / "plain" / "keras_metadata.pb").exists()

    loaded = loading.load_model(str(tmp_path / "plain"))
    images = rng.normal(size=(30, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=30)
    result, _ = metrics.evaluate(
        loaded.predict, [(images[:17], labels[:17]), (images[17:], labels[17:])], num_classes
    )

    logits = images.reshape(30, -1).astype(np.float64) @ kernel
    log_probabilities = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert (loaded.kind, loaded.input_shape, loaded.num_classes) == ("saved_model", (4, 4, 3), 5)
    assert result["from_logits"] is True
    assert result["top1"] == pytest.approx((logits.argmax(1) == labels).mean())
    assert result["loss"] == pytest.approx(-log_probabilities[np.arange(30), labels].mean(), 1e-4)


def test_missing_and_unknown_paths_fail_clearly(tmp_path):
    missing = str(tmp_path / "nope.keras")
    (tmp_path / "x.tflite").write_bytes(b"")  # exists: the missing one after it is named
    with pytest.raises(FileNotFoundError, match="nope.keras' does not exist"):
        model_paths.expand_model_paths([f"{tmp_path}/x.tflite,{missing}"])
    with pytest.raises(FileNotFoundError, match="matches nothing"):
        model_paths.expand_model_paths([str(tmp_path / "*.keras")])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        loading.load_model(missing)
    with pytest.raises(ValueError, match="neither a training workdir"):
        loading.load_model(str(tmp_path))
    (tmp_path / "weights.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="unknown extension '.h5'"):
        loading.load_model(str(tmp_path / "weights.h5"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(digits_model.digits_config().to_json())
    with pytest.raises(FileNotFoundError, match="holds no model"):
        loading.load_model(str(tmp_path / "run"))
    with pytest.raises(ValueError, match="neither one of"):
        model_data.preprocessing_by_name("mobilenet_v9")


def test_paths_expand_commas_and_globs_in_order(tmp_path):
    for name in ("b.tflite", "a.tflite", "m.keras"):
        (tmp_path / name).write_bytes(b"")
    paths = model_paths.expand_model_paths([f"{tmp_path}/m.keras, {tmp_path}/*.tflite"])
    assert paths == [str(tmp_path / n) for n in ("m.keras", "a.tflite", "b.tflite")]


@pytest.mark.slow
def test_data_that_does_not_fit_the_model_is_refused(trained):
    with pytest.raises(ValueError, match="predicts 10 classes but the data 'synthetic' has 7"):
        model_data.load_with_data(
            trained.paths["tflite"],
            _digits_data_config(source="synthetic", num_classes=7, image_size=None),
        )
    with pytest.raises(ValueError, match=r"\(16, 16, 3\) but the data gives \(24, 24, 3\)"):
        model_data.load_with_data(trained.keras_path, _digits_data_config(image_size=24))


@pytest.mark.slow
def test_workdir_without_export_restores_its_best_checkpoint(tmp_path):
    import architectures

    config = digits_model.digits_config()
    config.data.image_size, config.data.num_classes = 32, 10
    model = architectures.create_model(config.model.name, input_shape=(32, 32, 3), num_classes=10)
    (tmp_path / "config.json").write_text(config.to_json())
    # As the trainer's BestModel callback writes it.
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(tmp_path / "best"), 1).save()

    loaded = loading.load_model(str(tmp_path))

    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    assert loaded.file.endswith("ckpt-1")
    np.testing.assert_allclose(loaded.predict(images), model(images, training=False), atol=1e-6)


@pytest.mark.slow
def test_confusion_png_and_json_result(trained, tmp_path):
    model_and_data = model_data.load_with_data(trained.paths["tflite_int8"], _digits_data_config())
    result, confusion = model_data.evaluate(
        model_and_data, latency_batch_size=8, latency_iterations=2
    )
    metrics.write_confusion_png(confusion, str(tmp_path / "c.png"), title="int8")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(json.dumps(result))["per_class"].keys() == {str(i) for i in range(10)}
    assert result["examples"] == confusion.sum() == 360
    assert result["latency_ms_b1"] > 0 and result["latency_ms_bN"] > 0


@pytest.mark.slow
def test_a_file_inside_a_workdir_uses_that_runs_preprocessing(trained, tmp_path):
    import architectures

    config = digits_model.digits_config()
    config.model.name = "shufflenet_v1_g3_050"  # ImageNet mean/std, not the Inception default
    (tmp_path / "run" / "export").mkdir(parents=True)
    (tmp_path / "run" / "config.json").write_text(config.to_json())
    inside = tmp_path / "run" / "export" / "model.tflite"
    shutil.copy(trained.paths["tflite"], inside)
    shutil.copy(trained.paths["tflite"], tmp_path / "bare.tflite")

    owned = model_data.load_with_data(str(inside), _digits_data_config())
    bare = model_data.load_with_data(str(tmp_path / "bare.tflite"), _digits_data_config())

    assert owned.workdir == str(tmp_path / "run")
    assert owned.preprocessing == architectures.IMAGENET_PREPROCESSING
    assert bare.workdir is None
    assert bare.preprocessing == architectures.INCEPTION_PREPROCESSING
