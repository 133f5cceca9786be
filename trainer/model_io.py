"""Loading a saved model of any kind, so evaluation and export treat them all alike.

A model PATH is one of:

* a training workdir (a directory with ``config.json``): the model is ``DIR/export/model.keras``;
  if there is no export, the best-epoch checkpoint in ``DIR/best/``, failing that the latest in
  ``DIR/checkpoints/``, restored into a model rebuilt from ``config.json`` (the trainer's
  ``checkpoints.load_source_model``);
* a ``.keras`` file (loaded with ``safe_mode=True``; ``import layers`` registers the custom layers);
* a SavedModel directory, always run through its serving signature, so it needs no Python code,
  Keras metadata or not;
* a ``.tflite`` file, run with LiteRT's interpreter (int8 inputs and outputs are (de)quantised
  here, so callers always pass normalised float32 images and get float32 scores back).

Every kind becomes a ``LoadedModel`` whose ``predict`` maps float32 images ``[B, H, W, C]`` to
class scores ``[B, K]``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import ml_collections
import numpy as np
import tensorflow as tf
import tf_keras as keras

from trainer import model_paths


@dataclasses.dataclass
class LoadedModel:
    """A model ready to predict, whatever it was saved as.

    Attributes:
      path: the path as the user gave it.
      kind: one of ``KINDS``.
      file: the file or directory actually loaded (for a workdir: the model inside it).
      input_shape: ``(height, width, channels)`` the model takes.
      num_classes: size of the model's output.
      predict: float32 images ``[B, H, W, C]`` (normalised like the training data) to float32
        scores ``[B, num_classes]`` (probabilities, or logits for a model that outputs them).
      keras_model: the Keras model, for the Keras kinds (export needs it); None otherwise.
      config: the resolved training config, for a workdir; None otherwise.
    """

    path: str
    kind: str
    file: str
    input_shape: tuple[int, int, int]
    num_classes: int
    predict: Callable[[np.ndarray], np.ndarray]
    keras_model: keras.Model | None = None
    config: ml_collections.ConfigDict | None = None


def load_workdir_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a training run wrote to ``workdir/config.json``."""
    with open(os.path.join(workdir, "config.json")) as f:
        return ml_collections.ConfigDict(json.load(f))


def load_model(path: str) -> LoadedModel:
    """Loads any model PATH (see the module docstring) into a ``LoadedModel``.

    Raises:
      FileNotFoundError: the path does not exist, or a workdir holds no model yet.
      ValueError: the path is not a model.
    """
    kind = model_paths.detect_kind(path)
    if kind == "workdir":
        loaded = _load_from_workdir(path)
        return dataclasses.replace(
            loaded, path=path, kind="workdir", config=load_workdir_config(path)
        )
    if kind == "keras":
        return wrap_keras_model(_load_keras_file(path), path=path, file=path)
    if kind == "saved_model":
        return _load_saved_model(path)
    return _load_tflite(path)


def _load_keras_file(path: str) -> keras.Model:
    import layers  # noqa: F401  registers the lightnets layers for safe deserialisation

    return keras.models.load_model(path, compile=False, safe_mode=True)


def wrap_keras_model(
    model: keras.Model, *, path: str = "", kind: str = "keras", file: str = ""
) -> LoadedModel:
    """A ``LoadedModel`` around an in-memory Keras model (predict runs it as a tf.function)."""
    input_shape = tuple(model.input_shape[1:])
    if len(input_shape) != 3 or None in input_shape:
        raise ValueError(
            f"Model '{path}' takes input shape {model.input_shape}; evaluation and export need "
            f"a static image shape (height, width, channels)."
        )
    # One trace for every batch size.
    call = tf.function(
        lambda images: model(images, training=False),
        input_signature=[tf.TensorSpec([None, *input_shape], tf.float32)],
    )

    def predict(images: np.ndarray) -> np.ndarray:
        return np.asarray(call(tf.convert_to_tensor(images, tf.float32)), np.float32)

    return LoadedModel(
        path=path,
        kind=kind,
        file=file,
        input_shape=input_shape,
        num_classes=int(model.output_shape[-1]),
        predict=predict,
        keras_model=model,
    )


def _load_from_workdir(workdir: str) -> LoadedModel:
    exported = os.path.join(workdir, "export", "model.keras")
    if os.path.exists(exported):
        return wrap_keras_model(_load_keras_file(exported), path=workdir, file=exported)
    # The trainer's own restore: rebuilds the model (pruning wrappers included) from config.json.
    from trainer import checkpoints

    for directory in (os.path.join(workdir, "best"), os.path.join(workdir, "checkpoints")):
        prefix = tf.train.latest_checkpoint(directory) if os.path.isdir(directory) else None
        if prefix:
            return wrap_keras_model(
                checkpoints.load_source_model(prefix), path=workdir, file=prefix
            )
    raise FileNotFoundError(
        f"Workdir '{workdir}' holds no model: no export/model.keras and no checkpoint in best/ "
        f"or checkpoints/. Train it first (python train.py --workdir={workdir})."
    )


def _load_saved_model(path: str) -> LoadedModel:
    loaded = tf.saved_model.load(path)
    signature_name, input_name = _image_signature(path, loaded.signatures)
    signature = loaded.signatures[signature_name]
    input_spec = signature.structured_input_signature[1][input_name]
    outputs = signature.structured_outputs
    output_name = _scores_output(path, signature_name, outputs)

    def predict(images: np.ndarray) -> np.ndarray:
        # `loaded` must stay referenced: the signature's variables live on it.
        result = loaded.signatures[signature_name](
            **{input_name: tf.convert_to_tensor(images, input_spec.dtype)}
        )
        return np.asarray(result[output_name], np.float32)

    input_shape = tuple(input_spec.shape[1:])
    if len(input_shape) != 3 or None in input_shape:
        raise ValueError(
            f"SavedModel '{path}' signature '{signature_name}' takes images of shape "
            f"{input_spec.shape}; evaluation needs a static (height, width, channels)."
        )
    num_classes = outputs[output_name].shape[-1]
    if num_classes is None:
        num_classes = predict(np.zeros((1, *input_shape), np.float32)).shape[-1]
    return LoadedModel(
        path=path,
        kind="saved_model",
        file=path,
        input_shape=tuple(int(d) for d in input_shape),
        num_classes=int(num_classes),
        predict=predict,
    )


def _image_signature(path: str, signatures) -> tuple[str, str]:
    """The first signature (serving_default first) taking one float 4-D image tensor."""
    names = sorted(signatures, key=lambda name: name != "serving_default")
    for name in names:
        inputs = signatures[name].structured_input_signature[1]
        if len(inputs) == 1:
            ((input_name, spec),) = inputs.items()
            if spec.dtype.is_floating and spec.shape.rank == 4:
                return name, input_name
    raise ValueError(
        f"SavedModel '{path}' has no signature taking float images [B, H, W, C] "
        f"(signatures: {sorted(signatures)}); export it with one (python export.py)."
    )


def _scores_output(path: str, signature_name: str, outputs: dict) -> str:
    if len(outputs) == 1:
        return next(iter(outputs))
    for name in ("predictions", "probabilities", "logits"):
        if name in outputs:
            return name
    raise ValueError(
        f"SavedModel '{path}' signature '{signature_name}' has outputs {sorted(outputs)}; "
        f"cannot tell which holds the class scores (name it 'predictions')."
    )


def _load_tflite(path: str) -> LoadedModel:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    resizable_batch = input_detail["shape_signature"][0] == -1
    interpreter.allocate_tensors()

    def run(images: np.ndarray) -> np.ndarray:
        current = interpreter.get_input_details()[0]["shape"]
        if tuple(current) != images.shape:
            interpreter.resize_tensor_input(input_detail["index"], images.shape)
            interpreter.allocate_tensors()
        interpreter.set_tensor(input_detail["index"], _quantize(images, input_detail))
        interpreter.invoke()
        return _dequantize(interpreter.get_tensor(output_detail["index"]), output_detail)

    def predict(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, np.float32)
        if resizable_batch:
            return run(images)
        # A model converted with a fixed batch runs batch-sized slices, the last one padded.
        batch = int(input_detail["shape"][0])
        outputs = []
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            padding = np.zeros((batch - len(chunk), *chunk.shape[1:]), np.float32)
            outputs.append(run(np.concatenate([chunk, padding]))[: len(chunk)])
        return np.concatenate(outputs)

    return LoadedModel(
        path=path,
        kind="tflite",
        file=path,
        input_shape=tuple(int(d) for d in input_detail["shape"][1:]),
        num_classes=int(output_detail["shape"][-1]),
        predict=predict,
    )


def _quantize(images: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if not np.issubdtype(dtype, np.integer):
        return images.astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(images / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    if not np.issubdtype(values.dtype, np.integer):
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


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
      model: the ``LoadedModel``.
      data: the ``trainer.data.DataBundle`` at the model's input size and preprocessing.
      data_config: the resolved ``config.data`` the bundle was built from.
      preprocessing: the ``architectures.Preprocessing`` used.
      image_size: the square input side.
      workdir: the training workdir whose config was used (the PATH itself, or the run a model
        file lives in, e.g. ``DIR`` for ``DIR/export/model.tflite``); None for a bare model.
    """

    model: LoadedModel
    data: object
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
    (``DIR/export/...``, see ``model_paths.owning_workdir``). Any other model takes
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
    from trainer import data

    kind = model_paths.detect_kind(path)
    workdir = path if kind == "workdir" else model_paths.owning_workdir(path)
    if workdir is not None:
        config = load_workdir_config(workdir)
        resolved = get_base_config().data
        resolved.update(config.data.to_dict())
        resolved.update(dict(data_overrides or {}))
        chosen = preprocessing_by_name(preprocessing or config.model.name)
        seed = int(config.get("runtime", {}).get("seed", seed))
    else:
        resolved = ml_collections.ConfigDict(data_config.to_dict())
        chosen = preprocessing_by_name(preprocessing or "inception")
    loaded = load_model(path)
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
    return ModelAndData(loaded, bundle, resolved, chosen, image_size, workdir)
