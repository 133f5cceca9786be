"""Timing that holds up on a busy machine: warm-up, interleaved repeats, min/median/max.

Alternatives are timed round-robin within one run (A, B, C, A, B, C, ...), so drift in machine load
hits all of them alike and their *ratios* stay meaningful even when absolute times wobble.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds per call of one candidate over the repeats."""

    min_s: float
    median_s: float
    max_s: float

    @property
    def median_ms(self) -> float:
        return self.median_s * 1e3


def sync(result) -> None:
    """Waits for asynchronous device work by pulling one value to the host."""
    import tensorflow as tf

    tensors = tf.nest.flatten(result)
    if tensors and hasattr(tensors[0], "numpy"):
        tensors[0].numpy()


def time_interleaved(
    candidates: Mapping[str, Callable[[], object]],
    *,
    repeats: int = 5,
    calls_per_repeat: int = 3,
    warmup: int = 2,
) -> dict[str, Timing]:
    """Times several zero-argument callables against each other.

    Args:
      candidates: name -> callable; each call runs the work once (e.g. a ``tf.function`` step).
      repeats: measurements per candidate; the statistics are over these.
      calls_per_repeat: calls averaged inside one measurement.
      warmup: untimed calls per candidate first (tracing, autotuning, caches).

    Returns:
      name -> ``Timing`` in seconds per call.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            sync(fn())
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            for _ in range(calls_per_repeat):
                result = fn()
            sync(result)
            samples[name].append((time.perf_counter() - start) / calls_per_repeat)
    return {
        name: Timing(min(values), statistics.median(values), max(values))
        for name, values in samples.items()
    }


def keras_steps(model, images, labels, *, jit_compile: bool = False):
    """Compiles ``model`` and returns ``(train_step, infer_step)`` zero-argument callables.

    The train step is Keras' own compiled train function (exactly what ``fit`` runs) on one fixed
    batch repeated, so input pipelines stay out of the measurement; SGD with momentum and sparse
    cross-entropy, the same for every model timed.
    """
    import tensorflow as tf
    import tf_keras as keras

    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        jit_compile=jit_compile,
    )
    batches = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
    train_function = model.make_train_function()

    @tf.function(jit_compile=jit_compile)
    def infer():
        return model(images, training=False)

    return (lambda: train_function(batches)), infer


def reset_peak_memory() -> None:
    """Resets the process's peak resident memory (Linux ``VmHWM``) so the next peak is fresh."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_mb() -> float | None:
    """Peak memory since the last reset: GPU allocator peak if a GPU is used, else host VmHWM."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        info = tf.config.experimental.get_memory_info("GPU:0")
        return info["peak"] / 2**20
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_device_peak() -> None:
    """Resets both the GPU allocator's peak statistic (if any) and the host peak."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        tf.config.experimental.reset_memory_stats("GPU:0")
    reset_peak_memory()
