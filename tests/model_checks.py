"""Shared checks for tests: reload in a fresh process, TFLite conversion and run, prune round trip.

Every part's tests use these, so they are built to be cheap: one subprocess for many models,
converters with builtin ops only (a Flex op fails conversion instead of hiding in the model).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

QUANTIZE_MODES = (None, "float16", "dynamic_range", "int8")

# Runs in a fresh interpreter: only the registered lightnets layers (via `import layers`) make the
# custom objects resolvable, exactly as for a user loading the file.
_RELOAD_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras
    import layers  # noqa: F401  (registers the lightnets layers)

    fmt, workdir, count, loader = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if loader == "lightnets":
        from deploy.loading import load_keras_file
    for i in range(count):
        with np.load(os.path.join(workdir, f"inputs_{i}.npz")) as data:
            inputs = [data[f"arr_{j}"] for j in range(len(data.files))]
        if fmt == "keras":
            path = os.path.join(workdir, f"model_{i}.keras")
            if loader == "lightnets":
                model = load_keras_file(path)
            else:
                model = keras.models.load_model(path, safe_mode=True, compile=False)
            out = model.predict_on_batch(inputs if len(inputs) > 1 else inputs[0])
        else:
            serve = tf.saved_model.load(os.path.join(workdir, f"saved_model_{i}"))
            serve = serve.signatures["serving_default"]
            names = sorted(serve.structured_input_signature[1])
            if len(names) != len(inputs):
                raise SystemExit(f"model {i}: signature takes {names}, got {len(inputs)} inputs")
            outputs = serve(**{n: tf.constant(x) for n, x in zip(names, inputs)})
            if len(outputs) != 1:
                raise SystemExit(f"model {i}: expected one output, got {sorted(outputs)}")
            out = next(iter(outputs.values())).numpy()
        np.save(os.path.join(workdir, f"output_{i}.npy"), np.asarray(out))
    """
)


def _as_list(inputs) -> list[np.ndarray]:
    if isinstance(inputs, (list, tuple)):
        return [np.asarray(x) for x in inputs]
    return [np.asarray(inputs)]


def predict_in_fresh_process(
    models_and_inputs, tmp_path, fmt: str = "keras", loader: str = "keras"
) -> list[np.ndarray]:
    """Saves each model, reloads all of them in ONE fresh Python process and predicts there.

    Args:
      models_and_inputs: sequence of ``(keras.Model, inputs)``; ``inputs`` is an array or a list
        of arrays (one per model input, in the model's input order).
      tmp_path: a directory to write the models, inputs and outputs into.
      fmt: ``"keras"`` (``model.keras``, loaded with ``safe_mode=True``) or ``"saved_model"``
        (TF SavedModel, run through its ``serving_default`` signature; inputs are matched to the
        signature's input names in sorted order).
      loader: for ``"keras"``: ``"keras"`` (``keras.models.load_model``, what a user of the
        layers calls) or ``"lightnets"`` (``deploy.loading.load_keras_file``, what evaluate.py
        and export.py call: also ``safe_mode=True``, and fast for large files on Python < 3.12).

    Returns:
      One output array per model, in order.

    Raises:
      ValueError: unknown ``fmt``.
      AssertionError: the subprocess failed (its stderr is in the message).
    """
    if fmt not in ("keras", "saved_model"):
        raise ValueError(f"fmt={fmt!r} is not supported; use 'keras' or 'saved_model'.")
    if loader not in ("keras", "lightnets"):
        raise ValueError(f"loader={loader!r} is not supported; use 'keras' or 'lightnets'.")
    workdir = Path(tmp_path) / f"fresh_{fmt}"
    workdir.mkdir(parents=True, exist_ok=True)
    for i, (model, inputs) in enumerate(models_and_inputs):
        np.savez(workdir / f"inputs_{i}.npz", *_as_list(inputs))
        if fmt == "keras":
            model.save(workdir / f"model_{i}.keras")
        else:
            model.save(str(workdir / f"saved_model_{i}"), save_format="tf")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _RELOAD_SCRIPT,
            fmt,
            str(workdir),
            str(len(models_and_inputs)),
            loader,
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"reload ({fmt}) failed:\n{result.stderr[-5000:]}"
    return [np.load(workdir / f"output_{i}.npy") for i in range(len(models_and_inputs))]


def _representative_images(model: keras.Model, samples: int = 8) -> np.ndarray:
    shape = tuple(d if d is not None else 1 for d in model.inputs[0].shape[1:])
    return np.random.default_rng(0).standard_normal((samples, *shape)).astype(np.float32)


def tflite_convert(
    model: keras.Model, quantize: str | None = None, representative_dataset=None
) -> bytes:
    """The library's one TFLite path (``deploy.tflite.convert``), with float input and output.

    Args:
      model: a Keras model with one image input, static apart from the batch dimension.
      quantize: ``None`` (float32), ``"float16"``, ``"dynamic_range"`` or ``"int8"`` (full integer
        kernels, float input and output).
      representative_dataset: for ``"int8"``, a callable yielding ``[image[None]]`` batches
        (defaults to 8 standard-normal samples of the model's input shape).
    """
    from deploy import tflite

    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize={quantize!r} is not supported; use one of {QUANTIZE_MODES}.")
    images = None
    if quantize == "int8":
        images = (
            np.concatenate([batch[0] for batch in representative_dataset()])
            if representative_dataset
            else _representative_images(model)
        )
    return tflite.convert(model, quantize or "float32", representative_images=images, int8_io=False)


def tflite_predict(tflite_bytes: bytes, inputs) -> np.ndarray:
    """Runs a TFLite model through ``deploy.tflite.Runner`` on a batch of any size."""
    from deploy import tflite

    return tflite.Runner(tflite_bytes)(np.asarray(inputs, np.float32))


def tflite_op_names(tflite_bytes: bytes) -> set[str]:
    """Operators of a TFLite flatbuffer (``deploy.tflite.op_names``)."""
    from deploy import tflite

    return tflite.op_names(tflite_bytes)


def prune_train_strip(
    model: keras.Model, x, y, sparsity: float = 0.5, run_eagerly: bool = False
) -> keras.Model:
    """Wraps ``model`` with tfmot pruning, trains one step, strips the wrappers.

    Args:
      model: a functional or sequential Keras model.
      x: a training batch (array or list of arrays).
      y: its targets: integer class labels (sparse cross-entropy on the outputs as logits) or
        float targets of the output's shape (mean squared error).
      sparsity: constant target sparsity applied from step 0.
      run_eagerly: train the step eagerly. For whole networks: tracing the training step of a
        model with a pruning wrapper around each of its hundreds of layers takes about a minute
        on two cores, the eager step a few seconds, and the wrappers do the same either way.

    Returns:
      The stripped model (plain layers again, pruned weights zeroed).
    """
    import tensorflow_model_optimization as tfmot

    schedule = tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=1)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.integer):
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        loss = keras.losses.MeanSquaredError()
    pruned.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss, run_eagerly=run_eagerly)
    batch = len(_as_list(x)[0])
    pruned.fit(
        x,
        y,
        batch_size=batch,
        epochs=1,
        verbose=0,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
    )
    return tfmot.sparsity.keras.strip_pruning(pruned)
