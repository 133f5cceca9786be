"""The one ONNX path: converting Keras models with tf2onnx and running ``.onnx`` files with
onnxruntime.

Every ONNX conversion in lightnets goes through ``convert`` and every session through
``Runner``. Models are traced as for LiteRT (``layers.conv_ops.tracing_for("tflite")``): one
grouped convolution per ``GroupConv2D`` (an ONNX ``Conv`` with ``group``), whatever TensorFlow
kernel set the converting machine runs, and dilated depthwise convolutions without
SpaceToBatchND, so the file holds standard ONNX operators only (no custom domain).

The packages are the ``onnx`` extra (``pip install -e '.[onnx]'``): tf2onnx, onnx, onnxruntime.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from layers import conv_ops  # noqa: E402

# tf2onnx 1.17 writes up to opset 18; onnxruntime runs it everywhere current.
OPSET = 17
INPUT_NAME = "images"
_MISSING = "ONNX needs the 'onnx' extra: pip install -e '.[onnx]' (tf2onnx, onnx, onnxruntime)."


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(_MISSING) from None


def convert(model: keras.Model, *, opset: int = OPSET) -> bytes:
    """A Keras model (float32 image input, any batch) as ONNX ``ModelProto`` bytes.

    Raises:
      ImportError: the ``onnx`` extra is not installed.
    """
    _require("tf2onnx")
    from tf2onnx import convert as tf2onnx_convert

    spec = (tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name=INPUT_NAME),)
    with conv_ops.tracing_for("tflite"):
        proto, _ = tf2onnx_convert.from_keras(model, input_signature=spec, opset=opset)
    return proto.SerializeToString()


def op_types(model: str | bytes) -> set[str]:
    """``(domain, op_type)`` names an ONNX file uses, as ``"Conv"`` or ``"domain:Op"``."""
    onnx = _require("onnx")
    proto = onnx.load(model) if isinstance(model, str) else onnx.load_from_string(model)
    return {f"{n.domain}:{n.op_type}" if n.domain else n.op_type for n in proto.graph.node}


class Runner:
    """An onnxruntime CPU session over a ``.onnx`` file or bytes.

    ``runner(images)`` maps float32 ``[B, ...]`` images to the first output, as float32.

    Args:
      model: a path or the serialized model.
      num_threads: intra-op threads; None for onnxruntime's default.
    """

    def __init__(self, model: str | bytes, *, num_threads: int | None = None):
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        if num_threads is not None:
            if num_threads < 1:
                raise ValueError(f"num_threads={num_threads} must be at least 1.")
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0]
        self.output = self.session.get_outputs()[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The input shape without the batch dimension."""
        return tuple(int(d) for d in self.input.shape[1:])

    @property
    def num_outputs(self) -> int:
        """Size of the output's last dimension (classes, for a classifier)."""
        size = self.output.shape[-1]
        if isinstance(size, int):
            return size
        return int(self(np.zeros((1, *self.input_shape), np.float32)).shape[-1])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        feed = {self.input.name: np.asarray(images, np.float32)}
        return np.asarray(self.session.run([self.output.name], feed)[0], np.float32)
