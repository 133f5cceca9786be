"""trainer.runtime: strategy choice, precision, chief election, and two real multi-worker
processes on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf
import tf_keras as keras

from configs.common import get_base_config
from trainer import runtime

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture
def float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_validate_names_the_key(monkeypatch):
    cfg = get_base_config().runtime
    cfg.strategy = "horovod"
    with pytest.raises(ValueError, match="config.runtime.strategy='horovod'"):
        runtime.validate(cfg)
    cfg.strategy, cfg.precision = "auto", "float8"
    with pytest.raises(ValueError, match="config.runtime.precision='float8'"):
        runtime.validate(cfg)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    cfg.strategy, cfg.precision = "multi_worker_mirrored", "float32"
    with pytest.raises(ValueError, match="TF_CONFIG"):
        runtime.validate(cfg)


def test_strategies_on_this_machine():
    cfg = get_base_config().runtime
    auto = runtime.make_strategy(cfg)
    expected = (
        tf.distribute.MirroredStrategy
        if len(tf.config.list_physical_devices("GPU")) > 1
        else tf.distribute.OneDeviceStrategy
    )
    assert isinstance(auto.strategy, expected) and auto.is_chief
    cfg.strategy = "mirrored"
    mirrored = runtime.make_strategy(cfg)
    assert isinstance(mirrored.strategy, tf.distribute.MirroredStrategy)
    assert mirrored.write_dir("/run/x") == "/run/x"


@pytest.mark.parametrize(
    "task_type, task_id, cluster, chief",
    [
        (None, None, {}, True),
        ("chief", 0, {"chief": ["a"], "worker": ["b"]}, True),
        ("worker", 0, {"chief": ["a"], "worker": ["b"]}, False),
        ("worker", 0, {"worker": ["a", "b"]}, True),
        ("worker", 1, {"worker": ["a", "b"]}, False),
    ],
)
def test_chief_election(task_type, task_id, cluster, chief):
    assert runtime._is_chief(task_type, task_id, {"cluster": cluster}) is chief


def test_non_chief_writes_to_a_scratch_dir_it_removes():
    rt = runtime.Runtime(tf.distribute.get_strategy(), is_chief=False, task_id=1)
    path = rt.write_dir("/run/checkpoints")
    assert path != "/run/checkpoints" and path.endswith("checkpoints")
    scratch = os.path.dirname(path)
    assert os.path.isdir(scratch)
    rt.cleanup()
    assert not os.path.exists(scratch)


@pytest.mark.parametrize(
    "precision, policy", [("float16", "mixed_float16"), ("bfloat16", "mixed_bfloat16")]
)
def test_mixed_precision_gives_float32_loss_inputs(float32_policy, precision, policy):
    cfg = get_base_config().runtime
    cfg.precision = precision
    rt = runtime.setup(cfg)
    assert keras.mixed_precision.global_policy().name == policy
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3)(inputs)
    outputs = keras.layers.Activation("softmax", dtype="float32")(hidden)
    assert hidden.dtype == precision and outputs.dtype == tf.float32
    optimizer = runtime.wrap_optimizer(keras.optimizers.SGD(), precision)
    assert isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer) == (
        precision == "float16"
    )
    assert rt.is_chief


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


WORKER = textwrap.dedent(
    """
    import os
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import sys
    import tf_keras as keras
    from architectures import register_model
    from configs.common import get_base_config
    import trainer

    # A tiny model: tracing the distributed step dominates, and it grows with the layer count.
    @register_model(input_size=32, min_input_size=8)
    def tiny_test_net(*, input_shape, num_classes, name, dropout=None):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(8, 3, strides=2, use_bias=False, name="conv")(inputs)
        x = keras.layers.BatchNormalization(name="conv_bn")(x)
        x = keras.layers.ReLU(name="conv_relu")(x)
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(num_classes, name="classifier")(x)
        outputs = keras.layers.Activation("softmax", dtype="float32", name="predictions")(x)
        return keras.Model(inputs, outputs, name=name)

    config = get_base_config()
    config.model.name = "tiny_test_net"
    config.data.image_size = 32
    config.train.epochs = 1
    config.train.batch_size = 16
    config.train.steps_per_epoch = 3
    config.train.eval_steps = 1
    config.train.checkpoint_every_steps = 2
    config.train.verbose = 0
    config.runtime.strategy = "multi_worker_mirrored"
    config.export.formats = "keras"
    metrics = trainer.run(config, sys.argv[1])
    print("STEPS", metrics["final"]["steps"])
    """
)


@pytest.mark.slow
def test_two_multi_worker_processes_train_and_only_the_chief_keeps_files(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    workdir = tmp_path / "run"
    hosts = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        env = dict(
            os.environ,
            PYTHONPATH=ROOT,
            TMPDIR=str(scratch),
            CUDA_VISIBLE_DEVICES="",
            TF_CONFIG=json.dumps(
                {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
            ),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(workdir)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=480)
        outputs.append(out)
        assert proc.returncode == 0, out[-3000:]
    assert all("STEPS 3" in out for out in outputs), [out[-500:] for out in outputs]
    assert tf.train.latest_checkpoint(str(workdir / "checkpoints")) is not None
    assert (workdir / "metrics.json").exists() and (workdir / "export" / "model.keras").exists()
    # The non-chief saved too (every worker must), but into scratch space it removed.
    assert not any((tmp_path / "tmp1").iterdir())
