"""A tiny classifier trained on the digits once per test session and exported to every format.

Shared by the evaluation, export and CLI tests. Under pytest-xdist every worker asks for it; a
file lock makes the first one train and export while the others wait and reuse its files.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tf_keras as keras  # noqa: E402

IMAGE_SIZE = 16
TRAIN_STEPS = 400
# A registered variant with the Inception preprocessing the tiny model is trained with; the fake
# workdir names it so evaluation looks its preprocessing up as for a real run.
WORKDIR_MODEL_NAME = "mobilenet_v2_035"


@dataclasses.dataclass
class TrainedDigits:
    """Files of the session's trained model.

    Attributes:
      keras_path: the trained model as ``.keras``.
      paths: ``deploy.export`` format -> exported path.
      workdir: a workdir layout (config.json naming a registered variant, export/model.keras).
      reference: the model's own ``keras.Model.evaluate`` on the validation split: ``top1``,
        ``top5``, ``loss``.
      parity: ``check_parity`` rows as dicts.
    """

    keras_path: str
    paths: dict
    workdir: str
    reference: dict
    parity: list


def build_tiny_model(num_classes: int = 10) -> keras.Model:
    """Conv-BN-ReLU stem, one lightnets separable conv (so loading needs ``import layers``)."""
    import layers

    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="images")
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(
        inputs
    )
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = layers.DepthwiseSeparableConv2D(32, 3, strides=2, activation="relu", name="separable")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(num_classes, name="classifier")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name="tiny_digits")


def digits_config():
    from configs.common import get_base_config

    config = get_base_config()
    config.model.name = WORKDIR_MODEL_NAME
    config.data.image_size = IMAGE_SIZE
    return config


def _train_and_export(root: Path) -> TrainedDigits:
    import architectures
    from trainer import data, model_data

    config = digits_config()
    bundle = data.build_datasets(
        config.data,
        image_size=IMAGE_SIZE,
        preprocessing=architectures.INCEPTION_PREPROCESSING,
        batch_size=32,
        seed=0,
    )
    keras.utils.set_random_seed(0)
    model = build_tiny_model(bundle.num_classes)
    model.compile(
        keras.optimizers.Adam(3e-3),
        "sparse_categorical_crossentropy",
        [
            keras.metrics.SparseCategoricalAccuracy(name="top1"),
            keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5"),
        ],
    )
    model.fit(bundle.train, steps_per_epoch=TRAIN_STEPS, epochs=1, verbose=0)
    reference = model.evaluate(bundle.val, return_dict=True, verbose=0)
    keras_path = str(root / "trained.keras")
    model.save(keras_path)

    model_and_data = model_data.load_with_data(keras_path, config.data, batch_size=64)
    paths, rows = model_data.export_and_check(model_and_data, str(root / "export"), formats="all")

    workdir = root / "workdir"
    (workdir / "export").mkdir(parents=True)
    (workdir / "config.json").write_text(config.to_json())
    shutil.copy(keras_path, workdir / "export" / "model.keras")
    return TrainedDigits(
        keras_path=keras_path,
        paths=paths,
        workdir=str(workdir),
        reference={key: float(value) for key, value in reference.items()},
        parity=[dataclasses.asdict(row) for row in rows],
    )


def trained_digits(tmp_path_factory) -> TrainedDigits:
    """Trains and exports once per session, across xdist workers (the base temp's parent is
    shared by the workers of one run)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    root = base / "lightnets_trained_digits"
    root.mkdir(exist_ok=True)
    state = root / "state.json"
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not state.exists():
            trained = _train_and_export(root)
            state.write_text(json.dumps(dataclasses.asdict(trained)))
    return TrainedDigits(**json.loads(state.read_text()))
