"""The one TFLite path: converting Keras models and running ``.tflite`` files with LiteRT.

Every conversion in lightnets goes through ``convert`` and every interpreter through
``Runner``, so all of them agree on what a TFLite file is:

* builtin ops only (a Flex op fails conversion here, not on the device);
* traced for LiteRT's kernels (``layers.conv_ops.tracing_for("tflite")``), so the file does not
  depend on the CPU it was converted on (one grouped CONV_2D for ``GroupConv2D``, whichever
  TensorFlow kernel set this machine runs);
* modes: ``float32``, ``float16`` (weights), ``dynamic_range`` (int8 weights), ``int8`` (full
  integer kernels calibrated on representative images; int8 or float input/output), and
  ``sparse`` (float32 with pruned weights in TFLite's sparse encoding, for XNNPACK's sparse
  kernels: see ``docs/pruning.md``).

``Runner`` feeds float32 images and returns float32 scores whatever the file's input and output
types: int8 tensors are (de)quantised with the file's own scale and zero point.
"""

from __future__ import annotations

import os
import tempfile
import warnings

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from compression import quantization  # noqa: E402
from layers import conv_ops  # noqa: E402

MODES = ("float32", "float16", "dynamic_range", "int8", "sparse")


def convert(
    model: keras.Model,
    mode: str = "float32",
    *,
    representative_images: np.ndarray | None = None,
    int8_io: bool = True,
) -> bytes:
    """Converts a Keras model (without pruning wrappers) to a TFLite flatbuffer.

    Args:
      model: the model; float32 image inputs.
      mode: one of ``MODES``.
      representative_images: float32 ``[N, H, W, C]`` calibration inputs, required for
        ``int8`` (a few hundred normalised training images). A quantization-aware model needs
        them too: TensorFlow 2.21's converter does not recognise a tf_keras QAT model as one
        (it demands a representative dataset for full int8, and without one and without
        ``TFLITE_BUILTINS_INT8`` it leaves float operators in the file), so its tensors are
        calibrated as well, with its fake-quant ops in the graph.
      int8_io: for ``int8``, whether the file's input and output are int8 (True) or stay
        float32 (False: quantize/dequantize ops inside the file).

    Returns:
      The ``.tflite`` bytes.

    Raises:
      ValueError: unknown mode, or ``int8`` without representative images.
    """
    if mode not in MODES:
        raise ValueError(f"TFLite mode {mode!r} is not one of {', '.join(MODES)}.")
    with tempfile.TemporaryDirectory() as saved_model_dir:
        converter = _converter(model, saved_model_dir)
        return _configure_and_convert(
            converter, mode, representative_images, int8_io, quantization.has_wrappers(model)
        )


def _converter(model: keras.Model, saved_model_dir: str) -> tf.lite.TFLiteConverter:
    """A converter over the model's inference function, from a SavedModel without layer traces.

    ``from_keras_model`` writes a SavedModel of its own with every layer's call traced
    (MobileNet v2 at 32 px: 14 of its 20 s); the trace-free SavedModel gives the same graph,
    bit-identical outputs and the same operators in a third of the time. A model that cannot be
    saved from its configs (a subclassed model without ``get_config``) takes Keras' path.
    """
    with conv_ops.tracing_for("tflite"):
        serve = tf.function(lambda images: model(images, training=False))
        name = model.inputs[0].name.split(":")[0] if model.inputs else "images"
        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=name)
        try:
            model.save(
                saved_model_dir,
                save_format="tf",
                save_traces=False,
                include_optimizer=False,
                signatures=serve.get_concrete_function(spec),
            )
        except NotImplementedError:
            return tf.lite.TFLiteConverter.from_keras_model(model)
    return tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)


def _configure_and_convert(converter, mode, representative_images, int8_io, qat=False) -> bytes:
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode in ("float16", "dynamic_range", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "sparse":
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    elif mode == "int8":
        if representative_images is None or not len(representative_images):
            raise ValueError(
                "int8 conversion needs representative_images (normalised training images) to "
                "calibrate activation ranges."
            )
        images = np.asarray(representative_images, np.float32)
        converter.representative_dataset = lambda: ([image[None]] for image in images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # A QAT model's Dense kernels are fake-quantized per tensor (tfmot); re-quantizing them
        # per channel, the converter's default, would move them off the grid QAT trained on.
        converter._experimental_disable_per_channel_quantization_for_dense_layers = qat  # noqa: SLF001
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    with warnings.catch_warnings(), conv_ops.tracing_for("tflite"):
        # int8 inputs take their scale from calibration; the converter warns regardless.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return converter.convert()


def op_names(flatbuffer: bytes) -> set[str]:
    """Operators a TFLite flatbuffer uses, e.g. ``{"CONV_2D", "RESHAPE"}``.

    Builtin ops by their schema name; custom ops (Flex included) by their custom code, such as
    ``"FlexConv2D"``.
    """
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    ops = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            ops.add(code.CustomCode().decode())
        else:
            ops.add(names[builtin])
    return ops


def float_ops(flatbuffer: bytes) -> list[str]:
    """Operators of a TFLite file that compute in float: a full-int8 file has none.

    An operator counts when any of its input or output tensors is float32, except the
    ``QUANTIZE`` that takes a float input and the ``DEQUANTIZE`` that gives a float output
    (a file converted with ``int8_io=False`` has them at its edges). Weights are tensors too, so a
    layer left in float (a "float fallback") shows up here.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    found = []
    for op in interpreter._get_ops_details():  # noqa: SLF001  the one per-op listing LiteRT has
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        tensors = [*op["inputs"], *op["outputs"]]
        if any(dtypes.get(int(i)) == np.float32 for i in tensors if i >= 0):
            found.append(op["op_name"])
    return found


def quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """Float values -> the tensor's dtype (int8/uint8: with its scale and zero point)."""
    dtype = detail["dtype"]
    if not np.issubdtype(dtype, np.integer):
        return np.asarray(values).astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """A tensor's values as float32 (int8/uint8: with its scale and zero point)."""
    if not np.issubdtype(values.dtype, np.integer):
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


class Runner:
    """A LiteRT interpreter (XNNPACK is its default delegate) over a file or flatbuffer.

    ``runner(images)`` takes float32 ``[B, ...]`` inputs of any batch (a file converted with a
    dynamic batch is resized; one with a fixed batch runs batch-sized slices, the last padded)
    and returns the first output as float32.

    Args:
      model: a ``.tflite`` path or the flatbuffer bytes.
      num_threads: interpreter threads; None for LiteRT's default.
    """

    def __init__(self, model: str | bytes, *, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads={num_threads} must be at least 1.")
        source = {"model_path": model} if isinstance(model, str) else {"model_content": model}
        self.interpreter = Interpreter(**source, num_threads=num_threads)
        self.input_detail = self.interpreter.get_input_details()[0]
        self.output_detail = self.interpreter.get_output_details()[0]
        self.resizable_batch = self.input_detail["shape_signature"][0] == -1
        self.interpreter.allocate_tensors()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The input shape without the batch dimension."""
        return tuple(int(d) for d in self.input_detail["shape"][1:])

    @property
    def num_outputs(self) -> int:
        """Size of the output's last dimension (classes, for a classifier)."""
        return int(self.output_detail["shape"][-1])

    def resize(self, batch_size: int) -> None:
        """Allocates for ``batch_size`` inputs (once; ``invoke`` then runs on what is set)."""
        index = self.input_detail["index"]
        current = self.interpreter.get_input_details()[0]["shape"]
        if int(current[0]) != batch_size:
            self.interpreter.resize_tensor_input(
                index, [batch_size, *self.input_shape], strict=False
            )
            self.interpreter.allocate_tensors()

    def set_input(self, images: np.ndarray) -> None:
        """Sets one batch (sized as allocated) of float32 inputs; for timing ``invoke`` alone."""
        self.interpreter.set_tensor(
            self.input_detail["index"], quantize(np.asarray(images, np.float32), self.input_detail)
        )

    def invoke(self) -> None:
        self.interpreter.invoke()

    def output(self) -> np.ndarray:
        return dequantize(
            self.interpreter.get_tensor(self.output_detail["index"]), self.output_detail
        )

    def _run(self, images: np.ndarray) -> np.ndarray:
        self.resize(len(images))
        self.set_input(images)
        self.invoke()
        return self.output()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, np.float32)
        if self.resizable_batch:
            return self._run(images)
        batch = int(self.input_detail["shape"][0])
        outputs = []
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            padding = np.zeros((batch - len(chunk), *chunk.shape[1:]), np.float32)
            outputs.append(self._run(np.concatenate([chunk, padding]))[: len(chunk)])
        return np.concatenate(outputs)
