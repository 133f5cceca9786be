"""Small file helpers whose writes a kill can never leave half-done."""

from __future__ import annotations

import json
import os

import tensorflow as tf


def write_atomic(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and a rename (local or GCS)."""
    directory = os.path.dirname(path)
    if directory:
        tf.io.gfile.makedirs(directory)
    tmp = f"{path}.tmp{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def write_json(path: str, obj) -> None:
    """``obj`` as indented JSON at ``path``, atomically."""
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str):
    """The JSON object at ``path``."""
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)
