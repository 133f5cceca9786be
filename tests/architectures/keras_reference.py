"""keras.applications' counterparts of our variants, with random weights that carry a signal.

keras.applications' own random initialisation (fresh BN statistics, Glorot kernels) shrinks the
activations of these deep stacks to about 1e-11 at the logits, so any two models would agree to
1e-5. ``randomize`` draws He-scaled kernels, then sets every BN's moving statistics to those of a
batch (one training-mode pass with momentum 0), so each layer's output keeps unit scale and the
logits depend on the input.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import tf_keras as keras


def _alpha(name: str) -> float:
    return int(name.rsplit("_", 1)[1]) / 100


def keras_application(
    name: str,
    *,
    input_size: int,
    include_top: bool = True,
    num_classes: int = 1000,
) -> keras.Model:
    """keras.applications' model of ``name`` with ``weights=None``, logits out.

    MobileNetV3 is built with ``include_preprocessing=False`` (inputs in [-1, 1], as ours).
    """
    shape = (input_size, input_size, 3)
    common = dict(
        input_shape=shape,
        weights=None,
        include_top=include_top,
        classes=num_classes,
        classifier_activation=None,
    )
    if name.startswith("mobilenet_v1_"):
        return keras.applications.MobileNet(alpha=_alpha(name), **common)
    if name.startswith("mobilenet_v2_"):
        return keras.applications.MobileNetV2(alpha=_alpha(name), **common)
    if name.startswith("mobilenet_v3_"):
        build = (
            keras.applications.MobileNetV3Large
            if "_large_" in name
            else keras.applications.MobileNetV3Small
        )
        return build(
            alpha=_alpha(name),
            minimalistic="_minimalistic_" in name,
            include_preprocessing=False,
            **common,
        )
    if name == "xception":
        return keras.applications.Xception(**common)
    raise ValueError(f"no keras.applications counterpart for {name!r}")


def randomize(model: keras.Model, images: np.ndarray, seed: int = 0) -> None:
    """He-scaled random kernels, random BN affine terms and biases, BN statistics of ``images``."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for weight in layer.weights:
            role = weight.name.split("/")[-1].split(":")[0]
            shape = tuple(weight.shape)
            if role.startswith("moving_"):
                values.append(weight.numpy())
            elif role == "gamma":
                values.append(rng.uniform(0.5, 1.5, shape))
            elif role in ("beta", "bias"):
                values.append(0.1 * rng.standard_normal(shape))
            else:  # a kernel: (k, k, C, 1) depthwise, (k, k, C, N) conv, (C, N) dense
                fan_in = np.prod(shape[:2]) if role == "depthwise_kernel" else np.prod(shape[:-1])
                values.append(rng.standard_normal(shape) * np.sqrt(2.0 / fan_in))
        if values:
            layer.set_weights(values)
    batch_norms = [
        layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in batch_norms]
    for layer in batch_norms:
        layer.momentum = 0.0
    model(images, training=True)
    for layer, momentum in zip(batch_norms, momenta, strict=True):
        layer.momentum = momentum


def publish_stand_in(
    name: str, reference: keras.Model, *, input_size: int, include_top: bool, monkeypatch
) -> str:
    """Writes ``reference``'s weights where ``"imagenet"`` looks for the variant's file.

    The file goes into the Keras cache (``$KERAS_HOME/models``, pointed at a temporary directory
    by the ``offline_keras_cache`` fixture) under keras.applications' file name, in its HDF5
    layout (``save_weights``). Where keras.applications checks a hash, the registry's hash is
    replaced by the stand-in's, so the cached file passes ``get_file``'s check as the real one
    would. Returns the file's path.
    """
    from architectures import pretrained, registry

    spec = registry.get_model_spec(name)
    weight_file = spec.weights.file_for(input_size, include_top)
    path = Path(pretrained.keras_cache_dir()) / weight_file.file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    reference.save_weights(str(path))
    if weight_file.file_hash is not None:
        digest = hashlib.md5(path.read_bytes()).hexdigest()
        files = tuple(
            dataclasses.replace(f, file_hash=digest) if f == weight_file else f
            for f in spec.weights.files
        )
        weights = dataclasses.replace(spec.weights, files=files)
        monkeypatch.setitem(registry._REGISTRY, name, dataclasses.replace(spec, weights=weights))
    return str(path)
