"""The trainer's Keras callbacks: NaN guard, checkpoints, metrics files, best model, curves.

Order matters: ``NanGuard`` must come before the callbacks that write state, so that a NaN step
is never checkpointed and the last good checkpoint stays the latest.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import time

import tensorflow as tf
import tf_keras as keras

from deploy.fileio import read_json, write_atomic, write_json
from deploy.plotting import pyplot
from deploy.workdir import Workdir
from trainer.checkpoints import CheckpointState, sigint_handler


class NanGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite or exploding loss, or non-finite weights.

    The rule: a batch's loss (Keras' running mean over the epoch so far) that is NaN or
    infinite, or above ``EXPLOSION_FACTOR`` times ``max(first loss seen, ln(num_classes))``,
    stops the run. Cross-entropy starts near ``ln(num_classes)`` (2.3 for 10 classes) and a
    healthy run only goes down from there; the ``ln`` term keeps a resumed run whose first loss
    is already tiny from tripping on an ordinary bump. A learning rate of 1e6 sends the loss to
    1e8 within a few steps and trips it; nothing a working run does comes near 100x.
    ``check_weights`` (before every checkpoint and at each epoch end) trips it too when an
    update left non-finite weights behind a still-finite loss, so such a state is never saved.
    """

    EXPLOSION_FACTOR = 100.0

    def __init__(self, num_classes: int | None = None):
        """``num_classes``: the classifier's width; None reads it from the model's output (a
        wrapper such as the distillation trainer has none: the trainer passes it)."""
        super().__init__()
        self.num_classes = num_classes
        self.tripped_at: tuple[int, int] | None = None  # (epoch, step)
        self.reason = ""
        self.limit: float | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _trip(self, reason: str) -> None:
        if self.tripped_at is None:
            self.tripped_at = (self._epoch, int(self.model.optimizer.iterations.numpy()))
            self.reason = reason
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or self.tripped:
            return
        loss = float(loss)
        if not math.isfinite(loss):
            self._trip(f"the loss became {loss}")
        elif self.limit is None:
            classes = int(self.num_classes or self.model.output_shape[-1] or 2)
            self.limit = self.EXPLOSION_FACTOR * max(loss, math.log(max(classes, 2)))
        elif loss > self.limit:
            self._trip(
                f"the loss exploded to {loss:.4g} (over {self.limit:.4g}, "
                f"{self.EXPLOSION_FACTOR:g}x its start)"
            )

    def on_epoch_end(self, epoch, logs=None):
        self.check_weights()

    def check_weights(self) -> bool:
        """Whether every weight is finite; trips the guard when one is not."""
        if not self.tripped and not all(
            bool(tf.reduce_all(tf.math.is_finite(w)))
            for w in self.model.weights
            if w.dtype.is_floating  # pruning wrappers hold integer step counters
        ):
            self._trip("the weights became NaN or infinite")
        return not self.tripped

    @property
    def tripped(self) -> bool:
        return self.tripped_at is not None


class InterruptAtStepEnd(keras.callbacks.Callback):
    """Ctrl-C (SIGINT) during ``fit`` takes effect at the end of the current step.

    Used as a context manager around ``fit``: while inside, SIGINT only records itself, and the
    callback raises ``KeyboardInterrupt`` from the next training batch end or epoch end (put it
    last, so the other callbacks finish that step or epoch first), a point where the state is
    consistent. Python's default handler raises wherever the main thread happens to be, and
    inside TensorFlow's C++ calls that exception can be lost: a run then trained on after Ctrl-C
    (seen in the reliability test under load). A second Ctrl-C raises at once. Outside the main
    thread it does nothing (``trainer.checkpoints.sigint_handler``).
    """

    def __init__(self):
        super().__init__()
        self.received = 0
        self._handling = None

    def _record(self, signum, frame):
        del signum, frame
        self.received += 1
        if self.received > 1:
            raise KeyboardInterrupt

    def __enter__(self):
        self._handling = sigint_handler(self._record)
        self._handling.__enter__()
        return self

    def __exit__(self, *exc_info):
        return self._handling.__exit__(*exc_info)

    def _raise_if_interrupted(self, *args, **kwargs):
        del args, kwargs
        if self.received:
            raise KeyboardInterrupt

    on_train_batch_end = _raise_if_interrupted
    on_epoch_end = _raise_if_interrupted


class CheckpointSaver(keras.callbacks.Callback):
    """Saves ``state`` every ``every_steps`` global steps and at each epoch end.

    Args:
      state: the run's ``CheckpointState``.
      every_steps: step interval (0 or less: epoch ends only).
      guard: the run's ``NanGuard``; nothing is saved once it has tripped.
    """

    def __init__(self, state: CheckpointState, every_steps: int, guard: NanGuard):
        super().__init__()
        self.state, self.every_steps, self.guard = state, every_steps, guard

    def on_train_batch_end(self, batch, logs=None):
        if self.guard.tripped or self.every_steps <= 0:
            return
        last_of_epoch = batch + 1 == (self.params or {}).get("steps")
        # The epoch end saves the last step; non-finite weights are never saved.
        due = self.state.step % self.every_steps == 0 and not last_of_epoch
        if due and self.guard.check_weights():
            self.state.save()

    def on_epoch_end(self, epoch, logs=None):
        if not self.guard.tripped:
            self.state.save(epoch=epoch + 1)


def read_metrics_csv(path: str) -> list[dict]:
    """Rows of a ``metrics.csv`` as dicts of floats (``epoch`` as int); [] if absent."""
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        rows = list(csv.DictReader(f))
    # Cells are empty where a row lacks a column (a metric added mid-run): leave those out.
    return [
        {
            key: int(value) if key == "epoch" else float(value)
            for key, value in row.items()
            if value not in ("", None)
        }
        for row in rows
    ]


class MetricsLogger(keras.callbacks.Callback):
    """Keeps ``metrics.csv`` (one row per finished epoch) consistent across resumes.

    Rows of epochs that a resumed run repeats are replaced, so the file never holds duplicates.
    Each row has the epoch (1-based), every Keras log, ``learning_rate`` and ``epoch_seconds``.

    Args:
      path: the CSV file.
      learning_rate: a callable returning the current learning rate.
      guard: the run's ``NanGuard``; a NaN epoch is not logged.
    """

    def __init__(self, path: str, learning_rate, guard: NanGuard):
        super().__init__()
        self.path, self.learning_rate, self.guard = path, learning_rate, guard
        self.rows = read_metrics_csv(path)
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.tripped:
            return
        row = {"epoch": epoch + 1}
        row.update({key: float(value) for key, value in (logs or {}).items()})
        row["learning_rate"] = float(self.learning_rate())
        row["epoch_seconds"] = time.perf_counter() - self._start
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        fields = list(dict.fromkeys(key for r in self.rows for key in r))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        write_atomic(self.path, buffer.getvalue())


class BestModel(keras.callbacks.Callback):
    """Keeps the weights of the best epoch by ``metric`` in the run's ``best/`` directory.

    A ``tf.train.CheckpointManager`` (one checkpoint) holds the weights and ``best.json`` the
    metric, value and epoch, so a resumed run keeps comparing against the right value. Metrics
    whose name contains ``loss`` are minimised, others maximised. ``weights`` is a context
    manager factory holding the weights to save while it is open (``WeightEma.applied`` for a
    ``val_ema_*`` metric: best/ then holds the average that scored it).
    """

    def __init__(
        self,
        model: keras.Model,
        run: Workdir,
        metric: str,
        guard: NanGuard,
        weights=contextlib.nullcontext,
    ):
        super().__init__()
        self.metric, self.guard, self.run, self.weights = metric, guard, run, weights
        self.manager = tf.train.CheckpointManager(
            tf.train.Checkpoint(model=model), run.best, max_to_keep=1
        )
        self.sign = -1.0 if "loss" in metric else 1.0
        self.best = read_json(run.best_json) if tf.io.gfile.exists(run.best_json) else None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.metric)
        if self.guard.tripped or value is None:
            return
        value = float(value)
        if self.best is not None and self.sign * value <= self.sign * self.best["value"]:
            return
        with self.weights():
            path = self.manager.save()
        self.best = {"metric": self.metric, "value": value, "epoch": epoch + 1, "checkpoint": path}
        write_json(self.run.best_json, self.best)


def plot_curves(rows: list[dict], path: str) -> None:
    """Loss and accuracy per epoch (train and validation) as a PNG, with matplotlib's Agg."""
    plt = pyplot()

    epochs = [row["epoch"] for row in rows]
    # Segmentation runs log mIoU instead of top-1.
    score = ("mIoU", ("miou", "val_miou")) if "val_miou" in rows[0] else None
    score = score or ("top-1 accuracy", ("top1", "val_top1"))
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, (title, keys) in zip(axes, (("loss", ("loss", "val_loss")), score), strict=True):
        for key in keys:
            values = [row.get(key) for row in rows]
            if any(v is not None for v in values):
                axis.plot(epochs, values, marker="o", label=key)
        axis.set_xlabel("epoch")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    tf.io.gfile.makedirs(os.path.dirname(path))
    figure.savefig(path, dpi=100)
    plt.close(figure)
