"""Model PATHs: which kind a path is, and expanding commas and globs; no TensorFlow needed.

Kept apart from ``deploy.loading`` so the command lines can reject a bad PATH in a second,
before TensorFlow loads.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

from deploy import workdir

KINDS = ("workdir", "keras", "saved_model", "tflite", "onnx")
PATH_HINT = (
    "pass a training workdir, a .keras file, a SavedModel directory, a .tflite or a .onnx file"
)


def expand_model_paths(values: Sequence[str]) -> list[str]:
    """Splits comma-separated PATHs and expands globs, keeping the order given.

    Raises:
      FileNotFoundError: a path does not exist or a glob matches nothing.
    """
    paths = []
    for value in values:
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            if glob.has_magic(item):
                matches = sorted(glob.glob(item))
                if not matches:
                    raise FileNotFoundError(f"Model glob '{item}' matches nothing; {PATH_HINT}.")
                paths.extend(matches)
            elif not os.path.exists(item):
                raise FileNotFoundError(f"Model path '{item}' does not exist; {PATH_HINT}.")
            else:
                paths.append(item)
    if not paths:
        raise ValueError(f"No model path given; {PATH_HINT} (--model=PATH).")
    return paths


def detect_kind(path: str) -> str:
    """Which of ``KINDS`` a path is, from its layout (not from its name alone).

    Raises:
      FileNotFoundError: the path does not exist.
      ValueError: the path exists but is none of the kinds.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"Model path '{path}' does not exist; {PATH_HINT}.")
    if os.path.isdir(path):
        if workdir.is_workdir(path):
            return "workdir"
        if is_saved_model(path):
            return "saved_model"
        raise ValueError(
            f"'{path}' is a directory but neither a training workdir (no config.json) nor a "
            f"SavedModel (no saved_model.pb); {PATH_HINT}."
        )
    extension = os.path.splitext(path)[1].lower()
    if extension == ".keras":
        return "keras"
    if extension in (".tflite", ".onnx"):
        return extension[1:]
    raise ValueError(f"'{path}' has an unknown extension '{extension}'; {PATH_HINT}.")


def is_saved_model(directory: str) -> bool:
    return any(
        os.path.exists(os.path.join(directory, name))
        for name in ("saved_model.pb", "saved_model.pbtxt")
    )
