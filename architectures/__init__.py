"""Architectures: one file per family, and the registry the trainer builds models through.

    from architectures import create_model, list_models
    model = create_model("shufflenet_v1_g3_100", input_shape=(32, 32, 3), num_classes=10)

Every family module is imported here, explicitly, so that its variants are registered.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from architectures.registry import (  # noqa: E402
    IMAGENET_PREPROCESSING,
    INCEPTION_PREPROCESSING,
    ModelSpec,
    Preprocessing,
    create_model,
    get_model_spec,
    list_models,
    register_model,
)

# Family modules (each registers its variants). Keep this list in sync with the files.
from architectures import (  # noqa: E402, F401  isort: skip
    deeplab,
    fd_mobilenet,
    mobilenet_v1,
    mobilenet_v2,
    mobilenet_v3,
    resnet,
    shufflenet_v1,
    shufflenet_v2,
    xception,
)

__all__ = [
    "IMAGENET_PREPROCESSING",
    "INCEPTION_PREPROCESSING",
    "ModelSpec",
    "Preprocessing",
    "create_model",
    "get_model_spec",
    "list_models",
    "register_model",
]
