"""ImageNet weights that keras.applications publishes, loaded into lightnets models by layer name.

MobileNet v1/v2/v3 and Xception compute the same functions as keras.applications' models of the
same name, so the weight files keras.applications downloads serve lightnets models directly.
Each family maps keras.applications' layer names to its own (``PublishedWeights.layer_name``)
and every variant with weights registers its file table (``ModelSpec.weights``)::

    create_model("mobilenet_v2_100", pretrained="imagenet")           # downloads once, cached
    create_model("mobilenet_v2_100", pretrained="/data/mobilenet_v2_weights_...224.h5")
    create_model("mobilenet_v3_small_100", num_classes=5, pretrained="imagenet")  # new classifier

``"imagenet"`` goes through ``keras.utils.get_file`` into ``$KERAS_HOME/models`` (default
``~/.keras/models``, where keras.applications caches the same files), so a machine that has the
file needs no network. A path loads that file: keras.applications' HDF5 layout (``layer_names``
and ``weight_names`` attributes, as ``save_weights`` writes it) or a lightnets model's own HDF5
weights. Layers whose shapes differ (a classifier for another number of classes) or that the file
lacks (the classifier, with a file saved without the top) stay freshly initialised, and the log
lists them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tf_keras as keras
from absl import logging

from architectures.common import CLASSIFIER_NAME

IMAGENET = "imagenet"
KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
CACHE_SUBDIR = "models"
# Layers that belong to the top (the part keras.applications drops with include_top=False): a
# file's top is left unused when the model has no top.
TOP_LAYERS = (CLASSIFIER_NAME, "pre_logits")

WeightShapes = tuple[tuple[int, ...], ...]


class PretrainedWeightsError(ValueError):
    """Weights that cannot be loaded; the message is one line saying what to do instead.

    A ``ValueError``, as the entry points report bad configuration in one line.
    """


@dataclasses.dataclass(frozen=True)
class WeightFile:
    """One weight file keras.applications publishes.

    Attributes:
      file_name: the name keras.applications caches it under (``$KERAS_HOME/models/<name>``).
      url: where keras.applications downloads it from.
      file_hash: its md5 (or sha256) as keras.applications checks it; None where it checks none.
      input_size: the square input size the weights were trained at.
      include_top: whether the file holds the classifier (keras.applications' ``include_top``).
    """

    file_name: str
    url: str
    file_hash: str | None
    input_size: int
    include_top: bool


@dataclasses.dataclass(frozen=True)
class PublishedWeights:
    """The ImageNet weights of one variant: its files and how their layers map onto ours.

    Attributes:
      source: the keras.applications call whose weights these are, e.g. ``MobileNetV2(alpha=1.0)``.
      files: one ``WeightFile`` per published input size, with and without the top.
      layer_name: ``(file layer name, its weight shapes) -> our layer name``, or None for a name
        the family does not know (then a layer of the model's own name is looked for).
      builder_kwargs: builder arguments the weights need to compute what they computed in
        keras.applications (MobileNet v1/v2: ``stride2_padding="same"``); ``create_model`` uses
        them as defaults whenever it loads these weights.
    """

    source: str
    files: tuple[WeightFile, ...]
    layer_name: Callable[[str, WeightShapes], str | None]
    builder_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def input_sizes(self) -> tuple[int, ...]:
        """The published input sizes, ascending."""
        return tuple(sorted({f.input_size for f in self.files}))

    def file_for(self, input_size: int | None, include_top: bool) -> WeightFile:
        """The file for a square ``input_size`` if published, else the largest size's file."""
        size = input_size if input_size in self.input_sizes else self.input_sizes[-1]
        return next(f for f in self.files if f.input_size == size and f.include_top == include_top)


def weight_files(
    *,
    base_url: str,
    file_name: Callable[[int, bool], str],
    input_sizes: tuple[int, ...],
    hashes: Mapping[bool, str] | None = None,
) -> tuple[WeightFile, ...]:
    """A family's file table: ``file_name(input_size, include_top)`` under ``base_url``.

    ``hashes`` maps ``include_top`` to the file's hash, for families with one size.
    """
    return tuple(
        WeightFile(
            file_name=file_name(size, top),
            url=base_url + file_name(size, top),
            file_hash=(hashes or {}).get(top),
            input_size=size,
            include_top=top,
        )
        for size in input_sizes
        for top in (True, False)
    )


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What ``load_weights`` did.

    Attributes:
      path: the weight file read.
      loaded: our layers that received weights, in model order.
      fresh: our layers with weights that kept their initialisation (no counterpart in the file,
        or a counterpart of another shape, such as a classifier for another class count).
      unused: layers of the file that went nowhere (the top, for a model without one).
      loaded_params: scalars loaded (moving statistics included).
      fresh_params: scalars left at their initialisation.
    """

    path: str
    loaded: tuple[str, ...]
    fresh: tuple[str, ...]
    unused: tuple[str, ...]
    loaded_params: int
    fresh_params: int

    def summary(self, model_name: str) -> str:
        """One line for the log."""
        fresh = ", ".join(self.fresh) if self.fresh else "nothing"
        unused = f"; unused from the file: {', '.join(self.unused)}" if self.unused else ""
        return (
            f"{model_name}: loaded {len(self.loaded)} layers ({self.loaded_params:,} values) "
            f"from {self.path}; left fresh: {fresh} ({self.fresh_params:,} values){unused}."
        )


def keras_cache_dir() -> str:
    """Where ``keras.utils.get_file`` keeps downloads: ``$KERAS_HOME/models``.

    ``KERAS_HOME`` defaults to ``~/.keras`` and is created if missing: ``get_file`` falls back
    to ``/tmp/.keras`` for a home it cannot write to, a missing one included, and so does this.
    """
    home = os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))
    with contextlib.suppress(OSError):  # unwritable: the fallback below, as get_file
        os.makedirs(home, exist_ok=True)
    if not os.access(home, os.W_OK):
        home = os.path.join("/tmp", ".keras")
    return os.path.join(home, CACHE_SUBDIR)


def fetch(weight_file: WeightFile, *, model_name: str) -> str:
    """The local path of ``weight_file``: the Keras cache, downloaded into it when missing.

    Raises:
      PretrainedWeightsError: not cached and not downloadable (no network, say); the message
        names the file, its URL and where to put it.
    """
    cache_dir = keras_cache_dir()
    try:
        return keras.utils.get_file(
            weight_file.file_name,
            weight_file.url,
            cache_dir=os.path.dirname(cache_dir),
            cache_subdir=CACHE_SUBDIR,
            file_hash=weight_file.file_hash,
        )
    except Exception as error:  # get_file raises a bare Exception on network errors
        # get_file's "URL fetch failure on <url>: <code> -- <reason>": the URL follows anyway.
        reason = " ".join(str(error).split()).rsplit(" -- ", 1)[-1]
        raise PretrainedWeightsError(
            f"{model_name}: the ImageNet weights {weight_file.file_name} are not in the Keras "
            f"cache and could not be downloaded ({reason}); fetch {weight_file.url} and put it "
            f"at {os.path.join(cache_dir, weight_file.file_name)}, or pass pretrained=<path of "
            f"the file>."
        ) from None


def resolve(
    pretrained: str,
    weights: PublishedWeights | None,
    *,
    model_name: str,
    input_size: int | None,
    include_top: bool,
) -> str:
    """The weight file ``pretrained`` names: ``"imagenet"`` (fetched) or a path.

    Raises:
      PretrainedWeightsError: no published weights for the variant, or no such file.
    """
    if pretrained == IMAGENET:
        if weights is None:
            raise PretrainedWeightsError(
                f"{model_name} has no published ImageNet weights (keras.applications has none "
                f"for it); pretrained='imagenet' works for the variants whose "
                f"get_model_spec(name).weights is set, or pass pretrained=<path of a weight file>."
            )
        chosen = weights.file_for(input_size, include_top)
        if chosen.input_size != input_size:
            logging.info(
                "%s: no ImageNet weights published for %s inputs (sizes %s); using the %d-pixel "
                "ones.",
                model_name,
                f"{input_size}-pixel" if input_size else "non-square",
                ", ".join(map(str, weights.input_sizes)),
                chosen.input_size,
            )
        return fetch(chosen, model_name=model_name)
    path = os.path.expanduser(str(pretrained))
    if not os.path.isfile(path):
        raise PretrainedWeightsError(
            f"{model_name}: pretrained={pretrained!r} is neither 'imagenet' nor an existing "
            f"file; pass 'imagenet' or the path of an HDF5 weight file."
        )
    return path


def _attribute_list(group, name: str) -> list[str]:
    """An HDF5 string-list attribute, also when Keras split it into ``name0``, ``name1``, ...."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def read_weights(path: str, *, model_name: str) -> list[tuple[str, list[np.ndarray]]]:
    """``(layer name, arrays)`` for every layer with weights in a Keras HDF5 weight file.

    Raises:
      PretrainedWeightsError: the file is not a Keras HDF5 weight file.
    """
    import h5py

    try:
        with h5py.File(path, "r") as file:
            root = file.get("model_weights", file)
            layers = []
            for name in _attribute_list(root, "layer_names"):
                group = root[name]
                arrays = [np.asarray(group[w]) for w in _attribute_list(group, "weight_names")]
                if arrays:
                    layers.append((name, arrays))
    except (OSError, KeyError) as error:
        raise PretrainedWeightsError(
            f"{model_name}: {path} is not a Keras HDF5 weight file ({error}); pass the .h5 file "
            f"keras.applications publishes or one written by model.save_weights('<name>.h5')."
        ) from None
    if not layers:
        raise PretrainedWeightsError(
            f"{model_name}: {path} holds no layer weights; pass the .h5 file keras.applications "
            f"publishes or one written by model.save_weights('<name>.h5')."
        )
    return layers


def _fits(arrays: list[np.ndarray], variables) -> list[np.ndarray] | None:
    """``arrays`` shaped for ``variables`` (a 1×1 conv kernel becomes a Dense kernel), or None."""
    if len(arrays) != len(variables):
        return None
    shaped = []
    for array, variable in zip(arrays, variables, strict=True):
        shape = tuple(variable.shape)
        if array.shape != shape:
            if array.size != np.prod(shape) or tuple(d for d in array.shape if d != 1) != tuple(
                d for d in shape if d != 1
            ):
                return None
            array = array.reshape(shape)
        shaped.append(array)
    return shaped


def load_weights(
    model: keras.Model, path: str, weights: PublishedWeights | None, *, model_name: str
) -> LoadReport:
    """Copies the weights of a Keras HDF5 file into ``model``, layer by mapped name.

    Args:
      model: the freshly built lightnets model.
      path: the weight file.
      weights: the variant's published weights (its ``layer_name`` mapping); None: names must
        be the model's own.
      model_name: for messages.

    Returns:
      A ``LoadReport`` (also logged).

    Raises:
      PretrainedWeightsError: a file layer maps to no layer of the model (a file of another
        architecture), or maps to one whose shapes differ outside the classifier (another width).
    """
    ours = {layer.name: layer for layer in model.layers}
    assigned: dict[str, list[np.ndarray]] = {}
    unused = []
    for file_layer, arrays in read_weights(path, model_name=model_name):
        shapes = tuple(a.shape for a in arrays)
        target = weights.layer_name(file_layer, shapes) if weights else None
        if target is None and file_layer in ours:
            target = file_layer
        if target in TOP_LAYERS and target not in ours:
            unused.append(file_layer)
            continue
        if target not in ours:
            raise PretrainedWeightsError(
                f"{model_name}: layer {file_layer!r} of {path} has no counterpart in the model; "
                f"is it the weight file of another architecture?"
            )
        shaped = _fits(arrays, ours[target].weights)
        if shaped is None:
            if target == CLASSIFIER_NAME:
                continue  # another number of classes: the classifier starts fresh
            raise PretrainedWeightsError(
                f"{model_name}: layer {file_layer!r} of {path} holds shapes {list(shapes)}, the "
                f"model's {target!r} needs {[tuple(w.shape) for w in ours[target].weights]}; is "
                f"it the weight file of another width (alpha)?"
            )
        assigned[target] = shaped
    for target, arrays in assigned.items():
        ours[target].set_weights(arrays)
    with_weights = [layer for layer in model.layers if layer.weights]
    fresh = [layer for layer in with_weights if layer.name not in assigned]

    def values(layers) -> int:
        return int(sum(int(np.prod(w.shape)) for layer in layers for w in layer.weights))

    report = LoadReport(
        path=path,
        loaded=tuple(layer.name for layer in with_weights if layer.name in assigned),
        fresh=tuple(layer.name for layer in fresh),
        unused=tuple(unused),
        loaded_params=values([layer for layer in with_weights if layer.name in assigned]),
        fresh_params=values(fresh),
    )
    logging.info("%s", report.summary(model_name))
    return report
