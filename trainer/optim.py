"""Optimizers, learning-rate schedules and weight-decay rules, built from ``config.optim``.

Weight decay is an L2 penalty added to the loss (``rate * sum(w**2) / 2`` per kernel, i.e. a
gradient of ``rate * w``), because that is how the papers train: TF-slim's MobileNet, ShuffleNet
and Xception recipes attach ``l2_regularizer(weight_decay)`` to kernels and the ResNet/ResNeXt
recipes use SGD ``weight_decay``, which is the same gradient. The penalty is attached to the
model with ``add_loss`` (so Keras averages it correctly across replicas) and never saved with
the model. AdamW is the exception: its decay is decoupled by definition, so it uses the
optimizer's own ``weight_decay`` and skips the penalty.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

OPTIMIZERS = ("sgd", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step", "exponential", "linear")

# Weight roles by the name of the layer attribute that holds them: ``*depthwise*kernel`` has its
# own rate, every other ``*kernel`` (conv, dense, pointwise, grouped, spatial factors) gets
# ``weight_decay``; biases and batch-norm weights get none.
_DEPTHWISE_MARK = "depthwise"
_KERNEL_SUFFIX = "kernel"


@keras.saving.register_keras_serializable(package="lightnets")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup followed by a constant, cosine, step, exponential or linear decay.

    The schedule is a pure function of the optimizer's step, so a resumed run (whose
    ``optimizer.iterations`` is restored from the checkpoint) continues at the same position.

    For ``step < warmup_steps`` the rate is ``peak * (step + 1) / warmup_steps``. After warmup,
    with ``t = step - warmup_steps`` and ``T = total_steps - warmup_steps``:

    - ``constant``: ``peak``
    - ``cosine``: ``floor + (peak - floor) * (1 + cos(pi * min(t, T) / T)) / 2``
    - ``linear``: ``peak - (peak - floor) * min(t, T) / T``
    - ``step``: ``peak * decay_rate ** floor(step / decay_steps)``, at least ``floor``
    - ``exponential``: ``peak * decay_rate ** (step / decay_steps)``, at least ``floor``

    Step and exponential decay count from step 0, as "decay every 30 epochs" recipes mean.

    Args:
      kind: one of ``SCHEDULES``.
      peak: the rate reached after warmup (already scaled for the batch size).
      total_steps: steps of the whole run.
      warmup_steps: linear warmup length, 0 for none.
      decay_steps: period of step and exponential decay.
      decay_rate: factor per period for step and exponential decay.
      floor: the minimum rate after warmup (``min_learning_rate``).
    """

    def __init__(
        self,
        kind: str,
        peak: float,
        total_steps: int,
        warmup_steps: int = 0,
        decay_steps: int = 1,
        decay_rate: float = 0.1,
        floor: float = 0.0,
    ):
        super().__init__()
        if kind not in SCHEDULES:
            raise ValueError(f"Unknown schedule '{kind}'; use one of {', '.join(SCHEDULES)}.")
        if total_steps < 1 or warmup_steps < 0 or decay_steps < 1:
            raise ValueError(
                f"Schedule needs total_steps >= 1, warmup_steps >= 0 and decay_steps >= 1; got "
                f"{total_steps}, {warmup_steps}, {decay_steps}."
            )
        self.kind = kind
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = int(decay_steps)
        self.decay_rate = float(decay_rate)
        self.floor = float(floor)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        peak, floor = tf.constant(self.peak), tf.constant(self.floor)
        warmup = float(self.warmup_steps)
        span = float(max(self.total_steps - self.warmup_steps, 1))
        progress = tf.clip_by_value((step - warmup) / span, 0.0, 1.0)
        if self.kind == "constant":
            decayed = peak
        elif self.kind == "cosine":
            decayed = floor + (peak - floor) * 0.5 * (1.0 + tf.cos(math.pi * progress))
        elif self.kind == "linear":
            decayed = peak - (peak - floor) * progress
        elif self.kind == "step":
            periods = tf.floor(step / self.decay_steps)
            decayed = tf.maximum(peak * tf.pow(self.decay_rate, periods), floor)
        else:  # exponential
            decayed = tf.maximum(peak * tf.pow(self.decay_rate, step / self.decay_steps), floor)
        if self.warmup_steps == 0:
            return decayed
        warming = peak * (step + 1.0) / warmup
        return tf.where(step < warmup, warming, decayed)

    def get_config(self):
        return {
            "kind": self.kind,
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "floor": self.floor,
        }


def scaled_learning_rate(optim_config, batch_size: int) -> float:
    """The linear scaling rule: ``learning_rate * batch_size / base_batch_size``."""
    return optim_config.learning_rate * batch_size / optim_config.base_batch_size


def build_schedule(
    optim_config, *, steps_per_epoch: int, total_steps: int, batch_size: int
) -> WarmupSchedule:
    """The learning-rate schedule ``config.optim`` describes, for a global ``batch_size``.

    Epoch-valued keys (``warmup_epochs``, ``decay_epochs``) become steps with ``steps_per_epoch``.
    """
    return WarmupSchedule(
        kind=optim_config.schedule,
        peak=scaled_learning_rate(optim_config, batch_size),
        total_steps=total_steps,
        warmup_steps=int(round(optim_config.warmup_epochs * steps_per_epoch)),
        decay_steps=max(1, int(round(optim_config.decay_epochs * steps_per_epoch))),
        decay_rate=optim_config.decay_rate,
        floor=optim_config.min_learning_rate,
    )


def build_optimizer(optim_config, learning_rate) -> keras.optimizers.Optimizer:
    """A tf_keras optimizer named by ``optim_config.name`` with ``learning_rate`` (a schedule).

    Raises:
      ValueError: unknown ``optim.name``.
    """
    name = optim_config.name
    common = {"learning_rate": learning_rate, "clipnorm": optim_config.clipnorm}
    if name == "sgd":
        return keras.optimizers.SGD(
            momentum=optim_config.momentum, nesterov=optim_config.nesterov, **common
        )
    if name == "rmsprop":
        return keras.optimizers.RMSprop(
            rho=optim_config.rho,
            momentum=optim_config.momentum,
            epsilon=optim_config.epsilon,
            **common,
        )
    if name == "adam":
        return keras.optimizers.Adam(epsilon=optim_config.epsilon, **common)
    if name == "adamw":
        return keras.optimizers.AdamW(
            weight_decay=optim_config.weight_decay, epsilon=optim_config.epsilon, **common
        )
    raise ValueError(f"Unknown config.optim.name '{name}'; use one of {', '.join(OPTIMIZERS)}.")


def decay_groups(model: keras.Model) -> tuple[list[tf.Variable], list[tf.Variable]]:
    """Splits a model's trainable weights into (depthwise kernels, other kernels).

    Weights are identified by the attribute that holds them on their layer (``depthwise_kernel``,
    ``kernel``, ``pointwise_kernel``, ``vertical_kernel``, ...), which covers Keras layers,
    lightnets layers and the layers inside tfmot's pruning wrappers alike. Batch-norm weights
    and biases are in neither group.
    """
    trainable = {v.ref() for v in model.trainable_weights}
    depthwise, kernels, seen = [], [], set()
    for module in [model, *model.submodules]:
        if not isinstance(module, keras.layers.Layer) or isinstance(
            module, keras.layers.BatchNormalization
        ):
            continue
        for attr, var in sorted(vars(module).items()):
            if (
                not attr.endswith(_KERNEL_SUFFIX)
                or not isinstance(var, tf.Variable)
                or var.ref() not in trainable
                or var.ref() in seen
            ):
                continue
            seen.add(var.ref())
            (depthwise if _DEPTHWISE_MARK in attr else kernels).append(var)
    return depthwise, kernels


def l2_penalty(variables: list[tf.Variable], rate: float) -> tf.Tensor:
    """``rate * sum(w**2) / 2`` over ``variables`` in float32 (TF-slim's ``l2_regularizer``)."""
    if not variables or not rate:
        return tf.constant(0.0)
    return rate * tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in variables])


def add_weight_decay(model: keras.Model, optim_config) -> None:
    """Adds the L2 weight-decay penalty of ``config.optim`` to ``model.losses``.

    Does nothing for AdamW, whose decay is decoupled and lives in the optimizer; there, biases
    and batch-norm weights are excluded from decay as well (see ``exclude_from_decay``).
    """
    if optim_config.name == "adamw":
        return
    depthwise, kernels = decay_groups(model)
    rate, depthwise_rate = optim_config.weight_decay, optim_config.depthwise_weight_decay
    if rate or depthwise_rate:
        model.add_loss(lambda: l2_penalty(kernels, rate) + l2_penalty(depthwise, depthwise_rate))


def exclude_from_decay(optimizer, model: keras.Model, optim_config) -> None:
    """For AdamW: decoupled decay only on kernels (and depthwise kernels if their rate is set)."""
    if optim_config.name != "adamw":
        return
    depthwise, kernels = decay_groups(model)
    decayed = {v.ref() for v in kernels}
    if optim_config.depthwise_weight_decay:
        decayed |= {v.ref() for v in depthwise}
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in model.trainable_weights if v.ref() not in decayed]
    )


def build_loss(label_smoothing: float) -> keras.losses.Loss:
    """Cross-entropy on one-hot labels (the trainer one-hot encodes them) with smoothing."""
    return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)


def build_metrics(num_classes: int) -> list[keras.metrics.Metric]:
    """``top1`` and ``top5`` accuracy on one-hot labels (top-k capped at ``num_classes``)."""
    return [
        keras.metrics.CategoricalAccuracy(name="top1"),
        keras.metrics.TopKCategoricalAccuracy(k=min(5, num_classes), name="top5"),
    ]
