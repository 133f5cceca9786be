"""Encoded bytes -> 8-bit RGB pixels, in graph, with corrupt files reported by path.

TensorFlow's decoders already convert what the issue asks for: ``decode_image(channels=3,
dtype=uint8)`` turns grayscale, RGBA, palette PNG/GIF, CMYK JPEG and 16-bit PNG into 8-bit RGB and,
with ``expand_animations=False``, takes a GIF's first frame. Only 8-bit (palette) BMPs need help:
their palette is applied here. 1- and 4-bit BMPs are unsupported and count as unreadable. Keeping decode in graph (no
``py_function``) keeps it parallel and lets the export's image-bytes signature reuse it.

A corrupt file raises inside the decode op. ``map_skipping_corrupt`` isolates each element in its
own one-element dataset with ``ignore_errors`` so a failure drops only that element and leaves a
marker carrying its key (file path or ``shard#record``); markers are recorded (``skip``) or raise
(``fail``) and never reach the model.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from configs import validation

ON_CORRUPT = ("skip", "fail")


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """Decodes JPEG/PNG/BMP/GIF (first frame) bytes to uint8 RGB ``[H, W, 3]``.

    Raises:
      tf.errors.InvalidArgumentError: corrupt or unsupported bytes (e.g. 1- or 4-bit BMPs).
    """
    image = tf.cond(
        _is_8bit_bmp(encoded),
        lambda: _decode_8bit_bmp(encoded),
        lambda: tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False),
    )
    return tf.ensure_shape(image, [None, None, 3])


def _le_uint(header: tf.Tensor, offset: int, size: int) -> tf.Tensor:
    """Little-endian unsigned integer of ``size`` bytes (2 or 4) at ``offset`` of a byte string."""
    raw = tf.io.decode_raw(tf.strings.substr(header, offset, size), tf.uint8)
    return tf.reduce_sum(tf.cast(raw, tf.int64) * (256 ** tf.range(size, dtype=tf.int64)))


def _header(encoded: tf.Tensor) -> tf.Tensor:
    """The first 54 bytes (a BMP's file and info headers), zero-padded if the input is shorter."""
    head = tf.strings.substr(encoded, 0, 54)
    return tf.strings.substr(tf.strings.join([head, b"\0" * 54]), 0, 54)


def _is_8bit_bmp(encoded: tf.Tensor) -> tf.Tensor:
    header = _header(encoded)
    return tf.logical_and(
        tf.equal(tf.strings.substr(header, 0, 2), b"BM"), tf.equal(_le_uint(header, 28, 2), 8)
    )


def _decode_8bit_bmp(encoded: tf.Tensor) -> tf.Tensor:
    """8-bit BMPs hold palette indices, which ``decode_bmp`` returns as if they were grey levels."""
    header = _header(encoded)
    colours = _le_uint(header, 46, 4)
    colours = tf.where(colours == 0, tf.constant(256, tf.int64), colours)
    palette_bytes = tf.strings.substr(encoded, 14 + _le_uint(header, 14, 4), 4 * colours)
    palette = tf.reshape(tf.io.decode_raw(palette_bytes, tf.uint8), [-1, 4])[:, 2::-1]  # BGRx
    indices = tf.io.decode_bmp(encoded, channels=0)[..., 0]
    return tf.gather(palette, tf.cast(indices, tf.int32))


def decode_and_crop(encoded: tf.Tensor, sample_window: Callable) -> tf.Tensor:
    """Decodes only a crop window: JPEGs via ``decode_and_crop_jpeg``, other formats in full.

    Args:
      encoded: image bytes.
      sample_window: ``image_shape [3] -> (begin [3], size [3])``, e.g. a random crop sampler.

    Returns:
      uint8 ``[h, w, 3]``, the window.
    """

    def jpeg_window():
        begin, size = sample_window(tf.image.extract_jpeg_shape(encoded))
        window = tf.stack([begin[0], begin[1], size[0], size[1]])
        return tf.image.decode_and_crop_jpeg(encoded, window, channels=3)

    def other_window():
        image = decode_image(encoded)
        begin, size = sample_window(tf.shape(image))
        return tf.slice(image, begin, size)

    crop = tf.cond(tf.io.is_jpeg(encoded), jpeg_window, other_window)
    return tf.ensure_shape(crop, [None, None, 3])


class CorruptTracker:
    """Keys (file paths) of elements that failed to decode, in first-seen order, deduplicated."""

    def __init__(self, on_corrupt: str = "skip"):
        validation.check_choice({"on_corrupt": on_corrupt}, "on_corrupt", ON_CORRUPT, "data.")
        self.on_corrupt = on_corrupt
        # With on_corrupt='fail': the message of the file that stopped the run. The raise inside
        # tf.data reaches the caller as a graph error; callers report this line instead.
        self.failure: str | None = None
        self._paths: dict[str, None] = {}  # insertion-ordered set
        self._lock = threading.Lock()

    def record(self, key) -> bool:
        path = key.decode() if isinstance(key, bytes) else str(key)
        if self.on_corrupt == "fail":  # raised inside tf.data, it stops the run naming the file
            self.failure = self.failure or (
                f"Corrupt or unreadable image: {path}. Fix or delete the file, or set "
                f"--config.data.on_corrupt=skip to skip such files."
            )
            raise ValueError(self.failure)
        with self._lock:
            self._paths.setdefault(path, None)
        return np.bool_(False)

    @property
    def paths(self) -> list[str]:
        with self._lock:
            return list(self._paths)


def _as_tuple(outputs) -> tuple:
    return outputs if isinstance(outputs, tuple) else (outputs,)


def _cycle_length(num_parallel_calls: int) -> int:
    if num_parallel_calls == tf.data.AUTOTUNE:
        return max(4, 2 * (os.cpu_count() or 1))
    return max(1, num_parallel_calls)


def _zeros_like_spec(spec: tf.TensorSpec) -> tf.Tensor:
    shape = [0 if dim is None else dim for dim in spec.shape.as_list()]
    return tf.zeros(shape, spec.dtype)


def map_skipping_corrupt(
    dataset: tf.data.Dataset,
    fn: Callable,
    tracker: CorruptTracker,
    *,
    num_parallel_calls: int,
    deterministic: bool,
) -> tf.data.Dataset:
    """``dataset.map(fn)`` for elements ``(payload, label, key)``, dropping those ``fn`` fails on.

    Args:
      dataset: elements ``(payload, label, key)``; ``key`` is a string naming the source.
      fn: ``(payload, label) -> outputs`` (a tensor or tuple of tensors); may raise on corrupt
        payloads.
      tracker: records the keys of failed elements (or raises, for ``on_corrupt='fail'``).
      num_parallel_calls: parallelism of the decode.
      deterministic: keep the input order (evaluation) or not (training).

    Returns:
      A dataset of ``fn``'s outputs (as a tuple) for the elements that decoded.
    """

    def attempt(payload, label, key):
        one = tf.data.Dataset.from_tensors((payload, label))
        good = one.map(lambda p, y: (_as_tuple(fn(p, y)), True, key)).ignore_errors()
        outputs_spec = good.element_spec[0]
        # Built inside a map so the placeholder outputs are only made when the decode failed.
        marker = tf.data.Dataset.from_tensors(key).map(
            lambda k: (tuple(_zeros_like_spec(s) for s in outputs_spec), False, k)
        )
        return good.concatenate(marker).take(1)

    def keep(outputs, ok, key):
        def record():
            return tf.reshape(tf.numpy_function(tracker.record, [key], tf.bool, stateful=True), [])

        return tf.cond(ok, lambda: tf.constant(True), record)

    # One in-flight element per cycle slot: the interleave is the parallel map.
    attempted = dataset.interleave(
        attempt,
        cycle_length=_cycle_length(num_parallel_calls),
        block_length=1,
        num_parallel_calls=num_parallel_calls,
        deterministic=deterministic,
    )
    return attempted.filter(keep).map(lambda outputs, ok, key: outputs)
