"""What differs between ``config.task``\\ s, in one place: label encoding, loss, metrics, scores.

The trainer asks this module instead of branching itself:

* ``classification``: one-hot labels, categorical cross-entropy (label smoothing), ``top1`` and
  ``top5``;
* ``segmentation``: integer masks ``[B, H, W]`` with 255 = ignore, per-pixel sparse
  cross-entropy on logits over the labelled pixels only, and ``miou``, ``pixel_accuracy`` and
  ``iou_<class>`` from a streaming confusion matrix (``ConfusionMatrixMetric``).
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from configs import validation
from deploy.segmentation_metrics import IGNORE_LABEL
from trainer import optim
from trainer.data import mixing
from trainer.data.segmentation import is_segmentation_source

TASKS = ("classification", "segmentation")
BEST_METRICS = {
    "classification": ("val_top1", "val_top5", "val_loss", "top1", "top5", "loss"),
    "segmentation": ("val_miou", "val_pixel_accuracy", "val_loss", "miou", "loss"),
}


def validate(config, spec) -> None:
    """Checks ``config.task`` against the model's task, the data source and ``best_metric``.

    Raises:
      ValueError: naming the key, its value and the fix.
    """
    task = validation.check_choice(config, "task", TASKS)
    validation.require(
        spec.task == task,
        "task",
        task,
        f"does not fit model '{spec.name}', a {spec.task} model: set --config.task={spec.task} "
        f"or choose a {task} model",
    )
    source = config.data.source
    validation.require(
        is_segmentation_source(source) == (task == "segmentation"),
        "data.source",
        source,
        f"is not a {task} source: "
        + (
            "segmentation trains on shapes or segfolder:<dir>"
            if task == "segmentation"
            else "shapes and segfolder:<dir> are for config.task=segmentation"
        ),
    )
    # With an EMA, the average's validation scores (val_ema_*, trainer/ema.py) can pick best/.
    averaged = tuple(f"val_ema_{m[4:]}" for m in BEST_METRICS[task] if m.startswith("val_"))
    best = config.train.best_metric
    validation.require(
        best not in averaged or bool(config.train.ema_decay),
        "train.best_metric",
        best,
        "is a score of the weight average: set --config.train.ema_decay (e.g. 0.9999) too",
    )
    validation.check_choice(config, "train.best_metric", BEST_METRICS[task] + averaged)
    if task == "segmentation":
        # Mixed soft labels and a classifier teacher have no per-pixel meaning here.
        for key, value, unset in (
            ("data.mixup_alpha", config.data.mixup_alpha, 0.0),
            ("data.cutmix_alpha", config.data.cutmix_alpha, 0.0),
            ("distill.teacher", config.distill.teacher, ""),
        ):
            validation.require(
                not value, key, value, f"is for classification; set it to {unset!r} to segment"
            )


def _valid_pixels(y_true, y_pred):
    """Flattened int labels ``[N]``, float logits ``[N, K]`` and a bool mask of labelled pixels."""
    labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
    logits = tf.reshape(y_pred, [-1, tf.shape(y_pred)[-1]])
    return labels, logits, tf.not_equal(labels, IGNORE_LABEL)


@keras.saving.register_keras_serializable(package="lightnets")
class MaskedSparseCrossEntropy(keras.losses.Loss):
    """Per-pixel softmax cross-entropy on logits, averaged over the pixels whose label is not 255.

    ``y_true``: int ``[B, H, W]``; ``y_pred``: logits ``[B, H, W, K]``. Returns one value per
    image (the mean over its labelled pixels, 0 when it has none); Keras averages those over
    the batch.
    """

    def __init__(self, name: str = "masked_sparse_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_pred = tf.cast(y_pred, tf.float32)
        labels = tf.cast(y_true, tf.int32)
        valid = tf.not_equal(labels, IGNORE_LABEL)
        per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.where(valid, labels, 0), logits=y_pred
        )
        weights = tf.cast(valid, tf.float32)
        axes = list(range(1, per_pixel.shape.rank))
        return tf.math.divide_no_nan(
            tf.reduce_sum(per_pixel * weights, axis=axes), tf.reduce_sum(weights, axis=axes)
        )


@keras.saving.register_keras_serializable(package="lightnets")
class ConfusionMatrixMetric(keras.metrics.Metric):
    """A streaming ``[K, K]`` confusion matrix (rows: label, columns: argmax) over labelled pixels,
    reduced to one figure.

    Args:
      num_classes: K.
      reduce: ``"miou"`` (mean over classes present in labels or predictions of
        ``TP / (TP + FP + FN)``), ``"pixel_accuracy"`` (``trace / total``) or ``"iou"`` (one
        class's IoU, ``class_id``).
      class_id: the class of ``reduce="iou"``.
    """

    def __init__(self, num_classes: int, reduce: str = "miou", class_id: int = 0, **kwargs):
        kwargs.setdefault("name", reduce if reduce != "iou" else f"iou_{class_id}")
        super().__init__(**kwargs)
        if reduce not in ("miou", "pixel_accuracy", "iou"):
            raise ValueError(f"reduce must be 'miou', 'pixel_accuracy' or 'iou', got {reduce!r}.")
        self.num_classes, self.reduce, self.class_id = int(num_classes), reduce, int(class_id)
        self.confusion = self.add_weight(
            "confusion", shape=(num_classes, num_classes), initializer="zeros", dtype=tf.float64
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        del sample_weight
        labels, logits, valid = _valid_pixels(y_true, y_pred)
        predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
        batch = tf.math.confusion_matrix(
            tf.boolean_mask(labels, valid),
            tf.boolean_mask(predictions, valid),
            num_classes=self.num_classes,
            dtype=tf.float64,
        )
        self.confusion.assign_add(batch)

    def result(self):
        confusion = self.confusion
        true_positive = tf.linalg.diag_part(confusion)
        if self.reduce == "pixel_accuracy":
            return tf.math.divide_no_nan(tf.reduce_sum(true_positive), tf.reduce_sum(confusion))
        union = tf.reduce_sum(confusion, 0) + tf.reduce_sum(confusion, 1) - true_positive
        iou = tf.math.divide_no_nan(true_positive, union)
        if self.reduce == "iou":
            return iou[self.class_id]
        present = tf.cast(union > 0, tf.float64)
        return tf.math.divide_no_nan(tf.reduce_sum(iou * present), tf.reduce_sum(present))

    def reset_state(self):
        self.confusion.assign(tf.zeros_like(self.confusion))

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, reduce=self.reduce, class_id=self.class_id)
        return config


def encode(task: str, num_classes: int):
    """``(images, labels) -> (images, targets)`` for the loss: one-hot or the masks as they are."""
    if task == "classification":
        return mixing.one_hot(num_classes)
    return lambda images, masks: (images, masks)


def training_batches(config, dataset: tf.data.Dataset, *, num_classes: int) -> tf.data.Dataset:
    """The training batches as the loss wants them.

    Classification: one-hot labels, mixed by mixup/CutMix when ``config.data`` turns them on
    (label smoothing then applies to the mixed labels); segmentation: the masks as they are.
    """
    if config.task == "classification":
        return mixing.soft_label_batches(
            dataset, config.data, num_classes=num_classes, seed=config.runtime.seed
        )
    return dataset.map(encode(config.task, num_classes))


def loss(task: str, train_config) -> keras.losses.Loss:
    """The training loss of ``task``."""
    if task == "classification":
        return optim.build_loss(train_config.label_smoothing)
    return MaskedSparseCrossEntropy()


def metrics(task: str, num_classes: int) -> list[keras.metrics.Metric]:
    """Compiled metrics: ``top1``/``top5``, or ``miou``, ``pixel_accuracy``, ``iou_<k>``."""
    if task == "classification":
        return optim.build_metrics(num_classes)
    return [
        ConfusionMatrixMetric(num_classes, "miou"),
        ConfusionMatrixMetric(num_classes, "pixel_accuracy"),
        *(ConfusionMatrixMetric(num_classes, "iou", k) for k in range(num_classes)),
    ]


def final_scores(task: str, scores: dict, class_names) -> dict:
    """``model.evaluate``'s dict -> the ``val_*`` entries of metrics.json's ``final``."""
    if task == "classification":
        keys = ("top1", "top5", "loss")
    else:
        keys = ("miou", "pixel_accuracy", "loss")
    final = {f"val_{key}": float(scores[key]) for key in keys}
    if task == "segmentation":
        final["val_per_class_iou"] = {
            name: float(scores[f"iou_{k}"]) for k, name in enumerate(class_names)
        }
    return final
