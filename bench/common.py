"""What the benchmark commands share: their common flags, synthetic batches and model builders.

Only the chosen command's module is imported (``benchmark.py``), so each command defines just
the flags it reads, through these helpers, with the same names, defaults and help everywhere.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from absl import flags  # noqa: E402

import architectures  # noqa: E402

FLAGS = flags.FLAGS
PRECISIONS = ("float32", "float16", "bfloat16")


def define_model_flags(*, default_model: str = "mobilenet_v1_100", batch_size: int = 32) -> None:
    """``--model`` (names, comma-separated), ``--image_size``, ``--num_classes``,
    ``--batch_size``, ``--precision``, ``--jit_compile``, ``--compare_keras``."""
    flags.DEFINE_list("model", [default_model], "Registered model name(s), comma-separated.")
    flags.DEFINE_integer("image_size", None, "Square input size; default: each variant's own.")
    flags.DEFINE_integer("num_classes", 1000, "Classifier width.")
    flags.DEFINE_integer("batch_size", batch_size, "Images per step.")
    flags.DEFINE_enum("precision", "float32", list(PRECISIONS), "Compute dtype.")
    flags.DEFINE_bool("jit_compile", False, "Compile the steps with XLA.")
    flags.DEFINE_bool(
        "compare_keras", False, "Also run keras.applications' same model, interleaved."
    )


def define_timing_flags(*, repeats: int = 5, warmup: int = 2) -> None:
    """``--repeats`` (timed repeats; statistics are over these) and ``--warmup``."""
    flags.DEFINE_integer("repeats", repeats, "Timed repeats per candidate (medians over these).")
    flags.DEFINE_integer("warmup", warmup, "Untimed calls per candidate first.")


def define_output_flags(docs_section: str) -> None:
    """``--json`` and ``--write_docs`` (into ``docs_section``)."""
    flags.DEFINE_bool("json", False, "Print one JSON object per result instead of a table.")
    flags.DEFINE_bool("write_docs", False, f"Write the results into {docs_section}.")


def check_positive(command: str, *names: str) -> None:
    """Exits with one line naming the first of the flags ``names`` that is below 1."""
    for name in names:
        if FLAGS[name].value is not None and FLAGS[name].value < 1:
            raise SystemExit(f"benchmark.py {command}: --{name}={FLAGS[name].value} must be >= 1.")


def check_models(command: str, names) -> None:
    """Exits with the registry's message (close matches included) for an unknown model."""
    for name in names:
        try:
            architectures.get_model_spec(name)
        except ValueError as error:
            raise SystemExit(f"benchmark.py {command}: {error}") from None


def set_precision(precision: str) -> None:
    """The global Keras policy for ``--precision`` (float32 turns mixed precision off)."""
    policy = "float32" if precision == "float32" else f"mixed_{precision}"
    keras.mixed_precision.set_global_policy(policy)


def synthetic_batch(batch_size: int, input_shape, num_classes: int, seed: int = 0):
    """One fixed batch: uniform [-1, 1] images ``[B, H, W, C]`` and int32 labels ``[B]``."""
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.uniform(-1, 1, (batch_size, *input_shape)), tf.float32)
    labels = tf.constant(rng.integers(0, num_classes, batch_size), tf.int32)
    return images, labels


def input_shape_of(name: str, image_size: int | None) -> tuple[int, int, int]:
    """``(S, S, 3)`` with ``S`` the given size or the variant's own."""
    size = image_size or architectures.get_model_spec(name).input_size
    return size, size, 3


# keras.applications' builder and keyword arguments for each of our variants that it also has.
_KERAS_APPLICATIONS = {
    **{
        f"mobilenet_v1_{tag}": ("MobileNet", {"alpha": alpha})
        for tag, alpha in (("100", 1.0), ("075", 0.75), ("050", 0.5), ("025", 0.25))
    },
    **{
        f"mobilenet_v2_{tag}": ("MobileNetV2", {"alpha": alpha})
        for tag, alpha in (
            ("035", 0.35),
            ("050", 0.5),
            ("075", 0.75),
            ("100", 1.0),
            ("130", 1.3),
            ("140", 1.4),
        )
    },
    "xception": ("Xception", {}),
    "resnet50": ("ResNet50", {}),
}


def keras_application(name: str, input_shape, num_classes: int) -> keras.Model | None:
    """keras.applications' model matching our variant ``name``, or None if it has none."""
    if name not in _KERAS_APPLICATIONS:
        return None
    builder, kwargs = _KERAS_APPLICATIONS[name]
    return getattr(keras.applications, builder)(
        input_shape=input_shape, weights=None, classes=num_classes, **kwargs
    )


def models_to_compare(name: str, input_shape, num_classes: int, compare_keras: bool) -> dict:
    """``{"ours": model}`` plus ``{"keras": model}`` when asked and keras.applications has one."""
    models = {
        "ours": architectures.create_model(name, input_shape=input_shape, num_classes=num_classes)
    }
    theirs = keras_application(name, input_shape, num_classes) if compare_keras else None
    if theirs is not None:
        models["keras"] = theirs
    return models
