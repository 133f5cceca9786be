"""A saved model together with the data it is evaluated, calibrated and checked on.

What ``evaluate.py`` and ``export.py`` call. ``load_with_data`` resolves any model PATH
(``deploy.loading``) and builds the datasets it must see: a run's own data config, variant
preprocessing and seed when the PATH is (or lies inside) a training workdir, the command line's
otherwise; then ``evaluate`` measures it (``deploy.metrics``) and ``export_and_check`` writes every
format and checks parity (``deploy.export``) on real images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import ml_collections
import numpy as np

from deploy import export, loading, metrics, paths, segmentation_metrics
from deploy.workdir import owning_workdir
from trainer import data

PREPROCESSING_NAMES = ("inception", "imagenet")


def preprocessing_by_name(name: str):
    """``inception`` ([-1, 1]), ``imagenet`` (mean/std), or a registered variant's defaults.

    Raises:
      ValueError: unknown name; the message lists the choices.
    """
    import architectures

    if name == "inception":
        return architectures.INCEPTION_PREPROCESSING
    if name == "imagenet":
        return architectures.IMAGENET_PREPROCESSING
    try:
        return architectures.get_model_spec(name).preprocessing
    except ValueError as error:
        raise ValueError(
            f"--preprocessing='{name}' is neither one of {PREPROCESSING_NAMES} nor a model name. "
            f"{error}"
        ) from None


@dataclasses.dataclass
class ModelAndData:
    """A loaded model with the data it is evaluated (or calibrated) on.

    Attributes:
      model: the ``deploy.loading.LoadedModel``.
      data: the ``trainer.data.DataBundle`` at the model's input size and preprocessing.
      data_config: the resolved ``config.data`` the bundle was built from.
      preprocessing: the ``architectures.Preprocessing`` used.
      image_size: the square input side.
      workdir: the training workdir whose config was used (the PATH itself, or the run a model
        file lives in, e.g. ``DIR`` for ``DIR/export/model.tflite``); None for a bare model.
    """

    model: loading.LoadedModel
    data: data.DataBundle
    data_config: ml_collections.ConfigDict
    preprocessing: object
    image_size: int
    workdir: str | None = None


def load_with_data(
    path: str,
    data_config: ml_collections.ConfigDict,
    *,
    data_overrides: dict | None = None,
    preprocessing: str = "",
    batch_size: int = 64,
    seed: int = 0,
) -> ModelAndData:
    """Loads a model PATH and builds the data it must be evaluated on, checking that they fit.

    A workdir's own ``config.data``, its variant's preprocessing and its seed win, so the model
    sees exactly what it was trained with; ``data_overrides`` (the ``--data.*`` flags actually
    given) still apply on top. The same holds for a model file inside a workdir
    (``DIR/export/...``, see ``deploy.workdir.owning_workdir``). Any other model takes
    ``data_config`` (the flags), ``seed`` and, unless ``preprocessing`` names one, the Inception
    [-1, 1] preprocessing.

    Args:
      path: any model PATH (see the module docstring).
      data_config: ``config.data`` from the command line (``configs.common`` keys).
      data_overrides: the keys of ``data_config`` given explicitly.
      preprocessing: a name for ``preprocessing_by_name``; empty for the default.
      batch_size: batch size of the datasets.
      seed: data seed (synthetic data, the training shuffle) for a non-workdir model.

    Raises:
      FileNotFoundError: missing path.
      ValueError: the model's input shape or class count does not fit the data (naming both),
        or a bad data setting.
    """
    from configs.common import get_base_config

    kind = paths.detect_kind(path)
    workdir = path if kind == "workdir" else owning_workdir(path)
    if workdir is not None:
        config = loading.load_workdir_config(workdir)
        resolved = get_base_config().data
        resolved.update(config.data.to_dict())
        resolved.update(dict(data_overrides or {}))
        chosen = preprocessing_by_name(preprocessing or config.model.name)
        seed = int(config.get("runtime", {}).get("seed", seed))
    else:
        resolved = ml_collections.ConfigDict(data_config.to_dict())
        chosen = preprocessing_by_name(preprocessing or "inception")
    loaded = loading.load_model(path)
    image_size = int(resolved.get("image_size") or loaded.input_shape[0])
    bundle = data.build_datasets(
        resolved, image_size=image_size, preprocessing=chosen, batch_size=batch_size, seed=seed
    )
    data_shape = (image_size, image_size, 3)
    if tuple(loaded.input_shape) != data_shape:
        raise ValueError(
            f"Model '{path}' takes inputs of shape {tuple(loaded.input_shape)} but the data "
            f"gives {data_shape}; set --data.image_size={loaded.input_shape[0]} (square RGB "
            f"models only) or evaluate a model of size {image_size}."
        )
    if loaded.num_classes != bundle.num_classes:
        raise ValueError(
            f"Model '{path}' predicts {loaded.num_classes} classes but the data "
            f"'{resolved.source}' has {bundle.num_classes} classes; evaluate it on data with "
            f"{loaded.num_classes} classes (--data.source=...)."
        )
    bundle = match_class_names(path, loaded.class_names, bundle, resolved.source)
    return ModelAndData(loaded, bundle, resolved, chosen, image_size, workdir)


def match_class_names(path: str, model_names, bundle, source: str):
    """The bundle with labels in the model's class order.

    Same names in the same order: unchanged. The same names in another order (e.g. folders
    sorted differently): validation labels are mapped by name. Other names: refused. A model
    without saved names (``classes.json``) is taken as is.

    Raises:
      ValueError: the names differ, listing those missing on each side.
    """
    data_names = list(bundle.class_names)
    if model_names is None or list(model_names) == data_names:
        return bundle
    if sorted(model_names) != sorted(data_names):
        raise ValueError(
            f"Model '{path}' was trained on classes {list(model_names)} but the data '{source}' "
            f"has {data_names} (not in the model: {sorted(set(data_names) - set(model_names))}; "
            f"not in the data: {sorted(set(model_names) - set(data_names))}); evaluate it on "
            f"data with the model's classes."
        )
    import tensorflow as tf

    to_model = tf.constant([list(model_names).index(name) for name in data_names], tf.int32)
    val = bundle.val.map(lambda images, labels: (images, tf.gather(to_model, labels)))
    return dataclasses.replace(bundle, val=val, class_names=list(model_names))


def evaluate(
    model_and_data,
    *,
    latency_batch_size: int = 64,
    latency_iterations: int = 20,
    overlay_dir: str = "",
) -> tuple[dict, np.ndarray]:
    """Metrics on the whole validation split plus latency at batch 1 and ``latency_batch_size``.

    Args:
      model_and_data: a ``ModelAndData``.
      latency_batch_size: N of ``latency_ms_bN``.
      latency_iterations: timed calls per latency figure (their median is reported).
      overlay_dir: segmentation data: write overlay PNGs (image, ground truth, prediction) of
        the first validation images there; empty: none.

    Returns:
      ``(result, confusion)``; ``result`` is JSON-able with keys ``model``, ``kind``,
      ``file``, ``workdir``, ``data``, ``top1``, ``top5``, ``loss``, ``examples``,
      ``per_class``, ``from_logits``, ``num_classes``, ``class_names`` (index = label, the
      classes evaluated), ``input_size``, ``latency_ms_b1``, ``latency_ms_bN``,
      ``batch_size``. On segmentation data ``top1``, ``top5`` and ``per_class`` are replaced
      by ``segmentation_metrics``' ``miou``, ``pixel_accuracy``, ``per_class_iou`` and
      ``pixels``, and ``confusion`` counts pixels.
    """
    model, bundle = model_and_data.model, model_and_data.data
    batches = bundle.val.as_numpy_iterator()
    with bundle.reporting_failures():
        if bundle.task == "segmentation":
            scores, confusion = segmentation_metrics.evaluate(
                model.predict,
                batches,
                model.num_classes,
                bundle.class_names,
                overlay_dir=overlay_dir,
            )
        else:
            scores, confusion = metrics.evaluate(
                model.predict, batches, model.num_classes, bundle.class_names
            )
    latency = {
        key: metrics.measure_latency_ms(
            model.predict, model.input_shape, batch, iterations=latency_iterations
        )
        for key, batch in (("latency_ms_b1", 1), ("latency_ms_bN", latency_batch_size))
    }
    result = {
        "model": model.path,
        "kind": model.kind,
        "file": model.file,
        "workdir": model_and_data.workdir,
        "data": model_and_data.data_config.source,
        **scores,
        "num_classes": model.num_classes,
        "class_names": list(bundle.class_names),
        "input_size": model_and_data.image_size,
        **latency,
        "batch_size": latency_batch_size,
    }
    return result, confusion


def export_and_check(
    model_and_data,
    export_dir: str,
    *,
    formats: str | Sequence[str] = "all",
    image_bytes_signature: bool = True,
    calibration_examples: int = 256,
    parity_examples: int = 1000,
    batch_size: int = 64,
) -> tuple[dict[str, str], list[export.ParityRow]]:
    """``deploy.export.export_model`` then ``check_parity``, with images from the model's data.

    int8 calibration uses ``calibration_examples`` shuffled training images with evaluation
    preprocessing (``augment='none'``: the activation ranges a deployed model sees); parity uses
    the first ``parity_examples`` validation images.

    Args:
      model_and_data: a ``ModelAndData`` holding a Keras model.
      export_dir: output directory.
      formats: as for ``export_model``.
      image_bytes_signature: add the encoded-image-bytes SavedModel signature.
      calibration_examples: representative images for ``tflite_int8``.
      parity_examples: validation images for the parity check.
      batch_size: batch size for reading data and predicting.

    Returns:
      ``(paths, rows)``: ``deploy.export.export_model``'s paths and ``check_parity``'s rows.

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
    formats = export.parse_formats(formats)
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
    preprocess = data.serving_preprocess(model_and_data.image_size, model_and_data.preprocessing)
    written = export.export_model(
        loaded.keras_model,
        export_dir,
        formats=formats,
        serving_preprocess=preprocess if image_bytes_signature else None,
        representative_images=representative,
        class_names=model_and_data.data.class_names,
    )
    rows = export.check_parity(loaded.keras_model, written, images, labels, batch_size=batch_size)
    return written, rows


def calibration_images(
    data_config, *, image_size: int, preprocessing, count: int, batch_size: int = 64
) -> np.ndarray:
    """``count`` shuffled training images with evaluation preprocessing, for int8 calibration.

    No augmentation: quantisation ranges should be those of the images a deployed model sees.
    """
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
