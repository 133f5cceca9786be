"""Independent numpy references for the convolution layers: forward and exact gradients.

Written as explicit tap sums in float64 (no TensorFlow op), so they hold on every machine and
every TensorFlow kernel set, and a kernel bug cannot hide in the reference too. ``conv2d``
covers dense, grouped and (with ``groups == channels``) depthwise convolutions; ``conv2d_vjp``
returns the exact input and kernel gradients for an upstream gradient.
"""

from __future__ import annotations

import math

import numpy as np


def _pads(length: int, kernel: int, stride: int, dilation: int, padding: str) -> tuple[int, int]:
    if padding == "valid":
        return 0, 0
    span = dilation * (kernel - 1) + 1
    total = max((math.ceil(length / stride) - 1) * stride + span - length, 0)
    return total // 2, total - total // 2


def _geometry(x_shape, kernel_shape, strides, padding, dilation):
    _, height, width, _ = x_shape
    k_h, k_w = kernel_shape[:2]
    (s_h, s_w), (d_h, d_w) = strides, dilation
    pad_h = _pads(height, k_h, s_h, d_h, padding)
    pad_w = _pads(width, k_w, s_w, d_w, padding)
    out_h = (height + sum(pad_h) - d_h * (k_h - 1) - 1) // s_h + 1
    out_w = (width + sum(pad_w) - d_w * (k_w - 1) - 1) // s_w + 1
    return pad_h, pad_w, out_h, out_w


def _tap(i, j, out_h, out_w, strides, dilation):
    """Index slices of the padded input that tap ``(i, j)`` reads for every output pixel."""
    (s_h, s_w), (d_h, d_w) = strides, dilation
    rows = slice(i * d_h, i * d_h + (out_h - 1) * s_h + 1, s_h)
    cols = slice(j * d_w, j * d_w + (out_w - 1) * s_w + 1, s_w)
    return rows, cols


def conv2d(x, kernel, strides=(1, 1), padding="same", dilation=(1, 1), groups=1):
    """``(B, H, W, N) * (k_h, k_w, N / groups, M) -> (B, H_out, W_out, M)`` in float64."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    pad_h, pad_w, out_h, out_w = _geometry(x.shape, kernel.shape, strides, padding, dilation)
    padded = np.pad(x, [(0, 0), pad_h, pad_w, (0, 0)])
    per_in, filters = kernel.shape[2], kernel.shape[3]
    per_out = filters // groups
    out = np.zeros((x.shape[0], out_h, out_w, filters))
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            rows, cols = _tap(i, j, out_h, out_w, strides, dilation)
            tap = padded[:, rows, cols, :]
            for g in range(groups):
                out[..., g * per_out : (g + 1) * per_out] += np.einsum(
                    "bhwc,cm->bhwm",
                    tap[..., g * per_in : (g + 1) * per_in],
                    kernel[i, j, :, g * per_out : (g + 1) * per_out],
                )
    return out


def conv2d_vjp(x, kernel, upstream, strides=(1, 1), padding="same", dilation=(1, 1), groups=1):
    """Gradients ``(d x, d kernel)`` of ``sum(conv2d(x, kernel) * upstream)``."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    upstream = np.asarray(upstream, np.float64)
    pad_h, pad_w, out_h, out_w = _geometry(x.shape, kernel.shape, strides, padding, dilation)
    padded = np.pad(x, [(0, 0), pad_h, pad_w, (0, 0)])
    d_padded = np.zeros_like(padded)
    d_kernel = np.zeros_like(kernel)
    per_in, per_out = kernel.shape[2], kernel.shape[3] // groups
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            rows, cols = _tap(i, j, out_h, out_w, strides, dilation)
            tap = padded[:, rows, cols, :]
            for g in range(groups):
                ins, outs = (
                    slice(g * per_in, (g + 1) * per_in),
                    slice(g * per_out, (g + 1) * per_out),
                )
                d_kernel[i, j, :, outs] += np.einsum(
                    "bhwc,bhwm->cm", tap[..., ins], upstream[..., outs]
                )
                d_padded[:, rows, cols, ins] += np.einsum(
                    "bhwm,cm->bhwc", upstream[..., outs], kernel[i, j, :, outs]
                )
    d_x = d_padded[:, pad_h[0] : pad_h[0] + x.shape[1], pad_w[0] : pad_w[0] + x.shape[2], :]
    return d_x, d_kernel


def depthwise_as_grouped(kernel):
    """A depthwise kernel ``(k_h, k_w, N, dm)`` as the equivalent grouped kernel
    ``(k_h, k_w, 1, N·dm)`` (output channel ``n·dm + m`` reads input channel ``n``)."""
    k_h, k_w, channels, multiplier = kernel.shape
    return np.asarray(kernel).reshape(k_h, k_w, 1, channels * multiplier)


def grouped_as_depthwise(d_kernel, channels):
    """The inverse of ``depthwise_as_grouped`` for a gradient."""
    k_h, k_w, _, outputs = d_kernel.shape
    return d_kernel.reshape(k_h, k_w, channels, outputs // channels)


def assert_layer_matches(
    layer, x, numpy_forward_and_vjp, *, graph: bool, seed: int = 2, label: str = ""
):
    """The layer's output and autodiff gradients (input, then its trainable weights, in order)
    equal ``numpy_forward_and_vjp(x, layer, upstream) -> (out, grads)``, eagerly or in a
    ``tf.function``, for a random upstream gradient.
    """
    import tensorflow as tf

    out_shape = tuple(layer.compute_output_shape(x.shape))
    upstream = np.random.default_rng(seed).standard_normal(out_shape).astype("float32")

    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x)
            loss = tf.reduce_sum(out * upstream)
        return out, tape.gradient(loss, [x, *layer.trainable_weights])

    out, grads = (tf.function(run) if graph else run)(tf.constant(x))
    want, want_grads = numpy_forward_and_vjp(x, layer, upstream)
    assert tuple(out.shape) == out_shape, label
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4, err_msg=label)
    assert len(grads) == len(want_grads), label
    for got, expected in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3, err_msg=label)
