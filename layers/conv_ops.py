"""The convolution primitives of the lightnets layers, portable across TensorFlow's kernel sets.

TensorFlow's x86 CPU kernels come in two sets. oneDNN's run by default only on CPUs with
AVX-512/AMX features (or with ``TF_ENABLE_ONEDNN_OPTS=1``); everywhere else (most AMD and older
Intel CPUs, or ``TF_ENABLE_ONEDNN_OPTS=0``) the Eigen kernels run, and those lack

* grouped convolution gradients, and grouped convolutions fused with a following bias add or
  inference batch norm (grappler fuses them in every ``tf.function``);
* depthwise convolutions with unequal strides (``(2, 1)``);
* gradients of dilated convolutions (oneDNN lacks them too in float16).

The functions here pick, per call, a formulation that the running TensorFlow can execute and
differentiate, by probing the kernels once (a few microseconds, cached) instead of guessing from
the CPU or the TensorFlow version. Every formulation computes the same function; they differ in
speed and in the TFLite ops they convert to.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402

_KERNEL_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError)
FEATURES = ("grouped_conv", "unequal_depthwise_strides", "dilated_conv")
# What a graph traced for export will run on, instead of this process's kernels:
#   tflite: LiteRT's kernels, which have every native op (one grouped CONV_2D, dilated CONV_2D).
#   any_tf: any TensorFlow kernel set, for a SavedModel served anywhere (inference only).
TARGETS = ("tflite", "any_tf")
_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar("target", default=None)


@contextlib.contextmanager
def tracing_for(target: str):
    """Layers called inside trace ops for ``target`` (one of ``TARGETS``), not for this process.

    A TFLite file must not depend on the CPU it was converted on, and a SavedModel traced where
    oneDNN runs must still serve where it does not (a grouped conv fused with the batch norm
    after it fails there).
    """
    if target not in TARGETS:
        raise ValueError(f"target={target!r} is not one of {TARGETS}.")
    token = _TARGET.set(target)
    try:
        yield
    finally:
        _TARGET.reset(token)


def target() -> str | None:
    """The export target being traced for (see ``tracing_for``), or None: this process."""
    return _TARGET.get()


def gpu_available() -> bool:
    """Whether ops may be placed on a GPU (cuDNN has every kernel these layers need)."""
    return bool(tf.config.list_logical_devices("GPU"))


@functools.cache
def _cpu_probe(feature: str, dtype: str) -> bool:
    """Runs the smallest op that needs ``feature`` on the CPU; False where the kernel rejects it.

    Grouped convs probe ``Conv2DBackpropFilter`` (Eigen rejects it, and the same kernel set also
    rejects grouped convs fused with a bias add or batch norm); dilated convs probe
    ``Conv2DBackpropInput`` (Eigen, and oneDNN in float16, reject it).
    """
    with tf.init_scope(), tf.device("/cpu:0"):
        try:
            if feature == "grouped_conv":
                tf.raw_ops.Conv2DBackpropFilter(
                    input=tf.zeros((1, 2, 2, 4), dtype),
                    filter_sizes=[1, 1, 2, 4],
                    out_backprop=tf.zeros((1, 2, 2, 4), dtype),
                    strides=[1, 1, 1, 1],
                    padding="VALID",
                )
            elif feature == "unequal_depthwise_strides":
                tf.nn.depthwise_conv2d(
                    tf.zeros((1, 2, 2, 1), dtype),
                    tf.zeros((1, 1, 1, 1), dtype),
                    (1, 2, 1, 1),
                    "VALID",
                )
            else:
                tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=[1, 5, 1, 1],
                    filter=tf.zeros((3, 1, 1, 1), dtype),
                    out_backprop=tf.zeros((1, 1, 1, 1), dtype),
                    strides=[1, 1, 1, 1],
                    padding="VALID",
                    dilations=[1, 2, 1, 1],
                )
        except _KERNEL_ERRORS:
            return False
    return True


def supports(feature: str, dtype="float32") -> bool:
    """Whether ops traced now may use the native (fastest) op for ``feature``.

    ``feature`` is one of ``FEATURES``: a grouped ``tf.nn.conv2d`` (trained, and fused by
    grappler), a depthwise conv with unequal strides, a trained dilated ``tf.nn.conv2d``. Inside
    ``tracing_for`` the export target decides; otherwise a GPU has them all and the CPU is
    probed once per feature and dtype.
    """
    if feature not in FEATURES:
        raise ValueError(f"feature={feature!r} is not one of {FEATURES}.")
    target = _TARGET.get()
    if target == "tflite":
        return True
    if target == "any_tf":
        return feature == "dilated_conv"  # served, not trained: the forward runs everywhere
    return gpu_available() or _cpu_probe(feature, tf.as_dtype(dtype).name)


def onednn_enabled() -> bool:
    """Whether this process runs TensorFlow's oneDNN CPU kernels (for reports and benchmarks).

    Only oneDNN's kernel set has CPU grouped-convolution gradients, so the probe tells them apart.
    """
    return _cpu_probe("grouped_conv", "float32")


def _same_padding(length: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF's ``"same"`` padding along one axis: the smaller half first."""
    span = dilation * (kernel - 1) + 1
    total = max((math.ceil(length / stride) - 1) * stride + span - length, 0)
    return total // 2, total - total // 2


def pad_same(inputs, kernel_hw, strides, dilation_rate=(1, 1)):
    """Zero-pads a ``(B, H, W, C)`` tensor as a ``"same"`` convolution would (static H, W)."""
    height, width = inputs.shape[1:3]
    if height is None or width is None:
        raise ValueError(
            f"Explicit 'same' padding needs static spatial sizes, got input shape {inputs.shape}."
        )
    pads = [
        _same_padding(int(length), k, s, d)
        for length, k, s, d in zip((height, width), kernel_hw, strides, dilation_rate, strict=True)
    ]
    if not any(sum(p) for p in pads):
        return inputs
    return tf.pad(inputs, [[0, 0], list(pads[0]), list(pads[1]), [0, 0]])


def _tap_sum(inputs, kernel_hw, padding: str, dilation_rate, apply_tap):
    """``sum_ij apply_tap(i, j, shifted input)``: a stride-1 (dilated) conv as shifted taps.

    Exact, differentiable by every kernel set and converted to builtin PAD, STRIDED_SLICE and
    the per-tap op; the same multiply-adds as the fused op, unfused.
    """
    k_h, k_w = kernel_hw
    d_h, d_w = dilation_rate
    span_h, span_w = d_h * (k_h - 1), d_w * (k_w - 1)
    if padding == "same":
        spatial = [[span_h // 2, span_h - span_h // 2], [span_w // 2, span_w - span_w // 2]]
        inputs = tf.pad(inputs, [[0, 0], *spatial] + [[0, 0]] * (inputs.shape.rank - 3))
    outputs = None
    for i in range(k_h):
        for j in range(k_w):
            tap = inputs[
                :, i * d_h : (i * d_h - span_h) or None, j * d_w : (j * d_w - span_w) or None
            ]
            term = apply_tap(i, j, tap)
            outputs = term if outputs is None else outputs + term
    return outputs


def depthwise_conv2d(inputs, kernel, strides, padding: str, dilation_rate=(1, 1)):
    """Depthwise convolution for any strides and dilation, on every kernel set.

    Dilation runs natively: ``tf.nn.depthwise_conv2d(dilations=...)`` computes it as
    SpaceToBatchND -> depthwise conv -> BatchToSpaceND, whose gradients both CPU kernel sets
    compute exactly (re-measured against the explicit zero-dilated kernel, rates 2-4, both
    paddings, eager and ``tf.function``: max relative difference 7e-7; the dilated cases of
    ``tests/layers/test_depthwise_separable.py`` check them against a numpy reference). The TFLite
    converter keeps those SpaceToBatchND/BatchToSpaceND ops (measured with fixed and dynamic
    sizes alike), so traced for TFLite the op is ``DepthwiseConv2dNative`` with its ``dilations``
    attribute, which TensorFlow's CPU kernel cannot run but the converter turns into one dilated
    ``DEPTHWISE_CONV_2D``. Unequal strides run natively where the
    kernel takes them; Eigen's depthwise kernel rejects them, and there they run as explicit
    ``"same"`` padding, a ``"valid"`` depthwise conv at the strides' common divisor and a
    subsampling slice: exact, converted to PAD, DEPTHWISE_CONV_2D and STRIDED_SLICE.

    Args:
      inputs: ``(B, H, W, N)``.
      kernel: ``(k_h, k_w, N, dm)``.
      strides: pair ``(s_h, s_w)``; must be ``(1, 1)`` when dilated.
      padding: ``"same"`` or ``"valid"``.
      dilation_rate: pair ``(d_h, d_w)``.

    Returns:
      ``(B, H_out, W_out, N·dm)``.
    """
    strides, dilation_rate = tuple(strides), tuple(dilation_rate)
    if max(dilation_rate) > 1 and _TARGET.get() == "tflite":
        return tf.raw_ops.DepthwiseConv2dNative(
            input=inputs,
            filter=kernel,
            strides=[1, 1, 1, 1],
            padding=padding.upper(),
            dilations=[1, *dilation_rate, 1],
        )
    if max(dilation_rate) > 1:
        return tf.nn.depthwise_conv2d(
            inputs, kernel, strides=(1, 1, 1, 1), padding=padding.upper(), dilations=dilation_rate
        )
    s_h, s_w = strides
    if s_h == s_w or supports("unequal_depthwise_strides", inputs.dtype):
        return tf.nn.depthwise_conv2d(
            inputs, kernel, strides=(1, s_h, s_w, 1), padding=padding.upper()
        )
    if padding == "same":
        inputs = pad_same(inputs, kernel.shape[:2], strides)
    common = math.gcd(s_h, s_w)
    outputs = tf.nn.depthwise_conv2d(
        inputs, kernel, strides=(1, common, common, 1), padding="VALID"
    )
    return outputs[:, :: s_h // common, :: s_w // common, :]


def conv2d(inputs, kernel, strides, padding: str, dilation_rate=(1, 1)):
    """``tf.nn.conv2d`` (ungrouped kernel), dilated ones as 1×1 taps where gradients are missing.

    Args:
      inputs: ``(B, H, W, N)``.
      kernel: ``(k_h, k_w, N, M)``.
      strides: pair; must be ``(1, 1)`` when dilated.
      padding: ``"same"`` or ``"valid"``.
      dilation_rate: pair.

    Returns:
      ``(B, H_out, W_out, M)``.
    """
    dilation_rate = tuple(dilation_rate)
    if max(dilation_rate) == 1 or supports("dilated_conv", inputs.dtype):
        return tf.nn.conv2d(
            inputs,
            kernel,
            strides=(1, *strides, 1),
            padding=padding.upper(),
            dilations=(1, *dilation_rate, 1),
        )

    def project(i, j, tap):
        return tf.nn.conv2d(tap, kernel[i : i + 1, j : j + 1], strides=1, padding="VALID")

    return _tap_sum(inputs, kernel.shape[:2], padding, dilation_rate, project)
