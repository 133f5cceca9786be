"""Knowledge distillation (Hinton et al., 2015): ``config.distill.teacher``, ``alpha``, ``temperature``.

The student trains on::

    loss = (1 - alpha) * CE(labels, softmax(z_s)) + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))

per example, averaged over the batch, plus the student's weight-decay penalty. ``z`` are the
logits, the input of each model's float32 ``predictions`` softmax (so the temperature divides
logits, not log-probabilities of a saturated softmax). ``CE`` is the run's loss (label smoothing
included) and the labels are whatever the input pipeline made of them (mixed, for mixup/CutMix);
the teacher sees the same augmented batch, in inference mode (``training=False``: its batch
norm uses its moving statistics and dropout is off), and is never updated.

``Distiller`` wraps the student for ``fit`` and ``evaluate`` only: checkpoints, the best model,
the average of the weights and the export all hold the student alone, so a distilled run
resumes, evaluates and exports like any other. Validation is the student's plain loss and
accuracy.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from architectures.common import PREDICTIONS_NAME  # noqa: E402
from configs import validation  # noqa: E402
from layers.wrappers import unwrap  # noqa: E402


def is_enabled(distill_config) -> bool:
    """Whether ``config.distill.teacher`` names a teacher."""
    return bool(distill_config.teacher)


def validate(distill_config) -> None:
    """``alpha`` in [0, 1], ``temperature`` > 0, ``teacher`` a string."""
    validation.require(
        isinstance(distill_config.teacher, str),
        "teacher",
        distill_config.teacher,
        "must be a workdir, a .keras file or a registered model name",
        "distill.",
    )
    validation.check_range(distill_config, "alpha", low=0.0, high=1.0, prefix="distill.")
    validation.check_range(distill_config, "temperature", low=0.0, low_open=True, prefix="distill.")


def soft_target_loss(student_logits, teacher_logits, temperature: float) -> tf.Tensor:
    """``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))`` per example, float32 ``[B]``."""
    t = float(temperature)
    student = tf.nn.log_softmax(tf.cast(student_logits, tf.float32) / t, axis=-1)
    teacher = tf.nn.log_softmax(tf.cast(teacher_logits, tf.float32) / t, axis=-1)
    return t * t * tf.reduce_sum(tf.exp(teacher) * (teacher - student), axis=-1)


def distillation_loss(
    labels,
    student_logits,
    teacher_logits,
    *,
    alpha: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> tf.Tensor:
    """The per-example distillation loss ``[B]`` (module docstring) on logits."""
    hard = keras.losses.categorical_crossentropy(
        labels,
        tf.cast(student_logits, tf.float32),
        from_logits=True,
        label_smoothing=label_smoothing,
    )
    return (1.0 - alpha) * hard + alpha * soft_target_loss(
        student_logits, teacher_logits, temperature
    )


def logits_model(model: keras.Model) -> keras.Model:
    """A model sharing ``model``'s layers that returns its logits (the softmax's input).

    The softmax is found through the model's own output, not by name alone: a model rebuilt
    around the same layer objects (tfmot's pruning wrappers reuse the unwrapped ones) calls
    that layer once per graph, and only this model's call connects to its input. A wrapped
    softmax (quantization-aware training's ``quant_predictions``) is looked through.

    Raises:
      ValueError: ``model`` does not end in a ``predictions`` layer (not a lightnets classifier).
    """
    layer, node_index, _ = model.outputs[0]._keras_history
    if unwrap(layer).name != PREDICTIONS_NAME:
        raise ValueError(
            f"Model '{model.name}' does not end in a '{PREDICTIONS_NAME}' layer, so its logits "
            f"are unknown; distill from a lightnets workdir, .keras file or registered model."
        )
    return keras.Model(model.inputs, layer.get_input_at(node_index), name=f"{model.name}_logits")


def load_teacher(teacher: str, *, image_size: int, num_classes: int) -> keras.Model:
    """The teacher of ``config.distill.teacher``, frozen, checked against the student's data.

    Raises:
      ValueError: unloadable teacher, or its input size or class count does not fit.
    """
    label = "config.distill.teacher"
    if os.path.exists(teacher) or teacher.endswith(".keras"):
        from deploy import loading

        model = loading.load_source_model(teacher, label)
    else:
        import architectures

        try:
            architectures.get_model_spec(teacher)
        except ValueError as error:
            raise ValueError(
                f"{label}='{teacher}' is neither a workdir, a .keras file nor a registered "
                f"model. {error}"
            ) from None
        model = architectures.create_model(
            teacher, pretrained="imagenet", input_shape=(image_size, image_size, 3)
        )
    shape = tuple(model.input_shape[1:])
    classes = int(model.output_shape[-1])
    if shape != (image_size, image_size, 3) or classes != num_classes:
        raise ValueError(
            f"{label}='{teacher}' takes {shape} and predicts {classes} classes, but the student "
            f"trains on {(image_size, image_size, 3)} images of {num_classes} classes; use a "
            f"teacher trained on the same data and image size."
        )
    model.trainable = False
    return model


class Distiller(keras.Model):
    """The student, trained against a frozen teacher; ``call`` and ``evaluate`` are the student's.

    Args:
      student: the model being trained (owns every trainable variable).
      teacher: the frozen teacher (``load_teacher``); not tracked, so it is never saved.
      alpha: weight of the soft-target term.
      temperature: softmax temperature ``T``.
      label_smoothing: the run's label smoothing, applied to the hard term.
    """

    def __init__(self, student, teacher, *, alpha, temperature, label_smoothing=0.0):
        super().__init__(name=f"{student.name}_distilled")
        self.student = student
        self._student_logits = logits_model(student)
        # Untracked: the teacher's weights must not join this model's variables, checkpoints
        # or the pruning callbacks' walk over its layers.
        self._self_setattr_tracking = False
        self._teacher_logits = logits_model(teacher)
        self._self_setattr_tracking = True
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.label_smoothing = float(label_smoothing)
        self.soft_loss_tracker = keras.metrics.Mean(name="distill_kl")

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def test_step(self, data):
        logs = super().test_step(data)
        logs.pop(self.soft_loss_tracker.name, None)  # a training-only term
        return logs

    def train_step(self, data):
        images, labels = data
        teacher_logits = self._teacher_logits(images, training=False)
        with tf.GradientTape() as tape:
            student_logits = self._student_logits(images, training=True)
            per_example = distillation_loss(
                labels,
                student_logits,
                teacher_logits,
                alpha=self.alpha,
                temperature=self.temperature,
                label_smoothing=self.label_smoothing,
            )
            # Averaged over the global batch, so replicas' gradients sum to the batch mean.
            loss = tf.nn.compute_average_loss(per_example)
            if self.student.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.student.losses))
        self.optimizer.minimize(loss, self.student.trainable_variables, tape=tape)
        probabilities = tf.nn.softmax(tf.cast(student_logits, tf.float32))
        self.compiled_loss(labels, probabilities, regularization_losses=self.student.losses)
        self.compiled_metrics.update_state(labels, probabilities)
        self.soft_loss_tracker.update_state(
            soft_target_loss(student_logits, teacher_logits, self.temperature)
        )
        return {metric.name: metric.result() for metric in self.metrics}
