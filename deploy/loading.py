"""Loading a saved model of any kind, so evaluation and export treat them all alike.

A model PATH is one of:

* a training workdir (a directory with ``config.json``): the model is ``DIR/export/model.keras``;
  if there is no export, the best-epoch checkpoint in ``DIR/best/``, failing that the latest in
  ``DIR/checkpoints/``, restored into a model rebuilt from ``config.json``
  (``load_source_model``, which warm starts use too);
* a ``.keras`` file (loaded with ``safe_mode=True``; ``import layers`` registers the custom layers);
* a SavedModel directory, always run through its serving signature, so it needs no Python code,
  Keras metadata or not;
* a ``.tflite`` file, run with LiteRT's interpreter (int8 inputs and outputs are (de)quantised
  here, so callers always pass normalised float32 images and get float32 scores back);
* a ``.onnx`` file, run with onnxruntime (``deploy.onnx``; the ``onnx`` extra).

Every kind becomes a ``LoadedModel`` whose ``predict`` maps float32 images ``[B, H, W, C]`` to
class scores ``[B, K]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import types
import zipfile
from collections.abc import Callable

import ml_collections
import numpy as np
import tensorflow as tf
import tf_keras as keras

from compression import quantization
from deploy import paths, tflite
from deploy.workdir import Workdir, owning_workdir, read_class_names


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
      class_names: the class names the model was trained with (a run's or export's
        ``classes.json``), index = output; None where none were saved.
    """

    path: str
    kind: str
    file: str
    input_shape: tuple[int, int, int]
    num_classes: int
    predict: Callable[[np.ndarray], np.ndarray]
    keras_model: keras.Model | None = None
    config: ml_collections.ConfigDict | None = None
    class_names: list[str] | None = None


def load_workdir_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a training run wrote to its ``config.json``."""
    return ml_collections.ConfigDict(Workdir(workdir).read_config())


def load_model(path: str) -> LoadedModel:
    """Loads any model PATH (see the module docstring) into a ``LoadedModel``.

    Raises:
      FileNotFoundError: the path does not exist, or a workdir holds no model yet.
      ValueError: the path is not a model.
    """
    kind = paths.detect_kind(path)
    if kind == "workdir":
        loaded = _load_from_workdir(path)
        loaded = dataclasses.replace(
            loaded, path=path, kind="workdir", config=load_workdir_config(path)
        )
    elif kind == "keras":
        loaded = wrap_keras_model(load_keras_file(path), path=path, file=path)
    elif kind == "saved_model":
        loaded = _load_saved_model(path)
    elif kind == "onnx":
        loaded = _load_onnx(path)
    else:
        loaded = _load_tflite(path)
    return dataclasses.replace(loaded, class_names=saved_class_names(loaded))


def saved_class_names(loaded: LoadedModel) -> list[str] | None:
    """The ``classes.json`` beside the loaded file (an export's), else its workdir's."""
    places = [os.path.dirname(os.path.abspath(loaded.file.rstrip("/")))]
    workdir = loaded.path if loaded.kind == "workdir" else owning_workdir(loaded.file, levels=3)
    if workdir:
        places.append(workdir)
    for place in places:
        names = read_class_names(place)
        if names is not None:
            return names
    return None


class _InMemoryMembersZipFile(zipfile.ZipFile):
    """A ``ZipFile`` whose ``.h5`` members open as in-memory copies (see below)."""

    def open(self, name, mode="r", *args, **kwargs):
        member = super().open(name, mode, *args, **kwargs)
        if mode != "r" or not str(getattr(name, "filename", name)).endswith(".h5"):
            return member
        with member:
            return io.BytesIO(member.read())


@contextlib.contextmanager
def _weights_read_in_memory():
    """While open, tf_keras reads a ``.keras`` file's weights from an in-memory copy.

    tf_keras hands h5py the weights member as zipfile's stream, and h5py seeks around in it;
    before Python 3.12 every backward seek re-reads the member from its start, so a ResNet-50
    file (157 MB) took 56 s to load instead of 3.4 s. One read into memory makes the seeks
    free, for a transient copy of the weights. It swaps the ``zipfile`` module that tf_keras'
    ``saving_lib`` sees for one whose ``ZipFile`` does this, so it is not thread-safe: loads
    are sequential here.
    """
    from tf_keras.src.saving import saving_lib

    original = saving_lib.zipfile
    saving_lib.zipfile = types.SimpleNamespace(
        **{**vars(zipfile), "ZipFile": _InMemoryMembersZipFile}
    )
    try:
        yield
    finally:
        saving_lib.zipfile = original


def load_keras_file(path: str) -> keras.Model:
    """A ``.keras`` file, loaded with ``safe_mode=True`` and without its optimizer.

    Raises:
      ValueError: the file is truncated or not a Keras file, or it uses a layer that is not
        registered (naming the layer and what to import).
    """
    import layers  # noqa: F401  registers the lightnets layers for safe deserialisation

    if not zipfile.is_zipfile(path):
        raise ValueError(f"truncated or not a Keras file: {path}")
    unregistered = _unregistered_layers(path)
    if unregistered:
        raise ValueError(
            f"{path} uses layer(s) {', '.join(unregistered)} that no imported module registers; "
            f"`import layers` (lightnets' layers package, from the repository root or an "
            f"installed lightnets) before keras.models.load_model, or load it with "
            f"deploy.loading.load_keras_file."
        )
    try:
        # A QAT model's tfmot wrappers and configs; the weights read from memory.
        with quantization.quantize_scope(), _weights_read_in_memory():
            return keras.models.load_model(path, compile=False, safe_mode=True)
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as error:
        raise ValueError(f"truncated or not a Keras file: {path} ({error})") from None


def _unregistered_layers(path: str) -> list[str]:
    """``registered_name``s (``package>Class``) in a ``.keras`` file's config that Keras cannot
    resolve: its own error for them is ``'str' object is not callable``."""
    from tf_keras.src.saving import saving_lib  # the archive's member names are Keras'

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read(saving_lib._CONFIG_FILENAME))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as error:
        raise ValueError(f"truncated or not a Keras file: {path} ({error})") from None
    names: set[str] = set()

    def visit(node):
        if isinstance(node, dict):
            name = node.get("registered_name")
            if isinstance(name, str) and ">" in name:
                names.add(name)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(config)
    return sorted(n for n in names if keras.saving.get_registered_object(n) is None)


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
    run = Workdir(workdir)
    exported = run.exported("keras")
    if os.path.exists(exported):
        return wrap_keras_model(load_keras_file(exported), path=workdir, file=exported)
    for directory in (run.best, run.checkpoints):
        prefix = tf.train.latest_checkpoint(directory) if os.path.isdir(directory) else None
        if prefix:
            return wrap_keras_model(load_source_model(prefix), path=workdir, file=prefix)
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


def _from_runner(path: str, kind: str, runner) -> LoadedModel:
    """A model file served by a runtime's runner (``input_shape``, ``num_outputs``, callable)."""
    return LoadedModel(
        path=path,
        kind=kind,
        file=path,
        input_shape=runner.input_shape,
        num_classes=runner.num_outputs,
        predict=runner,
    )


def _load_tflite(path: str) -> LoadedModel:
    return _from_runner(path, "tflite", tflite.Runner(path))


def _load_onnx(path: str) -> LoadedModel:
    from deploy import onnx

    return _from_runner(path, "onnx", onnx.Runner(path))


# -- training checkpoints -----------------------------------------------------------------------


def _find_config(path: str) -> str | None:
    """The ``config.json`` of the workdir that is or holds ``path`` (up to two levels above)."""
    run = Workdir(path)
    if os.path.isfile(run.config_json):
        return run.config_json
    workdir = owning_workdir(path, levels=3)
    return Workdir(workdir).config_json if workdir else None


def resolve_checkpoint(path: str, label: str = "config.init_checkpoint") -> str:
    """A checkpoint prefix from a workdir, a checkpoint directory or a prefix.

    Raises:
      ValueError: nothing restorable at ``path`` (the message starts ``{label}='{path}'``).
    """
    for directory in (Workdir(path).checkpoints, path):
        if os.path.isdir(directory):
            latest = tf.train.latest_checkpoint(directory)
            if latest:
                return latest
    if tf.io.gfile.exists(f"{path}.index"):
        return path
    raise ValueError(
        f"{label}='{path}' holds no checkpoint; pass a finished workdir, its "
        f"checkpoints/ or best/ directory, a checkpoint prefix (…/ckpt-N) or a .keras file."
    )


def load_source_model(path: str, label: str = "config.init_checkpoint") -> keras.Model:
    """The model stored at ``path``: a ``.keras`` file, or a checkpoint of a train.py run.

    A checkpoint is restored into a model rebuilt from its workdir's ``config.json`` (which
    records the model name, input size and number of classes), pruning wrappers included, or,
    for a channel-pruned run, into the workdir's ``architecture.keras``.

    Raises:
      ValueError: nothing loadable at ``path`` (the message names ``label`` and the path).
    """
    if path.endswith(".keras"):
        if not os.path.exists(path):
            raise ValueError(f"{label}='{path}' does not exist.")
        return load_keras_file(path)
    prefix = resolve_checkpoint(path, label)
    config_path = _find_config(prefix)
    if config_path is None:
        raise ValueError(
            f"{label}='{path}': no config.json found beside {prefix}, so its "
            f"architecture is unknown; pass a workdir written by train.py or a .keras file."
        )
    import architectures
    from compression import pruning

    source = load_workdir_config(os.path.dirname(config_path))
    size, classes = source.data.image_size, source.data.num_classes
    architecture = Workdir(os.path.dirname(config_path)).architecture
    if os.path.isfile(architecture):  # channel-pruned: the registry name is the dense model
        model = load_keras_file(architecture)
    else:
        model = architectures.create_model(
            source.model.name,
            input_shape=(size, size, 3),
            num_classes=classes,
            dropout=source.model.dropout,
            **source.model.kwargs,
        )
    if pruning.is_enabled(source.pruning):
        model = pruning.rebuild(model, source.pruning)
    qat = source.get("quantization")  # a QAT run's checkpoint holds the wrappers
    if qat is not None and quantization.is_enabled(qat):
        model = quantization.apply(model, qat, sparse=False)
    tf.train.Checkpoint(model=model).restore(prefix).expect_partial()
    return model
