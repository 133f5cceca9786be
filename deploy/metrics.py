"""Classification metrics and latency for any model that maps images to class scores.

The metrics are computed here, from the scores a model returns, so a ``.keras`` file, a
SavedModel without Keras metadata and a ``.tflite`` file are all measured the same way:

* top-1 and top-5 accuracy (top-k with k = min(5, classes)), as fractions in [0, 1];
* loss: mean sparse categorical cross-entropy, ``-log p[label]`` with ``p`` clipped to
  [1e-7, 1] as Keras does. Scores that are not already probabilities (rows non-negative and
  summing to 1 within 0.05, which a dequantised int8 softmax still does) are logits, scored
  with an exact log-softmax;
* per-class accuracy and the confusion matrix (rows: true class, columns: predicted class).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from deploy.plotting import pyplot

_EPSILON = 1e-7  # Keras's backend epsilon: the clip for log(0)
_PROBABILITY_TOLERANCE = 0.05


def looks_like_probabilities(scores: np.ndarray) -> bool:
    """Whether rows are non-negative and sum to one (within a quantised softmax's error)."""
    scores = np.asarray(scores)
    return bool(
        scores.min() >= 0.0 and np.all(np.abs(scores.sum(axis=-1) - 1.0) <= _PROBABILITY_TOLERANCE)
    )


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class MetricsAccumulator:
    """Streams batches of (scores, labels) into top-1/top-5/loss/confusion, in O(classes²) memory.

    Args:
      num_classes: number of classes K; scores are ``[B, K]`` and labels ints in ``[0, K)``.
    """

    def __init__(self, num_classes: int):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        self.num_classes = num_classes
        self.top_k = min(5, num_classes)
        self.confusion = np.zeros((num_classes, num_classes), np.int64)
        self._top_k_correct = 0
        self._loss_sum = 0.0
        self._from_logits: bool | None = None

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        scores = np.asarray(scores, np.float64)
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if scores.shape != (len(labels), self.num_classes):
            raise ValueError(
                f"Scores of shape {scores.shape} do not fit {len(labels)} labels and "
                f"{self.num_classes} classes."
            )
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"Labels range over [{labels.min()}, {labels.max()}] but the model has "
                f"{self.num_classes} classes."
            )
        if self._from_logits is None:
            # Decided once, on the first batch, so every batch is scored the same way.
            self._from_logits = not looks_like_probabilities(scores)
        true_score = scores[np.arange(len(labels)), labels]
        if self._from_logits:
            # log-softmax, unclipped, as Keras's from_logits loss.
            peak = scores.max(axis=1)
            log_sum = peak + np.log(np.exp(scores - peak[:, None]).sum(axis=1))
            self._loss_sum += float((log_sum - true_score).sum())
        else:
            self._loss_sum += float(-np.log(np.clip(true_score, _EPSILON, 1.0)).sum())
        # Rank of the true class: how many classes score strictly higher (ties favour the label,
        # as tf.math.in_top_k does).
        higher = (scores > scores[np.arange(len(labels)), labels][:, None]).sum(axis=1)
        self._top_k_correct += int((higher < self.top_k).sum())
        np.add.at(self.confusion, (labels, scores.argmax(axis=1)), 1)

    def result(self, class_names: Sequence[str] | None = None) -> dict:
        """``{"top1", "top5", "loss", "examples", "per_class", "from_logits"}`` (JSON-able).

        ``per_class`` maps each class name (or index) to its accuracy, or None for a class with
        no examples.
        """
        examples = int(self.confusion.sum())
        if examples == 0:
            raise ValueError("No examples were evaluated: the validation data is empty.")
        names = list(class_names) if class_names is not None else []
        if len(names) != self.num_classes:
            names = [str(index) for index in range(self.num_classes)]
        per_class_total = self.confusion.sum(axis=1)
        per_class = {
            name: (float(self.confusion[i, i] / per_class_total[i]) if per_class_total[i] else None)
            for i, name in enumerate(names)
        }
        return {
            "top1": float(np.trace(self.confusion) / examples),
            "top5": float(self._top_k_correct / examples),
            "loss": float(self._loss_sum / examples),
            "examples": examples,
            "per_class": per_class,
            "from_logits": bool(self._from_logits),
        }


def evaluate(
    predict: Callable[[np.ndarray], np.ndarray],
    batches: Iterable,
    num_classes: int,
    class_names: Sequence[str] | None = None,
) -> tuple[dict, np.ndarray]:
    """Runs ``predict`` over ``(images, labels)`` batches and computes the metrics.

    Args:
      predict: float32 images ``[B, H, W, C]`` to scores ``[B, num_classes]``.
      batches: an iterable of ``(images, labels)`` (a finite ``tf.data.Dataset`` works).
      num_classes: number of classes.
      class_names: names for ``per_class``; indices when None.

    Returns:
      ``(metrics, confusion)``: the dict of ``MetricsAccumulator.result`` and the
      ``[K, K]`` confusion matrix.
    """
    accumulator = MetricsAccumulator(num_classes)
    for images, labels in batches:
        accumulator.update(predict(np.asarray(images, np.float32)), np.asarray(labels))
    return accumulator.result(class_names), accumulator.confusion


def measure_latency_ms(
    predict: Callable[[np.ndarray], np.ndarray],
    input_shape: Sequence[int],
    batch_size: int,
    *,
    warmup: int = 3,
    iterations: int = 20,
    seed: int = 0,
) -> float:
    """Median wall time of one ``predict`` call on a batch, in milliseconds.

    Random normal images of the model's shape; the first ``warmup`` calls (tracing, allocation,
    tensor resizing) are not timed. The median resists the noise of a shared machine.
    """
    if batch_size < 1 or iterations < 1:
        raise ValueError(f"batch_size and iterations must be >= 1, got {batch_size}, {iterations}.")
    images = np.random.default_rng(seed).standard_normal((batch_size, *input_shape))
    images = images.astype(np.float32)
    for _ in range(warmup):
        predict(images)
    timings = []
    for _ in range(iterations):
        start = time.perf_counter()
        predict(images)
        timings.append(time.perf_counter() - start)
    return float(np.median(timings) * 1000.0)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub markdown table; cells are formatted with ``str``."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_confusion_png(
    confusion: np.ndarray, path: str, class_names: Sequence[str] | None = None, title: str = ""
) -> None:
    """Saves the confusion matrix as a PNG heat map (counts written in when there are ≤ 20
    classes)."""
    plt = pyplot()

    num_classes = confusion.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    size = min(4 + 0.4 * num_classes, 20)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(confusion, cmap="Blues")
    if num_classes <= 20:
        threshold = confusion.max() / 2
        for (row, column), count in np.ndenumerate(confusion):
            color = "white" if count > threshold else "black"
            axes.text(column, row, str(count), ha="center", va="center", color=color, fontsize=8)
        axes.set_xticks(range(num_classes), names, rotation=90)
        axes.set_yticks(range(num_classes), names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
