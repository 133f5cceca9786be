"""Fine-tuning (``trainer/finetune.py``, ``configs/finetune.py``): phases, resume, learning rates.

One ``train.py --config=configs/finetune.py`` run is shared by the module: the smallest MobileNet
at 32×32 from a stand-in weight file (keras.applications' model with random weights, saved as
``save_weights`` writes it) on a ``folder:`` dataset made on the fly, one frozen epoch and one
unfrozen, a checkpoint after every step. A kill right after checkpoint ``k`` leaves exactly the
run directory of a finished run cut back to checkpoint ``k`` (checkpoint writes are atomic, which
``test_train.py`` checks with a real SIGKILL), so the resume tests cut a copy back and rerun it.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from google.protobuf import text_format
from PIL import Image

import architectures
import trainer
from configs.common import get_base_config
from tests.architectures.keras_reference import keras_application, randomize
from trainer import config_validation, finetune, optim

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL, SIZE, CLASSES = "mobilenet_v1_025", 32, 3
STEPS_PER_EPOCH, EPOCHS, FROZEN = 2, 2, 1


def _overrides(images, weights):
    return {
        "model.pretrained": weights,
        "data.source": f"folder:{images}",
        "data.image_size": SIZE,
        "train.epochs": EPOCHS,
        "train.freeze_backbone_epochs": FROZEN,
        "train.batch_size": 8,
        "train.steps_per_epoch": STEPS_PER_EPOCH,
        "train.checkpoint_every_steps": 1,
        "train.keep_checkpoints": 10,
        "train.verbose": 0,
        "export.formats": "keras",
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """train/ and val/ with three classes of flat colours under noise."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        for label in range(CLASSES):
            directory = root / split / f"class_{label}"
            directory.mkdir(parents=True)
            for i in range(count):
                pixels = rng.normal(60 + 70 * label, 30, (SIZE, SIZE, 3)).clip(0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(directory / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """keras.applications' MobileNet 0.25 (no top) with random weights, as a weight file."""
    reference = keras_application(MODEL, input_size=SIZE, include_top=False)
    randomize(reference, np.random.default_rng(1).uniform(-1, 1, (4, SIZE, SIZE, 3)))
    path = str(tmp_path_factory.mktemp("weights") / "stand_in.h5")
    reference.save_weights(path)
    keras.backend.clear_session()
    return path


@pytest.fixture(scope="module")
def finished(images, weights, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("finetune") / "run"
    flags = [f"--config.{key}={value}" for key, value in _overrides(images, weights).items()]
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "train.py"),
            f"--config={os.path.join(ROOT, 'configs', 'finetune.py')}:{MODEL}",
            f"--workdir={workdir}",
            *flags,
        ],
        env=dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES=""),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Fine-tuning phase 1 (epoch 1)" in result.stderr
    assert "Fine-tuning phase 2 (epoch 2)" in result.stderr
    return workdir


@pytest.fixture(scope="module")
def model(weights):
    """The run's model as the trainer builds it, holding the pretrained weights."""
    return architectures.create_model(
        MODEL, pretrained=weights, input_shape=(SIZE, SIZE, 3), num_classes=CLASSES
    )


def _checkpoints(workdir) -> dict[int, str]:
    """Global step -> checkpoint path, for every checkpoint of a run."""
    state = tf.train.get_checkpoint_state(os.path.join(workdir, "checkpoints"))
    return {
        int(tf.train.load_checkpoint(path).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")): path
        for path in state.all_model_checkpoint_paths
    }


def _weights_at(model, path) -> dict[str, list[np.ndarray]]:
    """Layer name -> weights (BN moving statistics included) of the checkpoint at ``path``."""
    tf.train.Checkpoint(model=model).read(path).expect_partial().assert_existing_objects_matched()
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def _same(a, b, names) -> list[bool]:
    return [all(np.array_equal(x, y) for x, y in zip(a[n], b[n], strict=True)) for n in names]


@pytest.fixture(scope="module")
def pretrained(model):
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


@pytest.mark.slow
def test_phase_one_trains_the_head_alone_and_phase_two_everything(finished, model, pretrained):
    backbone = [name for name in pretrained if name != "classifier"]
    steps = _checkpoints(finished)
    assert sorted(steps) == [1, 2, 3, 4]
    by_step = {step: _weights_at(model, path) for step, path in steps.items()}
    for step in (1, 2):  # phase 1: weights and moving statistics exactly the pretrained ones
        assert all(_same(by_step[step], pretrained, backbone)), step
    assert not any(_same(by_step[1], by_step[2], ["classifier"]))
    for step in (3, 4):  # phase 2: every layer moves, moving statistics included
        assert not any(_same(by_step[step], by_step[step - 1], backbone)), step
        moving = [name for name in backbone if name.endswith("_bn")]
        assert not any(
            np.array_equal(by_step[step][name][2], by_step[step - 1][name][2]) for name in moving
        )

    with open(finished / "metrics.json") as f:
        final = json.load(f)["final"]
    with open(finished / "config.json") as f:  # the layout the weights need, for every rebuild
        assert json.load(f)["model"]["kwargs"]["stride2_padding"] == "same"
    assert (final["epochs"], final["steps"]) == (EPOCHS, EPOCHS * STEPS_PER_EPOCH)
    exported = keras.models.load_model(finished / "export" / "model.keras")
    assert all(layer.trainable for layer in exported.layers)  # reloads to train whole
    keras.backend.clear_session()


def _config(images, weights):
    config = finetune_recipe(MODEL)
    for key, value in _overrides(images, weights).items():
        section, leaf = key.split(".")
        config[section][leaf] = value
    return config


def finetune_recipe(model_name):
    import importlib.util

    spec = importlib.util.spec_from_file_location("finetune", f"{ROOT}/configs/finetune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(model_name)


def _killed_after(finished, step, destination):
    """A copy of the run as a SIGKILL right after checkpoint ``step`` would have left it."""
    shutil.copytree(finished, destination)
    shutil.rmtree(destination / "export")
    (destination / "metrics.json").unlink()
    directory = destination / "checkpoints"
    state = tf.train.get_checkpoint_state(str(directory))
    steps = _checkpoints(destination)
    kept = sum(1 for later in steps if later <= step)
    for path in state.all_model_checkpoint_paths[kept:]:
        for file in tf.io.gfile.glob(f"{path}.*"):
            os.remove(file)
    del state.all_model_checkpoint_paths[kept:]
    del state.all_model_checkpoint_timestamps[kept:]
    state.model_checkpoint_path = state.all_model_checkpoint_paths[-1]
    (directory / "checkpoint").write_text(text_format.MessageToString(state))
    return destination


@pytest.mark.slow
@pytest.mark.parametrize("killed_at", [1, 3], ids=["in_phase_1", "in_phase_2"])
def test_resumes_in_the_phase_of_the_restored_step(
    killed_at, finished, images, weights, model, pretrained, tmp_path
):
    workdir = _killed_after(finished, killed_at, tmp_path / "killed")
    metrics = trainer.run(_config(images, weights), str(workdir))  # the same command again

    assert (metrics["final"]["epochs"], metrics["final"]["steps"]) == (2, 4)
    steps = _checkpoints(workdir)
    assert sorted(steps) == [1, 2, 3, 4]
    by_step = {step: _weights_at(model, steps[step]) for step in range(killed_at, 5)}
    backbone = [name for name in pretrained if name != "classifier"]
    if killed_at == 1:  # resumed frozen: the rest of epoch 1 leaves the backbone alone
        assert all(_same(by_step[2], pretrained, backbone))
        assert not any(_same(by_step[2], by_step[1], ["classifier"]))
    # Phase 2, resumed there or reached after the frozen epoch: the backbone trains.
    assert not any(_same(by_step[4], by_step[3], backbone))
    keras.backend.clear_session()


@pytest.mark.parametrize(
    "step, freeze, expected",
    [
        (0, 0, [(0, 3, 4, False)]),
        (0, 1, [(0, 1, 4, True), (1, 3, 4, False)]),
        (1, 1, [(0, 1, 3, True), (1, 3, 4, False)]),  # killed in phase 1
        (4, 1, [(1, 3, 4, False)]),  # killed at the phase change
        (6, 1, [(1, 2, 2, False), (2, 3, 4, False)]),  # killed in phase 2
        (5, 2, [(1, 2, 3, True), (2, 3, 4, False)]),
        (0, 3, [(0, 3, 4, True)]),  # a linear probe
        (12, 1, []),
    ],
)
def test_segments_follow_the_restored_step(step, freeze, expected):
    planned = finetune.segments(step, steps_per_epoch=4, epochs=3, freeze_epochs=freeze)
    assert [(s.initial_epoch, s.end_epoch, s.steps, s.frozen) for s in planned] == expected


def test_layer_depths_count_from_the_head_and_pair_each_bn_with_its_conv():
    built = architectures.create_model(MODEL, input_shape=(SIZE, SIZE, 3), num_classes=CLASSES)
    depths = finetune.layer_depths(built)
    convs = [
        layer.name
        for layer in built.layers
        if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert convs[-1] == "classifier" and depths["classifier"] == 0
    assert [depths[name] for name in convs[:-1]] == list(range(len(convs) - 1, 0, -1))
    for name in convs[:-2]:
        assert depths[f"{name}_bn"] == depths[name]
    keras.backend.clear_session()


def _tiny_model(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,))
    x = keras.layers.Dense(6, use_bias=False, name="features")(inputs)
    x = keras.layers.BatchNormalization(name="features_bn")(x)
    x = keras.layers.Dense(4, name="stage")(keras.layers.ReLU()(x))
    outputs = keras.layers.Dense(3, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize(
    "name, loss_scale",
    [("sgd", False), ("rmsprop", False), ("adam", False), ("adamw", False), ("sgd", True)],
)
def test_each_variable_moves_its_learning_rate_scale_times_as_far(name, loss_scale):
    """One step of the scaled optimizer against the same step of the plain one: the backbone's
    updates are ``backbone_lr_scale * layer_decay**depth`` times the plain ones, the head's equal.
    Scaling gradients instead would change nothing for Adam and RMSprop (they normalise)."""
    cfg = get_base_config().optim
    cfg.update(name=name, learning_rate=0.05, backbone_lr_scale=0.3, layer_decay=0.5)
    cfg.weight_decay = 0.1 if name == "adamw" else 0.0  # AdamW: decoupled decay scales too
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 5)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 3, 8), 3)
    deltas = []
    for scaled in (False, True):
        model = _tiny_model(seed=7)
        optimizer = optim.build_optimizer(cfg, cfg.learning_rate)
        if scaled:
            optimizer = finetune.with_learning_rate_scales(optimizer, model, cfg)
        if loss_scale:
            optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
        # Adam's step traced as in training (tf.function); the others eagerly, which is faster.
        model.compile(optimizer, keras.losses.CategoricalCrossentropy(), run_eagerly=name != "adam")
        before = [w.numpy() for w in model.trainable_weights]
        model.train_on_batch(x, y)
        deltas.append([w.numpy() - b for w, b in zip(model.trainable_weights, before, strict=True)])
    plain, scaled_deltas = deltas
    # features (and its BN) at depth 2, stage at depth 1, classifier the head.
    expected = {"features": 0.3 * 0.25, "features_bn": 0.3 * 0.25, "stage": 0.3 * 0.5}
    names = [w.name.split("/")[0] for w in model.trainable_weights]
    for layer, a, b in zip(names, plain, scaled_deltas, strict=True):
        assert np.abs(a).max() > 1e-4, layer  # the step moved this variable
        np.testing.assert_allclose(b, expected.get(layer, 1.0) * a, rtol=1e-4, atol=1e-7)
    keras.backend.clear_session()


def test_no_scale_keeps_the_optimizer():
    cfg = get_base_config().optim
    optimizer = keras.optimizers.Adam()
    assert finetune.with_learning_rate_scales(optimizer, _tiny_model(0), cfg) is optimizer
    cfg.layer_decay = 1.0
    assert finetune.with_learning_rate_scales(optimizer, _tiny_model(0), cfg) is optimizer


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("train.freeze_backbone_epochs", 11, "config.train.freeze_backbone_epochs=11 must be"),
        ("optim.backbone_lr_scale", -0.1, "config.optim.backbone_lr_scale=-0.1 must be"),
        ("optim.layer_decay", 0.0, "config.optim.layer_decay=0.0 must be"),
        ("optim.layer_decay", 1.5, "config.optim.layer_decay=1.5 must be"),
    ],
)
def test_bad_fine_tuning_values_fail_naming_the_key(key, value, message):
    config = finetune_recipe(MODEL)
    section, leaf = key.split(".")
    config[section][leaf] = value
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        config_validation.validate(config)
