"""Exporting a trained model to every deployment format, and checking they all agree.

Formats (``export_dir/<file>``):

=======================  ==============================  =========================================
format                   file                            what
=======================  ==============================  =========================================
``keras``                ``model.keras``                 Keras v3 file; ``import layers`` loads it
``saved_model``          ``saved_model/``                TF SavedModel; ``serving_default`` takes
                                                         float images, ``serving_image_bytes``
                                                         (when preprocessing is given) encoded
                                                         JPEG/PNG/BMP/GIF bytes
``tflite``               ``model.tflite``                float32
``tflite_float16``       ``model_float16.tflite``        float16 weights, float32 compute
``tflite_dynamic_range`` ``model_dynamic_range.tflite``  int8 weights, float activations
``tflite_int8``          ``model_int8.tflite``           full integer: int8 weights, activations,
                                                         input and output, calibrated on
                                                         representative training images
=======================  ==============================  =========================================

Both signatures output ``predictions`` (the model's output: class probabilities for the
registered architectures). Pruned models are stripped of their pruning wrappers first.

Parity (``check_parity``) runs every exported file on real validation images and compares it
with the in-memory Keras model: ``keras`` and ``saved_model`` must match within 1e-5, ``tflite``
within 1e-4 (max absolute difference of the outputs), and the quantised TFLite files must keep
top-1 within 1 point of the float model.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from layers import conv_ops
from trainer import evaluation, model_io

FILENAMES = {
    "keras": "model.keras",
    "saved_model": "saved_model",
    "tflite": "model.tflite",
    "tflite_float16": "model_float16.tflite",
    "tflite_dynamic_range": "model_dynamic_range.tflite",
    "tflite_int8": "model_int8.tflite",
}
FORMATS = tuple(FILENAMES)
# Max absolute output difference allowed against the in-memory Keras model.
MAX_DIFF = {"keras": 1e-5, "saved_model": 1e-5, "tflite": 1e-4}
# Quantised formats may lose at most this much top-1 (a fraction: 0.01 is one point).
MAX_TOP1_DROP = 0.01
IMAGE_BYTES_SIGNATURE = "serving_image_bytes"


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """``"all"``, a comma-separated string or a sequence of names -> validated format names.

    Raises:
      ValueError: an unknown format; the message lists the valid ones.
    """
    names = formats.split(",") if isinstance(formats, str) else list(formats)
    names = [name.strip() for name in names if name.strip()]
    if names == ["all"]:
        return FORMATS
    unknown = [name for name in names if name not in FILENAMES]
    if unknown or not names:
        raise ValueError(
            f"Unknown export format(s) {unknown or names}; choose from {', '.join(FORMATS)} "
            f"or 'all'."
        )
    return tuple(dict.fromkeys(names))


def export_model(
    model: keras.Model,
    export_dir: str,
    *,
    formats: str | Sequence[str] = ("keras", "saved_model"),
    image_size: int | None = None,
    preprocessing=None,
    representative_images: np.ndarray | None = None,
) -> dict[str, str]:
    """Writes ``model`` in each of ``formats`` under ``export_dir``.

    Args:
      model: a Keras classifier taking float32 ``[B, S, S, 3]`` images (pruned or not).
      export_dir: output directory, created if needed; existing files are replaced.
      formats: names from ``FORMATS`` (or ``"all"``, or a comma-separated string).
      image_size: side of the images the image-bytes signature produces; defaults to the
        model's input size.
      preprocessing: an ``architectures.Preprocessing``; when given, the SavedModel gains the
        ``serving_image_bytes`` signature (decode + evaluation preprocessing inside).
      representative_images: float32 ``[N, S, S, 3]`` normalised training images; required for
        ``tflite_int8`` (a few hundred are plenty).

    Returns:
      Format name -> written path.

    Raises:
      ValueError: unknown format, or ``tflite_int8`` without ``representative_images``.
    """
    from trainer import pruning

    formats = parse_formats(formats)
    if "tflite_int8" in formats and (
        representative_images is None or not len(representative_images)
    ):
        raise ValueError(
            "Format 'tflite_int8' needs representative_images (normalised training images) to "
            "calibrate activation ranges; pass some, or drop tflite_int8 from formats."
        )
    model = _without_optimizer(pruning.strip(model))
    os.makedirs(export_dir, exist_ok=True)
    paths = {}
    for name in formats:
        path = os.path.join(export_dir, FILENAMES[name])
        if name == "keras":
            model.save(path)
        elif name == "saved_model":
            signatures = serving_signatures(
                model, image_size=image_size, preprocessing=preprocessing
            )
            # Without per-layer traces: 3-4x faster to write (MobileNet v2: 13 s vs 48 s); the
            # signatures stay traced, and Keras reloads layers from their configs. Traced for
            # any TensorFlow kernel set, so a SavedModel written where oneDNN runs still serves
            # where it does not.
            with conv_ops.tracing_for("any_tf"):
                model.save(path, save_format="tf", signatures=signatures, save_traces=False)
        else:
            with open(path, "wb") as f:
                f.write(convert_tflite(model, name, representative_images))
        paths[name] = path
    return paths


def _without_optimizer(model: keras.Model) -> keras.Model:
    """The same layers in an uncompiled model, so no format carries optimizer slots (the .keras
    format has no include_optimizer switch)."""
    if getattr(model, "optimizer", None) is None:
        return model
    return keras.Model(model.inputs, model.outputs, name=model.name)


def serving_signatures(model: keras.Model, *, image_size: int | None = None, preprocessing=None):
    """The SavedModel signatures: float images, and encoded image bytes when preprocessing is set.

    Returns:
      ``{"serving_default": fn}`` plus ``{"serving_image_bytes": fn}`` when ``preprocessing``.
    """
    height, width, channels = model.input_shape[1:]

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32)])
    def serve_images(images):
        return {"predictions": model(images, training=False)}

    signatures = {"serving_default": serve_images}
    if preprocessing is None:
        return signatures
    from trainer.data import decode_image, eval_preprocess

    size = image_size or height
    if (size, size) != (height, width):
        raise ValueError(
            f"image_size={size} does not match the model's {height}x{width} input; pass "
            f"image_size={height} or leave it unset."
        )

    def preprocess(encoded):
        return eval_preprocess(decode_image(encoded), size, preprocessing)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve_image_bytes(image_bytes):
        images = tf.map_fn(
            preprocess,
            image_bytes,
            fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
        )
        return {"predictions": model(images, training=False)}

    signatures[IMAGE_BYTES_SIGNATURE] = serve_image_bytes
    return signatures


def convert_tflite(
    model: keras.Model, name: str = "tflite", representative_images: np.ndarray | None = None
) -> bytes:
    """Converts to a TFLite flatbuffer with builtin ops only (a Flex op fails here, not on device).

    Args:
      model: the (stripped) Keras model.
      name: ``tflite``, ``tflite_float16``, ``tflite_dynamic_range`` or ``tflite_int8``.
      representative_images: calibration images for ``tflite_int8``.
    """
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if name != "tflite":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if name == "tflite_float16":
        converter.target_spec.supported_types = [tf.float16]
    elif name == "tflite_int8":
        images = np.asarray(representative_images, np.float32)
        converter.representative_dataset = lambda: ([image[None]] for image in images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif name not in ("tflite", "tflite_dynamic_range"):
        raise ValueError(f"'{name}' is not a TFLite format; choose one of {FORMATS[2:]}.")
    with warnings.catch_warnings(), conv_ops.tracing_for("tflite"):
        # int8 inputs take their scale from calibration; the converter warns regardless.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return converter.convert()


@dataclasses.dataclass
class ParityRow:
    """One exported file measured against the in-memory Keras model.

    Attributes:
      format: the format name (``reference`` for the in-memory model itself).
      path: the file or directory.
      size_bytes: its size on disk (a directory's files summed).
      top1: top-1 accuracy (fraction) on the parity images.
      max_diff: max absolute difference of the outputs against the reference.
      criterion: what it must satisfy, in words.
      ok: whether it does.
    """

    format: str
    path: str
    size_bytes: int
    top1: float
    max_diff: float
    criterion: str
    ok: bool


def check_parity(
    model: keras.Model,
    paths: dict[str, str],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 64,
) -> list[ParityRow]:
    """Loads every exported file fresh (no custom code for SavedModel and TFLite) and compares.

    Args:
      model: the reference Keras model (stripped, as exported).
      paths: ``export_model``'s result.
      images: float32 ``[N, S, S, 3]`` normalised validation images.
      labels: int ``[N]`` labels.
      batch_size: prediction batch size.

    Returns:
      A reference row then one row per format, in ``FORMATS`` order.
    """
    from trainer import pruning

    model = pruning.strip(model)
    reference_predict = model_io.wrap_keras_model(model, path="reference").predict
    reference = _predict_batched(reference_predict, images, batch_size)
    num_classes = reference.shape[-1]
    reference_top1 = _top1(reference, labels, num_classes)
    float_top1 = reference_top1
    rows = [ParityRow("reference", "(in memory)", 0, reference_top1, 0.0, "", True)]
    for name in sorted(paths, key=FORMATS.index):
        outputs = _predict_batched(model_io.load_model(paths[name]).predict, images, batch_size)
        top1 = _top1(outputs, labels, num_classes)
        max_diff = float(np.abs(outputs - reference).max())
        if name in MAX_DIFF:
            criterion, ok = f"max diff <= {MAX_DIFF[name]:g}", max_diff <= MAX_DIFF[name]
            if name == "tflite":
                float_top1 = top1
        else:
            floor = float_top1 - MAX_TOP1_DROP
            criterion = f"top-1 >= {100 * floor:.2f}% (float - 1 pt)"
            ok = top1 >= floor - 1e-9
        rows.append(ParityRow(name, paths[name], _size(paths[name]), top1, max_diff, criterion, ok))
    return rows


def parity_table(rows: Sequence[ParityRow]) -> str:
    """The parity rows as a markdown table: format, size, top-1, max diff, criterion, ok."""
    return evaluation.markdown_table(
        ("format", "file", "size (KiB)", "top-1 (%)", "max diff", "criterion", "ok"),
        (
            (
                row.format,
                os.path.basename(row.path.rstrip("/")),
                f"{row.size_bytes / 1024:.1f}",
                f"{100 * row.top1:.2f}",
                f"{row.max_diff:.2e}",
                row.criterion,
                "yes" if row.ok else "NO",
            )
            for row in rows
        ),
    )


def _predict_batched(predict, images: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate(
        [predict(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
    )


def _top1(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    accumulator = evaluation.MetricsAccumulator(num_classes)
    accumulator.update(scores, labels)
    return accumulator.result()["top1"]


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def export_and_check(
    model_and_data,
    export_dir: str,
    *,
    formats: str | Sequence[str] = "all",
    image_bytes_signature: bool = True,
    calibration_examples: int = 256,
    parity_examples: int = 1000,
    batch_size: int = 64,
) -> tuple[dict[str, str], list[ParityRow]]:
    """``export_model`` then ``check_parity``, with images taken from the model's own data.

    int8 calibration uses ``calibration_examples`` shuffled training images with evaluation
    preprocessing (``augment='none'``: the activation ranges a deployed model sees); parity uses
    the first ``parity_examples`` validation images.

    Args:
      model_and_data: a ``trainer.model_io.ModelAndData`` holding a Keras model.
      export_dir: output directory.
      formats: as for ``export_model``.
      image_bytes_signature: add the encoded-image-bytes SavedModel signature.
      calibration_examples: representative images for ``tflite_int8``.
      parity_examples: validation images for the parity check.
      batch_size: batch size for reading data and predicting.

    Returns:
      ``(paths, rows)``: ``export_model``'s paths and ``check_parity``'s rows.

    Raises:
      ValueError: the model is not a Keras model (a ``.tflite`` or a plain SavedModel).
    """

    loaded = model_and_data.model
    if loaded.keras_model is None:
        raise ValueError(
            f"'{loaded.path}' is a {loaded.kind} model; export needs a Keras model: pass a "
            f"training workdir or a .keras file."
        )
    if calibration_examples < 1 or parity_examples < 1:
        raise ValueError(
            f"calibration_examples={calibration_examples} and parity_examples={parity_examples} "
            f"must both be >= 1."
        )
    formats = parse_formats(formats)
    representative = None
    if "tflite_int8" in formats:
        representative = calibration_images(
            model_and_data.data_config,
            image_size=model_and_data.image_size,
            preprocessing=model_and_data.preprocessing,
            count=calibration_examples,
            batch_size=batch_size,
        )
    images, labels = _take(model_and_data.data.val, parity_examples)
    paths = export_model(
        loaded.keras_model,
        export_dir,
        formats=formats,
        image_size=model_and_data.image_size,
        preprocessing=model_and_data.preprocessing if image_bytes_signature else None,
        representative_images=representative,
    )
    rows = check_parity(loaded.keras_model, paths, images, labels, batch_size=batch_size)
    return paths, rows


def calibration_images(
    data_config, *, image_size: int, preprocessing, count: int, batch_size: int = 64
) -> np.ndarray:
    """``count`` shuffled training images with evaluation preprocessing, for int8 calibration.

    No augmentation: quantisation ranges should be those of the images a deployed model sees.
    """
    from trainer import data

    calibration_config = data_config.copy_and_resolve_references()
    calibration_config.augment = "none"
    calibration = data.build_datasets(
        calibration_config,
        image_size=image_size,
        preprocessing=preprocessing,
        batch_size=batch_size,
    )
    return _take(calibration.train, count)[0]


def _take(dataset, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` examples of a batched ``(images, labels)`` dataset, as arrays."""
    images, labels, taken = [], [], 0
    for batch_images, batch_labels in dataset.as_numpy_iterator():
        images.append(batch_images)
        labels.append(batch_labels)
        taken += len(batch_labels)
        if taken >= count:
            break
    return np.concatenate(images)[:count], np.concatenate(labels)[:count]
