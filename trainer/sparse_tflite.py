"""Pruned models as sparse TFLite flatbuffers that XNNPACK runs with its sparse kernels.

``converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]`` stores pruned weights in a
sparse encoding behind ``DENSIFY`` ops; XNNPACK's delegate sees the sparse weights and switches
the subgraph to its NCHW sparse-matrix kernels ("Fast Sparse ConvNets", Elsen et al. 2020) when:
the subgraph starts with a 3×3 stride-2 conv on 3 input channels with padding 1 on each side, holds
only 1×1 convs, 3×3/5×5 depthwise convs (padding 1/2 on each side), ADD/MUL and elementwise
activations, ends in a spatial MEAN (global average pooling), and at least 2/3 of its 1×1 conv
weights are zero. ``pruning.policy = "xnnpack_latency"`` prunes exactly those 1×1 convs and checks
the structure up front.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402


def convert(model: keras.Model, *, sparse: bool = True) -> bytes:
    """Converts a (stripped) Keras model to a float32 TFLite flatbuffer.

    Args:
      model: a model without pruning wrappers (``trainer.pruning.strip`` first).
      sparse: store the zero-heavy weights in TFLite's sparse encoding (``DENSIFY`` ops). False
        gives the plain dense flatbuffer of the same weights, the baseline to compare against.

    Returns:
      The ``.tflite`` bytes (builtin ops only).
    """
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if sparse:
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    from layers import conv_ops

    with conv_ops.tracing_for("tflite"):
        return converter.convert()


def interpreter(tflite_bytes: bytes, *, num_threads: int = 1, batch_size: int = 1):
    """An ai-edge-litert interpreter (XNNPACK is its default delegate), allocated for ``batch_size``.

    Returns:
      ``(interpreter, run)``: ``run(images)`` sets the input, invokes and returns the output.
    """
    from ai_edge_litert.interpreter import Interpreter

    if num_threads < 1:
        raise ValueError(f"num_threads={num_threads} must be at least 1.")
    engine = Interpreter(model_content=tflite_bytes, num_threads=num_threads)
    detail = engine.get_input_details()[0]
    if int(detail["shape"][0]) != batch_size:
        engine.resize_tensor_input(
            detail["index"], [batch_size, *detail["shape"][1:]], strict=False
        )
    engine.allocate_tensors()
    output_index = engine.get_output_details()[0]["index"]

    def run(images: np.ndarray) -> np.ndarray:
        engine.set_tensor(detail["index"], images.astype(np.float32, copy=False))
        engine.invoke()
        return engine.get_tensor(output_index)

    return engine, run
