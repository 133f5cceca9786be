"""Exponential moving average of the weights (``config.train.ema_decay``).

After every optimizer step ``t`` (1 for the first step, read from ``optimizer.iterations`` so a
resumed run continues the same sequence) each averaged variable's shadow ``s`` becomes::

    decay_t = min(decay, (1 + t) / (10 + t))
    s <- decay_t * s + (1 - decay_t) * w

the warm-up of ``tf.train.ExponentialMovingAverage(num_updates=...)``, which the TF-slim and TF
models recipes of the papers use (early, still random weights fade out quickly). What is
averaged follows timm's ``ModelEmaV2`` (the whole state dict): every trainable weight and every
batch-norm layer's moving mean and variance, so the averaged network is evaluated with averaged
statistics. Other variables (tfmot's pruning masks, thresholds and step) are not averaged: the
pruning wrapper masks whatever kernel it holds on each call, the averaged one included.

The shadows are checkpointed with the run (``CheckpointState(..., extra=...)``),
``EmaCallback`` updates them and validates the averaged weights after each epoch
(``val_ema_*`` beside ``val_*`` in metrics.csv), and ``config.train.export_ema`` copies them
into the model before the final evaluation and export.
"""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from configs import validation  # noqa: E402

# The decay warm-up of tf.train.ExponentialMovingAverage: min(decay, (1 + t) / (WARMUP + t)).
WARMUP = 10.0


def is_enabled(train_config) -> bool:
    """Whether ``config.train.ema_decay`` turns the average on (None or 0 is off)."""
    return bool(train_config.ema_decay)


def validate(train_config) -> None:
    """``ema_decay`` is None or in [0, 1); ``export_ema`` a bool."""
    validation.check_range(
        train_config, "ema_decay", low=0.0, high=1.0, high_open=True, optional=True, prefix="train."
    )
    validation.check_bool(train_config, "export_ema", "train.")


def averaged_variables(model: keras.Model) -> list[tf.Variable]:
    """The variables the average covers: trainable weights, then batch-norm moving statistics."""
    moving = [
        variable
        for layer in model.submodules
        if isinstance(layer, keras.layers.BatchNormalization)
        for variable in (layer.moving_mean, layer.moving_variance)
    ]
    return list(model.trainable_weights) + moving


def scores_average(train_config) -> bool:
    """Whether ``train.best_metric`` is a score of the average (``val_ema_*``)."""
    return is_enabled(train_config) and train_config.best_metric.startswith("val_ema_")


def exported_weights(train_config) -> str:
    """``"ema"`` when the average is on and exported (``export_ema``), else ``"raw"``."""
    return "ema" if is_enabled(train_config) and train_config.export_ema else "raw"


class WeightEma:
    """The shadow (averaged) copy of a model's weights.

    Create it under the strategy scope, after the model's weights are final for step 0 (a warm
    start or pretrained weights included): the shadows start as copies of them.

    Args:
      model: the model being trained (its variables are averaged, see ``averaged_variables``).
      decay: the decay after warm-up, in (0, 1).
      step: the optimizer's ``iterations`` variable (the number of steps taken).
    """

    def __init__(self, model: keras.Model, decay: float, step: tf.Variable):
        self.decay = float(decay)
        self._step = step
        self._live = averaged_variables(model)
        # What a checkpoint saves: the shadows alone (the model and step are saved anyway).
        self.checkpointable = tf.Module(name="ema")
        self.checkpointable.shadows = [
            tf.Variable(tf.cast(v.read_value(), tf.float32), trainable=False, name="ema")
            for v in self._live
        ]
        self.shadows = list(self.checkpointable.shadows)

    def decay_at(self, step) -> tf.Tensor:
        """``min(decay, (1 + t) / (10 + t))`` for ``t`` steps taken."""
        t = tf.cast(step, tf.float32)
        return tf.minimum(self.decay, (1.0 + t) / (WARMUP + t))

    @tf.function
    def update(self) -> None:
        """Moves every shadow towards its variable after an optimizer step."""
        decay = self.decay_at(self._step)
        for shadow, live in zip(self.shadows, self._live, strict=True):
            shadow.assign(decay * shadow + (1.0 - decay) * tf.cast(live, tf.float32))

    def copy_to_model(self) -> None:
        """Overwrites the model's averaged variables with the shadows (for export)."""
        for shadow, live in zip(self.shadows, self._live, strict=True):
            live.assign(tf.cast(shadow, live.dtype))

    @contextlib.contextmanager
    def applied(self):
        """Inside the block the model holds the averaged weights; its own come back after."""
        saved = [tf.identity(live.read_value()) for live in self._live]
        self.copy_to_model()
        try:
            yield
        finally:
            for live, value in zip(self._live, saved, strict=True):
                live.assign(value)


class EmaCallback(keras.callbacks.Callback):
    """Updates the average after each step and validates it after each epoch.

    Adds ``val_ema_<metric>`` for every validation metric to the epoch's logs, so it must come
    before the callbacks that write them (metrics.csv, the best model).

    Args:
      ema: the run's ``WeightEma``.
      validation_data: the validation dataset (as given to ``fit``).
      validation_steps: ``config.train.eval_steps``.
      guard: the run's ``NanGuard``; nothing is averaged or validated once it has tripped.
    """

    def __init__(self, ema: WeightEma, validation_data, validation_steps, guard):
        super().__init__()
        self.ema, self.val, self.steps, self.guard = ema, validation_data, validation_steps, guard

    def on_train_batch_end(self, batch, logs=None):
        if not self.guard.tripped:
            self.ema.update()

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.tripped or logs is None:
            return
        with self.ema.applied():
            scores = self.model.evaluate(self.val, steps=self.steps, return_dict=True, verbose=0)
        logs.update({f"val_ema_{name}": float(value) for name, value in scores.items()})
