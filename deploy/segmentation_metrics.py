"""Segmentation metrics for any model that maps images to per-pixel class scores, and overlays.

As ``deploy.metrics`` does for classifiers, the figures are computed here from the scores a model
returns, so a ``.keras`` file, a SavedModel and a ``.tflite`` file are measured the same way:

* a confusion matrix over the labelled pixels (label 255 is ignored), rows the true class,
  columns the predicted one (the argmax of the scores);
* per-class IoU ``TP / (TP + FP + FN)``; mIoU, their mean over the classes that occur in the
  labels or the predictions (PASCAL VOC's convention: a class absent from both is not scored);
  pixel accuracy ``trace / total``;
* loss: mean per-pixel cross-entropy over the labelled pixels (logits or probabilities, decided
  as in ``deploy.metrics``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from deploy.metrics import looks_like_probabilities
from deploy.plotting import pyplot

IGNORE_LABEL = 255
_EPSILON = 1e-7


def iou_from_confusion(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class IoU ``[K]`` and a bool ``[K]``: whether the class occurs (union > 0)."""
    confusion = np.asarray(confusion, np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    iou = np.divide(true_positive, union, out=np.zeros_like(true_positive), where=union > 0)
    return iou, union > 0


class SegmentationAccumulator:
    """Streams batches of (scores ``[B, H, W, K]``, labels ``[B, H, W]``) into a confusion matrix.

    Args:
      num_classes: K.
    """

    def __init__(self, num_classes: int):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        self.num_classes = num_classes
        self.confusion = np.zeros((num_classes, num_classes), np.int64)
        self._loss_sum = 0.0
        self._images = 0
        self._from_logits: bool | None = None

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        scores = np.asarray(scores, np.float64)
        labels = np.asarray(labels).astype(np.int64)
        if scores.shape[:-1] != labels.shape or scores.shape[-1] != self.num_classes:
            raise ValueError(
                f"Scores of shape {scores.shape} do not fit masks of shape {labels.shape} and "
                f"{self.num_classes} classes."
            )
        valid = labels != IGNORE_LABEL
        pixels, truth = scores[valid], labels[valid]
        if truth.size and (truth.min() < 0 or truth.max() >= self.num_classes):
            raise ValueError(
                f"Mask labels range over [{truth.min()}, {truth.max()}] (255 ignored) but the "
                f"model has {self.num_classes} classes."
            )
        if self._from_logits is None and pixels.size:
            self._from_logits = not looks_like_probabilities(pixels)
        if pixels.size:
            true_score = pixels[np.arange(len(truth)), truth]
            if self._from_logits:
                peak = pixels.max(axis=1)
                log_sum = peak + np.log(np.exp(pixels - peak[:, None]).sum(axis=1))
                self._loss_sum += float((log_sum - true_score).sum())
            else:
                self._loss_sum += float(-np.log(np.clip(true_score, _EPSILON, 1.0)).sum())
            np.add.at(self.confusion, (truth, pixels.argmax(axis=1)), 1)
        self._images += len(labels)

    def result(self, class_names: Sequence[str] | None = None) -> dict:
        """``{"miou", "pixel_accuracy", "per_class_iou", "loss", "examples", "pixels",
        "from_logits"}`` (JSON-able; ``per_class_iou`` is None for a class that never occurs).
        """
        pixels = int(self.confusion.sum())
        if pixels == 0:
            raise ValueError("No labelled pixels were evaluated: the validation data is empty.")
        names = list(class_names) if class_names is not None else []
        if len(names) != self.num_classes:
            names = [str(index) for index in range(self.num_classes)]
        iou, present = iou_from_confusion(self.confusion)
        return {
            "miou": float(iou[present].mean()),
            "pixel_accuracy": float(np.trace(self.confusion) / pixels),
            "per_class_iou": {
                name: (float(iou[i]) if present[i] else None) for i, name in enumerate(names)
            },
            "loss": float(self._loss_sum / pixels),
            "examples": self._images,
            "pixels": pixels,
            "from_logits": bool(self._from_logits),
        }


def evaluate(
    predict: Callable[[np.ndarray], np.ndarray],
    batches: Iterable,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    *,
    overlay_dir: str = "",
    overlay_count: int = 8,
) -> tuple[dict, np.ndarray]:
    """Runs ``predict`` over ``(images, masks)`` batches; optionally writes overlay PNGs.

    Args:
      predict: float32 images ``[B, H, W, 3]`` to scores ``[B, H, W, K]``.
      batches: ``(images, masks)`` batches.
      num_classes: K.
      class_names: names for ``per_class_iou``.
      overlay_dir: where to write ``overlay_<i>.png`` (image | ground truth | prediction) for
        the first ``overlay_count`` images; empty: none.
      overlay_count: how many overlays.

    Returns:
      ``(metrics, confusion)``.
    """
    accumulator = SegmentationAccumulator(num_classes)
    written = 0
    for images, masks in batches:
        images, masks = np.asarray(images, np.float32), np.asarray(masks)
        scores = np.asarray(predict(images))
        accumulator.update(scores, masks)
        for index in range(len(images)):
            if not overlay_dir or written >= overlay_count:
                break
            path = os.path.join(overlay_dir, f"overlay_{written}.png")
            write_overlay_png(path, images[index], masks[index], scores[index].argmax(axis=-1))
            written += 1
    return accumulator.result(class_names), accumulator.confusion


def _colours() -> np.ndarray:
    """PASCAL VOC's palette (bit-interleaved class ids), ``[256, 3]`` uint8; 255 is white."""
    palette = np.zeros((256, 3), np.uint8)
    for label in range(256):
        value, colour = label, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                colour[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette[label] = colour
    palette[IGNORE_LABEL] = 255
    return palette


def write_overlay_png(
    path: str, image: np.ndarray, mask: np.ndarray, prediction: np.ndarray
) -> None:
    """Saves image | ground truth | prediction side by side (VOC colours, masks over the image).

    ``image`` is the normalised model input; it is min-max rescaled for display.
    """
    plt = pyplot()
    palette = _colours()
    shown = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
    figure, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    for axis, (title, labels) in zip(
        axes, (("image", None), ("ground truth", mask), ("prediction", prediction)), strict=True
    ):
        if labels is None:
            axis.imshow(shown)
        else:
            axis.imshow(0.4 * shown + 0.6 * palette[np.asarray(labels, np.int64)] / 255.0)
        axis.set_title(title)
        axis.axis("off")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
