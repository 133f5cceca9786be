"""Where and how training runs: distribution strategy, precision, XLA, seeds, determinism.

``setup(config.runtime)`` must run before any other TensorFlow work: a multi-worker strategy
has to be created before ops are placed, and the mixed-precision policy before layers are built.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

import tensorflow as tf
import tf_keras as keras

from configs import validation

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
PRECISIONS = ("float32", "float16", "bfloat16")
_POLICIES = {"float32": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


@dataclasses.dataclass
class Runtime:
    """The distribution context of this process.

    Attributes:
      strategy: the ``tf.distribute.Strategy`` to build and train under.
      is_chief: whether this process writes the run's files (always True on one machine).
      task_id: this worker's index in the cluster (0 on one machine).
      jit_compile: passed to ``model.compile``.
    """

    strategy: tf.distribute.Strategy
    is_chief: bool = True
    task_id: int = 0
    jit_compile: bool = False
    _scratch: list[str] = dataclasses.field(default_factory=list)

    def write_dir(self, path: str) -> str:
        """``path`` for the chief; a private temporary directory for any other worker.

        Every worker must take part in saving under a multi-worker strategy, but only the
        chief's copy is kept (TensorFlow's recommended pattern); see ``cleanup``.
        """
        if self.is_chief:
            return path
        scratch = tempfile.mkdtemp(prefix=f"worker{self.task_id}_")
        self._scratch.append(scratch)
        return os.path.join(scratch, os.path.basename(os.path.normpath(path)))

    def cleanup(self) -> None:
        """Removes a non-chief worker's temporary write directories."""
        for scratch in self._scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        self._scratch.clear()


def validate(runtime_config) -> None:
    """Checks ``config.runtime`` without touching any device.

    Raises:
      ValueError: naming the bad key and its allowed values.
    """
    validation.check_choice(runtime_config, "strategy", STRATEGIES, "runtime.")
    validation.check_choice(runtime_config, "precision", PRECISIONS, "runtime.")
    validation.require(
        runtime_config.strategy != "multi_worker_mirrored" or "TF_CONFIG" in os.environ,
        "strategy",
        runtime_config.strategy,
        "reads the cluster from the TF_CONFIG environment variable, which is not set",
        "runtime.",
    )


def _is_chief(task_type: str | None, task_id: int | None, tf_config: dict) -> bool:
    """TensorFlow's convention: the ``chief`` task, or worker 0 when there is no chief."""
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in tf_config.get("cluster", {})
    return task_type == "worker" and task_id == 0 and not has_chief


def make_strategy(runtime_config) -> Runtime:
    """Creates the strategy ``config.runtime.strategy`` names (see ``STRATEGIES``)."""
    name = runtime_config.strategy
    gpus = tf.config.list_physical_devices("GPU")
    if name == "multi_worker_mirrored":
        tf_config = json.loads(os.environ["TF_CONFIG"])
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        resolver = strategy.cluster_resolver
        return Runtime(
            strategy,
            is_chief=_is_chief(resolver.task_type, resolver.task_id, tf_config),
            task_id=int(resolver.task_id or 0),
        )
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=runtime_config.tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return Runtime(tf.distribute.TPUStrategy(resolver))
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return Runtime(tf.distribute.MirroredStrategy())
    device = "/gpu:0" if gpus else "/cpu:0"
    return Runtime(tf.distribute.OneDeviceStrategy(device))


def set_precision(precision: str) -> None:
    """Sets the global Keras mixed-precision policy (``float32`` turns it off)."""
    keras.mixed_precision.set_global_policy(_POLICIES[precision])


def setup(runtime_config) -> Runtime:
    """Seeds, determinism, precision and strategy, in the order TensorFlow needs them."""
    validate(runtime_config)
    runtime = make_strategy(runtime_config)
    keras.utils.set_random_seed(runtime_config.seed)
    if runtime_config.deterministic:
        tf.config.experimental.enable_op_determinism()
    set_precision(runtime_config.precision)
    runtime.jit_compile = bool(runtime_config.jit_compile)
    return runtime


def wrap_optimizer(optimizer, precision: str):
    """Float16 needs dynamic loss scaling against gradient underflow; bfloat16 does not."""
    if precision == "float16":
        return keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer
