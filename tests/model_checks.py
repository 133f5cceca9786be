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
import tensorflow as tf  # noqa: E402
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

    fmt, workdir, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for i in range(count):
        with np.load(os.path.join(workdir, f"inputs_{i}.npz")) as data:
            inputs = [data[f"arr_{j}"] for j in range(len(data.files))]
        if fmt == "keras":
            model = keras.models.load_model(
                os.path.join(workdir, f"model_{i}.keras"), safe_mode=True, compile=False)
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


def predict_in_fresh_process(models_and_inputs, tmp_path, fmt: str = "keras") -> list[np.ndarray]:
    """Saves each model, reloads all of them in ONE fresh Python process and predicts there.

    Args:
      models_and_inputs: sequence of ``(keras.Model, inputs)``; ``inputs`` is an array or a list
        of arrays (one per model input, in the model's input order).
      tmp_path: a directory to write the models, inputs and outputs into.
      fmt: ``"keras"`` (``model.keras``, loaded with ``safe_mode=True``) or ``"saved_model"``
        (TF SavedModel, run through its ``serving_default`` signature; inputs are matched to the
        signature's input names in sorted order).

    Returns:
      One output array per model, in order.

    Raises:
      ValueError: unknown ``fmt``.
      AssertionError: the subprocess failed (its stderr is in the message).
    """
    if fmt not in ("keras", "saved_model"):
        raise ValueError(f"fmt={fmt!r} is not supported; use 'keras' or 'saved_model'.")
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
        [sys.executable, "-c", _RELOAD_SCRIPT, fmt, str(workdir), str(len(models_and_inputs))],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"reload ({fmt}) failed:\n{result.stderr[-5000:]}"
    return [np.load(workdir / f"output_{i}.npy") for i in range(len(models_and_inputs))]


def _representative_dataset(model: keras.Model, samples: int = 8):
    shapes = [tuple(d if d is not None else 1 for d in t.shape) for t in model.inputs]
    rng = np.random.default_rng(0)

    def generate():
        for _ in range(samples):
            yield [rng.standard_normal((1, *s[1:])).astype(np.float32) for s in shapes]

    return generate


def tflite_convert(
    model: keras.Model, quantize: str | None = None, representative_dataset=None
) -> bytes:
    """Converts a Keras model to a TFLite flatbuffer using builtin ops only (no Flex).

    Args:
      model: a Keras model with static input shapes apart from the batch dimension.
      quantize: ``None`` (float32), ``"float16"``, ``"dynamic_range"`` or ``"int8"`` (full integer
        kernels, float input and output).
      representative_dataset: calibration generator for ``"int8"``; defaults to 8 standard-normal
        samples of the model's input shape.

    Returns:
      The ``.tflite`` bytes.
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize={quantize!r} is not supported; use one of {QUANTIZE_MODES}.")
    from layers import conv_ops

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = representative_dataset or _representative_dataset(model)
    with conv_ops.tracing_for("tflite"):  # as the exporter converts: no machine-specific ops
        return converter.convert()


def tflite_predict(tflite_bytes: bytes, inputs) -> np.ndarray:
    """Runs a TFLite model with ai-edge-litert, resizing its input(s) to the batch of ``inputs``.

    Args:
      tflite_bytes: a flatbuffer from ``tflite_convert``.
      inputs: an array ``[B, ...]`` or a list of arrays (one per model input, in input order).
        Integer-quantized inputs are quantized here and outputs dequantized.

    Returns:
      The first output as a float32 array ``[B, ...]``.
    """
    from ai_edge_litert.interpreter import Interpreter

    inputs = _as_list(inputs)
    interpreter = Interpreter(model_content=tflite_bytes)
    details = interpreter.get_input_details()
    if len(details) != len(inputs):
        raise ValueError(f"The model takes {len(details)} inputs, got {len(inputs)}.")
    for detail, x in zip(details, inputs, strict=True):
        interpreter.resize_tensor_input(detail["index"], list(x.shape), strict=False)
    interpreter.allocate_tensors()
    for detail, x in zip(details, inputs, strict=True):
        scale, zero_point = detail["quantization"]
        if np.issubdtype(detail["dtype"], np.integer) and scale:
            x = np.round(x / scale + zero_point)
        interpreter.set_tensor(detail["index"], x.astype(detail["dtype"]))
    interpreter.invoke()
    output = interpreter.get_output_details()[0]
    out = interpreter.get_tensor(output["index"])
    scale, zero_point = output["quantization"]
    if np.issubdtype(out.dtype, np.integer) and scale:
        out = (out.astype(np.float32) - zero_point) * scale
    return out.astype(np.float32)


def tflite_op_names(tflite_bytes: bytes) -> set[str]:
    """Names of the operators a TFLite flatbuffer uses, e.g. ``{"CONV_2D", "RESHAPE"}``.

    Builtin ops by their schema name; custom ops (Flex included) by their custom code, such as
    ``"FlexConv2D"``.
    """
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAsModel(tflite_bytes, 0)
    ops = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            ops.add(code.CustomCode().decode())
        else:
            ops.add(names[builtin])
    return ops


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
