"""End to end: train.py / trainer.run on the digits with the smallest MobileNet at 32x32.

One uninterrupted run is shared by the module; a second run is killed with SIGKILL after its
first checkpoint and resumed, and must end where the uninterrupted one ends.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import architectures
import trainer
from configs.common import get_base_config
from trainer import callbacks, checkpoints
from trainer.callbacks import read_metrics_csv

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OVERRIDES = {
    "model.name": "mobilenet_v1_025",
    "model.bn_momentum": 0.9,
    "data.image_size": 32,
    "train.epochs": 3,
    "train.batch_size": 32,
    "train.steps_per_epoch": 4,
    "train.checkpoint_every_steps": 2,
    "train.verbose": 0,
    "optim.warmup_epochs": 1.0,
    "export.formats": "keras",
}


def _config():
    config = get_base_config()
    for key, value in OVERRIDES.items():
        section, leaf = key.split(".")
        config[section][leaf] = value
    return config


def _flags(workdir):
    return [f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in OVERRIDES.items()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    return workdir, trainer.run(_config(), workdir)


@pytest.mark.slow
def test_run_writes_the_workdir(finished):
    workdir, metrics = finished
    final = metrics["final"]
    assert (final["epochs"], final["steps"]) == (3, 12)
    assert final["train_seconds"] > 0
    with open(os.path.join(workdir, "metrics.json")) as f:
        assert json.load(f) == json.loads(json.dumps(metrics))

    with open(os.path.join(workdir, "config.json")) as f:
        resolved = json.load(f)
    assert (resolved["data"]["image_size"], resolved["data"]["num_classes"]) == (32, 10)

    rows = read_metrics_csv(os.path.join(workdir, "metrics.csv"))
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert {"loss", "top1", "top5", "val_loss", "val_top1", "val_top5", "learning_rate"} <= set(
        rows[0]
    )

    with open(os.path.join(workdir, "best", "best.json")) as f:
        best = json.load(f)
    assert best["value"] == pytest.approx(max(row["val_top1"] for row in rows))
    assert tf.train.latest_checkpoint(os.path.join(workdir, "best"))
    with open(os.path.join(workdir, "plots", "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert any(
        "events" in name for _, _, files in os.walk(os.path.join(workdir, "logs")) for name in files
    )

    # The exported model scores the validation set exactly as the run reported.
    from trainer.data import build_datasets

    spec = architectures.get_model_spec("mobilenet_v1_025")
    data = build_datasets(
        _config().data, image_size=32, preprocessing=spec.preprocessing, batch_size=64
    )
    model = keras.models.load_model(os.path.join(workdir, "export", "model.keras"))
    hits = total = 0
    for images, labels in data.val:
        hits += int(np.sum(np.argmax(model.predict(images, verbose=0), -1) == labels.numpy()))
        total += len(labels)
    assert hits / total == pytest.approx(final["val_top1"], abs=1e-6)


@pytest.mark.slow
def test_sigkill_then_rerun_matches_an_uninterrupted_run(finished, tmp_path):
    reference_dir, reference = finished
    workdir = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train.py"), *_flags(workdir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state_file = workdir / "checkpoints" / "checkpoint"
    deadline = time.monotonic() + 300
    while not state_file.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (workdir / "metrics.json").exists()

    resumed = trainer.run(_config(), str(workdir))  # the same command again

    assert (resumed["final"]["epochs"], resumed["final"]["steps"]) == (3, 12)
    rows = read_metrics_csv(str(workdir / "metrics.csv"))
    reference_rows = read_metrics_csv(os.path.join(reference_dir, "metrics.csv"))
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    # Same learning-rate position at every epoch end: the schedule follows the restored step.
    np.testing.assert_allclose(
        [row["learning_rate"] for row in rows], [row["learning_rate"] for row in reference_rows]
    )
    # Only the order of the data after the restart differs: equal within noise.
    assert resumed["final"]["val_top1"] == pytest.approx(reference["final"]["val_top1"], abs=0.15)


@pytest.mark.slow
def test_warm_start_from_a_finished_workdir(finished):
    workdir, _ = finished
    model = architectures.create_model("mobilenet_v1_025", input_shape=(32, 32, 3), num_classes=7)
    result = checkpoints.warm_start(model, workdir)
    assert "classifier" not in result["loaded"] and not result["skipped"]
    source = keras.models.load_model(os.path.join(workdir, "export", "model.keras"))
    for name in result["loaded"]:
        for a, b in zip(
            model.get_layer(name).get_weights(),
            source.get_layer(name).get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
    assert len(result["loaded"]) == len([layer for layer in source.layers if layer.weights]) - 1


def test_cli_rejects_a_bad_value_before_any_work(tmp_path):
    workdir = tmp_path / "never"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "train.py"),
            f"--workdir={workdir}",
            "--config.optim.name=lamb",
        ],
        env=dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES=""),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "config.optim.name='lamb'" in result.stderr
    assert not workdir.exists()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="classifier")(inputs))
    optimizer = keras.optimizers.SGD(0.1)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    optimizer.build(model.trainable_variables)
    state = checkpoints.CheckpointState(model, optimizer, str(tmp_path), max_to_keep=10)
    guard = callbacks.NanGuard()
    x = np.ones((12, 4), np.float32)
    x[8] = np.nan  # the third batch of four
    model.fit(
        x,
        np.zeros(12, np.int64),
        batch_size=4,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[guard, callbacks.CheckpointSaver(state, 1, guard)],
    )
    assert guard.tripped_at == (0, 3)
    assert not np.isfinite(model.get_weights()[0]).all()
    fresh = keras.Model(inputs, keras.layers.Dense(2, name="classifier")(inputs))
    fresh_optimizer = keras.optimizers.SGD(0.1)
    fresh_optimizer.build(fresh.trainable_variables)
    restored = checkpoints.CheckpointState(fresh, fresh_optimizer, str(tmp_path))
    restored.restore_latest()
    assert restored.step == 2 and np.isfinite(fresh.get_weights()[0]).all()


def test_ctrl_c_in_fit_is_recorded_and_raised_at_the_step_end():
    """SIGINT inside the context only records itself (an exception raised deep in TensorFlow's
    C++ calls can be lost); the next batch end raises it; a second SIGINT raises at once; the
    previous handler comes back."""
    previous = signal.getsignal(signal.SIGINT)
    interrupt = callbacks.InterruptAtStepEnd()
    interrupt.on_train_batch_end(0)  # nothing received: no-op
    with interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs at the next bytecode: nothing raised here
        assert interrupt.received == 1
        with pytest.raises(KeyboardInterrupt):
            interrupt.on_train_batch_end(1)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is previous
