"""Training state on disk: resumable checkpoints, and warm starts from another run.

A checkpoint holds the model (with tfmot's pruning step, a variable inside its wrappers), the
optimizer (its slots and ``iterations``, the global step the learning-rate schedule reads),
the number of finished epochs and, when on, the average of the weights (``trainer/ema.py``).

Why a kill cannot leave a bad "latest": ``tf.train.Checkpoint.write`` assembles the shards in a
temporary location and writes the ``.index`` file last, and ``CheckpointManager`` then updates
its ``checkpoint`` state file with an atomic rename, so the state file only ever names
checkpoints whose files were complete. As a second line of defence ``restore_latest`` falls back
to the previous checkpoint when the newest one cannot be read.

Ctrl-C cannot cut a save short either: ``CheckpointState.save`` holds SIGINT back until the save
has finished (``interrupts_deferred``), then raises the ``KeyboardInterrupt``. An interrupt inside
TensorFlow's saver can leave it half-way, and the trainer's own save on Ctrl-C then waits on it
(the likeliest cause of a hang seen once in the reliability test under load).
"""

from __future__ import annotations

import contextlib
import signal
import threading

import tensorflow as tf
import tf_keras as keras
from absl import logging

from architectures.common import CLASSIFIER_NAME
from deploy import loading
from layers.wrappers import unwrap

CLASSIFIER_LAYERS = (CLASSIFIER_NAME,)


@contextlib.contextmanager
def sigint_handler(handler):
    """Runs the block with ``handler(signum, frame)`` as the SIGINT handler, then restores the
    previous one. Python runs signal handlers in the main thread only, so elsewhere this does
    nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def interrupts_deferred():
    """Holds Ctrl-C (SIGINT) back for the block; raises ``KeyboardInterrupt`` after it if one
    came (main thread only, see ``sigint_handler``)."""
    received = []
    with sigint_handler(lambda signum, frame: received.append(signum)):
        yield
    if received:
        raise KeyboardInterrupt


class CheckpointState:
    """Model, optimizer, epoch and step, saved with a ``tf.train.CheckpointManager``.

    Create it under the strategy scope (the epoch counter is a variable).

    Args:
      model: the model being trained (pruning wrappers included).
      optimizer: its optimizer, already built (so slot variables restore immediately).
      directory: where the chief's checkpoints live (``DIR/checkpoints``); restores read here.
      write_directory: where this process saves; differs from ``directory`` only on non-chief
        workers of a multi-worker run, which must save too but whose files are thrown away.
      max_to_keep: how many recent checkpoints to keep.
      extra: more trackable objects to save and restore by name (the weight average's
        ``{"ema": WeightEma.checkpointable}``).
    """

    def __init__(
        self,
        model: keras.Model,
        optimizer,
        directory: str,
        *,
        write_directory: str | None = None,
        max_to_keep: int = 3,
        extra: dict | None = None,
    ):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.optimizer = optimizer
        self.checkpoint = tf.train.Checkpoint(
            model=model,
            optimizer=optimizer,
            epoch=self.epoch,
            step=optimizer.iterations,
            **(extra or {}),
        )
        self.directory = directory
        self._read = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep)
        write_directory = write_directory or directory
        self._write = (
            self._read
            if write_directory == directory
            else tf.train.CheckpointManager(self.checkpoint, write_directory, max_to_keep)
        )
        self.last_saved_step = -1

    @property
    def step(self) -> int:
        """The global step (``optimizer.iterations``)."""
        return int(self.optimizer.iterations.numpy())

    def save(self, epoch: int | None = None) -> str | None:
        """Saves a new ``ckpt-<n>``, recording ``epoch`` finished epochs if given.

        Numbers come from the checkpoint's own save counter, so a save never overwrites a
        checkpoint the state file names. Returns the path, or None when this step is already
        saved and no epoch changes.
        """
        if epoch is not None:
            self.epoch.assign(epoch)
        step = self.step
        if step == self.last_saved_step and epoch is None:
            return None
        with interrupts_deferred():  # a Ctrl-C waits for the save to finish
            path = self._write.save()
            self.last_saved_step = step
        return path

    def restore_latest(self) -> str | None:
        """Restores the newest readable checkpoint; None when there is none.

        Raises:
          RuntimeError: checkpoints exist but none of them can be read.
        """
        candidates = list(reversed(self._read.checkpoints))
        for path in candidates:
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            # A torn file surfaces as OpError, IndexError, ValueError... depending on which
            # bytes are missing: any failure means "try the older one".
            except Exception as error:  # noqa: BLE001
                logging.warning(
                    "Checkpoint %s is unreadable (%s); trying an older one.", path, error
                )
                continue
            self.last_saved_step = self.step
            return path
        if candidates:
            raise RuntimeError(
                f"None of the checkpoints in {self.directory} can be restored "
                f"({', '.join(candidates)}); remove the directory to start over."
            )
        return None


def _layers_by_name(model: keras.Model) -> dict[str, keras.layers.Layer]:
    return {unwrap(layer).name: unwrap(layer) for layer in model.layers}


def warm_start(model: keras.Model, init_checkpoint: str, *, exclude=CLASSIFIER_LAYERS) -> dict:
    """Copies weights from another run into ``model`` by layer name, classifier excluded.

    Layers whose weights differ in shape (another input size changes nothing, another width
    does) are skipped and reported.

    Returns:
      ``{"loaded": [names], "skipped": [names]}``.

    Raises:
      ValueError: ``init_checkpoint`` is unusable, or no layer matched at all.
    """
    source = _layers_by_name(loading.load_source_model(init_checkpoint))
    loaded, skipped = [], []
    for name, layer in _layers_by_name(model).items():
        if not layer.weights or name in exclude or name not in source:
            continue
        weights = source[name].get_weights()
        if [w.shape for w in weights] != [tuple(w.shape) for w in layer.get_weights()]:
            skipped.append(name)
            continue
        layer.set_weights(weights)
        loaded.append(name)
    if not loaded:
        raise ValueError(
            f"config.init_checkpoint='{init_checkpoint}' shares no layer (by name and shape) "
            f"with model '{model.name}'; is it the same architecture?"
        )
    logging.info(
        "Warm start from %s: %d layers loaded, %s skipped.",
        init_checkpoint,
        len(loaded),
        skipped or "none",
    )
    return {"loaded": loaded, "skipped": skipped}
