"""A synthetic photo-like JPEG dataset, written as a class folder and as TFRecord shards.

``benchmark.py pipeline --make_fixture=DIR`` uses it so the input pipeline can be measured
offline on both file layouts with the very same images. No flags here: tests import it freely.
"""

from __future__ import annotations

import io
import os

import numpy as np

FIXTURE_SHARDS = 4


def _photo_like(rng: np.random.Generator, size: int) -> bytes:
    """A JPEG with smooth structure plus grain, so it compresses (and decodes) like a photo."""
    from PIL import Image

    width = int(size * rng.uniform(1.0, 1.5))
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((width, size), Image.BICUBIC), np.int16)
    grain = rng.normal(0, 12, image.shape).astype(np.int16)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image + grain, 0, 255).astype(np.uint8)).save(
        buffer, "JPEG", quality=90
    )
    return buffer.getvalue()


def _tf_example(encoded: bytes, label: int) -> bytes:
    import tensorflow as tf

    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def make_fixture(directory: str, *, images: int, size: int, classes: int) -> tuple[str, str]:
    """Writes the folder and TFRecord fixture (skipped if already complete); returns two sources.

    Returns:
      ``("folder:<dir>/folder", "tfrecord:<dir>/tfrecord/*")``.
    """
    import tensorflow as tf

    if images < classes or classes < 1:
        raise ValueError(f"--fixture_images={images} must be >= --fixture_classes={classes} >= 1.")
    folder, records = os.path.join(directory, "folder"), os.path.join(directory, "tfrecord")
    done = os.path.join(directory, f"COMPLETE-{images}-{size}-{classes}")
    sources = (f"folder:{folder}", f"tfrecord:{records}/*")
    if os.path.exists(done):
        return sources
    rng = np.random.default_rng(0)
    os.makedirs(records, exist_ok=True)
    for split, count, shards in (
        ("train", images, FIXTURE_SHARDS),
        ("val", max(classes, images // 8), 1),
    ):
        record_split = "train" if split == "train" else "validation"
        writers = [
            tf.io.TFRecordWriter(os.path.join(records, f"{record_split}-{s:05d}-of-{shards:05d}"))
            for s in range(shards)
        ]
        for i in range(count):
            label = i % classes
            encoded = _photo_like(rng, size)
            class_dir = os.path.join(folder, split, f"class_{label:03d}")
            os.makedirs(class_dir, exist_ok=True)
            with open(os.path.join(class_dir, f"{i:06d}.jpg"), "wb") as f:
                f.write(encoded)
            writers[i % shards].write(_tf_example(encoded, label))
        for writer in writers:
            writer.close()
    open(done, "w").close()
    return sources
