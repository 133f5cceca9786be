"""The run directory (workdir) layout: the one module that spells its file names.

A training run owns one directory::

    DIR/config.json          the resolved config of the run
    DIR/checkpoints/         resumable state (model, optimizer, epoch, step), written atomically
    DIR/best/                the best epoch's weights and best.json (metric, value, epoch)
    DIR/export/              model.keras, saved_model/, *.tflite, model.onnx (EXPORT_FILES)
    DIR/logs/                TensorBoard
    DIR/metrics.csv          one row per finished epoch
    DIR/metrics.json         final metrics, export paths, reports
    DIR/plots/curves.png     loss and accuracy per epoch

Everything else asks this module for paths (``Workdir(path).checkpoints``), never joins names of
its own, so the layout can change in one place. Needs no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os

CONFIG_JSON = "config.json"

# Export format -> file or directory name inside an export directory.
EXPORT_FILES = {
    "keras": "model.keras",
    "saved_model": "saved_model",
    "tflite": "model.tflite",
    "tflite_float16": "model_float16.tflite",
    "tflite_dynamic_range": "model_dynamic_range.tflite",
    "tflite_int8": "model_int8.tflite",
    "onnx": "model.onnx",
}


@dataclasses.dataclass(frozen=True)
class Workdir:
    """Paths inside one run directory ``root``."""

    root: str

    def _join(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def config_json(self) -> str:
        return self._join(CONFIG_JSON)

    @property
    def checkpoints(self) -> str:
        return self._join("checkpoints")

    @property
    def best(self) -> str:
        return self._join("best")

    @property
    def best_json(self) -> str:
        return self._join("best", "best.json")

    @property
    def export(self) -> str:
        return self._join("export")

    @property
    def logs(self) -> str:
        return self._join("logs")

    @property
    def metrics_csv(self) -> str:
        return self._join("metrics.csv")

    @property
    def metrics_json(self) -> str:
        return self._join("metrics.json")

    @property
    def curves_png(self) -> str:
        return self._join("plots", "curves.png")

    def exported(self, fmt: str = "keras") -> str:
        """The path of export format ``fmt`` (``keras``, ``tflite``, ...) in ``DIR/export``."""
        return export_path(self.export, fmt)

    def read_config(self) -> dict:
        """``config.json`` as a dict."""
        with open(self.config_json) as f:
            return json.load(f)


def export_path(export_dir: str, fmt: str) -> str:
    """Where format ``fmt`` lives in ``export_dir``.

    Raises:
      ValueError: unknown format; the message lists the valid ones.
    """
    if fmt not in EXPORT_FILES:
        raise ValueError(f"Unknown export format {fmt!r}; choose from {', '.join(EXPORT_FILES)}.")
    return os.path.join(export_dir, EXPORT_FILES[fmt])


def is_workdir(path: str) -> bool:
    """Whether ``path`` is a run directory (it holds ``config.json``)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_JSON))


def owning_workdir(path: str, levels: int = 2) -> str | None:
    """The run directory a file lives in (``DIR/export/model.tflite`` -> ``DIR``), if any.

    Looks in the file's directory and up to ``levels`` directories in all, so files the trainer
    or ``export.py`` wrote are evaluated with their run's data and preprocessing even when
    passed on their own.
    """
    directory = os.path.dirname(os.path.abspath(path.rstrip("/")))
    for _ in range(levels):
        if is_workdir(directory):
            return directory
        directory = os.path.dirname(directory)
    return None


def dense_model_file(path: str) -> str:
    """A ``.keras`` file: ``path`` itself, or the ``model.keras`` of an export dir or a workdir.

    Raises:
      ValueError: none of them exists.
    """
    model_name = EXPORT_FILES["keras"]
    for candidate in (path, os.path.join(path, model_name), Workdir(path).exported("keras")):
        if os.path.isfile(candidate):
            return candidate
    raise ValueError(
        f"{path!r} is neither a .keras file nor a directory holding {model_name} or "
        f"export/{model_name}; pass a finished run's workdir or its export/{model_name}."
    )
