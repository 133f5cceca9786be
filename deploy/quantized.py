"""What quantization-aware training bought: ``metrics.json["quantization"]``.

Four top-1 figures (mIoU and pixel accuracy for segmentation) on the same validation images,
each measured on what it names: the float model (Keras), the float model converted post-training to full int8 (the TFLite file), the QAT
model itself (Keras, fake-quant ops) and the QAT model's int8 TFLite file, which is what ships.
The last two differ only by the converter (tfmot issue #368 is where they did not agree), so
their top-1 agreement is reported too. Sizes and latencies (LiteRT with XNNPACK, batch 1) are of
the float and int8 TFLite files.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import tf_keras as keras

from compression import pruning
from deploy import loading, metrics, tflite
from deploy.segmentation_metrics import SegmentationAccumulator

LATENCY_THREADS = 2


def _scores(predict, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return np.concatenate(
        [predict(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
    )


def _score(scores: np.ndarray, labels: np.ndarray) -> dict:
    """``{"top1"}`` for class labels ``[N]``; ``{"miou", "pixel_accuracy"}`` for masks
    ``[N, H, W]`` (the ignore label excluded, as ``deploy/segmentation_metrics.py`` counts)."""
    if labels.ndim == 1:
        return {"top1": float(np.mean(scores.argmax(axis=-1) == labels))}
    accumulator = SegmentationAccumulator(scores.shape[-1])
    accumulator.update(scores, labels)
    result = accumulator.result()
    return {"miou": result["miou"], "pixel_accuracy": result["pixel_accuracy"]}


def _tflite_entry(path: str, images, labels, *, latency_iterations: int) -> tuple[dict, np.ndarray]:
    runner = tflite.Runner(path, num_threads=LATENCY_THREADS)
    scores = _scores(runner, images)
    entry = {
        **_score(scores, labels),
        "bytes": os.path.getsize(path),
        "latency_ms_b1": metrics.measure_latency_ms(
            runner, runner.input_shape, 1, iterations=latency_iterations
        ),
    }
    return entry, scores


def quantization_report(
    qat_model: keras.Model,
    int8_path: str,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    float_model: keras.Model | None,
    representative_images: np.ndarray,
    latency_iterations: int = 50,
) -> dict:
    """The QAT section of ``metrics.json``.

    Args:
      qat_model: the trained QAT model.
      int8_path: its exported full-int8 TFLite file.
      images: float32 ``[N, S, S, 3]`` normalised validation images; ``labels``: int ``[N]``
        (classes) or ``[N, S, S]`` (masks: each figure is then ``{"miou", "pixel_accuracy"}``
        instead of ``{"top1"}``, and the agreement is per pixel).
      float_model: the float model QAT started from (None when it trained from scratch: no
        float and post-training rows).
      representative_images: calibration images for the post-training int8 conversion.
      latency_iterations: timed invokes per TFLite file (median).

    Returns:
      ``{"qat_int8_tflite": {"top1", "bytes", "latency_ms_b1"}, "qat_keras": {"top1"},
      "qat_keras_tflite_agreement"}`` plus, with a float model, ``"float"`` (Keras top-1),
      ``"float_tflite"`` and ``"ptq_int8_tflite"`` (``{"top1", "bytes", "latency_ms_b1"}``),
      ``"latency_threads"``; top-1 values are fractions.
    """
    labels = np.asarray(labels)
    keras_scores = _scores(loading.wrap_keras_model(qat_model).predict, images)
    int8, int8_scores = _tflite_entry(
        int8_path, images, labels, latency_iterations=latency_iterations
    )
    report = {
        "qat_keras": _score(keras_scores, labels),
        "qat_int8_tflite": int8,
        "qat_keras_tflite_agreement": float(
            np.mean(keras_scores.argmax(axis=-1) == int8_scores.argmax(axis=-1))
        ),
        "latency_threads": LATENCY_THREADS,
        "examples": len(labels),
    }
    if float_model is None:
        return report
    report["float"] = _score(_scores(loading.wrap_keras_model(float_model).predict, images), labels)
    with tempfile.TemporaryDirectory() as tmp:
        for key, mode in (("float_tflite", "float32"), ("ptq_int8_tflite", "int8")):
            path = os.path.join(tmp, f"{key}.tflite")
            with open(path, "wb") as f:
                f.write(
                    tflite.convert(float_model, mode, representative_images=representative_images)
                )
            report[key] = _tflite_entry(
                path, images, labels, latency_iterations=latency_iterations
            )[0]
    return report


def report_on_dataset(
    qat_model: keras.Model,
    int8_path: str,
    val_dataset,
    init_checkpoint: str,
    representative_images: np.ndarray,
) -> dict:
    """``quantization_report`` on a batched ``(images, int labels)`` dataset, the float model
    being ``init_checkpoint``'s (a workdir, checkpoint or ``.keras``; "" for none)."""
    batches = list(val_dataset.as_numpy_iterator())
    float_model = None
    if init_checkpoint:
        float_model = pruning.strip(loading.load_source_model(init_checkpoint))
    return quantization_report(
        qat_model,
        int8_path,
        np.concatenate([batch[0] for batch in batches]),
        np.concatenate([batch[1] for batch in batches]),
        float_model=float_model,
        representative_images=representative_images,
    )
