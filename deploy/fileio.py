"""Small file helpers whose writes a kill can never leave half-done."""

from __future__ import annotations

import json
import math
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


def finite_json(obj):
    """``obj`` with every NaN or infinite float replaced by None: JSON has no such literals
    (``json.dumps`` would write ``NaN``, which other JSON readers reject)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite_json(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(value) for value in obj]
    return obj


def dumps(obj, **kwargs) -> str:
    """``json.dumps`` of ``finite_json(obj)``: standard JSON, non-finite numbers as null."""
    return json.dumps(finite_json(obj), allow_nan=False, **kwargs)


def write_json(path: str, obj) -> None:
    """``obj`` as indented JSON at ``path``, atomically; non-finite numbers become null."""
    write_atomic(path, dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str):
    """The JSON object at ``path``."""
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)
