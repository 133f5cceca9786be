"""Argument checks and shape arithmetic shared by the lightnets convolution layers.

Each check raises ``ValueError`` naming the bad value and what to pass instead, so every layer
reports bad arguments the same way.
"""

from __future__ import annotations

import math

PADDINGS = ("same", "valid")


def positive_int(value, name: str) -> int:
    """Returns ``value`` if it is a positive int (bools rejected), else raises ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return int(value)


def pair(value, name: str) -> tuple[int, int]:
    """Normalises an int or a pair of ints to a tuple of two positive ints."""
    values = (value, value) if isinstance(value, int) else value
    try:
        values = tuple(values)
    except TypeError:
        values = ()
    if len(values) != 2 or any(
        isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values
    ):
        raise ValueError(
            f"{name} must be a positive int or a pair of positive ints, got {value!r}."
        )
    return int(values[0]), int(values[1])


def padding_mode(value) -> str:
    """Normalises ``"same"``/``"valid"`` (any case)."""
    if not isinstance(value, str) or value.lower() not in PADDINGS:
        raise ValueError(f"padding must be 'same' or 'valid', got {value!r}.")
    return value.lower()


def check_strides_dilation(strides: tuple[int, int], dilation_rate: tuple[int, int]) -> None:
    """Rejects strides > 1 together with dilation > 1, which TF convolutions do not support."""
    if max(strides) > 1 and max(dilation_rate) > 1:
        raise ValueError(
            f"strides={strides} and dilation_rate={dilation_rate} cannot both exceed 1; "
            "use strides=1 with dilation, or dilation_rate=1."
        )


def output_length(length, kernel: int, padding: str, stride: int, dilation: int = 1):
    """Output size of a convolution along one axis (``None`` stays ``None``).

    ``ceil(L / s)`` for ``"same"``; ``ceil((L - d·(k - 1)) / s)`` for ``"valid"``.
    """
    if length is None:
        return None
    if padding == "valid":
        length = length - dilation * (kernel - 1)
    return max(0, math.ceil(length / stride))


def conv_output_shape(input_shape, filters: int, kernel_size, strides, padding: str, dilation_rate):
    """``(B, H_out, W_out, filters)`` of a 2-D convolution over a ``(B, H, W, C)`` input."""
    batch, height, width = list(input_shape)[:3]
    out_h, out_w = (
        output_length(length, k, padding, s, d)
        for length, k, s, d in zip(
            (height, width), kernel_size, strides, dilation_rate, strict=True
        )
    )
    return batch, out_h, out_w, filters


def divisible_channels(input_shape, layer: str, divisor: int, divisor_name: str) -> int:
    """The static channel count of ``input_shape``, checked to be a multiple of ``divisor``.

    Raises:
      ValueError: unknown channels, or ``divisor`` does not divide them (naming both numbers).
    """
    channels = input_shape[-1] if input_shape.rank else None
    if channels is None:
        raise ValueError(
            f"{layer} needs a static channel dimension, got input shape {input_shape}."
        )
    if int(channels) % divisor:
        raise ValueError(
            f"{divisor_name}={divisor} must divide the number of channels ({channels}); "
            f"use a {divisor_name} value that divides {channels}."
        )
    return int(channels)
