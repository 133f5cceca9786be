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
                                                         representative training images (a QAT
                                                         model: its trained ranges)
``onnx``                 ``model.onnx``                  ONNX (tf2onnx, ``deploy.onnx``), float32;
                                                         needs the ``onnx`` extra, so ``all``
                                                         leaves it out: name it
=======================  ==============================  =========================================

Both signatures output ``predictions`` (the model's output: class probabilities for the
registered architectures). Pruned models are stripped of their pruning wrappers first.

Parity (``check_parity``) runs every exported file on real validation images and compares it
with the in-memory Keras model: ``keras`` and ``saved_model`` must match within 1e-5, ``tflite``
within 1e-4 (max absolute difference of the outputs), and the quantised TFLite files must keep
top-1 within 1 point of the float model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import logging
import os
import tempfile
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from compression import pruning
from deploy import loading, metrics, tflite
from deploy.fileio import write_json
from deploy.segmentation_metrics import IGNORE_LABEL
from deploy.workdir import (
    EXPORT_FILES,
    classes_file,
    classes_payload,
    dense_model_file,
    export_path,
)
from layers import conv_ops

# Formats needing an extra's packages: never part of "all", exported when named.
EXTRA_FORMATS = ("onnx",)
FORMATS = tuple(name for name in EXPORT_FILES if name not in EXTRA_FORMATS)
# The TFLite mode of each TFLite export format.
TFLITE_MODES = {
    "tflite": "float32",
    "tflite_float16": "float16",
    "tflite_dynamic_range": "dynamic_range",
    "tflite_int8": "int8",
}
# Max absolute output difference allowed against the in-memory Keras model.
MAX_DIFF = {"keras": 1e-5, "saved_model": 1e-5, "tflite": 1e-4, "onnx": 1e-4}
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
    unknown = [name for name in names if name not in EXPORT_FILES]
    if unknown or not names:
        raise ValueError(
            f"Unknown export format(s) {unknown or names}; choose from "
            f"{', '.join(EXPORT_FILES)} or 'all' (every format but {', '.join(EXTRA_FORMATS)})."
        )
    return tuple(dict.fromkeys(names))


def export_model(
    model: keras.Model,
    export_dir: str,
    *,
    formats: str | Sequence[str] = ("keras", "saved_model"),
    serving_preprocess: Callable | None = None,
    representative_images: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    int8_io: bool = True,
) -> dict[str, str]:
    """Writes ``model`` in each of ``formats`` under ``export_dir``.

    With ``class_names``, ``export_dir/classes.json`` (``deploy.workdir.classes_file``) records
    them beside every format; ``deploy.loading`` reads it back for any model file in that
    directory, so an exported model keeps its labels whatever format is deployed.

    Args:
      model: a Keras classifier taking float32 ``[B, S, S, 3]`` images (pruned or not; a
        mixed-precision one is exported computing in float32, see ``float32_model``).
      export_dir: output directory, created if needed; existing files are replaced.
      formats: names from ``FORMATS`` (or ``"all"``, or a comma-separated string).
      serving_preprocess: encoded image bytes (a scalar string tensor) -> the float32
        ``[S, S, 3]`` image the model takes (decode + evaluation preprocessing, e.g.
        ``trainer.data.serving_preprocess``); when given, the SavedModel gains the
        ``serving_image_bytes`` signature.
      representative_images: float32 ``[N, S, S, 3]`` normalised training images; required for
        ``tflite_int8`` (a few hundred are plenty).
      class_names: the class names, index = label; None writes no ``classes.json``.
      int8_io: whether ``tflite_int8`` takes and returns int8 (else float32) tensors.

    Returns:
      Format name -> written path.

    Raises:
      ValueError: unknown format, or ``tflite_int8`` without ``representative_images``.
    """
    formats = parse_formats(formats)
    if "tflite_int8" in formats and (
        representative_images is None or not len(representative_images)
    ):
        raise ValueError(
            "Format 'tflite_int8' needs representative_images (normalised training images) to "
            "calibrate activation ranges; pass some, or drop tflite_int8 from formats."
        )
    model = float32_model(_without_optimizer(pruning.strip(model)))
    os.makedirs(export_dir, exist_ok=True)
    if class_names is not None:
        write_json(classes_file(export_dir), classes_payload(class_names))
    paths = {}
    for name in formats:
        path = export_path(export_dir, name)
        if name == "keras":
            model.save(path)
        elif name == "saved_model":
            signatures = serving_signatures(model, serving_preprocess=serving_preprocess)
            # Without per-layer traces: 3-4x faster to write (MobileNet v2: 13 s vs 48 s); the
            # signatures stay traced, and Keras reloads layers from their configs. Traced for
            # any TensorFlow kernel set, so a SavedModel written where oneDNN runs still serves
            # where it does not.
            with conv_ops.tracing_for("any_tf"), _without_compile_warning():
                model.save(path, save_format="tf", signatures=signatures, save_traces=False)
        elif name == "onnx":
            from deploy import onnx

            with open(path, "wb") as f:
                f.write(onnx.convert(model))
        else:
            flatbuffer = tflite.convert(
                model,
                TFLITE_MODES[name],
                representative_images=representative_images,
                int8_io=int8_io,
            )
            with open(path, "wb") as f:
                f.write(flatbuffer)
        paths[name] = path
    return paths


class _DropCompileWarning(logging.Filter):
    """tf_keras warns that "the compiled metrics have yet to be built" on saving any model that
    was never compiled, which every exported model is: the line says nothing to a user."""

    def filter(self, record):
        return not record.getMessage().startswith("Compiled the loaded model, but the compiled")


@contextlib.contextmanager
def _without_compile_warning():
    logger, drop = logging.getLogger("tensorflow"), _DropCompileWarning()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _is_mixed_policy(dtype) -> bool:
    """Whether a layer config's ``dtype`` entry is a mixed-precision policy."""
    if isinstance(dtype, dict):  # {"class_name": "Policy", "config": {"name": "mixed_float16"}}
        dtype = dtype.get("config", {}).get("name", "")
    return isinstance(dtype, str) and dtype.startswith("mixed_")


def _float32_config(config):
    """A model config with every mixed-precision policy (nested models included) -> float32."""
    if isinstance(config, dict):
        return {
            key: "float32" if key == "dtype" and _is_mixed_policy(value) else _float32_config(value)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [_float32_config(value) for value in config]
    return config


def float32_model(model: keras.Model) -> keras.Model:
    """``model`` computing in float32: a mixed-precision model rebuilt with its weights.

    A model trained under ``mixed_float16`` or ``mixed_bfloat16`` (``config.runtime.precision``)
    computes in half precision with float32 variables; TFLite's builtin kernels and ONNX
    exports want float32 operators (the converter refuses float16 Conv2D, Pad, ...), and a
    deployed file should not depend on the training policy. The variables are float32 either
    way, so the rebuilt model holds exactly the trained weights. A float32 model is returned
    as is.
    """
    if not any(
        _is_mixed_policy(layer.dtype_policy.name)
        for layer in model.submodules
        if isinstance(layer, keras.layers.Layer)
    ):
        return model
    rebuilt = model.__class__.from_config(_float32_config(model.get_config()))
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _without_optimizer(model: keras.Model) -> keras.Model:
    """The same layers in an uncompiled model, so no format carries optimizer slots (the .keras
    format has no include_optimizer switch)."""
    if getattr(model, "optimizer", None) is None:
        return model
    return keras.Model(model.inputs, model.outputs, name=model.name)


def serving_signatures(model: keras.Model, *, serving_preprocess: Callable | None = None):
    """The SavedModel signatures: float images, and encoded image bytes when preprocessing is set.

    Both return ``predictions`` (the model's output); a segmentation model's (``[B, H, W, K]``)
    also return ``classes``, the per-pixel argmax ``[B, H, W]``.

    Returns:
      ``{"serving_default": fn}`` plus ``{"serving_image_bytes": fn}`` with
      ``serving_preprocess``.
    """
    height, width, channels = model.input_shape[1:]

    def outputs(images):
        predictions = model(images, training=False)
        if predictions.shape.rank == 4:  # segmentation: the class map too, [B, H, W] int32
            return {
                "predictions": predictions,
                "classes": tf.argmax(predictions, axis=-1, output_type=tf.int32),
            }
        return {"predictions": predictions}

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32)])
    def serve_images(images):
        return outputs(images)

    signatures = {"serving_default": serve_images}
    if serving_preprocess is None:
        return signatures
    produced = (
        tf.function(serving_preprocess)
        .get_concrete_function(tf.TensorSpec([], tf.string))
        .structured_outputs.shape
    )
    if tuple(produced) != (height, width, channels):
        raise ValueError(
            f"serving_preprocess gives images of shape {tuple(produced)} but the model takes "
            f"{(height, width, channels)}; build it for the model's input size."
        )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve_image_bytes(image_bytes):
        images = tf.map_fn(
            serving_preprocess,
            image_bytes,
            fn_output_signature=tf.TensorSpec([height, width, channels], tf.float32),
        )
        return outputs(images)

    signatures[IMAGE_BYTES_SIGNATURE] = serve_image_bytes
    return signatures


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
    model = pruning.strip(model)
    reference_predict = loading.wrap_keras_model(model, path="reference").predict
    reference = _predict_batched(reference_predict, images, batch_size)
    num_classes = reference.shape[-1]
    reference_top1 = _top1(reference, labels, num_classes)
    float_top1 = reference_top1
    rows = [ParityRow("reference", "(in memory)", 0, reference_top1, 0.0, "", True)]
    for name in sorted(paths, key=list(EXPORT_FILES).index):
        outputs = _predict_batched(loading.load_model(paths[name]).predict, images, batch_size)
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


def describe_exports(paths: dict[str, str], *, latency_iterations: int = 20) -> dict:
    """What each exported file weighs and, for TFLite files, how fast it runs.

    Args:
      paths: ``export_model``'s format -> path.
      latency_iterations: timed invokes per TFLite file (median; batch 1, LiteRT's default
        threads, XNNPACK), after a warm-up.

    Returns:
      ``{format: {"path", "bytes"[, "latency_ms_b1"]}}``, in ``FORMATS`` order.
    """
    described = {}
    for name in sorted(paths, key=list(EXPORT_FILES).index):
        entry = {"path": paths[name], "bytes": _size(paths[name])}
        if name in TFLITE_MODES:
            runner = tflite.Runner(paths[name])
            entry["latency_ms_b1"] = metrics.measure_latency_ms(
                runner, runner.input_shape, 1, iterations=latency_iterations
            )
        described[name] = entry
    return described


def parity_table(rows: Sequence[ParityRow]) -> str:
    """The parity rows as a markdown table: format, size, top-1, max diff, criterion, ok."""
    return metrics.markdown_table(
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
    """Top-1 accuracy; for per-pixel scores ``[N, H, W, K]``, over the labelled pixels."""
    if scores.ndim == 4:
        valid = labels != IGNORE_LABEL
        scores, labels = scores[valid], labels[valid]
    accumulator = metrics.MetricsAccumulator(num_classes)
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


# -- sizes: what a compressed model costs to download -----------------------------------------


def gzip_bytes(data: bytes) -> int:
    """Length of ``data`` gzipped at level 9."""
    return len(gzip.compress(data, compresslevel=9))


def gzip_size(path: str) -> int:
    """Bytes of the file at ``path`` after gzip at level 9."""
    with open(path, "rb") as f:
        return gzip_bytes(f.read())


def _gzipped_sizes(model: keras.Model) -> tuple[int, int]:
    """Gzipped bytes of the model as ``.keras`` and as a plain float32 ``.tflite``.

    Unlike ``.keras``, the TFLite file holds no BN moving statistics (BN folds into the
    convolutions), so it shows what pruning saves in the shipped format.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, EXPORT_FILES["keras"])
        model.save(path)
        keras_bytes = gzip_size(path)
    return keras_bytes, gzip_bytes(tflite.convert(float32_model(model), "float32"))


def size_report(model: keras.Model, dense_reference: str | None = None) -> dict:
    """Gzipped sizes of a (stripped) model and, given a dense run, the ratios to it.

    Args:
      model: the model as exported (no pruning wrappers).
      dense_reference: a dense run's workdir, export dir or ``.keras`` file, or None.

    Returns:
      ``{"gzip_bytes", "tflite_gzip_bytes"}`` plus ``"dense_gzip_bytes"``, ``"gzip_ratio"``
      (model / dense), ``"dense_tflite_gzip_bytes"`` and ``"tflite_gzip_ratio"`` with a dense
      reference. Both models are measured the same way: saved as ``.keras`` (an uncompressed
      zip) and as a float32 ``.tflite``, then gzipped.
    """
    report = dict(zip(("gzip_bytes", "tflite_gzip_bytes"), _gzipped_sizes(model), strict=True))
    if dense_reference:
        dense_file = dense_model_file(dense_reference)
        report["dense_gzip_bytes"] = gzip_size(dense_file)
        report["gzip_ratio"] = report["gzip_bytes"] / report["dense_gzip_bytes"]
        dense_model = loading.load_keras_file(dense_file)
        report["dense_tflite_gzip_bytes"] = gzip_bytes(tflite.convert(dense_model, "float32"))
        report["tflite_gzip_ratio"] = (
            report["tflite_gzip_bytes"] / report["dense_tflite_gzip_bytes"]
        )
    return report


def pruning_report(model: keras.Model, dense_reference: str | None, pruning_config=None) -> dict:
    """The pruning section of ``metrics.json``: measured sparsity and gzip sizes.

    Args:
      model: the model after ``compression.pruning.strip``.
      dense_reference: a dense run's workdir, export dir or ``.keras`` file, or None.
      pruning_config: only needed for a model loaded from disk (see
        ``compression.pruning.sparsity_report``).

    Returns:
      ``{"sparsity": compression.pruning.sparsity_report(...), **size_report(...)}``.
    """
    if pruning.has_wrappers(model):
        raise ValueError(
            "pruning_report() takes a stripped model; call pruning.strip(model) first."
        )
    return {
        "sparsity": pruning.sparsity_report(model, pruning_config),
        **size_report(model, dense_reference),
    }
