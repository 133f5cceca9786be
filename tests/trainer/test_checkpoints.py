"""trainer.checkpoints: full training state round trip, fallback past a broken checkpoint, warm
start with the classifier excluded."""

import glob
import os
import signal

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from trainer import checkpoints, optim


def _tiny_model(num_classes=3, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="conv_bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name="tiny")


def _state(directory, seed=0):
    model = _tiny_model(seed=seed)
    schedule = optim.WarmupSchedule("cosine", peak=0.1, total_steps=20, warmup_steps=2)
    optimizer = keras.optimizers.SGD(schedule, momentum=0.9)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    optimizer.build(model.trainable_variables)
    return model, checkpoints.CheckpointState(model, optimizer, directory, max_to_keep=5)


def _train(model, steps):
    rng = np.random.default_rng(steps)
    x = rng.normal(size=(steps * 4, 6, 6, 3)).astype("float32")
    y = rng.integers(0, 3, size=steps * 4)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)


def _snapshot(model, state):
    return {
        "weights": [w.copy() for w in model.get_weights()],  # BN moving stats included
        "slots": [v.numpy().copy() for v in state.optimizer.variables],
        "step": state.step,
        "epoch": int(state.epoch.numpy()),
    }


def _assert_same(a, b):
    assert (a["step"], a["epoch"]) == (b["step"], b["epoch"])
    for x, y in zip(a["weights"] + a["slots"], b["weights"] + b["slots"], strict=True):
        np.testing.assert_array_equal(x, y)


def test_round_trip_and_fallback_past_broken_checkpoints(tmp_path):
    directory = str(tmp_path / "checkpoints")
    model, state = _state(directory)
    assert state.restore_latest() is None  # nothing yet: a fresh start
    _train(model, 3)
    first = state.save(epoch=1)
    saved_first = _snapshot(model, state)
    _train(model, 2)
    second = state.save()
    saved_second = _snapshot(model, state)
    assert state.save() is None  # same step, no epoch change: nothing new to write

    fresh_model, fresh = _state(directory, seed=1)
    assert fresh.restore_latest() == second
    _assert_same(_snapshot(fresh_model, fresh), saved_second)
    # The schedule position comes back with optimizer.iterations.
    lr = fresh.optimizer.learning_rate
    assert float(lr) == pytest.approx(float(model.optimizer.learning_rate))

    # A torn newest checkpoint (data file cut short): restore falls back to the previous one.
    (data_file,) = glob.glob(f"{second}.data-*")
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)
    fresh_model, fresh = _state(directory, seed=2)
    assert fresh.restore_latest() == first
    _assert_same(_snapshot(fresh_model, fresh), saved_first)

    os.remove(f"{first}.index")
    _, fresh = _state(directory, seed=3)
    with pytest.raises(RuntimeError, match="None of the checkpoints"):
        fresh.restore_latest()


def test_warm_start_copies_all_but_the_classifier(tmp_path):
    source = _tiny_model(num_classes=5, seed=0)
    path = str(tmp_path / "source.keras")
    source.save(path)
    target = _tiny_model(num_classes=3, seed=1)
    before = target.get_layer("classifier").get_weights()

    result = checkpoints.warm_start(target, path)

    assert sorted(result["loaded"]) == ["conv", "conv_bn"]
    for name in ("conv", "conv_bn"):
        for a, b in zip(
            target.get_layer(name).get_weights(), source.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(target.get_layer("classifier").get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_warm_start_errors_name_the_path(tmp_path):
    model = _tiny_model()
    with pytest.raises(ValueError, match="does not exist"):
        checkpoints.warm_start(model, str(tmp_path / "missing.keras"))
    with pytest.raises(ValueError, match="holds no checkpoint"):
        checkpoints.warm_start(model, str(tmp_path))
    # A bare checkpoint without its run's config.json: the architecture is unknown.
    prefix = tf.train.Checkpoint(model=model).write(str(tmp_path / "bare" / "ckpt"))
    with pytest.raises(ValueError, match="no config.json"):
        checkpoints.warm_start(model, prefix)


def test_ctrl_c_during_a_save_waits_for_it_to_finish(tmp_path, monkeypatch):
    """SIGINT in the middle of a save: the checkpoint is still written whole and recorded, then
    the KeyboardInterrupt comes; the next save works (a cut save used to hang the one Ctrl-C
    makes)."""
    model, state = _state(str(tmp_path / "checkpoints"))
    _train(model, 2)
    manager_save = state._write.save
    handler = signal.getsignal(signal.SIGINT)

    def interrupted_save():
        os.kill(os.getpid(), signal.SIGINT)  # arrives mid-save
        return manager_save()

    monkeypatch.setattr(state._write, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        state.save()
    assert state.last_saved_step == state.step
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")) is not None
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    monkeypatch.undo()
    _train(model, 1)
    assert state.save() is not None
